//! Where the doors' consumption records live: one store per key fingerprint or sequence-file
//! label, opened through [`LedgerStores`]. The running daemon's doors hold each store as a
//! `Box<dyn ConsumeStore>` and consume through it before anything opens, so another store (a
//! replicated one for an HA pair) replaces [`FileLedgers`] here without touching the matcher or
//! the daemon loop (docs/ARCHITECTURE.md, "The ledger seam").

use std::path::{Path, PathBuf};

use knock_core::ledger::{ConsumeStore, Ledger, LedgerError, WriterLock};

/// Opens the consumption store of a key or sequence file.
pub trait LedgerStores {
    /// The store of `label` (a key's fingerprint, `file-<sha256>`). A missing store is an error,
    /// never a fresh start: a lost ledger could make used sequences valid again.
    fn open(&self, label: &str) -> Result<Box<dyn ConsumeStore>, LedgerError>;
    /// Creates the empty store of a new key or sequence file; fails if it exists.
    fn create(&self, label: &str) -> Result<(), LedgerError>;
    /// Where the store of `label` is, for messages.
    fn describe(&self, label: &str) -> PathBuf;
}

/// The ledger files of a state directory (`ledger/<label>.ledger`).
#[derive(Debug)]
pub struct FileLedgers<'a> {
    dir: PathBuf,
    /// The writer's lock: ledgers open to write; without it, read-only.
    writer: Option<&'a WriterLock>,
}

impl<'a> FileLedgers<'a> {
    /// Ledgers in `dir` opened to write, for the holder of the writer's lock (the daemon).
    pub fn writable(dir: &Path, lock: &'a WriterLock) -> FileLedgers<'a> {
        FileLedgers { dir: dir.to_path_buf(), writer: Some(lock) }
    }

    /// Ledgers in `dir` opened to read only (`knockd status`: the daemon may be appending).
    pub fn read_only(dir: &Path) -> FileLedgers<'static> {
        FileLedgers { dir: dir.to_path_buf(), writer: None }
    }
}

impl LedgerStores for FileLedgers<'_> {
    fn open(&self, label: &str) -> Result<Box<dyn ConsumeStore>, LedgerError> {
        let path = Ledger::path_for(&self.dir, label);
        Ok(Box::new(match self.writer {
            Some(lock) => Ledger::open(&path, label, lock)?,
            None => Ledger::read(&path, label)?,
        }))
    }

    fn create(&self, label: &str) -> Result<(), LedgerError> {
        Ledger::create(&Ledger::path_for(&self.dir, label), label).map(drop)
    }

    fn describe(&self, label: &str) -> PathBuf {
        Ledger::path_for(&self.dir, label)
    }
}
