//! Firewall backends of the daemon: what opens a door for one address and closes it again.
//!
//! The daemon loop sees only the [`Firewall`] trait. [`Nftables`] is the default backend: it owns
//! one table (`inet knockd`) whose two chains (before DNAT, and at local delivery) only ever drop
//! new connections to the protected ports of this host, unless the source holds a grant; grants
//! are set elements with kernel timeouts, so they expire even if the daemon dies.
//!
//! Modules, one job each: [`nftables`] (the backend), `ruleset` (the nft script that installs the
//! table), [`nfnl`] (pure encoder of set-element batches), `ack` (parser of the kernel's
//! replies), `netlink` (the socket), [`error`].

pub(crate) mod ack;
pub mod allow;
pub mod error;
pub mod iptables;
mod netlink;
pub mod nfnl;
pub mod nftables;
mod ruleset;
pub mod watch;

use std::net::IpAddr;
use std::time::Duration;

pub use allow::Allowed;
pub use error::{FirewallError, Op};
pub use knock_core::config::OpenPort;
pub use nftables::Nftables;

/// A firewall that grants and revokes access to protected ports per source address.
pub trait Firewall: Send {
    /// Creates the table, chain and sets if missing (keeping existing grant elements) and sets
    /// the protected ports: new connections to them are dropped unless granted.
    fn install(&mut self, protected: &[OpenPort]) -> Result<(), FirewallError>;

    /// Sets the doors' `always_allow` ranges, applied by the next [`Firewall::install`]: their
    /// sources pass to the doors' ports whatever is granted, also while the daemon is down.
    /// Returns false when the backend cannot do it (the default: the caller warns).
    fn set_always_allow(&mut self, allowed: &[Allowed]) -> bool {
        let _ = allowed;
        false
    }

    /// Whether the ruleset was removed under the backend (`nft flush ruleset`, as a
    /// `nftables.service` restart does): `Some(what happened)` from then until the next
    /// successful [`Firewall::install`]. Never blocks (the daemon calls it every tick). The
    /// default: `None`, the backend does not watch.
    fn ruleset_lost(&mut self) -> Option<String> {
        None
    }

    /// Allows new connections from `addr` to `ports` for `duration` (a kernel timeout:
    /// re-granting restarts the clock). An IPv4-mapped IPv6 address is granted as IPv4.
    fn grant(&mut self, addr: IpAddr, ports: &[OpenPort], duration: Duration) -> Result<(), FirewallError>;

    /// Removes the grant at once (the closing sequence). Revoking what is not granted (expired,
    /// never granted, table gone) is not an error. Established connections are not cut.
    fn revoke(&mut self, addr: IpAddr, ports: &[OpenPort]) -> Result<(), FirewallError>;
}
