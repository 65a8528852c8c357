//! Where the client keeps things: profiles in the config directory, keys and sequence lists in
//! its keyring (0700 directory, 0600 files), and counters in the state directory, reserved
//! under a file lock and synced before any knock is sent, so a crash never reuses one.
//!
//! Directories follow the `directories` crate (`~/.config/knock`, `~/.local/state/knock` on
//! Linux, honouring `XDG_CONFIG_HOME` and `XDG_STATE_HOME`).

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_core::config::{valid_name, ConfigError};
use knock_core::durable::replace_file;
use knock_core::keys::{read_key_file, write_key_file, write_private_file, KeyError, Secret};
use knock_core::profile::{Bundle, BundleSecret, Profile};
use knock_core::seqfile::{SeqFileError, SequenceFile};

/// What went wrong in the profile store, naming the profile or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Neither HOME nor the XDG variables say where the store is.
    #[error("cannot find a home directory for the profile store; set HOME or XDG_CONFIG_HOME")]
    NoHome,
    /// A profile name from the command line that cannot be one (it would become a path).
    #[error("`{name}` is not a profile name (1-64 characters of a-z, 0-9, _ or -); `knock profile list` shows them")]
    BadName {
        /// The name given.
        name: String,
    },
    /// No profile of that name is installed.
    #[error("no profile `{name}` ({} does not exist); {fix}", path.display())]
    NoProfile {
        /// The name given.
        name: String,
        /// Where its file would be.
        path: PathBuf,
        /// What to do: import one, or list the installed ones.
        fix: &'static str,
    },
    /// The profile's file cannot be read or is invalid (the error names file, line and column).
    #[error(transparent)]
    Profile(ConfigError),
    /// A file or directory of the store could not be read or written.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What failed: `reading`, `creating directory`, ...
        doing: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The profile's counter file could not be locked, written or synced.
    /// A file could not be replaced durably (its step and path are in the message).
    #[error("{0}")]
    Replace(knock_core::durable::ReplaceError),
    #[error("counter {}: {source}", path.display())]
    Counter {
        /// The counter file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The counter file holds something other than a number.
    #[error("counter of `{name}` ({}) is damaged: it must hold the next counter, a number", path.display())]
    CounterDamaged {
        /// The profile.
        name: String,
        /// The counter file.
        path: PathBuf,
    },
    /// A sequence list others may read.
    #[error("sequence list {} is accessible by group or others (mode {mode:04o}); fix: chmod 600 {}", path.display(), path.display())]
    ListTooOpen {
        /// The list.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A sequence list that does not parse (the error names file, line and column).
    #[error(transparent)]
    List(SeqFileError),
    /// The profile's key file is refused or unreadable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Importing over an installed profile that only `remove` may replace.
    #[error("profile `{name}` exists ({}); remove it first (`knock profile remove {name}`) to replace it", path.display())]
    Exists {
        /// The profile.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// A sequence list for a profile of another server or door.
    #[error(
        "profile `{name}` exists for another server or door; remove it first (`knock profile remove {name}`) to \
         replace it"
    )]
    ExistsElsewhere {
        /// The profile.
        name: String,
    },
}

/// An I/O error while `doing` something to `path`.
fn io_err<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { doing, path: path.to_path_buf(), source }
}

/// The client's directories.
#[derive(Debug, Clone)]
pub struct Store {
    config: PathBuf,
    state: PathBuf,
}

