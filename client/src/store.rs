//! Where the client keeps things: profiles in the config directory, keys and sequence lists in
//! its keyring (0700 directory, 0600 files), and counters in the state directory, reserved
//! under a file lock and synced before any knock is sent, so a crash never reuses one.
//!
//! Directories follow the `directories` crate (`~/.config/knock`, `~/.local/state/knock` on
//! Linux, honouring `XDG_CONFIG_HOME` and `XDG_STATE_HOME`).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_core::config::valid_name;
use knock_core::keys::{read_key_file, write_key_file, write_private_file, Secret};
use knock_core::profile::{Bundle, BundleSecret, Profile};
use knock_core::seqfile::SequenceFile;

use crate::exit::Failure;

/// An I/O error on `path`, named.
fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Failure + '_ {
    move |e| Failure::Io(format!("{}: {e}", path.display()))
}

/// The client's directories.
#[derive(Debug, Clone)]
pub struct Store {
    config: PathBuf,
    state: PathBuf,
}

impl Store {
    /// The default directories for this user.
    pub fn locate() -> Result<Store, Failure> {
        let dirs = directories::ProjectDirs::from("", "", "knock").ok_or_else(|| {
            Failure::Failed("cannot find a home directory for the profile store; set HOME or XDG_CONFIG_HOME".into())
        })?;
        let state = dirs.state_dir().map_or_else(|| dirs.data_local_dir().join("state"), Path::to_path_buf);
        Ok(Store { config: dirs.config_dir().to_path_buf(), state })
    }

    fn profiles(&self) -> PathBuf {
        self.config.join("profiles")
    }

    fn keyring(&self) -> PathBuf {
        self.config.join("keyring")
    }

    /// A profile's file.
    pub fn profile_path(&self, name: &str) -> PathBuf {
        self.profiles().join(format!("{name}.toml"))
    }

    /// A profile's key file (hotp and totp profiles).
    pub fn key_path(&self, name: &str) -> PathBuf {
        self.keyring().join(format!("{name}.key"))
    }

    /// A profile's sequence list (file profiles).
    pub fn seq_path(&self, name: &str) -> PathBuf {
        self.keyring().join(format!("{name}.seq"))
    }

    fn counter_path(&self, name: &str) -> PathBuf {
        self.state.join(format!("{name}.next"))
    }

    /// Checks a profile name from the command line before it becomes part of a path.
    fn checked(name: &str) -> Result<&str, Failure> {
        if valid_name(name) {
            Ok(name)
        } else {
            Err(Failure::Usage(format!(
                "`{name}` is not a profile name (1-64 characters of a-z, 0-9, _ or -); `knock profile list` shows them"
            )))
        }
    }

    /// Loads a profile by name.
    pub fn profile(&self, name: &str) -> Result<Profile, Failure> {
        let path = self.profile_path(Self::checked(name)?);
        if !path.exists() {
            return Err(Failure::Usage(format!(
                "no profile `{name}` ({} does not exist); import one with `knock profile import FILE`",
                path.display()
            )));
        }
        Profile::load(&path).map_err(|e| Failure::Config(e.to_string()))
    }

