//! The command line: `knockd`'s arguments ([`args`]), the subcommands and their output (admin
//! commands in [`admin`], [`check`], [`status`], console recovery in [`console`], [`audit`], forensics on a
//! capture in [`replay`], the daemon's process in [`daemon`]), their errors ([`error`]) and exit statuses ([`exit`]).
//! [`run::run`] runs what the command line asks for. Uses the runtime and the state directory;
//! nothing but `main` uses it.

pub mod admin;
pub mod args;
pub mod audit;
pub mod check;
pub mod console;
pub mod daemon;
pub mod default_config;
pub mod error;
pub mod exit;
pub mod generate;
pub mod journald;
pub mod replay;
pub mod report;
pub mod run;
pub mod status;
pub mod transfer;
