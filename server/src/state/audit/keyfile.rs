//! `audit.key` (the chain's state: next seq, head, the next record's key), its export mark,
//! and the auditor's copy of the first key.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use knock_core::auditchain::{AuditKey, Tail, HASH_LEN};
use knock_core::keys::{hex, unhex, write_private_file};
use zeroize::Zeroizing;

use super::error::AuditError;

const STATE_HEADER: &str = "one-time-knock-audit-state-v1";
const AUDITOR_HEADER: &str = "one-time-knock-audit-key0-v1";

/// Where the chain stands: `next_seq` records written, the last hashing to `head`; `key` is
/// the key of record `next_seq`.
#[derive(Debug)]
pub(crate) struct ChainState {
    pub(crate) next_seq: u64,
    pub(crate) head: [u8; HASH_LEN],
    pub(crate) key: AuditKey,
}

/// The files beside a log: `audit.key` and `audit.key.exported`.
#[derive(Debug, Clone)]
pub(crate) struct KeyFile {
    path: PathBuf,
}

/// Opens a secret file, refusing it when group or others have any access.
fn open_private(path: &Path) -> std::io::Result<File> {
    let f = File::open(path)?;
    let mode = f.metadata()?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible by group or others (mode {mode:04o}); it must be private. Fix: chmod 600 {}",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(f)
}

fn read_secret_text(path: &Path) -> std::io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    open_private(path)?.take(4096).read_to_string(&mut text)?;
    Ok(text)
}

impl KeyFile {
    /// The key file of the log at `log` (`audit.log` → `audit.key`).
    pub(crate) fn for_log(log: &Path) -> KeyFile {
        KeyFile { path: log.with_extension("key") }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn exported_path(&self) -> PathBuf {
        self.path.with_extension("key.exported")
    }

    /// Whether the first key was exported for the auditor.
    pub(crate) fn exported(&self) -> bool {
        self.exported_path().exists()
    }

    fn malformed(&self, what: &str) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}; the audit chain cannot continue from it", self.path.display()),
        )
    }

    /// The saved state, or `None` when there is no file yet.
    pub(crate) fn load(&self) -> std::io::Result<Option<ChainState>> {
        let text = match read_secret_text(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let [header, seq, head, key] = words.as_slice() else {
            return Err(self.malformed("not an audit key file (expected 4 words)"));
        };
        if *header != STATE_HEADER {
            return Err(self.malformed(&format!("does not start with `{STATE_HEADER}`")));
        }
        let next_seq = seq.parse().map_err(|_| self.malformed("its seq is not a number"))?;
        let head = unhex::<HASH_LEN>(head).ok_or_else(|| self.malformed("its head is not 64 hex digits"))?;
        let key = AuditKey::from_hex(key).ok_or_else(|| self.malformed("its key is not 64 hex digits"))?;
        Ok(Some(ChainState { next_seq, head, key }))
    }

    /// Where the writer says the chain ends (for `--verify`; the key is read and dropped).
    pub(crate) fn tail(&self) -> std::io::Result<Option<Tail>> {
        Ok(self.load()?.map(|s| Tail { next_seq: s.next_seq, head: s.head }))
    }

    /// Saves `state` atomically ([`crate::state::replace_file`]: a new 0600 temp file, fsync,
    /// rename over `audit.key`, fsync of the directory; written by root beside the daemon, as
    /// `knockd grant` does, it keeps the daemon's account). The replaced file held an older key;
    /// once renamed over, it is gone from the file system (not necessarily from the disk's free
    /// blocks: see docs/AUDIT.md).
    pub(crate) fn save(&self, state: &ChainState) -> std::io::Result<()> {
        let text = Zeroizing::new(format!(
            "{STATE_HEADER} {} {} {}\n",
            state.next_seq,
            hex(&state.head),
            Zeroizing::new(hex(state.key.expose())).as_str()
        ));
        crate::state::replace_file(&self.path, text.as_bytes()).map_err(|e| std::io::Error::new(e.source.kind(), e))
    }

    /// The export mark: when and which first key was handed to the auditor.
    pub(crate) fn mark_exported(&self, fingerprint: &str) -> Result<(), AuditError> {
        let mark = format!(
            "exported {} UTC fingerprint {fingerprint}\n",
            knock_core::time::format_utc_ms(knock_core::time::unix_now_ms())
        );
        let path = self.exported_path();
        write_private_file(&path, mark.as_bytes()).map_err(|source| AuditError::Write { path, source })
    }
}

/// Reads the auditor's first key (written by `knockd audit init-key`), refusing a file others can read.
pub fn read_auditor_key(path: &Path) -> Result<AuditKey, AuditError> {
    let text = read_secret_text(path)
        .map_err(|source| AuditError::AuditorKeyUnreadable { path: path.to_path_buf(), source })?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(AUDITOR_HEADER), Some(k), None) => AuditKey::from_hex(k),
        _ => None,
    }
    .ok_or_else(|| AuditError::NotAuditorKey { path: path.to_path_buf(), header: AUDITOR_HEADER })
}

/// Writes the auditor's copy of the first key to a new 0600 file `out` (never over one).
pub(crate) fn write_auditor_key(out: &Path, key: &AuditKey) -> Result<(), AuditError> {
    let text = Zeroizing::new(format!("{AUDITOR_HEADER} {}\n", Zeroizing::new(hex(key.expose())).as_str()));
    write_private_file(out, text.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => AuditError::Exists(out.to_path_buf()),
        _ => AuditError::Write { path: out.to_path_buf(), source: e },
    })
}
