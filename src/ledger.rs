//! The ledger: what each key (or sequence file) has consumed, made durable before any grant.
//!
//! One append-only file per key fingerprint or sequence-file hash. Each record is one line,
//! `<kind> <counter> <unix_ms> <check>`, where `check` is the first 8 hex digits of SHA-256 of
//! the file's label and everything before it on the line; each append is followed by
//! `fdatasync`, so a record that returned is on disk, except a use whose [`PendingSync`] the
//! caller runs itself ([`ConsumeStore::consume_pending`]). `consume N` consumes every counter <= N;
//! `burn N` burns N alone. Loading replays the records; a torn last line (a crash mid-append)
//! is cut off with a warning, a bad line anywhere else is corruption and refuses the ledger.
//!
//! Only the holder of the directory's [`WriterLock`] opens ledgers for writing ([`Ledger::open`]
//! needs it): the running daemon, or `knockd ledger recover` while the daemon is stopped. It
//! alone may cut a torn tail, since for anyone else a tail that looks torn may be an append in
//! flight. Everyone else reads with [`Ledger::read`], which never writes.
//!
//! The consume-before-grant step sits behind [`ConsumeStore`]: the daemon's doors hold one store
//! per key or sequence file as a `Box<dyn ConsumeStore>` (docs/ARCHITECTURE.md, "The ledger
//! seam"), so a replicated store can serve an HA pair later without touching the matcher or the
//! daemon loop.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::counters::Counters;
use crate::keys::hex;
use crate::time::unix_now_ms;

const HEADER: &str = "one-time-knock-ledger-v1";

/// Whether a consumption was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumed {
    /// The counter was unused and is now consumed, durably.
    Fresh,
    /// The counter was already consumed or burned: a replay.
    AlreadyUsed,
}

/// The consume-before-grant interface: what one key (or sequence file) has used. Every change
/// that returns `Ok` is durable; a store that cannot make it durable returns an error and the
/// knock opens nothing.
pub trait ConsumeStore: std::fmt::Debug {
    /// Whether `counter` is consumed or burned.
    fn is_used(&self, counter: u64) -> bool;
    /// Consumes every counter <= `counter`, durably, unless `counter` was already used.
    fn consume(&mut self, counter: u64) -> Result<Consumed, LedgerError>;
    /// Marks `counter` used alone, durably (a `totp` time step: a used *set*, not a high-water
    /// mark, so a lost knock can be retried in the next step and a clock jump locks nobody out).
    fn mark_used(&mut self, counter: u64) -> Result<Consumed, LedgerError>;
    /// [`ConsumeStore::consume`] (or, with `alone`, [`ConsumeStore::mark_used`]) whose record may
    /// still need a [`PendingSync`] to be durable: the caller runs it while it writes its own
    /// durable record of this use, and acts only once both are done (the daemon's grant,
    /// docs/ARCHITECTURE.md, "Two durable writes at once"). A store whose writes are durable
    /// when they return (a replicated one) returns no `PendingSync`, which the default does.
    fn consume_pending(&mut self, counter: u64, alone: bool) -> Result<(Consumed, Option<PendingSync>), LedgerError> {
        let consumed = if alone { self.mark_used(counter)? } else { self.consume(counter)? };
        Ok((consumed, None))
    }
    /// Burns `counter` alone, durably. Returns false when it was already used.
    fn burn(&mut self, counter: u64) -> Result<bool, LedgerError>;
    /// Burns `counter` in this process only, writing nothing: for burns past a client's budget,
    /// which only a holder of its key can cause (the daemon bounds what a key holder can make
    /// the store grow by). A restart forgets it. Returns false when it was already used.
    fn burn_in_memory(&mut self, counter: u64) -> bool;
    /// The lowest counter not consumed (burned ones above it may exist).
    fn next(&self) -> u64;
    /// Where the records are kept, for messages (a ledger's file, a shared ledger's key).
    fn location(&self) -> &Path;
    /// Skips ahead: consumes everything below `next`, never going back (`ledger recover`).
    fn skip_to(&mut self, next: u64) -> Result<(), LedgerError>;
    /// What the store says about its last write, for the audit record of the grant that
    /// follows it: a replicated store's revision (`None` for files).
    fn receipt(&self) -> Option<u64> {
        None
    }
    /// Reads a shared store again, so the candidates follow what other nodes used; true when
    /// it changed. Files are only written here: nothing to do.
    fn refresh(&mut self) -> Result<bool, LedgerError> {
        Ok(false)
    }
    /// Everything the store knows is used.
    fn counters(&self) -> Counters;
}

