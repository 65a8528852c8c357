//! Everything knockd keeps on disk, in one part that uses neither the runtime nor the command
//! line (docs/ARCHITECTURE.md). The state directory itself ([`StateDir`]): the random server
//! id, the ledgers ([`ledgers`]), the audit log ([`audit`]), the journals of manual grants
//! ([`manual_grants`]) and pending stop commands ([`pending_stops`]); and beside the
//! configuration, the doors' key and sequence files ([`door_files`]) and knockd's one-time
//! sequence files ([`legacy_onetime`]). Files an admin command run as root creates go to the
//! daemon's account ([`handover`]).
//!
//! Layout: `server-id` (32 hex digits, made once by `knockd init`), `ledger/<label>.ledger`
//! (one per key fingerprint or sequence-file hash), `audit.log` and its companions (docs/AUDIT.md),
//! `manual-grants`, `pending-stops`. The directory is 0700.

pub mod audit;
pub mod door_files;
pub mod handover;
pub mod ledger_backend;
pub mod ledgers;
pub mod legacy_onetime;
pub mod manual_grants;
pub mod pending_stops;
pub mod shared_ledgers;

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use knock_core::durable::ReplaceError;
use knock_core::keys::{hex, unhex, write_private_file};
use knock_core::sequence::SERVER_ID_LEN;
use rand::TryRngCore;

/// Paths inside a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// State-directory errors, naming the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not initialised.
    #[error("{0} has no server id; run `knockd init` once to create the state directory")]
    NotInitialised(PathBuf),
    /// Already initialised.
    #[error("{0} already holds a server id; refusing to replace it (every client profile carries it)")]
    AlreadyInitialised(PathBuf),
    /// Malformed server id.
    #[error("{0}: not a server id (expected 32 hex digits)")]
    BadServerId(PathBuf),
    /// Too open.
    #[error("state directory {path} is accessible by group or others (mode {mode:04o}); fix: chmod 700 {path}")]
    TooOpen {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// No room left for a knock's records.
    #[error(
        "state directory {path} is full ({free} bytes free, {needed} needed): knocks fail closed until space is \
         freed there (always_allow and console grants still work)"
    )]
    Full {
        /// The directory.
        path: PathBuf,
        /// Bytes free.
        free: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Below this many free bytes the state directory counts as full: a knock's consumption and
/// audit record could not be made durable (or would eat the last blocks), so knocks fail closed.
pub const MIN_FREE_BYTES: u64 = 16 * 1024;

/// The one durable write of the state part: [`knock_core::durable::replace_file`], the new file
/// given the owner of the one it replaces (a file the daemon's account owns stays its own when
/// root writes it beside the daemon, as `knockd grant` does).
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), ReplaceError> {
    knock_core::durable::replace_file_with(path, data, |f| handover::keep_owner(f, path))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: &Path) -> Self {
        StateDir { root: root.to_path_buf() }
    }

    /// Where the ledgers live.
    pub fn ledger_dir(&self) -> PathBuf {
        self.root.join("ledger")
    }

    /// The audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit.log")
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the directory has room for a knock's records ([`StateError::Full`] below
    /// [`MIN_FREE_BYTES`]). When the space cannot be queried, the writes themselves will tell.
    pub fn room(&self) -> Result<(), StateError> {
        match crate::hardening::free_bytes(&self.root) {
            Ok(free) if free < MIN_FREE_BYTES => {
                Err(StateError::Full { path: self.root.clone(), free, needed: MIN_FREE_BYTES })
            }
            _ => Ok(()),
        }
    }

    fn server_id_path(&self) -> PathBuf {
        self.root.join("server-id")
    }

    /// Creates the directory (0700) and a fresh random server id.
    pub fn init(&self) -> Result<[u8; SERVER_ID_LEN], StateError> {
        for dir in [self.root.clone(), self.ledger_dir()] {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir))?;
        }
        let path = self.server_id_path();
        if path.exists() {
            return Err(StateError::AlreadyInitialised(path));
        }
        let mut id = [0u8; SERVER_ID_LEN];
        rand::rngs::OsRng
            .try_fill_bytes(&mut id)
            .map_err(|e| StateError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
        write_private_file(&path, format!("{}\n", hex(&id)).as_bytes()).map_err(io(&path))?;
        Ok(id)
    }

    /// The server id when `needed`; otherwise (a knockd.conf whose doors derive nothing) the
    /// directory is created if missing and an all-zero id stands in, so knockd's users need no
    /// `knockd init` to switch.
    pub fn server_id_if(&self, needed: bool) -> Result<[u8; SERVER_ID_LEN], StateError> {
        if needed {
            return self.server_id();
        }
        for dir in [self.root.clone(), self.ledger_dir()] {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir))?;
        }
        Ok(self.server_id().unwrap_or([0; SERVER_ID_LEN]))
    }

    /// Reads the server id, checking the directory is private.
    pub fn server_id(&self) -> Result<[u8; SERVER_ID_LEN], StateError> {
        let meta = std::fs::metadata(&self.root).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StateError::NotInitialised(self.root.clone()),
            _ => StateError::Io { path: self.root.clone(), source: e },
        })?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StateError::TooOpen { path: self.root.clone(), mode });
        }
        let path = self.server_id_path();
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StateError::NotInitialised(self.root.clone()),
            _ => StateError::Io { path: path.clone(), source: e },
        })?;
        unhex(text.trim()).ok_or(StateError::BadServerId(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_once_then_read_back() {
        let d = std::env::temp_dir().join(format!("knockd-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let s = StateDir::new(&d);
        assert!(matches!(s.server_id(), Err(StateError::NotInitialised(_))));
        let id = s.init().unwrap();
        assert_eq!(s.server_id().unwrap(), id);
        assert!(matches!(s.init(), Err(StateError::AlreadyInitialised(_))));
        let other = StateDir::new(&d.join("x"));
        let _ = other.init().unwrap();
        assert_ne!(other.server_id().unwrap(), id, "ids are random");
    }
}
