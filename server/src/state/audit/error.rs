//! What can go wrong reading or writing the audit log, its key file and the auditor's key:
//! every message names the file and, where there is one, the fix.

use std::io;
use std::path::PathBuf;

/// An audit-log error.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be opened to write (or its lock, or its key file).
    #[error("audit log {path}: {source}")]
    Open {
        /// The log.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file of the chain cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// There is no log at all.
    #[error("{0}: no audit log (has knockd run with this state directory? see -c / --state-dir)")]
    NoLog(PathBuf),
    /// A line that is not a record (outside damage, or not an audit log).
    #[error("{file}:{line}: not an audit record; `knockd audit --verify` tells whether the log was changed")]
    NotRecord {
        /// The file, as shown.
        file: String,
        /// 1-based line.
        line: usize,
    },
    /// The auditor's key file cannot be read (or is open to others).
    #[error("audit key {path}: {source}")]
    AuditorKeyUnreadable {
        /// The key file.
        path: PathBuf,
        /// The error (permission denied for a file others may read, with the fix).
        source: io::Error,
    },
    /// The auditor's key file holds no key.
    #[error("{path}: not an audit key (expected `{header} <64 hex digits>`, as `knockd audit init-key` writes)")]
    NotAuditorKey {
        /// The file.
        path: PathBuf,
        /// The first word such a file starts with.
        header: &'static str,
    },
    /// `init-key` was run before.
    #[error(
        "the audit chain's first key was already exported ({mark}; see {path}): it is handed out once, to the auditor"
    )]
    AlreadyExported {
        /// What the mark file says.
        mark: String,
        /// The mark file.
        path: PathBuf,
    },
    /// `init-key` before `knockd init`.
    #[error("state directory {0} does not exist; run `knockd init` first")]
    NoStateDir(PathBuf),
    /// `init-key` after the first record: the first key is erased.
    #[error(
        "{log} already holds {records} record(s): the chain's first key was erased when its first record was \
         written, so it cannot be exported any more. To start a chain an auditor can check: stop knockd, move \
         {log}* and {key_file} aside, run `knockd audit init-key --out FILE` again, then start knockd"
    )]
    FirstKeyErased {
        /// The log.
        log: PathBuf,
        /// Records in it.
        records: u64,
        /// Its `audit.key`.
        key_file: PathBuf,
    },
    /// A file that is never overwritten exists.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A file cannot be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}