/// The `fdatasync` still owed to a record a store wrote ([`ConsumeStore::consume_pending`]): it
/// holds its own handle of the file, so it can run on another thread while the caller writes.
/// Until it has run, the record may be lost in a crash (the caller must not act on it before).
#[derive(Debug)]
pub struct PendingSync {
    file: File,
    path: PathBuf,
}

impl PendingSync {
    /// Makes the record durable.
    pub fn run(self) -> Result<(), LedgerError> {
        self.file.sync_data().map_err(|source| LedgerError::Io { path: self.path, source })
    }
}

/// What can go wrong with a ledger file. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// No ledger for a key in use: refuse rather than start from zero.
    #[error(
        "ledger {0} is missing; knocks for this key stay refused (a missing ledger could make used \
         sequences valid again). If the state was lost, run `knockd ledger recover --door DOOR`"
    )]
    Missing(PathBuf),
    /// A record before the last is damaged.
    #[error("ledger {path}:{line}: damaged record ({reason}); knocks for this key stay refused until `knockd ledger recover`")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The ledger belongs to another key or file.
    #[error("ledger {path} belongs to `{found}`, expected `{expected}`")]
    WrongLabel {
        /// The file.
        path: PathBuf,
        /// Label in the file.
        found: String,
        /// Label expected.
        expected: String,
    },
    /// Another process holds the ledgers' writer lock.
    #[error(
        "the ledgers in {dir} are held by another process (a running knockd); stop it first \
         (`systemctl stop knockd`), run this again, then start it"
    )]
    Busy {
        /// The ledger directory.
        dir: PathBuf,
    },
    /// The ledger was opened to read only.
    #[error("ledger {0} was opened read-only")]
    ReadOnly(PathBuf),
    /// A counter at the very end of the range: nothing can come after it.
    #[error("ledger {path}:{line}: counter {counter} is at the end of the counter range; refused")]
    CounterOverflow {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: not from the file).
        line: usize,
        /// The counter.
        counter: u64,
    },
    /// A shared ledger (etcd) did not answer, or answered with something that is not a ledger.
    #[error("shared ledger {location}: {reason}; knocks for this key fail closed until it answers")]
    Shared {
        /// The store and key.
        location: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An I/O error (a full or read-only disk among them): fail closed.
    #[error("ledger {path}: {source} (knocks fail closed until it can be written)")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The lock that makes one process the writer of a directory's ledgers: held for as long as
/// the value lives (an exclusive `flock` on `writer.lock` in the directory).
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    dir: PathBuf,
}

impl WriterLock {
    /// The name of the lock file in a ledger directory.
    pub const FILE: &'static str = "writer.lock";

