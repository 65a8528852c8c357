//! Library side of the `knockd` daemon, in three parts whose arrows go one way
//! (docs/ARCHITECTURE.md):
//!
//! - [`cli`]: the command line: the subcommands, their clap types and their output.
//! - [`runtime`]: the running daemon: its loop, the doors, capture, firewall and actions.
//! - [`state`]: everything on disk: the state directory, ledgers, audit log, journals.
//!
//! `cli` may use `runtime` and `state`, `runtime` may use `state`, `state` uses neither;
//! [`hardening`] (the only unsafe code) uses nothing of the crate. `server/tests/layout.rs`
//! checks this and that no two files import each other round a circle.

pub mod cli;
pub mod fuzz_entry;
pub mod hardening;
pub mod runtime;
pub mod state;
