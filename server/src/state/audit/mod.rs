//! The audit log: one record per decision (grant, close, replay, burn, alert, start, stop),
//! chained and MACed with a forward-secure key so that nobody, root included, can later edit,
//! remove or reorder what was written without `knockd audit --verify` naming the first bad
//! record. The format and its guarantees are in `docs/AUDIT.md`; the pure chain logic (framing,
//! key steps, verification) is `knock_core::auditchain`.
//!
//! Files in the state directory, next to `audit.log` (the live file):
//! - `audit.log.N`: rotated files, `N` = 1, 2, ... oldest first; the chain runs through them.
//! - `audit.key` (0600): the chain's state, `one-time-knock-audit-state-v1 <next seq> <head hex>
//!   <key hex>`: the key of the next record, never an earlier one. Replaced durably
//!   ([`crate::state::replace_file`]) from [`AuditLog::sync`] (the daemon's tick), always after
//!   the log itself is synced.
//! - `audit.key.exported`: when `knockd audit init-key` handed the first key to the auditor.
//! - `audit.lock`: held while a process writes the log (one writer per chain).
//!
//! Durability: a `durable` record (grants) is fdatasync'd before [`AuditLog::write`] returns.
//! Replays, burns and alerts are written at once and synced on the next tick. Identical ones
//! within a second are folded into one record with a `count`, and past a budget of individual
//! records the rest are only counted, so a flood cannot fill the disk (`aggregate.rs` states
//! the bound).
//! Never key material, never a sequence: only door, client, source, counter labels and reasons.
//!
//! This file is the writer ([`AuditLog`]); beside it: `record.rs` (one record), `files.rs` (file
//! names, the lock, torn tails, reading records back), `keyfile.rs` (`audit.key` and the
//! auditor's key), `aggregate.rs` (flood folding), `used.rs` (what the log records as used, for
//! rolled-back ledgers), `error.rs`.

mod aggregate;
pub mod error;
pub mod files;
pub mod keyfile;
pub mod record;
pub mod used;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_core::auditchain::{line_hash, parse_line, seal, AuditKey, GENESIS_PREV, HASH_LEN};
use knock_core::keys::hex;
use tracing::{error, info, warn};

use aggregate::Aggregator;
pub use error::AuditError;
use keyfile::{ChainState, KeyFile};
pub use record::Record;

/// Size after which the live file is rotated (before the next record).
pub const ROTATE_BYTES: u64 = 64 << 20;
/// Environment variable that overrides [`ROTATE_BYTES`] (tests, small disks).
pub const ROTATE_ENV: &str = "KNOCKD_AUDIT_ROTATE_BYTES";
/// The chain head is logged (a witness for journald / syslog) after this many records...
pub const ANCHOR_EVERY_RECORDS: u64 = 1000;
/// ...or this long after the last anchor, whichever comes first (and only when records were written).
pub const ANCHOR_EVERY_MS: u64 = 60_000;

/// Summaries kept for [`AuditLog::take_summaries`] at most.
const SUMMARIES_KEPT: usize = 1024;

/// Tunables of an [`AuditLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// Rotate the live file once it holds this many bytes.
    pub rotate_bytes: u64,
    /// Anchor after this many records.
    pub anchor_every_records: u64,
    /// Anchor after this many milliseconds.
    pub anchor_every_ms: u64,
}

impl Default for AuditOptions {
    /// The constants, with [`ROTATE_ENV`] overriding the rotation size when set to a number.
    fn default() -> Self {
        let rotate_bytes = std::env::var(ROTATE_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(ROTATE_BYTES);
        AuditOptions { rotate_bytes, anchor_every_records: ANCHOR_EVERY_RECORDS, anchor_every_ms: ANCHOR_EVERY_MS }
    }
}

/// An open audit log. Several may be open at once (the daemon, and `knockd grant` at the
/// console): each write takes `audit.lock`, first catches up with records another writer
/// appended (checking their MACs and stepping the key past them), then appends.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The live file's inode and length as this writer left them.
    ino: u64,
    size: u64,
    unsynced: usize,
    chain: ChainState,
    /// Whether `audit.key` holds `chain` (false after every record until the next sync).
    key_saved: bool,
    options: AuditOptions,
    aggregate: Aggregator,
    /// Summaries of folded records written since the daemon last took them (to log them).
    summaries: Vec<Record>,
    /// Records written and the time at the last anchor.
    anchored: (u64, u64),
    /// `audit.lock`, locked for each operation.
    lock: File,
}

/// The live file as a writer found it: open for appending, a torn tail already cut.
struct Attached {
    file: File,
    ino: u64,
    size: u64,
    notes: Vec<Record>,
    advanced: bool,
}