    /// Takes the lock of `dir` (created if missing), or fails with [`LedgerError::Busy`] at once
    /// when another process holds it.
    pub fn acquire(dir: &Path) -> Result<WriterLock, LedgerError> {
        let io = |source| LedgerError::Io { path: dir.join(Self::FILE), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(Self::FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(WriterLock { _file: file, dir: dir.to_path_buf() }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::Busy { dir: dir.to_path_buf() }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// The directory it locks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The ledger of one key or sequence file.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    label: String,
    file: File,
    /// Opened by [`Ledger::read`]: nothing is ever written through it.
    read_only: bool,
    counters: Counters,
    /// Counter of the last `consume` record, if any.
    last_consumed: Option<u64>,
    /// Bytes of a torn last record cut off when opening (0: none).
    torn_bytes: usize,
}

/// Why a ledger line was not taken.
enum Bad {
    /// It never got its checksum: torn when it is the last line.
    Incomplete(&'static str),
    /// Its checksum holds, but its content is refused: damage wherever it is.
    Refused(&'static str),
}

fn check(label: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    hex(&h.finalize()[..4])
}

impl Ledger {
    /// The ledger file for `label` (a key fingerprint or `file-<sha256>`) under `dir`.
    pub fn path_for(dir: &Path, label: &str) -> PathBuf {
        dir.join(format!("{label}.ledger"))
    }

    /// A ledger with nothing consumed yet, appending to `file`.
    fn empty(path: &Path, label: &str, file: File) -> Ledger {
        Ledger {
            path: path.to_path_buf(),
            label: label.into(),
            file,
            read_only: false,
            counters: Counters::default(),
            last_consumed: None,
            torn_bytes: 0,
        }
    }

    /// Creates a new, empty ledger; fails if one exists.
    pub fn create(path: &Path, label: &str) -> Result<Ledger, LedgerError> {
        let io = |source| LedgerError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file =
            OpenOptions::new().read(true).append(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        file.write_all(format!("{HEADER} {label}\n").as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(Ledger::empty(path, label, file))
    }

    /// Opens an existing ledger to write, and replays it; a torn last record is cut off. A missing
    /// file is an error, never a fresh start. `_lock` proves the caller is the directory's writer.
    pub fn open(path: &Path, label: &str, _lock: &WriterLock) -> Result<Ledger, LedgerError> {
        let io = |source| LedgerError::Io { path: path.to_path_buf(), source };
        let mut file = match OpenOptions::new().read(true).append(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LedgerError::Missing(path.into())),
            Err(e) => return Err(io(e)),
        };
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let mut ledger = Ledger::empty(path, label, file);
        let good_len = ledger.replay(&text)?;
        if good_len < text.len() {
            // A torn last record: cut it so the next append starts on a clean line.
            ledger.torn_bytes = text.len() - good_len;
            ledger.file.set_len(good_len as u64).map_err(io)?;
            ledger.file.sync_all().map_err(io)?;
            ledger.file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(ledger)
    }

    /// Reads a ledger without writing anything, ever: a torn last record (perhaps an append in
    /// flight in the daemon) is left alone and counted in [`Ledger::torn_bytes`]. Appends
    /// through the result fail with [`LedgerError::ReadOnly`].
    pub fn read(path: &Path, label: &str) -> Result<Ledger, LedgerError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LedgerError::Missing(path.into())),
            Err(e) => return Err(LedgerError::Io { path: path.to_path_buf(), source: e }),
        };
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|source| LedgerError::Io { path: path.to_path_buf(), source })?;
        let mut ledger = Ledger::empty(path, label, file);
        ledger.read_only = true;
        let good_len = ledger.replay(&text)?;
        ledger.torn_bytes = text.len() - good_len;
        Ok(ledger)
    }

    /// Replays records; returns the length of the intact prefix of `text`.
    fn replay(&mut self, text: &str) -> Result<usize, LedgerError> {
        let path = self.path.clone();
        let corrupt =
            |line: usize, reason: &str| LedgerError::Corrupt { path: path.clone(), line, reason: reason.into() };
        let mut offset = 0;
        let mut lines = text.split_inclusive('\n').enumerate().peekable();
        let Some((_, header)) = lines.next() else { return Err(corrupt(1, "empty file, no header")) };
        let found = header.trim_end().strip_prefix(HEADER).map(str::trim);
        match found {
            Some(l) if l == self.label => {}
            Some(l) => {
                return Err(LedgerError::WrongLabel {
                    path: self.path.clone(),
                    found: l.into(),
                    expected: self.label.clone(),
                })
            }
            None => return Err(corrupt(1, "no ledger header")),
        }
        offset += header.len();
        while let Some((i, line)) = lines.next() {
            let is_last = lines.peek().is_none();
            match self.parse_record(line) {
                Ok(()) => offset += line.len(),
                // Only a record that never got its checksum (a crash mid-append) is torn; one
                // whose checksum holds but whose content is refused is damage, last or not.
                Err(Bad::Incomplete(_)) if is_last => return Ok(offset),
                Err(Bad::Incomplete(reason) | Bad::Refused(reason)) => return Err(corrupt(i + 1, reason)),
            }
        }
        Ok(offset)
    }

    fn parse_record(&mut self, line: &str) -> Result<(), Bad> {
        let body = line.strip_suffix('\n').ok_or(Bad::Incomplete("unterminated record"))?;
        let (rest, sum) = body.rsplit_once(' ').ok_or(Bad::Incomplete("no checksum"))?;
        if check(&self.label, rest) != sum {
            return Err(Bad::Incomplete("checksum mismatch"));
        }
        let mut words = rest.split(' ');
        let kind = words.next().ok_or(Bad::Refused("no kind"))?;
        let counter: u64 = words.next().and_then(|w| w.parse().ok()).ok_or(Bad::Refused("bad counter"))?;
        let _ms: u64 = words.next().and_then(|w| w.parse().ok()).ok_or(Bad::Refused("bad time"))?;
        if counter == u64::MAX {
            return Err(Bad::Refused("counter at the end of the counter range"));
        }
        match kind {
            "consume" => self.apply_consume(counter),
            "burn" | "use" => self.apply_burn(counter),
            _ => return Err(Bad::Refused("unknown record kind")),
        }
        Ok(())
    }

    fn apply_consume(&mut self, counter: u64) {
        self.counters.apply_consume(counter);
        self.last_consumed = Some(counter);
    }

    fn apply_burn(&mut self, counter: u64) {
        self.counters.apply_mark(counter);
    }

    fn append(&mut self, kind: &str, counter: u64) -> Result<(), LedgerError> {
        self.append_then(kind, counter, true)
    }

    /// Appends one record; with `sync`, `fdatasync` before returning (which makes every earlier
    /// record durable too).
    fn append_then(&mut self, kind: &str, counter: u64, sync: bool) -> Result<(), LedgerError> {
        if self.read_only {
            return Err(LedgerError::ReadOnly(self.path.clone()));
        }
        if counter == u64::MAX {
            return Err(LedgerError::CounterOverflow { path: self.path.clone(), line: 0, counter });
        }
        let rest = format!("{kind} {counter} {}", unix_now_ms());
        let line = format!("{rest} {}\n", check(&self.label, &rest));
        let io = |source| LedgerError::Io { path: self.path.clone(), source };
        let before = self.file.metadata().map_err(io)?.len();
        let written =
            self.file.write_all(line.as_bytes()).and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // Part of the record may be in the file (a full disk): cut it off, or the next record
            // would be glued to it and the ledger damaged in the middle.
            let _ = self.file.set_len(before);
            return Err(io(e));
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Burned counters at or above `next`.
    pub fn burned(&self) -> impl Iterator<Item = u64> + '_ {
        self.counters.used()
    }

    /// Bytes of a torn last record that `open` cut off (a crash mid-append); 0 when none.
    pub fn torn_bytes(&self) -> usize {
        self.torn_bytes
    }

    /// Counter of the last consume record.
    pub fn last_consumed(&self) -> Option<u64> {
        self.last_consumed
    }
}

impl ConsumeStore for Ledger {
    fn is_used(&self, counter: u64) -> bool {
        self.counters.is_used(counter)
    }

    fn consume(&mut self, counter: u64) -> Result<Consumed, LedgerError> {
        if self.is_used(counter) {
            return Ok(Consumed::AlreadyUsed);
        }
        self.append("consume", counter)?;
        self.apply_consume(counter);
        Ok(Consumed::Fresh)
    }

    fn mark_used(&mut self, counter: u64) -> Result<Consumed, LedgerError> {
        if self.is_used(counter) {
            return Ok(Consumed::AlreadyUsed);
        }
        self.append("use", counter)?;
        self.apply_burn(counter);
        Ok(Consumed::Fresh)
    }

    fn consume_pending(&mut self, counter: u64, alone: bool) -> Result<(Consumed, Option<PendingSync>), LedgerError> {
        if self.is_used(counter) {
            return Ok((Consumed::AlreadyUsed, None));
        }
        // A second handle for the sync; without one, the append syncs itself.
        let handle = self.file.try_clone().ok();
        self.append_then(if alone { "use" } else { "consume" }, counter, handle.is_none())?;
        if alone {
            self.apply_burn(counter);
        } else {
            self.apply_consume(counter);
        }
        Ok((Consumed::Fresh, handle.map(|file| PendingSync { file, path: self.path.clone() })))
    }

    fn burn(&mut self, counter: u64) -> Result<bool, LedgerError> {
        if self.is_used(counter) {
            return Ok(false);
        }
        self.append("burn", counter)?;
        self.apply_burn(counter);
        Ok(true)
    }

    fn burn_in_memory(&mut self, counter: u64) -> bool {
        if self.is_used(counter) || counter == u64::MAX {
            return false;
        }
        self.apply_burn(counter);
        true
    }

    fn next(&self) -> u64 {
        self.counters.next()
    }

    fn skip_to(&mut self, next: u64) -> Result<(), LedgerError> {
        if next > self.counters.next() {
            self.append("consume", next - 1)?;
            self.apply_consume(next - 1);
        }
        Ok(())
    }

    fn counters(&self) -> Counters {
        self.counters.clone()
    }

    fn location(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("knock-ledger-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("k.ledger")
    }

    /// The writer lock of the directory of `p` (tests hold it while they open for writing).
    fn lock(p: &Path) -> WriterLock {
        WriterLock::acquire(p.parent().unwrap()).unwrap()
    }

    /// A record line with a valid checksum, as `append` writes it.
    fn record(label: &str, kind: &str, counter: u64) -> String {
        let rest = format!("{kind} {counter} 1795611600000");
        format!("{rest} {}\n", check(label, &rest))
    }

    #[test]
    fn consumption_survives_reopen_and_replays_are_refused() {
        let p = tmp("reopen");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        assert_eq!(l.consume(3).unwrap(), Consumed::Fresh);
        assert!(l.burn(5).unwrap());
        drop(l);
        let mut l = Ledger::open(&p, "abc", &w).unwrap();
        assert_eq!(l.next(), 4);
        assert!(l.is_used(0) && l.is_used(3) && !l.is_used(4) && l.is_used(5));
        assert_eq!(l.consume(2).unwrap(), Consumed::AlreadyUsed);
        assert_eq!(l.consume(5).unwrap(), Consumed::AlreadyUsed);
        assert_eq!(l.consume(6).unwrap(), Consumed::Fresh);
        assert_eq!(l.burned().count(), 0, "burns below next are forgotten");
    }

    #[test]
    fn a_pending_use_writes_the_same_record_as_a_durable_one() {
        let p = tmp("pending");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        let (consumed, sync) = l.consume_pending(4, false).unwrap();
        assert_eq!(consumed, Consumed::Fresh);
        sync.expect("a file ledger owes a sync").run().unwrap();
        let (consumed, sync) = l.consume_pending(2, false).unwrap();
        assert!(consumed == Consumed::AlreadyUsed && sync.is_none(), "consumes everything up to 4");
        let (consumed, sync) = l.consume_pending(9, true).unwrap();
        assert_eq!(consumed, Consumed::Fresh);
        assert!(l.is_used(9) && !l.is_used(8), "alone: a used step, not a high-water mark");
        // Synced from another thread, as the daemon does.
        std::thread::spawn(move || sync.unwrap().run()).join().unwrap().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\nconsume 4 ") && text.contains("\nuse 9 "), "{text}");
        drop(l);
        let l = Ledger::open(&p, "abc", &w).unwrap();
        assert!(l.next() == 5 && l.is_used(9) && !l.is_used(8));
    }

    #[test]
    fn burns_at_the_front_move_next_past_them() {
        let p = tmp("burnfront");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        assert!(l.burn(1).unwrap());
        assert_eq!(l.next(), 0);
        assert!(l.burn(0).unwrap());
        assert_eq!(l.next(), 2, "0 and 1 are both dead");
        drop(l);
        assert_eq!(Ledger::open(&p, "abc", &w).unwrap().next(), 2, "the same after replaying the file");
    }

    #[test]
    fn used_steps_are_a_set_not_a_high_water_mark() {
        let p = tmp("steps");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        assert_eq!(l.mark_used(59_000_010).unwrap(), Consumed::Fresh);
        assert_eq!(l.mark_used(59_000_010).unwrap(), Consumed::AlreadyUsed);
        // An earlier step (a clock that jumped back) is still free.
        assert_eq!(l.mark_used(59_000_003).unwrap(), Consumed::Fresh);
        drop(l);
        let l = Ledger::open(&p, "abc", &w).unwrap();
        assert!(l.is_used(59_000_010) && l.is_used(59_000_003) && !l.is_used(59_000_004));
    }

    #[test]
    fn a_missing_ledger_is_refused_not_recreated() {
        let p = tmp("missing");
        let w = lock(&p);
        assert!(matches!(Ledger::open(&p, "abc", &w), Err(LedgerError::Missing(_))));
        assert!(!p.exists());
    }

    #[test]
    fn a_torn_last_record_is_cut_and_later_appends_work() {
        let p = tmp("torn");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        l.consume(1).unwrap();
        drop(l);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"consume 9 17").unwrap();
        drop(f);
        let mut l = Ledger::open(&p, "abc", &w).unwrap();
        assert_eq!(l.next(), 2, "the torn record did not count");
        assert_eq!(l.torn_bytes(), 12);
        l.consume(4).unwrap();
        drop(l);
        assert_eq!(Ledger::open(&p, "abc", &w).unwrap().next(), 5);
    }

    #[test]
    fn a_damaged_middle_record_or_wrong_label_is_refused() {
        let p = tmp("damaged");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        l.consume(1).unwrap();
        l.consume(2).unwrap();
        drop(l);
        let text = std::fs::read_to_string(&p).unwrap().replacen("consume 1 ", "consume 7 ", 1);
        std::fs::write(&p, text).unwrap();
        let err = Ledger::open(&p, "abc", &w).unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { line: 2, .. }), "{err}");
        assert!(matches!(Ledger::open(&p, "other", &w), Err(LedgerError::WrongLabel { .. })));
    }

    /// Issue 9, lockout 3: reading a ledger (`knockd status`, `client list`) while the daemon
    /// appends must never cut what looks like a torn tail: it may be an append in flight.
    #[test]
    fn regression_9_reading_never_writes_not_even_a_torn_tail() {
        let p = tmp("readonly");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        l.consume(1).unwrap();
        drop(l);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"consume 9 17").unwrap(); // half of an append
        drop(f);
        let before = std::fs::read(&p).unwrap();
        let mut r = Ledger::read(&p, "abc").unwrap();
        assert_eq!((r.next(), r.torn_bytes()), (2, 12));
        assert_eq!(std::fs::read(&p).unwrap(), before, "a reader changed the file");
        assert!(matches!(r.consume(5), Err(LedgerError::ReadOnly(_))));
        assert!(matches!(r.burn(5), Err(LedgerError::ReadOnly(_))));
        assert_eq!(std::fs::read(&p).unwrap(), before);
        // The writer, holding the lock, is the one that repairs.
        assert_eq!(Ledger::open(&p, "abc", &w).unwrap().torn_bytes(), 12);
        assert_ne!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn one_writer_at_a_time() {
        let p = tmp("writer");
        let w = lock(&p);
        let busy = WriterLock::acquire(p.parent().unwrap()).unwrap_err();
        assert!(matches!(busy, LedgerError::Busy { .. }), "{busy}");
        assert!(busy.to_string().contains("stop it first"), "{busy}");
        drop(w);
        WriterLock::acquire(p.parent().unwrap()).expect("free again once the holder is gone");
    }

    /// Issue 9, finding 11: a burn at counter u64::MAX used to overflow `next` (a panic in
    /// debug; in release `next` wrapped to 0 and every consumed counter was fresh again).
    #[test]
    fn regression_9_the_last_counter_is_refused_everywhere() {
        let p = tmp("overflow");
        let w = lock(&p);
        let mut l = Ledger::create(&p, "abc").unwrap();
        assert!(matches!(l.burn(u64::MAX), Err(LedgerError::CounterOverflow { .. })));
        assert!(matches!(l.consume(u64::MAX), Err(LedgerError::CounterOverflow { .. })));
        assert!(matches!(l.mark_used(u64::MAX), Err(LedgerError::CounterOverflow { .. })));
        assert!(!l.burn_in_memory(u64::MAX));
        l.consume(u64::MAX - 2).unwrap();
        assert!(l.burn(u64::MAX - 1).unwrap());
        assert_eq!(l.next(), u64::MAX, "next stops at the end, never wraps");
        assert!(l.is_used(0) && l.is_used(u64::MAX - 1));
        drop(l);
        // A record of it written by hand (valid checksum) is damage, even as the last line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(record("abc", "burn", u64::MAX).as_bytes()).unwrap();
        drop(f);
        let err = Ledger::open(&p, "abc", &w).unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { line: 4, .. }), "{err}");
        assert!(matches!(Ledger::read(&p, "abc"), Err(LedgerError::Corrupt { .. })));
    }
}
