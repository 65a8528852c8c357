//! knockd's `one_time_sequences` files, kept the way knockd keeps them: each line is a sequence
//! (`port[:tcp|udp]` separated by commas or spaces); the first line not starting with `#` is the
//! current one; using it writes a `#` over the line's first byte (synced to disk before the door
//! acts), so the next valid line becomes current. knockd's own advice applies: start lines with
//! a space, or the `#` replaces the first digit.
//!
//! The file is a secret like a key: it is refused when group or others may read it. Its identity
//! in the audit log ([`OneTimeFile::label`]) is a hash of its lines without their first bytes,
//! which the `#` marks do not change, so a copy restored with fewer marks is recognised as the
//! same list rolled back (`runtime/doors/rollback.rs`).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use knock_core::keys::{hex, read_private_file, KeyError};
use knock_core::Knock;
use sha2::{Digest, Sha256};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// Its knocks (for a used line: what could still be read after the `#`, maybe nothing).
    pub knocks: Vec<Knock>,
    /// Starts with `#`: used (or a comment).
    pub used: bool,
}

/// A loaded one-time sequences file.
#[derive(Debug, Clone)]
pub struct OneTimeFile {
    path: PathBuf,
    entries: Vec<Entry>,
    label: String,
}

/// The largest one-time file read.
const MAX_BYTES: u64 = 64 << 20;

/// Why a one-time file cannot be used, naming the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum OneTimeError {
    /// Unreadable, or open to group or others.
    #[error(transparent)]
    Private(#[from] KeyError),
    /// Not text.
    #[error("{path}: not UTF-8 text: {source}")]
    NotText {
        /// The file.
        path: PathBuf,
        /// Where it stops being text.
        source: std::str::Utf8Error,
    },
    /// An unused line that is not a sequence.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A line could not be marked used.
    #[error("{path}: cannot mark line {line} used: {source}")]
    Mark {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The error.
        source: std::io::Error,
    },
}

/// The knocks of a line, or why it holds none.
fn parse_knocks(text: &str) -> Result<Vec<Knock>, <Knock as std::str::FromStr>::Err> {
    text.split([',', ' ', '\t']).filter(|w| !w.is_empty()).map(str::parse).collect()
}

impl OneTimeFile {
    /// Reads and parses the file; a bad unused line is an error naming file and line, and a file
    /// group or others may read is refused as a key file would be.
    pub fn load(path: &Path) -> Result<OneTimeFile, OneTimeError> {
        let bytes = read_private_file(path, "one_time_sequences file", MAX_BYTES)?;
        let text =
            std::str::from_utf8(&bytes).map_err(|source| OneTimeError::NotText { path: path.to_path_buf(), source })?;
        let mut entries = Vec::new();
        let mut offset = 0u64;
        let mut identity = Sha256::new();
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            identity.update(raw.as_bytes().get(1..).unwrap_or_default());
            let line = raw.trim_end_matches(['\n', '\r']);
            let this = offset;
            offset += raw.len() as u64;
            if line.trim().is_empty() {
                continue;
            }
            let entry = match line.strip_prefix('#') {
                Some(rest) => {
                    Entry { line: i + 1, offset: this, knocks: parse_knocks(rest).unwrap_or_default(), used: true }
                }
                None => {
                    let knocks = parse_knocks(line).map_err(|reason| OneTimeError::BadLine {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason,
                    })?;
                    Entry { line: i + 1, offset: this, knocks, used: false }
                }
            };
            entries.push(entry);
        }
        let label = format!("knockd-{}", &hex(&identity.finalize())[..32]);
        Ok(OneTimeFile { path: path.to_path_buf(), entries, label })
    }

    /// The file's identity in the audit log (`knockd-` and 32 hex digits): the same for every
    /// state of its `#` marks, another for other lines.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Index of the current (first unused) line.
    pub fn current(&self) -> Option<usize> {
        self.entries.iter().position(|e| !e.used)
    }

    /// Writes `#` over the first byte of line `index` and syncs; the line is used from now on.
    pub fn invalidate(&mut self, index: usize) -> Result<bool, OneTimeError> {
        let Some(entry) = self.entries.get_mut(index) else { return Ok(false) };
        if entry.used {
            return Ok(false);
        }
        let err = |source| OneTimeError::Mark { path: self.path.clone(), line: entry.line, source };
        let file = OpenOptions::new().write(true).open(&self.path).map_err(err)?;
        file.write_all_at(b"#", entry.offset).map_err(err)?;
        file.sync_data().map_err(err)?;
        entry.used = true;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes a one-time file as an admin would: private.
    fn write_private(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn the_current_line_advances_and_is_marked_on_disk() {
        let p = std::env::temp_dir().join(format!("onetime-{}.seq", std::process::id()));
        write_private(&p, "# comment\n 7000,8000:udp,9000\n 7001, 8001, 9001\n\n 7002 8002 9002\n");
        let mut f = OneTimeFile::load(&p).unwrap();
        let cur = f.current().unwrap();
        assert_eq!(f.entries()[cur].line, 2);
        assert_eq!(f.entries()[cur].knocks, vec![Knock::tcp(7000), Knock::udp(8000), Knock::tcp(9000)]);
        assert!(f.invalidate(cur).unwrap());
        assert!(!f.invalidate(cur).unwrap(), "a used line is used once");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# comment\n#7000,8000:udp,9000\n 7001, 8001, 9001\n\n 7002 8002 9002\n"
        );
        let again = OneTimeFile::load(&p).unwrap();
        assert_eq!(again.entries()[again.current().unwrap()].line, 3);
        assert_eq!(again.entries()[1].knocks.len(), 3, "a used line kept its knocks behind the #");
        assert_eq!(again.label(), f.label(), "marking a line used keeps the file's identity");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let p = std::env::temp_dir().join(format!("onetime-bad-{}.seq", std::process::id()));
        write_private(&p, " 7000,8000\n 7000,80x0\n");
        let e = OneTimeFile::load(&p).unwrap_err().to_string();
        assert!(e.contains(":2:") && e.contains("80x0"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn the_identity_survives_marks_over_digits_and_follows_the_lines() {
        let p = std::env::temp_dir().join(format!("onetime-label-{}.seq", std::process::id()));
        write_private(&p, "7000,8000,9000\n7001,8001,9001\n");
        let mut f = OneTimeFile::load(&p).unwrap();
        assert!(f.label().starts_with("knockd-") && f.label().len() == 7 + 32, "{}", f.label());
        // knockd's `#` over the first digit: the line now reads 000,8000,9000 and is used.
        assert!(f.invalidate(0).unwrap());
        let marked = OneTimeFile::load(&p).unwrap();
        assert_eq!(marked.label(), f.label());
        write_private(&p, "7000,8000,9000\n7002,8001,9001\n");
        assert_ne!(OneTimeFile::load(&p).unwrap().label(), f.label(), "other lines, another list");
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_file_others_can_read_is_refused_like_a_key() {
        let p = std::env::temp_dir().join(format!("onetime-open-{}.seq", std::process::id()));
        write_private(&p, " 7000,8000\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = OneTimeFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("accessible by group or others (mode 0644)") && e.contains("chmod 600"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
}