impl Store {
    /// The default directories for this user.
    pub fn locate() -> Result<Store, StoreError> {
        let dirs = directories::ProjectDirs::from("", "", "knock").ok_or(StoreError::NoHome)?;
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
    fn checked(name: &str) -> Result<&str, StoreError> {
        if valid_name(name) {
            Ok(name)
        } else {
            Err(StoreError::BadName { name: name.to_string() })
        }
    }

    /// Loads a profile by name.
    pub fn profile(&self, name: &str) -> Result<Profile, StoreError> {
        let path = self.profile_path(Self::checked(name)?);
        if !path.exists() {
            let fix = "import one with `knock profile import FILE`";
            return Err(StoreError::NoProfile { name: name.to_string(), path, fix });
        }
        Profile::load(&path).map_err(StoreError::Profile)
    }

    /// The names of the installed profiles, sorted (files in the profile directory whose stem
    /// is a valid name; none when the directory does not exist yet).
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.profiles();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading directory", &dir)(e)),
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
    pub fn key(&self, name: &str) -> Result<Secret, StoreError> {
        Ok(read_key_file(&self.key_path(name))?)
    }

    /// The sequence list of a file profile (refused unless private).
    pub fn sequences(&self, name: &str) -> Result<SequenceFile, StoreError> {
        let path = self.seq_path(name);
        let mode = std::fs::metadata(&path).map_err(io_err("reading", &path))?.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::ListTooOpen { path, mode });
        }
        SequenceFile::load(&path).map_err(StoreError::List)
    }

    /// Deletes a profile, its key or sequence list, and its counter. Returns what was removed.
    pub fn remove(&self, name: &str) -> Result<Vec<PathBuf>, StoreError> {
        let profile = self.profile_path(Self::checked(name)?);
        if !profile.exists() {
            let fix = "`knock profile list` shows them";
            return Err(StoreError::NoProfile { name: name.to_string(), path: profile, fix });
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
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &path)(e)),
            }
        }
        Ok(removed)
    }

    /// Installs a bundle: profile, secret (0600), and a fresh counter. Refuses to overwrite.
    pub fn import(&self, bundle: &Bundle) -> Result<String, StoreError> {
        for dir in [self.profiles(), self.keyring(), self.state.clone()] {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err("creating directory", &dir))?;
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
                write_private_file(&p, s.as_bytes()).map_err(io_err("writing", &p))?
            }
        }
        let cpath = self.counter_path(name);
        if cpath.exists() {
            std::fs::remove_file(&cpath).map_err(io_err("removing", &cpath))?;
        }
        write_private_file(&ppath, bundle.profile.to_toml().as_bytes()).map_err(io_err("writing", &ppath))?;
        Ok(format!("profile `{name}` imported: knock with `knock --profile {name}`"))
    }

    /// Installs a new sequence list for an existing `file` profile of the same server and door
    /// (the server's `knockd sequences rotate`): the list is replaced and the cursor starts over.
    fn rotate(&self, bundle: &Bundle) -> Result<String, StoreError> {
        let name = &bundle.profile.name;
        let old = self.profile(name)?;
        let same = old.server_id == bundle.profile.server_id && old.door == bundle.profile.door;
        let BundleSecret::Sequences(list) = &bundle.secret else {
            return Err(StoreError::Exists { name: name.clone(), path: self.profile_path(name) });
        };
        if !same || old.mode != knock_core::sequence::Mode::File {
            return Err(StoreError::ExistsElsewhere { name: name.clone() });
        }
        let path = self.seq_path(name);
        replace_file(&path, list.as_bytes()).map_err(StoreError::Replace)?;
        let cursor = self.counter_path(name);
        if cursor.exists() {
            std::fs::remove_file(&cursor).map_err(io_err("removing", &cursor))?;
        }
        Ok(format!("profile `{name}`: new sequence list installed; the next knock uses its first line"))
    }

    /// Reserves the next counter of a profile: under an exclusive lock (`NAME.lock`), reads
    /// `NAME.next`, writes the successor to a temporary file, syncs it and renames it over, then
    /// syncs the directory, all before returning. Two knocks never share a counter, and a crash
    /// at any point leaves either the old or the new value, never an empty one.
    pub fn reserve_counter(&self, name: &str) -> Result<u64, StoreError> {
        self.update_next(name, |stored| Some(stored + 1)).map(|(stored, _)| stored)
    }

    /// Under the profile's lock: reads the stored next value and, when `change` gives a new one,
    /// stores it durably. Returns the value read and the one stored, if any.
    fn update_next(
        &self,
        name: &str,
        change: impl FnOnce(u64) -> Option<u64>,
    ) -> Result<(u64, Option<u64>), StoreError> {
        let path = self.counter_path(name);
        let err = |source: io::Error| StoreError::Counter { path: path.clone(), source };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.state)
            .map_err(io_err("creating directory", &self.state))?;
        let lock_path = self.state.join(format!("{name}.lock"));
        let lock =
            OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path).map_err(err)?;
        lock.lock().map_err(err)?;
        let stored = self.peek_counter(name)?;
        let Some(next) = change(stored) else { return Ok((stored, None)) };
        replace_file(&path, format!("{next}\n").as_bytes()).map_err(StoreError::Replace)?;
        drop(lock);
        Ok((stored, Some(next)))
    }

    /// Reserves a `totp` time step: the current one, or the next not yet used by this profile
    /// (each step is usable once), which the caller waits for (less than one step). A next
    /// unused step further ahead is refused and nothing is reserved (see [`plan_step`]).
    pub fn reserve_step(&self, name: &str, current: u64) -> Result<StepPlan, StoreError> {
        let mut plan = StepPlan::Use(current);
        self.update_next(name, |stored| {
            plan = plan_step(current, stored);
            match plan {
                StepPlan::Use(step) => Some(step + 1),
                StepPlan::Ahead { .. } => None,
            }
        })?;
        Ok(plan)
    }

    /// `knock profile reset-step`: brings a `totp` profile whose next step ran ahead of the
    /// clock back to the first step past the server's window (`current + skew + 1`). Every step
    /// the server would accept now is skipped, since a knock sent while the clock was wrong may
    /// have used any of them; a step beyond the window was, when sent, too early for the
    /// server to accept. Returns the old and the new next step, or `None` when the next step
    /// was no further than that already (nothing to reset).
    pub fn reset_step(&self, name: &str, current: u64, skew: u32) -> Result<Option<(u64, u64)>, StoreError> {
        let floor = current.saturating_add(u64::from(skew)).saturating_add(1);
        let (stored, new) = self.update_next(name, |stored| (stored > floor).then_some(floor))?;
        Ok(new.map(|n| (stored, n)))
    }

    /// The next counter without reserving it (for `--dry-run`).
    pub fn peek_counter(&self, name: &str) -> Result<u64, StoreError> {
        let path = self.counter_path(name);
        match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().is_empty() => Ok(0),
            Ok(t) => t.trim().parse().map_err(|_| StoreError::CounterDamaged { name: name.to_string(), path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }
}

/// What the next `totp` knock of a profile may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPlan {
    /// This step: the current one, or the next (starting in less than one step).
    Use(u64),
    /// The next unused step lies more than one step ahead of the clock: waiting for it could
    /// take anything up to years (a clock that once ran ahead), so the knock is refused.
    Ahead {
        /// The profile's next unused step.
        next: u64,
    },
}

