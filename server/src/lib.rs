//! Library side of the `knockd` daemon: its modules, reachable from integration tests.

pub mod admin;
pub mod audit;
pub mod capture;
pub mod commands;
pub mod console;
pub mod daemon;
pub mod default_config;
pub mod doors;
pub mod firewall;
pub mod fuzz_entry;
pub mod grants;
pub mod handover;
pub mod hardening;
pub mod journal;
pub mod notify;
pub mod onetime;
pub mod report;
pub mod state;
