//! Files an admin command run as root creates for the daemon are handed to the daemon's own
//! account: the owner of the state directory (user `knockd` under the package's systemd unit,
//! docs/OPERATIONS.md "The package"). The daemon runs as that user, and keys and sequence files
//! must stay private (0600, the daemon refuses anything else), so they must be its own.
//!
//! What is handed over: entries owned by root in the state directory (its whole tree), in each
//! door's key directory, and each file door's sequence file and incoming file; a door's key or
//! sequence directory itself only when it lies below the configuration file's directory (never
//! that directory or one above it, which hold the configuration). Nothing else changes owner.
//!
//! The daemon's account owns the state directory, so it could try to point root at other files
//! during the walk: nothing here follows a symbolic link, anything with more than one hard link
//! is left alone, and directories are walked through descriptors opened here (`/proc/self/fd`),
//! so swapping a directory for a link meanwhile leads nowhere.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_core::config::Config;

/// Levels below the state directory that are walked (it holds `ledger/` and audit archives).
const MAX_DEPTH: usize = 4;

/// The account files are handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What a hand-over did: paths handed over, and warnings for what it could not do.
#[derive(Debug, Default)]
pub struct Report {
    pub handed: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// After an admin command run as root: hands what it created to the owner of the state
/// directory, when that is another account. Nothing to do otherwise (`None`).
pub fn after_admin_command(config: &Config) -> Option<Report> {
    if crate::hardening::effective_uid() != 0 {
        return None;
    }
    let meta = std::fs::metadata(&config.server.state_dir).ok()?;
    let owner = Owner { uid: meta.uid(), gid: meta.gid() };
    (owner.uid != 0).then(|| hand_over(config, owner))
}

/// For a file written as root that will replace `replaced` (write, then rename): gives `new` the
/// owner of the file it replaces, so a file the daemon's account owns stays its own at every
/// moment (the daemon may read it while `knockd grant` runs beside it). Nothing when not root,
/// or when `replaced` is missing, root's own, or a link.
pub fn keep_owner(new: &File, replaced: &Path) -> std::io::Result<()> {
    if crate::hardening::effective_uid() != 0 {
        return Ok(());
    }
    match std::fs::symlink_metadata(replaced) {
        Ok(meta) if meta.is_file() && meta.uid() != 0 => {
            std::os::unix::fs::fchown(new, Some(meta.uid()), Some(meta.gid()))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Hands root's files of the state directory, key directories and sequence files to `owner`.
pub fn hand_over(config: &Config, owner: Owner) -> Report {
    let mut report = Report::default();
    let config_dir = config.path.parent().unwrap_or(Path::new("/"));
    walk(&config.server.state_dir, owner, MAX_DEPTH, &mut report);
    for d in &config.doors {
        if let Some(dir) = &d.keys_dir {
            let below = strictly_below(dir, config_dir);
            if below {
                hand_dir_itself(dir, owner, &mut report);
            }
            walk(dir, owner, 0, &mut report);
        }
        if let Some(file) = &d.sequence_file {
            if let Some(dir) = file.parent().filter(|dir| strictly_below(dir, config_dir)) {
                hand_dir_itself(dir, owner, &mut report);
            }
            for path in [file.clone(), super::door_files::incoming_path(file)] {
                if let Ok(f) = open_no_follow(&path) {
                    hand(&f, &path, owner, &mut report);
                }
            }
        }
    }
    report
}

/// Whether `dir` lies below `base` (not `base` itself, nor above it), by their components.
fn strictly_below(dir: &Path, base: &Path) -> bool {
    let (dir, base) = (std::path::absolute(dir), std::path::absolute(base));
    match (dir, base) {
        (Ok(dir), Ok(base)) => {
            dir != base && dir.starts_with(&base) && !dir.components().any(|c| c.as_os_str() == "..")
        }
        _ => false,
    }
}

/// Hands the directory `dir` itself (not its entries).
fn hand_dir_itself(dir: &Path, owner: Owner, report: &mut Report) {
    if let Ok(f) = open_no_follow(dir) {
        hand(&f, dir, owner, report);
    }
}

/// Hands `dir`'s entries owned by root, and those of its subdirectories down to `depth` more
/// levels. A missing directory is nothing to do.
fn walk(dir: &Path, owner: Owner, depth: usize, report: &mut Report) {
    let Ok(f) = File::open(dir) else { return };
    walk_open(&f, dir, owner, depth, report);
}

fn walk_open(dir: &File, shown: &Path, owner: Owner, depth: usize, report: &mut Report) {
    use std::os::fd::AsRawFd;
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let entries = match std::fs::read_dir(&by_fd) {
        Ok(entries) => entries,
        Err(e) => return report.warnings.push(format!("{}: {e}", shown.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(f) = open_no_follow(&by_fd.join(&name)) else { continue };
        let Ok(meta) = f.metadata() else { continue };
        let path = shown.join(&name);
        hand(&f, &path, owner, report);
        if meta.is_dir() && depth > 0 {
            walk_open(&f, &path, owner, depth - 1, report);
        }
    }
}

/// Opens a path without following a link in its last component (links, sockets: an error).
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

/// Hands one opened file or directory to `owner` when root owns it and it has one name only.
fn hand(f: &File, path: &Path, owner: Owner, report: &mut Report) {
    let Ok(meta) = f.metadata() else { return };
    if meta.uid() != 0 || !(meta.is_file() || meta.is_dir()) {
        return;
    }
    if meta.is_file() && meta.nlink() > 1 {
        report.warnings.push(format!(
            "{} has {} hard links: left owned by root (the daemon cannot read it); give it one name, then \
             chown it",
            path.display(),
            meta.nlink()
        ));
        return;
    }
    match std::os::unix::fs::fchown(f, Some(owner.uid), Some(owner.gid)) {
        Ok(()) => report.handed.push(path.to_path_buf()),
        Err(e) => report.warnings.push(format!("{}: chown to uid {}: {e}", path.display(), owner.uid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_means_strictly_below() {
        let base = Path::new("/etc/knockd");
        assert!(strictly_below(Path::new("/etc/knockd/keys/ssh"), base));
        assert!(!strictly_below(Path::new("/etc/knockd"), base));
        assert!(!strictly_below(Path::new("/etc"), base));
        assert!(!strictly_below(Path::new("/etc/knockd-other"), base));
        assert!(!strictly_below(Path::new("/etc/knockd/keys/../.."), base));
    }
}
