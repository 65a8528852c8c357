//! Replacing a small file so that a crash at any moment leaves either the old contents or the
//! new, never a mix or nothing: a private temporary file beside it (`<name>.tmp`, mode 0600,
//! created fresh), written and fsync'd, renamed over the file, and the directory fsync'd so the
//! rename itself survives a power cut. Journals of the daemon (pending stop commands, manual
//! grants), the audit chain's key file and the client's counters are all written this way.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Which step of [`replace_file`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the temporary file (or removing a stale one).
    Create,
    /// Writing and syncing it.
    Write,
    /// Renaming it over the file.
    Replace,
    /// Syncing the directory after the rename.
    SyncDir,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Create => "create",
            Step::Write => "write",
            Step::Replace => "replace",
            Step::SyncDir => "sync the directory of",
        })
    }
}

/// A replacement that did not complete: the step and the file it was at (the temporary file
/// for [`Step::Create`] and [`Step::Write`], the file itself afterwards).
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot {step} it: {source}")]
pub struct ReplaceError {
    /// What failed.
    pub step: Step,
    /// The file it failed on.
    pub path: PathBuf,
    /// The error.
    pub source: io::Error,
}

/// The temporary file [`replace_file`] writes before renaming it over `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

fn fail(step: Step, path: &Path) -> impl FnOnce(io::Error) -> ReplaceError + '_ {
    move |source| ReplaceError { step, path: path.to_path_buf(), source }
}

/// Replaces `path` with `data` durably (see the module doc).
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), ReplaceError> {
    replace_file_with(path, data, |_| Ok(()))
}

/// [`replace_file`], calling `prepare` on the new file before anything is written into it (the
/// daemon gives it the owner of the file it replaces).
pub fn replace_file_with(
    path: &Path,
    data: &[u8],
    prepare: impl FnOnce(&File) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    let tmp = temp_path(path);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(Step::Create, &tmp)(e)),
        _ => {}
    }
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(fail(Step::Create, &tmp))?;
    prepare(&f).map_err(fail(Step::Create, &tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(fail(Step::Write, &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(fail(Step::Replace, path))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(fail(Step::SyncDir, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_private_and_over_a_stale_temporary_file() {
        let dir = std::env::temp_dir().join(format!("knock-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal");
        std::fs::write(&path, "old\n").unwrap();
        // A crash left a temporary file that others may read: it is not reused as it is.
        std::fs::write(temp_path(&path), "stale").unwrap();
        std::fs::set_permissions(temp_path(&path), std::fs::Permissions::from_mode(0o644)).unwrap();
        replace_file(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!temp_path(&path).exists());
        let e = replace_file(&dir.join("missing/journal"), b"x").unwrap_err();
        assert_eq!(e.step, Step::Create);
        assert!(e.to_string().contains("missing/journal.tmp: cannot create it"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