/// Holds `audit.lock` until dropped.
struct Held(File);

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// Opens the live file, cuts a torn last line (a crash during a write: noted in a `torn`
/// record) and reconciles `chain` with the log's end.
fn attach(path: &Path, chain: &mut ChainState) -> std::io::Result<Attached> {
    let mut notes = Vec::new();
    let file = OpenOptions::new().create(true).read(true).append(true).mode(0o600).open(path)?;
    let current = std::fs::read(path)?;
    let (keep, cut) = files::torn_tail(&current);
    if let Some(cut) = cut {
        warn!("audit log {}: cut a torn last record of {} bytes (a crash during a write)", path.display(), cut.len());
        file.set_len(keep as u64)?;
        file.sync_data()?;
        notes.push(
            Record::new("torn")
                .with("cut_bytes", cut.len() as u64)
                .with("cut_sha256", hex(&line_hash(cut.strip_suffix(b"\n").unwrap_or(cut)))),
        );
    }
    let (gap, advanced) = reconcile(path, &current[..keep], chain)?;
    notes.extend(gap);
    Ok(Attached { ino: file.metadata()?.ino(), file, size: keep as u64, notes, advanced })
}

/// Matches `chain` (from `audit.key`, or a writer's memory) with the end of the log. The log
/// may run ahead (the state is saved after the log, and other writers append too): those
/// records are checked under the key, which is stepped past them (`true`). Anything else (the
/// log ends earlier or differently) is logged and answered with an `audit-gap` record; the
/// chain goes on from `chain`, so `knockd audit --verify` names the break.
fn reconcile(path: &Path, current: &[u8], chain: &mut ChainState) -> std::io::Result<(Option<Record>, bool)> {
    let s = chain.next_seq;
    let lines = files::tail_from(path, current, s)?;
    let last = lines.last().and_then(|l| parse_line(l).ok().map(|f| (f.seq, line_hash(l))));
    match last {
        None if s == 0 && lines.is_empty() => return Ok((None, false)),
        Some((l, h)) if l + 1 == s && h == chain.head => return Ok((None, false)),
        Some((l, h)) if l + 1 > s => {
            if let Some(start) = lines.iter().position(|x| parse_line(x).is_ok_and(|f| f.seq == s)) {
                let mut key = chain.key.clone();
                let mut prev = chain.head;
                let mut expected = s;
                let genuine = lines[start..].iter().all(|x| {
                    let ok =
                        parse_line(x).is_ok_and(|f| f.seq == expected && f.prev == prev && key.verify(f.body, &f.mac));
                    prev = line_hash(x);
                    key.advance();
                    expected += 1;
                    ok
                });
                if genuine && expected == l + 1 && prev == h {
                    *chain = ChainState { next_seq: l + 1, head: h, key };
                    return Ok((None, true));
                }
            }
        }
        _ => {}
    }
    let found = last.map(|(l, _)| l);
    error!(
        "audit log {}: the log does not end where the chain state says (found last seq {}, expected {}): records \
         were removed or replaced; the chain continues from the state and `knockd audit --verify` will name the break",
        path.display(),
        found.map_or("none".into(), |l| l.to_string()),
        s.checked_sub(1).map_or("none".into(), |l| l.to_string()),
    );
    let mut gap = Record::new("audit-gap");
    if let Some(l) = found {
        gap = gap.with("found_last_seq", l);
    }
    if let Some(e) = s.checked_sub(1) {
        gap = gap.with("expected_last_seq", e);
    }
    Ok((Some(gap), false))
}

