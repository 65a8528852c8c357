//! Firewall backends of the daemon: what opens a door for one address and closes it again.
//!
//! The daemon loop sees only the [`Firewall`] trait (`backend.rs`). [`Nftables`] is the default
//! backend: it owns one table (`inet knockd`) whose two chains (before DNAT, and at local
//! delivery) only ever drop new connections to the protected ports of this host, unless the
//! source holds a grant; grants are set elements with kernel timeouts, so they expire even if the
//! daemon dies. [`iptables`] is the other backend, for hosts without nftables.
//!
//! Modules, one job each: [`setup`] (the backend a configuration names, installed),
//! [`nftables`] (the backend), [`names`] (its table's sets and chains), `ruleset` (the nft script
//! that installs the table), [`nfnl`] (pure encoder of set-element batches), `ack` (parser of the
//! kernel's replies), `netlink` (the socket), [`watch`] (notifications of the table's deletion),
//! [`allow`] (`always_allow` as set elements), [`error`]. This file only lists them: the files
//! inside import each other, never this one.

pub(crate) mod ack;
pub mod allow;
pub mod backend;
pub mod error;
pub mod iptables;
pub mod names;
mod netlink;
pub mod nfnl;
pub mod nftables;
mod ruleset;
pub mod setup;
pub mod watch;

pub use allow::Allowed;
pub use backend::Firewall;
pub use error::{FirewallError, Op};
pub use knock_core::config::OpenPort;
pub use nftables::Nftables;
