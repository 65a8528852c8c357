//! Why a door, or one of its clients, is refused when the doors are loaded: each message names
//! the door (and client, file or ledger) and the fix. The other doors keep working.

use std::path::PathBuf;

use knock_core::keys::KeyError;
use knock_core::ledger::LedgerError;
use knock_core::{Knock, PortRange};

use crate::state::door_files::SequenceFileError;
use crate::state::legacy_onetime::OneTimeError;

/// Why a whole door cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// A keyed door without `keys`.
    #[error("no keys directory")]
    NoKeysDir,
    /// The keys directory cannot be read.
    #[error("keys directory {dir}: {source}")]
    KeysDir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not one client could be loaded.
    #[error("no usable client keys in {dir} (add one with `knockd client add --door {door}`)")]
    NoUsableKeys {
        /// The keys directory.
        dir: PathBuf,
        /// The door.
        door: String,
    },
    /// A file door without `sequence_file`.
    #[error("no sequence file")]
    NoSequenceFile,
    /// The sequence file cannot be used.
    #[error(transparent)]
    SequenceFile(#[from] SequenceFileError),
    /// A sequence file knock the door does not listen to.
    #[error("{path}: knock {knock} lies outside knock_ports {range}")]
    KnockOutside {
        /// The sequence file.
        path: PathBuf,
        /// The knock.
        knock: Knock,
        /// The door's knock ports.
        range: PortRange,
    },
    /// The ledger of the sequence file cannot be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// knockd's one-time sequences file cannot be used.
    #[error(transparent)]
    OneTime(#[from] OneTimeError),
}

/// Why one client of a keyed door cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Its key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Its ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// How a rolled-back ledger of a file door is recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFix {
    /// Start again at this line of the file.
    Line(usize),
    /// Every sequence of the file is used: past its end, and a new file.
    Next(u64),
}

/// A door or client refused at load, or for a ledger that was rolled back
/// (`runtime/doors/rollback.rs`).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The whole door.
    #[error("door {door} refused: {reason}")]
    Door {
        /// The door.
        door: String,
        /// Why.
        reason: DoorError,
    },
    /// One client.
    #[error("door {door} client {client} refused: {reason}")]
    Client {
        /// The door.
        door: String,
        /// The client.
        client: String,
        /// Why.
        reason: ClientError,
    },
    /// A key file whose name is no client name.
    #[error("door {door}: key file {path} skipped: client names are a-z, 0-9, _ or -")]
    BadKeyName {
        /// The door.
        door: String,
        /// The key file.
        path: PathBuf,
    },
    /// A client's ledger lacks a counter the audit log records as used.
    #[error(
        "door {door} client {client} refused: ledger {ledger} was rolled back (the audit log records counter \
         {counter} as used, the ledger does not); knocks for this key stay refused until `knockd ledger recover \
         --door {door} --client {client} --next {next}`"
    )]
    ClientRolledBack {
        /// The door.
        door: String,
        /// The client.
        client: String,
        /// Where its ledger is.
        ledger: PathBuf,
        /// The highest counter recorded used and missing from the ledger.
        counter: u64,
        /// Where recovery starts.
        next: u64,
    },
    /// The ledger of a door's incoming sequence file lacks a line the audit log records.
    #[error(
        "door {door}: incoming sequence file {file} refused: its ledger {ledger} was rolled back (the audit log \
         records line {line} as used, the ledger does not); remove it and rotate again with `knockd sequences \
         rotate --door {door}`"
    )]
    IncomingRolledBack {
        /// The door.
        door: String,
        /// The incoming file.
        file: PathBuf,
        /// Where its ledger is.
        ledger: PathBuf,
        /// The line recorded used.
        line: usize,
    },
    /// The ledger of a door's sequence file lacks a line the audit log records.
    #[error(
        "door {door} refused: ledger {ledger} of sequence file {file} was rolled back (the audit log records line \
         {line} as used, the ledger does not); knocks on this door stay refused until {}",
        match fix {
            FileFix::Line(l) => format!("`knockd ledger recover --door {door} --line {l}`"),
            FileFix::Next(n) => format!(
                "`knockd ledger recover --door {door} --next {n}` (every sequence of the file is used: generate a \
                 new file)"
            ),
        }
    )]
    FileRolledBack {
        /// The door.
        door: String,
        /// Where the ledger is.
        ledger: PathBuf,
        /// The sequence file.
        file: PathBuf,
        /// The line recorded used.
        line: usize,
        /// The way back.
        fix: FileFix,
    },
    /// knockd's one-time file lost `#` marks the audit log says it had.
    #[error(
        "door {door} refused: {file} was rolled back (the audit log records line {last} as used, but line {line} \
         is not marked used with `#`); knocks on this door stay refused until `knockd ledger recover --door \
         {door}` marks every line up to line {last} used"
    )]
    OneTimeRolledBack {
        /// The door.
        door: String,
        /// The one-time file.
        file: PathBuf,
        /// The first line not marked.
        line: usize,
        /// The last line recorded used.
        last: u64,
    },
}

impl Refusal {
    /// Whether the refusal is the shared ledger (etcd) not answering: that heals by itself, and
    /// the daemon loads the doors again until it does.
    pub fn waits_for_shared_ledger(&self) -> bool {
        matches!(
            self,
            Refusal::Door { reason: DoorError::Ledger(LedgerError::Shared { .. }), .. }
                | Refusal::Client { reason: ClientError::Ledger(LedgerError::Shared { .. }), .. }
        )
    }
}