impl AuditLog {
    /// Opens (creating, 0600) the audit log for appending, with [`AuditOptions::default`].
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        AuditLog::open_with(path, AuditOptions::default())
    }

    /// Opens the audit log: loads the chain state from `audit.key` (making a random first key
    /// when there is none), cuts a torn last line (a crash during a write) and notes it in a
    /// `torn` record, and reconciles the state with the log's end.
    pub fn open_with(path: &Path, options: AuditOptions) -> std::io::Result<AuditLog> {
        let lock = files::lock_file(path)?;
        let held = Held(lock.try_clone()?);
        held.0.lock()?;
        let keys = KeyFile::for_log(path);
        let mut notes = Vec::new();
        let mut chain = match keys.load()? {
            Some(state) => state,
            None => {
                if files::has_records(path)? {
                    let moved = files::orphan(path, keys.exported().then(|| keys.exported_path()))?;
                    error!(
                        "audit log {}: {} is missing, so the chain cannot continue; the old files were moved \
                         to {} and a new chain starts",
                        path.display(),
                        keys.path().display(),
                        moved.display()
                    );
                    notes.push(
                        Record::new("chain-start")
                            .with("reason", "audit.key was missing")
                            .with("moved_to", moved.display().to_string()),
                    );
                }
                let state = ChainState { next_seq: 0, head: GENESIS_PREV, key: AuditKey::generate().map_err(other)? };
                keys.save(&state)?;
                state
            }
        };
        let a = attach(path, &mut chain)?;
        notes.extend(a.notes);
        let mut log = AuditLog {
            path: path.to_path_buf(),
            file: a.file,
            ino: a.ino,
            size: a.size,
            unsynced: 0,
            chain,
            key_saved: !a.advanced,
            options,
            aggregate: Aggregator::default(),
            summaries: Vec::new(),
            anchored: (0, 0),
            lock,
        };
        for n in notes {
            log.append(n)?;
        }
        log.sync_locked()?;
        drop(held);
        if !keys.exported() {
            warn!(
                "the audit chain's first key was never exported for an auditor: only its hash chain can be checked{}",
                if log.chain.next_seq == 0 { "; run `knockd audit init-key --out FILE` now" } else { "" }
            );
        }
        log.anchored = (log.chain.next_seq, knock_core::time::unix_now_ms());
        if log.chain.next_seq > 0 {
            info!(seq = log.chain.next_seq - 1, head = %hex(&log.chain.head), "audit chain head at open");
        }
        Ok(log)
    }

    /// Takes `audit.lock` and catches up with what other writers did since this one wrote.
    fn hold(&mut self) -> std::io::Result<Held> {
        let held = Held(self.lock.try_clone()?);
        held.0.lock()?;
        let same = match std::fs::metadata(&self.path) {
            Ok(m) => m.ino() == self.ino && m.len() == self.size,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !same {
            let a = attach(&self.path, &mut self.chain)?;
            self.file = a.file;
            self.ino = a.ino;
            self.size = a.size;
            if a.advanced {
                self.key_saved = false;
            }
            for n in a.notes {
                self.append(n)?;
            }
        }
        Ok(held)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records written so far by every writer, as this one last saw (the next record's `seq`).
    pub fn next_seq(&self) -> u64 {
        self.chain.next_seq
    }

    /// The hash of the last record (the next record's `prev`).
    pub fn head(&self) -> [u8; HASH_LEN] {
        self.chain.head
    }

    /// Appends a record; with `durable`, it is on disk when this returns (and any replays
    /// still being counted are written first). Replays, near misses, burns and alerts that are
    /// not durable may be folded into a later record with a `count` (see the module doc).
    /// Returns whether the record was written now: a caller logs a line only then, so its log
    /// lines are bounded as the records are.
    pub fn write(&mut self, record: Record, durable: bool) -> std::io::Result<bool> {
        let _held = self.hold()?;
        let now = record.ts_ms();
        self.flush_locked(if durable { u64::MAX } else { now })?;
        let written = if !durable && aggregate::aggregated(&record) {
            match self.aggregate.admit(record, now) {
                Some(r) => {
                    self.append(r)?;
                    true
                }
                None => false,
            }
        } else {
            self.append(record)?;
            true
        };
        if durable {
            self.sync_log()?;
        }
        Ok(written)
    }

    /// The summaries of folded records written since the last call (for one log line each).
    pub fn take_summaries(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.summaries)
    }

    /// Writes the counts of folded replays whose second is over at `now_ms` (`u64::MAX`: all).
    pub fn flush_due(&mut self, now_ms: u64) -> std::io::Result<()> {
        let _held = self.hold()?;
        self.flush_locked(now_ms)
    }

    fn flush_locked(&mut self, now_ms: u64) -> std::io::Result<()> {
        for r in self.aggregate.due(now_ms) {
            self.append(r.clone())?;
            // Kept for the daemon's log; bounded like the records, and capped for writers that
            // never take them.
            if self.summaries.len() < SUMMARIES_KEPT {
                self.summaries.push(r);
            }
        }
        Ok(())
    }

    /// Writes the counts of replays whose second is over, syncs records written without
    /// `durable`, then saves the chain state to `audit.key` (called from the daemon's tick).
    pub fn sync(&mut self) -> std::io::Result<()> {
        let _held = self.hold()?;
        self.flush_locked(knock_core::time::unix_now_ms())?;
        self.sync_locked()
    }

    fn sync_locked(&mut self) -> std::io::Result<()> {
        self.sync_log()?;
        if !self.key_saved {
            KeyFile::for_log(&self.path).save(&self.chain)?;
            self.key_saved = true;
        }
        Ok(())
    }

    fn sync_log(&mut self) -> std::io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Logs the chain head at info level ("audit chain head", with `seq` and `head`) when
    /// [`AuditOptions::anchor_every_records`] records or [`AuditOptions::anchor_every_ms`] have
    /// passed since the last anchor and something was written; journald or syslog then hold a
    /// witness of the log's end. Syncs first, so the witness never names a record not on disk.
    /// Returns what it logged.
    pub fn anchor_if_due(&mut self, now_ms: u64) -> Option<(u64, String)> {
        let (at_seq, at_ms) = self.anchored;
        let written = self.chain.next_seq.saturating_sub(at_seq);
        if written == 0
            || (written < self.options.anchor_every_records
                && now_ms.saturating_sub(at_ms) < self.options.anchor_every_ms)
        {
            return None;
        }
        if let Err(e) = self.sync() {
            error!("audit log {}: {e}", self.path.display());
            return None;
        }
        let seq = self.chain.next_seq - 1;
        let head = hex(&self.chain.head);
        info!(seq, head = %head, "audit chain head");
        self.anchored = (self.chain.next_seq, now_ms);
        Some((seq, head))
    }

    /// Seals and appends one record, rotating first when the live file is full. Lock held.
    fn append(&mut self, record: Record) -> std::io::Result<()> {
        if self.size > 0 && self.size >= self.options.rotate_bytes {
            self.rotate()?;
        }
        let line = seal(self.chain.next_seq, &self.chain.head, &record.members(), &self.chain.key);
        let hash = line_hash(line.as_bytes());
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if let Err(e) = self.file.write_all(&bytes) {
            // Never leave part of a line in the middle of the chain.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        self.unsynced += 1;
        self.chain.head = hash;
        self.chain.next_seq += 1;
        self.chain.key.advance();
        self.key_saved = false;
        Ok(())
    }

    /// Renames the live file to `audit.log.N` (the next free N) and starts a new one; the next
    /// record's `prev` is the last hash of the old file, so the chain runs on. Lock held.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.unsynced = 0;
        let to = files::rotated_path(&self.path, files::next_rotation(&self.path)?);
        if to.exists() {
            return Err(other(format!("{} exists; refusing to rotate over it", to.display())));
        }
        std::fs::rename(&self.path, &to)?;
        self.file = OpenOptions::new().create(true).read(true).append(true).mode(0o600).open(&self.path)?;
        self.ino = self.file.metadata()?.ino();
        files::sync_dir(&self.path)?;
        self.size = 0;
        info!(to = %to.display(), next_seq = self.chain.next_seq, "audit log rotated");
        Ok(())
    }
}

impl Drop for AuditLog {
    /// Writes what replays are still being counted, syncs and saves the chain state.
    fn drop(&mut self) {
        let done = self.hold().and_then(|_held| {
            self.flush_locked(u64::MAX)?;
            self.sync_locked()
        });
        match done {
            Err(e) => error!("audit log {}: {e}", self.path.display()),
            // A last witness of the chain head for the journal.
            Ok(()) if self.chain.next_seq > self.anchored.0 => {
                info!(seq = self.chain.next_seq - 1, head = %hex(&self.chain.head), "audit chain head")
            }
            Ok(()) => {}
        }
    }
}

/// `knockd audit init-key --out FILE`: writes the chain's first key for the auditor (0600,
/// never over an existing file) and marks it exported; returns the key's fingerprint. Refuses
/// when the log already has records (the first key was erased when the first one was written)
/// or the key was exported before.
pub fn export_first_key(log: &Path, out: &Path) -> Result<String, AuditError> {
    let keys = KeyFile::for_log(log);
    if let Ok(mark) = std::fs::read_to_string(keys.exported_path()) {
        return Err(AuditError::AlreadyExported { mark: mark.trim().to_string(), path: keys.exported_path() });
    }
    let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(AuditError::NoStateDir(dir.to_path_buf()));
    }
    let audit = AuditLog::open(log).map_err(|source| AuditError::Open { path: log.to_path_buf(), source })?;
    if audit.next_seq() > 0 {
        return Err(AuditError::FirstKeyErased {
            log: log.to_path_buf(),
            records: audit.next_seq(),
            key_file: keys.path().to_path_buf(),
        });
    }
    let fingerprint = audit.chain.key.fingerprint();
    keyfile::write_auditor_key(out, &audit.chain.key)?;
    keys.mark_exported(&fingerprint)?;
    Ok(fingerprint)
}

#[cfg(test)]
mod tests;