/// The step the next knock uses at step `current`, given the profile's next unused one.
pub fn plan_step(current: u64, stored_next: u64) -> StepPlan {
    let step = current.max(stored_next);
    if step > current.saturating_add(1) {
        StepPlan::Ahead { next: step }
    } else {
        StepPlan::Use(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("knock-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store { config: dir.join("config"), state: dir.join("state") }
    }

    fn set_next(store: &Store, name: &str, next: u64) {
        std::fs::create_dir_all(&store.state).unwrap();
        std::fs::write(store.counter_path(name), format!("{next}\n")).unwrap();
    }

    #[test]
    fn a_step_more_than_one_ahead_is_refused_and_nothing_is_reserved() {
        let store = scratch("ahead");
        // A clock that ran a year ahead (30 s steps) left this behind.
        let current = 59_000_000;
        let year_ahead = current + 365 * 2880;
        set_next(&store, "p", year_ahead);
        assert_eq!(store.reserve_step("p", current).unwrap(), StepPlan::Ahead { next: year_ahead });
        assert_eq!(store.peek_counter("p").unwrap(), year_ahead, "a refused knock reserves nothing");
        // Two steps ahead (the current and the next used already) is refused as well: the wait
        // would be more than one step.
        set_next(&store, "p", current + 2);
        assert_eq!(store.reserve_step("p", current).unwrap(), StepPlan::Ahead { next: current + 2 });
        let _ = std::fs::remove_dir_all(store.config.parent().unwrap());
    }

    #[test]
    fn steps_are_used_once_each_and_the_wait_is_under_one_step() {
        let store = scratch("once");
        let current = 1000;
        assert_eq!(store.reserve_step("p", current).unwrap(), StepPlan::Use(current));
        assert_eq!(store.reserve_step("p", current).unwrap(), StepPlan::Use(current + 1));
        assert_eq!(store.reserve_step("p", current).unwrap(), StepPlan::Ahead { next: current + 2 });
        assert_eq!(store.reserve_step("p", current + 1).unwrap(), StepPlan::Use(current + 2));
        // A clock back in the present after a long pause: the current step.
        assert_eq!(store.reserve_step("p", current + 50).unwrap(), StepPlan::Use(current + 50));
        for stored in 0..current + 10 {
            if let StepPlan::Use(step) = plan_step(current, stored) {
                assert!(step >= stored && step <= current + 1, "{stored}: {step}");
            }
        }
        let _ = std::fs::remove_dir_all(store.config.parent().unwrap());
    }

    #[test]
    fn reset_step_skips_the_whole_window_and_never_moves_forward() {
        let store = scratch("reset");
        let (current, skew) = (5000, 2);
        set_next(&store, "p", current + 100_000);
        assert_eq!(store.reset_step("p", current, skew).unwrap(), Some((current + 100_000, current + 3)));
        // No step the server accepts now (current-2 ..= current+2) is ever used again; the next
        // knock is refused until one step has passed, then waits less than one more.
        assert_eq!(store.reserve_step("p", current).unwrap(), StepPlan::Ahead { next: current + 3 });
        assert_eq!(store.reserve_step("p", current + 2).unwrap(), StepPlan::Use(current + 3));
        // Nothing to reset when the next step is within the window's end already.
        assert_eq!(store.reset_step("p", current + 2, skew).unwrap(), None);
        assert_eq!(store.peek_counter("p").unwrap(), current + 4);
        assert_eq!(store.reset_step("q", current, skew).unwrap(), None, "a fresh profile has nothing to reset");
        let _ = std::fs::remove_dir_all(store.config.parent().unwrap());
    }
}
