//! Why an admin or console command could not do what it was asked: what failed, on which door,
//! client or file, and the fix. `cli/exit.rs` gives each its exit status.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use knock_core::config::ConfigError;
use knock_core::keys::KeyError;
use knock_core::ledger::LedgerError;
use knock_core::seqfile::SeqFileError;

use crate::runtime::capture::pcapfile::PcapError;
use crate::runtime::firewall::FirewallError;
use crate::state::audit::AuditError;
use crate::state::door_files::SequenceFileError;
use crate::state::legacy_onetime::OneTimeError;
use crate::state::StateError;

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command names a door the configuration does not have.
    #[error("{config}: no door `{name}` (doors: {doors})")]
    NoDoor {
        /// The configuration file.
        config: PathBuf,
        /// The name given.
        name: String,
        /// The configured doors, comma-separated.
        doors: String,
    },
    /// `client add` on a door without clients.
    #[error("door `{door}` is a {mode} door; clients are added to hotp and totp doors")]
    NotKeyed {
        /// The door.
        door: String,
        /// Its mode.
        mode: &'static str,
    },
    /// `client revoke` or `list` on a door without clients.
    #[error("door `{door}` is a {mode} door; it has no clients")]
    NoClients {
        /// The door.
        door: String,
        /// Its mode.
        mode: &'static str,
    },
    /// `sequences` on a door that is no file door.
    #[error("door `{door}` is a {mode} door; sequence files are for file doors")]
    NotFile {
        /// The door.
        door: String,
        /// Its mode.
        mode: &'static str,
    },
    /// `ledger recover` on a door that keeps no ledger.
    #[error("door `{door}` keeps no ledger (a {mode} door): there is nothing to recover")]
    NoLedger {
        /// The door.
        door: String,
        /// Its mode.
        mode: &'static str,
    },
    /// `--client` for a door whose sequences belong to no client.
    #[error("door `{door}` is {what}: it has no clients (leave out --client)")]
    ClientGiven {
        /// The door.
        door: String,
        /// What kind of door: `a file door`, `a knockd one_time_sequences door`.
        what: &'static str,
    },
    /// No `--client` for a door with several.
    #[error("door `{door}` has clients {clients}; say which with --client")]
    WhichClient {
        /// The door.
        door: String,
        /// Its clients, comma-separated.
        clients: String,
    },
    /// A client name that is none.
    #[error("client name `{0}` must be 1-64 characters of a-z, 0-9, _ or -")]
    BadClientName(String),
    /// A client that does not exist.
    #[error("door {door} has no client {client} ({path} does not exist); see `knockd client list --door {door}`")]
    NoClient {
        /// The door.
        door: String,
        /// The client.
        client: String,
        /// Its key file.
        path: PathBuf,
    },
    /// A door that lacks what its mode needs (the configuration check prevents it).
    #[error("door has no {0}")]
    Incomplete(&'static str),
    /// `--count` out of range.
    #[error("--count must be 1..=1000000")]
    Count,
    /// `sequences rotate` before the first file exists.
    #[error("{0} does not exist: generate the first file with `knockd sequences generate`")]
    NoCurrentFile(PathBuf),
    /// A sequence file is never written over.
    #[error(
        "{path} exists; refusing to overwrite a sequence file in use{}",
        if *.rotating { " (a rotation is pending: its first use completes it)" } else { "" }
    )]
    SequenceFileExists {
        /// The file.
        path: PathBuf,
        /// Whether it is the incoming file of a rotation.
        rotating: bool,
    },
    /// `migrate` of a configuration that is a knockd.toml already.
    #[error("{0} is already a knockd.toml; migrate reads a knockd.conf")]
    NotKnockdConf(PathBuf),
    /// `grant` on a door that runs commands.
    #[error(
        "door `{door}` runs knockd-style commands instead of firewall grants; run its start command by hand with \
         %IP% = {addr} (and its stop command later)"
    )]
    CommandDoor {
        /// The door.
        door: String,
        /// The address to let in.
        addr: IpAddr,
    },
    /// `grant` without a firewall.
    #[error("{0}: firewall = \"none\": there is nothing to grant")]
    NoFirewall(PathBuf),
    /// The audit record of a grant cannot be written: nothing is granted.
    #[error(
        "audit log {log}: {source}; nothing was granted (a grant is never made unaudited). Free space in {dir} or \
         fix its permissions, then retry"
    )]
    GrantUnaudited {
        /// The audit log.
        log: PathBuf,
        /// The state directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The firewall refused the grant (audited as `manual-grant-failed`).
    #[error("nothing was granted: {0}")]
    NotGranted(FirewallError),
    /// The audit record of a recovery cannot be written: nothing changes.
    #[error("audit log: {0}; nothing was changed")]
    RecoveryUnaudited(io::Error),
    /// `--next` beyond any counter.
    #[error(
        "--next {next} is beyond any counter a client can reach (at most {max}); check the client's `knock \
         --profile PROFILE --dry-run` (\"next sequence N\")"
    )]
    NextTooFar {
        /// The value given.
        next: u64,
        /// The largest accepted.
        max: u64,
    },
    /// A ledger directory that is none.
    #[error("{0}: no ledger directory")]
    NoLedgerDir(PathBuf),
    /// The ledger file belongs to another key or file.
    #[error("{0}: it is not this key's or file's ledger; move it away by hand, then run this again")]
    ForeignLedger(LedgerError),
    /// `--line` names a line without a sequence.
    #[error("line {0} of the sequence file holds no sequence")]
    NoSequenceOnLine(usize),
    /// `--line` for a keyed door.
    #[error("--line is for file doors; give --next N")]
    LineForFileDoors,
    /// A start past the end of the sequence file.
    #[error(
        "the sequence file has {count} sequences, so starting at sequence {next} would leave none; give --next N \
         (the client's `knock --dry-run` prints its next sequence) or --line L"
    )]
    WouldLeaveNone {
        /// Sequences in the file.
        count: usize,
        /// The start asked for.
        next: u64,
    },
    /// `--line` names a line of knockd's one-time file without a sequence.
    #[error("line {line} of {path} holds no sequence")]
    NoSequenceOnOneTimeLine {
        /// The line.
        line: usize,
        /// The file.
        path: PathBuf,
    },
    /// `--next` for knockd's one-time file.
    #[error(
        "{0} is marked line by line: give --line L (every line before L is marked used), or nothing (every line up \
         to the last one the audit log records as used)"
    )]
    OneTimeNext(PathBuf),
    /// A file or directory cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The configuration (`migrate`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A line of a `knockd ledger export` file that is not an exported ledger.
    #[error("{path}:{line}: not an exported ledger ({reason}); import reads what `knockd ledger export` wrote")]
    BadExport {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// `[ledger]`'s etcd settings.
    #[error(transparent)]
    SharedLedger(#[from] crate::state::shared_ledgers::SharedLedgerSetupError),
    /// A sequence file's syntax.
    #[error(transparent)]
    SeqFile(#[from] SeqFileError),
    /// A door's sequence file.
    #[error(transparent)]
    SequenceFile(#[from] SequenceFileError),
    /// knockd's one-time file.
    #[error(transparent)]
    OneTime(#[from] OneTimeError),
    /// The firewall backend cannot be opened.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// `replay`: the capture file cannot be read.
    #[error(transparent)]
    Pcap(#[from] PcapError),
}

impl CliError {
    /// `{path}: {error}`, for a file or directory.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { path, source }
    }
}
