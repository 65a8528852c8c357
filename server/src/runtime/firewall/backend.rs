//! The one interface the rest of knockd sees of a firewall backend: install the protection,
//! grant and revoke per source address, tell when the ruleset was removed under it.

use std::net::IpAddr;
use std::time::Duration;

use knock_core::config::OpenPort;

use super::allow::Allowed;
use super::error::FirewallError;

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
