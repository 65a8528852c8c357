//! How a knockd command that did not succeed ends: [`Failure`] holds the typed error of the part
//! that failed, and [`Failure::status`] sorts it into the exit statuses of `knock_core::exit`
//! (one table for knock and knockd, printed in knockd(8)'s EXIT STATUS section). This file is
//! the one place where an error becomes a number; `main` prints the error and exits with it.

use knock_core::config::ConfigError;
use knock_core::exit::{CONFIG, DATA, FAILED, IO, PERMISSION, USAGE};
use knock_core::keys::KeyError;
use knock_core::ledger::LedgerError;

use super::daemon::RunError;
use super::error::CliError;
use super::generate::GenerateError;
use crate::runtime::actions::SetupError;
use crate::runtime::capture::pcapfile::PcapError;
use crate::runtime::daemon::DaemonError;
use crate::runtime::firewall::FirewallError;
use crate::state::audit::AuditError;
use crate::state::door_files::SequenceFileError;
use crate::state::legacy_onetime::OneTimeError;
use crate::state::pending_stops::JournalError;
use crate::state::shared_ledgers::SharedLedgerSetupError;
use crate::state::StateError;

/// Why a command did not succeed, with the message for standard error.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration cannot be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An admin or console command could not do what it was asked (boxed: the largest kind).
    #[error(transparent)]
    Cli(Box<CliError>),
    /// `knockd run`: the daemon, or the process around it (log file, pid file, signals).
    #[error(transparent)]
    Run(#[from] RunError),
    /// `--generate` could not render.
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

impl From<CliError> for Failure {
    fn from(e: CliError) -> Failure {
        Failure::Cli(Box::new(e))
    }
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Failure {
        Failure::Run(RunError::Daemon(e))
    }
}

impl From<AuditError> for Failure {
    fn from(e: AuditError) -> Failure {
        Failure::from(CliError::Audit(e))
    }
}

impl Failure {
    /// The exit status (see `knock_core::exit::TABLE`).
    pub fn status(&self) -> u8 {
        match self {
            Failure::Config(_) => CONFIG,
            Failure::Cli(e) => cli(e),
            Failure::Run(e) => match e {
                RunError::Daemon(e) => daemon(e),
                RunError::LogFile { .. } | RunError::PidFile { .. } => IO,
                RunError::Signal(_) | RunError::Detach(_) => FAILED,
            },
            Failure::Generate(e) => match e {
                GenerateError::Man(_) => IO,
                GenerateError::NotText { .. } => FAILED,
            },
        }
    }
}

fn cli(e: &CliError) -> u8 {
    use CliError::*;
    match e {
        // The command line names something that does not exist, or does not fit the door.
        NoDoor { .. }
        | NotKeyed { .. }
        | NoClients { .. }
        | NotFile { .. }
        | NoLedger { .. }
        | ClientGiven { .. }
        | WhichClient { .. }
        | BadClientName(_)
        | NoClient { .. }
        | Count
        | NextTooFar { .. }
        | NoSequenceOnLine(_)
        | LineForFileDoors
        | WouldLeaveNone { .. }
        | NoSequenceOnOneTimeLine { .. }
        | OneTimeNext(_) => USAGE,
        Incomplete(_) | Config(_) => CONFIG,
        NoCurrentFile(_)
        | SequenceFileExists { .. }
        | NotKnockdConf(_)
        | CommandDoor { .. }
        | NoFirewall(_)
        | NotGranted(_)
        | NoLedgerDir(_) => FAILED,
        GrantUnaudited { .. } | RecoveryUnaudited(_) | Io { .. } => IO,
        ForeignLedger(_) | SeqFile(_) | BadExport { .. } => DATA,
        State(e) => state(e),
        Audit(e) => audit(e),
        Key(e) => key(e),
        SharedLedger(SharedLedgerSetupError::Key(e)) => key(e),
        SharedLedger(SharedLedgerSetupError::Etcd(_)) => CONFIG,
        Ledger(e) => ledger(e),
        SequenceFile(e) => sequence_file(e),
        OneTime(e) => one_time(e),
        Firewall(e) => firewall(e),
        Pcap(e) => pcap(e),
    }
}

fn pcap(e: &PcapError) -> u8 {
    match e {
        PcapError::Io { .. } => IO,
        // A file that is no capture, or a damaged one: the data, not the machine.
        PcapError::BadMagic { .. }
        | PcapError::Pcapng { .. }
        | PcapError::Truncated { .. }
        | PcapError::BadRecord { .. }
        | PcapError::LinkType { .. } => DATA,
    }
}

fn daemon(e: &DaemonError) -> u8 {
    match e {
        DaemonError::State(e) => state(e),
        DaemonError::Ledger(e) => ledger(e),
        // Keys directories, key and sequence files, ledgers: none heals by itself, so the
        // service manager must not restart the daemon into the same refusal.
        DaemonError::EveryDoorRefused { .. } => CONFIG,
        DaemonError::Audit { .. } => IO,
        DaemonError::Actions(SetupError::Firewall(e)) => firewall(e),
        DaemonError::Actions(SetupError::PendingStops(e)) => journal(e),
        DaemonError::Capture(_) => FAILED,
        // Settings that do not work (TLS files, a key others can read) do not heal either.
        DaemonError::SharedLedger(SharedLedgerSetupError::Key(e)) => key(e),
        DaemonError::SharedLedger(SharedLedgerSetupError::Etcd(_)) => CONFIG,
    }
}

fn state(e: &StateError) -> u8 {
    match e {
        StateError::NotInitialised(_) | StateError::AlreadyInitialised(_) => FAILED,
        StateError::BadServerId(_) => DATA,
        StateError::TooOpen { .. } => PERMISSION,
        StateError::Full { .. } | StateError::Io { .. } => IO,
    }
}

fn key(e: &KeyError) -> u8 {
    match e {
        KeyError::Rng(_) | KeyError::Exists(_) => FAILED,
        KeyError::TooOpen { .. } => PERMISSION,
        KeyError::Malformed { .. } => DATA,
        KeyError::Io { .. } => IO,
    }
}

fn ledger(e: &LedgerError) -> u8 {
    match e {
        LedgerError::Missing(_)
        | LedgerError::Corrupt { .. }
        | LedgerError::WrongLabel { .. }
        | LedgerError::CounterOverflow { .. } => DATA,
        LedgerError::Busy { .. } | LedgerError::ReadOnly(_) | LedgerError::Shared { .. } => FAILED,
        LedgerError::Io { .. } => IO,
    }
}

fn audit(e: &AuditError) -> u8 {
    match e {
        AuditError::Open { .. } | AuditError::Read { .. } | AuditError::Write { .. } => IO,
        AuditError::AuditorKeyUnreadable { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            PERMISSION
        }
        AuditError::AuditorKeyUnreadable { .. } => IO,
        AuditError::NotRecord { .. } | AuditError::NotAuditorKey { .. } => DATA,
        AuditError::NoLog(_)
        | AuditError::AlreadyExported { .. }
        | AuditError::NoStateDir(_)
        | AuditError::FirstKeyErased { .. }
        | AuditError::Exists(_) => FAILED,
    }
}

fn sequence_file(e: &SequenceFileError) -> u8 {
    match e {
        SequenceFileError::Private(e) => key(e),
        SequenceFileError::Syntax(_) => DATA,
    }
}

fn one_time(e: &OneTimeError) -> u8 {
    match e {
        OneTimeError::Private(e) => key(e),
        OneTimeError::NotText { .. } | OneTimeError::BadLine { .. } => DATA,
        OneTimeError::Mark { .. } => IO,
    }
}

fn firewall(e: &FirewallError) -> u8 {
    match e {
        // nft_table, or a door's open_for: fixed in the configuration.
        FirewallError::InvalidTable { .. } | FirewallError::InvalidDuration { .. } => CONFIG,
        _ => FAILED,
    }
}

fn journal(e: &JournalError) -> u8 {
    match e {
        JournalError::Unreadable { .. } => DATA,
        JournalError::Read { .. } | JournalError::Write(_) => IO,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_documented_status() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let refused = DaemonError::EveryDoorRefused { config: PathBuf::from("/etc/knockd/knockd.toml") };
        assert_eq!(Failure::from(refused).status(), CONFIG, "a door refused at start does not heal by itself");
        let busy = DaemonError::Ledger(LedgerError::Busy { dir: PathBuf::from("/var/lib/knockd/ledger") });
        assert_eq!(Failure::from(busy).status(), FAILED);
        let open = StateError::TooOpen { path: PathBuf::from("/var/lib/knockd"), mode: 0o755 };
        assert_eq!(Failure::from(DaemonError::State(open)).status(), PERMISSION);
        let no_door = CliError::NoDoor { config: PathBuf::from("k.toml"), name: "web".into(), doors: "ssh".into() };
        assert_eq!(Failure::from(no_door).status(), USAGE);
        let key = KeyError::Malformed { path: PathBuf::from("a.key"), reason: "is not text".into() };
        assert_eq!(Failure::from(CliError::Key(key)).status(), DATA);
        let unreadable = AuditError::AuditorKeyUnreadable { path: PathBuf::from("k"), source: io() };
        assert_eq!(Failure::from(unreadable).status(), PERMISSION);
        assert_eq!(Failure::from(CliError::Io { path: PathBuf::from("x"), source: io() }).status(), IO);
        let table = FirewallError::InvalidTable { table: "1x".into(), reason: "it starts with a digit" };
        assert_eq!(Failure::from(DaemonError::Actions(SetupError::Firewall(table))).status(), CONFIG);
    }
}
