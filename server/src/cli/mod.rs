//! The command line: `knockd`'s subcommands (admin, console, audit), their clap types and
//! their output. Uses the runtime and the state directory; nothing uses it but `main`.

pub mod admin;
pub mod audit;
pub mod console;
pub mod default_config;
pub mod exit;
pub mod generate;
pub mod journal;
pub mod report;
