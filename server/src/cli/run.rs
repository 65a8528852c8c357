//! Runs the command the command line asks for: the configuration loaded with the command line's
//! overrides, the named door checked, then the subcommand; its output is a [`Report`] (which may
//! count problems) or a [`Failure`]. Admin commands run as root hand what they created to the
//! daemon's account when they end (`state/handover.rs`).

use std::path::PathBuf;

use knock_core::config::{Config, ConfigError};

use super::args::{Cli, ClientCommand, Command, LedgerCommand, SequencesCommand};
use super::console::RecoverFrom;
use super::default_config;
use super::exit::Failure;
use super::report::Report;
use super::{admin, audit, check, console, daemon, replay, status, transfer};
use crate::state::handover::after_admin_command;
use crate::state::StateDir;

/// Loads the configuration with the command line's overrides (`--state-dir`, `-i`).
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let path = cli.config.clone().unwrap_or_else(|| PathBuf::from(default_config::TOML));
    let mut config = Config::load(&path)?;
    if let Some(dir) = &cli.state_dir {
        config.server.state_dir = dir.clone();
    }
    if !cli.interface.is_empty() {
        config.server.interfaces = cli.interface.clone();
    }
    Ok(config)
}

/// Hands what an admin command created to the daemon's account when dropped.
struct HandOver(Config);

impl Drop for HandOver {
    fn drop(&mut self) {
        for w in after_admin_command(&self.0).map(|r| r.warnings).unwrap_or_default() {
            eprintln!("knockd: warning: {w}");
        }
    }
}

/// Makes a path absolute against the working directory, so `-d` (which moves to /) keeps it.
fn absolute(path: &mut PathBuf) {
    if let Ok(p) = std::path::absolute(&*path) {
        *path = p;
    }
}

/// Runs the command: its output for standard output (a report may count problems), or why it failed.
pub fn run(mut cli: Cli) -> Result<Report, Failure> {
    // Without -c: knockd.toml, else knockd 0.8's knockd.conf (a server moved from Debian's knockd).
    let default = cli.config.is_none().then(default_config::choose);
    if let Some(d) = &default {
        cli.config = Some(d.path.clone());
    }
    if cli.daemonize {
        for p in [&mut cli.config, &mut cli.state_dir, &mut cli.pidfile, &mut cli.logfile].into_iter().flatten() {
            absolute(p);
        }
    }
    let config = load_config(&cli)?;
    let command = cli.command.take().unwrap_or(Command::Run);
    if let (Some(d), false) = (&default, matches!(command, Command::Run)) {
        if d.fell_back {
            eprintln!("knockd: {}", d.describe());
        }
    }
    if let Some(door) = command.door() {
        admin::door(&config, door)?;
    }
    // Admin commands run as root hand what they create to the daemon's account when they end.
    // (Not `replay`, which must leave the state directory exactly as it found it.)
    let _handover = (!matches!(command, Command::Run | Command::Replay(_))).then(|| HandOver(config.clone()));
    let text = match command {
        Command::Run => {
            let load = || load_config(&cli);
            daemon::run_daemon(&cli, config, default.as_ref(), &load)?;
            return Ok(Report::clean(String::new()));
        }
        Command::Init => admin::init(&config),
        Command::Check { force } => return Ok(check::check(&config, force)),
        Command::Status { warn_below } => return Ok(status::status(&config, warn_below)?),
        Command::Replay(args) => return Ok(replay::replay(&config, &args)?),
        Command::Audit(args) => {
            return Ok(audit::command(&StateDir::new(&config.server.state_dir).audit_log(), &args)?);
        }
        Command::Client(ClientCommand::Add { door, name, server_addr, out, export }) => {
            let dest = match (export, out) {
                (true, _) => admin::BundleDest::Line,
                (false, out) => {
                    admin::BundleDest::File(out.unwrap_or_else(|| PathBuf::from(format!("{door}-{name}.knock"))))
                }
            };
            admin::client_add(&config, &door, &name, server_addr, &dest)
        }
        Command::Client(ClientCommand::Revoke { door, name }) => admin::client_revoke(&config, &door, &name),
        Command::Client(ClientCommand::List { door }) => admin::client_list(&config, &door),
        Command::Sequences(SequencesCommand::Generate { args, emergency }) => {
            let out = args.out.unwrap_or_else(|| PathBuf::from(format!("{}.knock", args.door)));
            let out = if emergency { admin::SequencesOut::Sheet } else { admin::SequencesOut::Bundle(&out) };
            admin::sequences_generate(&config, &args.door, args.count, args.server_addr, out, false)
        }
        Command::Sequences(SequencesCommand::Rotate(args)) => {
            let out = args.out.unwrap_or_else(|| PathBuf::from(format!("{}.knock", args.door)));
            let out = admin::SequencesOut::Bundle(&out);
            admin::sequences_generate(&config, &args.door, args.count, args.server_addr, out, true)
        }
        Command::Grant { addr, door, duration } => console::grant(&config, addr, &door, duration),
        Command::Ledger(LedgerCommand::Recover { door, client, next, line, skip }) => {
            let from = next.map(RecoverFrom::Next).or(line.map(RecoverFrom::Line)).unwrap_or(RecoverFrom::Skip(skip));
            console::ledger_recover(&config, &door, client.as_deref(), from)
        }
        Command::Ledger(LedgerCommand::Export { out }) => transfer::export(&config, out.as_deref()),
        Command::Ledger(LedgerCommand::Import { file }) => transfer::import(&config, &file),
        Command::Migrate { out } => admin::migrate(&config, out.as_deref()),
    }?;
    Ok(Report::clean(text))
}

impl Command {
    /// The door the command names with `--door`, if any.
    fn door(&self) -> Option<&str> {
        match self {
            Command::Client(
                ClientCommand::Add { door, .. } | ClientCommand::Revoke { door, .. } | ClientCommand::List { door },
            )
            | Command::Grant { door, .. }
            | Command::Ledger(LedgerCommand::Recover { door, .. }) => Some(door),
            Command::Sequences(SequencesCommand::Generate { args, .. } | SequencesCommand::Rotate(args)) => {
                Some(&args.door)
            }
            // `audit --door` may name a door the configuration no longer has: its records stay.
            _ => None,
        }
    }
}
