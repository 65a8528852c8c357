//! The running daemon: the loop ([`daemon`]), the doors it matches knocks against ([`doors`]),
//! packet [`capture`], the [`firewall`] backends and the doors' [`actions`]. Uses the state
//! directory ([`crate::state`]), never the command line.

pub mod actions;
pub mod capture;
pub mod daemon;
pub mod doors;
pub mod firewall;
pub mod notify;