    /// The names of the installed profiles, sorted (files in the profile directory whose stem
    /// is a valid name; none when the directory does not exist yet).
    pub fn names(&self) -> Result<Vec<String>, Failure> {
        let dir = self.profiles();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The key of a hotp profile (refused unless private).
    pub fn key(&self, name: &str) -> Result<Secret, Failure> {
        Ok(read_key_file(&self.key_path(name))?)
    }

    /// The sequence list of a file profile (refused unless private).
    pub fn sequences(&self, name: &str) -> Result<SequenceFile, Failure> {
        let path = self.seq_path(name);
        let mode = std::fs::metadata(&path).map_err(io_err(&path))?.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Failure::Permission(format!(
                "sequence list {} is accessible by group or others (mode {mode:04o}); fix: chmod 600 {}",
                path.display(),
                path.display()
            )));
        }
        SequenceFile::load(&path).map_err(|e| Failure::Data(e.to_string()))
    }

    /// Deletes a profile, its key or sequence list, and its counter. Returns what was removed.
    pub fn remove(&self, name: &str) -> Result<Vec<PathBuf>, Failure> {
        let profile = self.profile_path(Self::checked(name)?);
        if !profile.exists() {
            return Err(Failure::Usage(format!(
                "no profile `{name}` ({} does not exist); `knock profile list` shows them",
                profile.display()
            )));
        }
        let mut removed = Vec::new();
        for path in [
            profile,
            self.key_path(name),
            self.seq_path(name),
            self.keyring().join(format!("{name}.seq.tmp")),
            self.counter_path(name),
            self.state.join(format!("{name}.next.tmp")),
            self.state.join(format!("{name}.lock")),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(removed)
    }

    /// Installs a bundle: profile, secret (0600), and a fresh counter. Refuses to overwrite.
    pub fn import(&self, bundle: &Bundle) -> Result<String, Failure> {
        for dir in [self.profiles(), self.keyring(), self.state.clone()] {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err(&dir))?;
        }
        let name = &bundle.profile.name;
        let ppath = self.profile_path(name);
        if ppath.exists() {
            return self.rotate(bundle);
        }
        match &bundle.secret {
            BundleSecret::Key(k) => write_key_file(&self.key_path(name), k)?,
            BundleSecret::Sequences(s) => {
                let p = self.seq_path(name);
                write_private_file(&p, s.as_bytes()).map_err(io_err(&p))?
            }
        }
        let cpath = self.counter_path(name);
        if cpath.exists() {
            std::fs::remove_file(&cpath).map_err(io_err(&cpath))?;
        }
        write_private_file(&ppath, bundle.profile.to_toml().as_bytes()).map_err(io_err(&ppath))?;
        Ok(format!("profile `{name}` imported: knock with `knock --profile {name}`"))
    }

    /// Installs a new sequence list for an existing `file` profile of the same server and door
    /// (the server's `knockd sequences rotate`): the list is replaced and the cursor starts over.
    fn rotate(&self, bundle: &Bundle) -> Result<String, Failure> {
        let name = &bundle.profile.name;
        let old = self.profile(name)?;
        let same = old.server_id == bundle.profile.server_id && old.door == bundle.profile.door;
        let BundleSecret::Sequences(list) = &bundle.secret else {
            return Err(Failure::Failed(format!(
                "profile `{name}` exists ({}); remove it first (`knock profile remove {name}`) to replace it",
                self.profile_path(name).display()
            )));
        };
        if !same || old.mode != knock_core::sequence::Mode::File {
            return Err(Failure::Failed(format!(
                "profile `{name}` exists for another server or door; remove it first (`knock profile remove {name}`) \
                 to replace it"
            )));
        }
        let path = self.seq_path(name);
        let tmp = self.keyring().join(format!("{name}.seq.tmp"));
        let _ = std::fs::remove_file(&tmp);
        write_private_file(&tmp, list.as_bytes()).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let cursor = self.counter_path(name);
        if cursor.exists() {
            std::fs::remove_file(&cursor).map_err(io_err(&cursor))?;
        }
        Ok(format!("profile `{name}`: new sequence list installed; the next knock uses its first line"))
    }

    /// Reserves the next counter of a profile: under an exclusive lock (`NAME.lock`), reads
    /// `NAME.next`, writes the successor to a temporary file, syncs it and renames it over, then
    /// syncs the directory, all before returning. Two knocks never share a counter, and a crash
    /// at any point leaves either the old or the new value, never an empty one.
    pub fn reserve_counter(&self, name: &str) -> Result<u64, Failure> {
        self.reserve_with(name, |stored| stored)
    }

    /// Under the profile's lock: picks a value from the stored next one, stores its successor
    /// durably, and returns it.
    fn reserve_with(&self, name: &str, pick: impl Fn(u64) -> u64) -> Result<u64, Failure> {
        let path = self.counter_path(name);
        let err = |e: std::io::Error| Failure::Io(format!("counter {}: {e}", path.display()));
        DirBuilder::new().recursive(true).mode(0o700).create(&self.state).map_err(io_err(&self.state))?;
        let lock_path = self.state.join(format!("{name}.lock"));
        let lock =
            OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path).map_err(err)?;
        lock.lock().map_err(err)?;
        let next = pick(self.peek_counter(name)?);
        let tmp = self.state.join(format!("{name}.next.tmp"));
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
        f.write_all(format!("{}\n", next + 1).as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        File::open(&self.state).and_then(|d| d.sync_all()).map_err(err)?;
        drop(lock);
        Ok(next)
    }

    /// Reserves a `totp` time step: the current one, or the next not yet used by this profile
    /// (each step is usable once). Returns the step; the caller waits for it when it lies ahead.
    pub fn reserve_step(&self, name: &str, current: u64) -> Result<u64, Failure> {
        self.reserve_with(name, |stored| current.max(stored))
    }

    /// The next counter without reserving it (for `--dry-run`).
    pub fn peek_counter(&self, name: &str) -> Result<u64, Failure> {
        let path = self.counter_path(name);
        match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().is_empty() => Ok(0),
            Ok(t) => t.trim().parse().map_err(|_| {
                Failure::Data(format!(
                    "counter of `{name}` ({}) is damaged: it must hold the next counter, a number",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}
