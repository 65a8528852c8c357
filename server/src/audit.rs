//! The audit log: one JSON object per line for every decision (grant, replay, burn, alert,
//! start and stop). Grants are fdatasync'd before the firewall opens; replays and burns are
//! written at once but synced lazily, so a flood cannot turn them into a disk-sync storm.
//! Never key material, never a sequence: only door, client, source, counter and reasons.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// An open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    unsynced: usize,
}

/// One record being built: an event name and fields.
#[derive(Debug, Clone)]
pub struct Record(Map<String, Value>);

impl Record {
    /// A record of `event` stamped with the current time.
    pub fn new(event: &str) -> Self {
        let mut m = Map::new();
        m.insert("ts_ms".into(), Value::from(knock_core::time::unix_now_ms()));
        m.insert("event".into(), Value::from(event));
        Record(m)
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

impl AuditLog {
    /// Opens (creating, 0600) the audit log for appending.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        Ok(AuditLog { path: path.to_path_buf(), file, unsynced: 0 })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record; with `durable`, it is on disk when this returns.
    pub fn write(&mut self, record: Record, durable: bool) -> std::io::Result<()> {
        let mut line = Value::Object(record.0).to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.unsynced += 1;
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Syncs records written without `durable` (called from the daemon's tick).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

/// Reads every record of an audit log (malformed lines are reported, not skipped silently).
pub fn read_records(path: &Path) -> Result<Vec<Map<String, Value>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => out.push(m),
            _ if i + 1 == text.lines().count() && !text.ends_with('\n') => break, // torn last line
            _ => return Err(format!("{}:{}: not an audit record", path.display(), i + 1)),
        }
    }
    Ok(out)
}
