//! The doors' own files, which the admin keeps beside the configuration: each client's key
//! (`<keys>/<client>.key`), a file door's sequence file and, during a rotation, its incoming
//! file (`<sequence_file>.next`). Like keys, sequence files are refused when group or others may
//! read them.

use std::path::{Path, PathBuf};

use knock_core::keys::{read_private_file, KeyError};
use knock_core::seqfile::{SeqFileError, SequenceFile};

/// What a sequence file is called in errors (as a key file is: the same private-file check).
const SEQUENCE_FILE: &str = "sequence file";
/// The largest sequence file read (a million sequences of 16 knocks fit).
const MAX_SEQUENCE_FILE: u64 = 256 << 20;

/// Why a sequence file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SequenceFileError {
    /// Unreadable, or open to group or others.
    #[error(transparent)]
    Private(#[from] KeyError),
    /// Not a sequence file (names the line and column).
    #[error(transparent)]
    Syntax(#[from] SeqFileError),
}

/// A rotation that did not complete: the renames of [`promote_incoming`].
#[derive(Debug, thiserror::Error)]
#[error("rotating {path}: {source}")]
pub struct RotateError {
    /// The door's sequence file.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

/// The key file of `client` on a door with keys in `dir`.
pub fn key_path(dir: &Path, client: &str) -> PathBuf {
    dir.join(format!("{client}.key"))
}

/// The key files (`*.key`) in a door's keys directory, sorted by name.
pub fn key_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Reads a door's sequence file, refused like a key file when group or others may read it.
pub fn load_sequence_file(path: &Path) -> Result<SequenceFile, SequenceFileError> {
    let bytes = read_private_file(path, SEQUENCE_FILE, MAX_SEQUENCE_FILE)?;
    Ok(SequenceFile::parse(path, &bytes)?)
}

/// Where `knockd sequences rotate` puts the incoming sequence file of a door.
pub fn incoming_path(sequence_file: &Path) -> PathBuf {
    let mut name = sequence_file.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

/// Completes a rotation: the current file is kept as `<sequence_file>.old-<sha>` (`old_sha`: the
/// first hex digits of its hash; its ledger stays), the incoming file becomes the sequence file,
/// and the renames are synced.
pub fn promote_incoming(path: &Path, old_sha: &str) -> Result<(), RotateError> {
    let err = |source| RotateError { path: path.to_path_buf(), source };
    let kept = PathBuf::from(format!("{}.old-{old_sha}", path.display()));
    std::fs::rename(path, &kept).map_err(err)?;
    std::fs::rename(incoming_path(path), path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

/// When `path` was last modified, in unix milliseconds (0 when unknown).
pub fn modified_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
