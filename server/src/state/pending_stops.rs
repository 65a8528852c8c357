//! The journal of knockd-style stop commands waiting for their time, `<state_dir>/pending-stops`:
//! one JSON object a line (`due_ms`, `door`, `addr`, `command`), replaced whole on every change
//! ([`crate::state::replace_file`]), so a crash leaves the old journal or the new one.
//!
//! **A corrupt journal is refused, not skipped.** Since the journal is only ever replaced whole,
//! a bad line means outside damage. [`PendingStops::load`] then fails naming the file and line
//! and leaves the file untouched: running the readable stops and rewriting the journal would
//! silently drop the unreadable one, leaving a port open for good.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use knock_core::durable::ReplaceError;
use serde_json::{json, Value};

/// The journal's file name inside the state directory.
pub const JOURNAL: &str = "pending-stops";

/// A rendered stop command waiting for its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStop {
    /// When it is due, in unix milliseconds.
    pub due_unix_ms: u64,
    /// The door whose start it undoes.
    pub door: String,
    /// The address it was rendered for.
    pub addr: IpAddr,
    /// The fully rendered command.
    pub command: String,
}

/// What is wrong with one journal line.
#[derive(Debug, thiserror::Error)]
pub enum BadLine {
    /// Not JSON.
    #[error("not a JSON object: {0}")]
    NotJson(serde_json::Error),
    /// A field is missing or of the wrong kind.
    #[error("no {kind} field `{key}`")]
    Missing {
        /// `string` or `integer`.
        kind: &'static str,
        /// The field.
        key: &'static str,
    },
    /// `addr` is no address.
    #[error("`addr` {0:?} is not an IP address")]
    BadAddr(String),
}

/// Why the journal cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// It cannot be read.
    #[error("{path}: cannot read the journal of pending stop commands: {source}")]
    Read {
        /// The journal.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A line cannot be read: the journal is refused, and left as it is.
    #[error(
        "{path}:{line}: unreadable pending stop command ({reason}); knockd refuses to start rather than lose \
         it. Try: run that line's command by hand if its port is still open, then fix or delete the line and \
         start knockd again"
    )]
    Unreadable {
        /// The journal.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        reason: BadLine,
    },
    /// It cannot be replaced.
    #[error(
        "{}: cannot {} the journal of pending stop commands: {}; check that the state directory exists, is \
         writable and has space",
        .0.path.display(), .0.step, .0.source
    )]
    Write(#[from] ReplaceError),
}

impl PendingStop {
    /// One journal line (JSON, without the newline).
    pub fn to_line(&self) -> String {
        json!({
            "due_ms": self.due_unix_ms,
            "door": self.door,
            "addr": self.addr.to_string(),
            "command": self.command,
        })
        .to_string()
    }

    /// Parses one journal line.
    pub fn from_line(line: &str) -> Result<PendingStop, BadLine> {
        let v: Value = serde_json::from_str(line).map_err(BadLine::NotJson)?;
        let text =
            |key: &'static str| v.get(key).and_then(Value::as_str).ok_or(BadLine::Missing { kind: "string", key });
        let due_unix_ms =
            v.get("due_ms").and_then(Value::as_u64).ok_or(BadLine::Missing { kind: "integer", key: "due_ms" })?;
        let addr = text("addr")?;
        let addr = addr.parse().map_err(|_| BadLine::BadAddr(addr.to_string()))?;
        Ok(PendingStop { due_unix_ms, door: text("door")?.to_owned(), addr, command: text("command")?.to_owned() })
    }
}

/// The journal of a state directory.
#[derive(Debug, Clone)]
pub struct PendingStops {
    path: PathBuf,
}

impl PendingStops {
    /// The journal `<state_dir>/pending-stops`.
    pub fn in_dir(state_dir: &Path) -> PendingStops {
        PendingStops { path: state_dir.join(JOURNAL) }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stops it holds, in the order they were journaled (missing: none). A line that cannot
    /// be read is an error naming the file and line.
    pub fn load(&self) -> Result<Vec<PendingStop>, JournalError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(JournalError::Read { path: self.path.clone(), source }),
        };
        let mut pending = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let stop = PendingStop::from_line(line).map_err(|reason| JournalError::Unreadable {
                path: self.path.clone(),
                line: n + 1,
                reason,
            })?;
            pending.push(stop);
        }
        Ok(pending)
    }

    /// Replaces the journal with `stops`, durably.
    pub fn save(&self, stops: &[PendingStop]) -> Result<(), JournalError> {
        let mut text = String::new();
        for stop in stops {
            text.push_str(&stop.to_line());
            text.push('\n');
        }
        Ok(crate::state::replace_file(&self.path, text.as_bytes())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("knockd-pending-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn journal_lines_round_trip() {
        let stop = PendingStop {
            due_unix_ms: 1_700_000_000_123,
            door: "ssh".into(),
            addr: "2001:db8::7".parse().unwrap(),
            command: "iptables -D INPUT -s 2001:db8::7 -j ACCEPT; echo \"q\" 'x' \\ \n\ttab ü %".into(),
        };
        let line = stop.to_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(PendingStop::from_line(&line).unwrap(), stop);
        let dir = scratch("trip");
        let journal = PendingStops::in_dir(&dir);
        journal.save(&[stop.clone(), stop.clone()]).unwrap();
        assert_eq!(journal.load().unwrap(), vec![stop.clone(), stop]);
        assert!(!dir.join("pending-stops.tmp").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(journal.path()).unwrap().permissions());
        assert_eq!(mode & 0o077, 0, "journal mode {mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_journal_is_refused_and_kept() {
        let dir = scratch("corrupt");
        let good = PendingStop {
            due_unix_ms: 5,
            door: "ssh".into(),
            addr: "198.18.0.1".parse().unwrap(),
            command: "true".into(),
        };
        let text = format!("{}\n\n{{\"due_ms\": 7, \"door\": \"ssh\"\n{}\n", good.to_line(), good.to_line());
        let journal = PendingStops::in_dir(&dir);
        std::fs::write(journal.path(), &text).unwrap();
        let err = journal.load().expect_err("a corrupt journal must be refused").to_string();
        assert!(err.starts_with(&format!("{}:3: ", journal.path().display())), "{err}");
        assert!(err.contains("Try:") && err.contains("delete the line"), "{err}");
        assert_eq!(std::fs::read_to_string(journal.path()).unwrap(), text, "the journal must be left as it was");

        let bad_addr = r#"{"due_ms":1,"door":"d","addr":"198.18.0.300","command":"true"}"#;
        std::fs::write(journal.path(), format!("{bad_addr}\n")).unwrap();
        let err = journal.load().unwrap_err().to_string();
        assert!(err.contains(":1: ") && err.contains("198.18.0.300"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
