//! `audit.key` (the chain's state: next seq, head, the next record's key), its export mark,
//! and the auditor's copy of the first key.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_core::auditchain::{AuditKey, Tail, HASH_LEN};
use knock_core::keys::{hex, unhex, write_private_file};
use zeroize::Zeroizing;

use super::AuditLog;

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

    /// Saves `state` atomically: a new 0600 temp file, fsync, rename over `audit.key`, fsync of
    /// the directory. The replaced file held an older key; once renamed over, it is gone from
    /// the file system (not necessarily from the disk's free blocks: see docs/AUDIT.md).
    pub(crate) fn save(&self, state: &ChainState) -> std::io::Result<()> {
        let tmp = self.path.with_extension("key.tmp");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let text = Zeroizing::new(format!(
            "{STATE_HEADER} {} {} {}\n",
            state.next_seq,
            hex(&state.head),
            Zeroizing::new(hex(state.key.expose())).as_str()
        ));
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        // Written by root beside the daemon (`knockd grant`): the daemon's account keeps it.
        crate::state::handover::keep_owner(&f, &self.path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        super::files::sync_dir(&self.path)
    }
}

/// Reads the auditor's first key (written by `knockd audit init-key`), refusing a file others can read.
pub fn read_auditor_key(path: &Path) -> Result<AuditKey, String> {
    let text = read_secret_text(path).map_err(|e| format!("audit key {}: {e}", path.display()))?;
    let mut words = text.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(AUDITOR_HEADER), Some(k), None) => AuditKey::from_hex(k),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "{}: not an audit key (expected `{AUDITOR_HEADER} <64 hex digits>`, as `knockd audit init-key` writes)",
            path.display()
        )
    })
}

/// `knockd audit init-key --out FILE`: writes the chain's first key for the auditor (0600,
/// never over an existing file) and marks it exported. Refuses when the log already has
/// records (the first key was erased when the first one was written) or the key was exported.
pub fn export_first_key(log: &Path, out: &Path) -> Result<String, String> {
    let keys = KeyFile::for_log(log);
    if let Ok(mark) = std::fs::read_to_string(keys.exported_path()) {
        return Err(format!(
            "the audit chain's first key was already exported ({}; see {}): it is handed out once, to the auditor",
            mark.trim(),
            keys.exported_path().display()
        ));
    }
    let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!("state directory {} does not exist; run `knockd init` first", dir.display()));
    }
    let audit = AuditLog::open(log).map_err(|e| format!("audit log {}: {e}", log.display()))?;
    if audit.next_seq() > 0 {
        return Err(format!(
            "{} already holds {} record(s): the chain's first key was erased when its first record was written, so \
             it cannot be exported any more. To start a chain an auditor can check: stop knockd, move {}* and {} \
             aside, run `knockd audit init-key --out FILE` again, then start knockd",
            log.display(),
            audit.next_seq(),
            log.display(),
            keys.path().display()
        ));
    }
    let fingerprint = audit.chain.key.fingerprint();
    let text = Zeroizing::new(format!("{AUDITOR_HEADER} {}\n", Zeroizing::new(hex(audit.chain.key.expose())).as_str()));
    write_private_file(out, text.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{} already exists; refusing to overwrite it", out.display()),
        _ => format!("{}: {e}", out.display()),
    })?;
    let mark = format!(
        "exported {} UTC fingerprint {fingerprint}\n",
        crate::cli::admin::format_utc_ms(knock_core::time::unix_now_ms())
    );
    write_private_file(&keys.exported_path(), mark.as_bytes())
        .map_err(|e| format!("{}: {e}", keys.exported_path().display()))?;
    Ok(format!(
        "wrote the audit log's first key to {} (fingerprint {fingerprint}).\n\
         It is the auditor's: move it off this host; knockd never needs it again.\n\
         Check the log with: knockd audit --verify --key {}",
        out.display(),
        out.display()
    ))
}
