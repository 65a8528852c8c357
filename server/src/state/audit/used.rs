//! What the audit log records as used, for the refusal of rolled-back ledgers (a ledger restored
//! from a backup or VM snapshot would make used sequences open again; docs/OPERATIONS.md,
//! "Locked out?" case 6) and for `knockd ledger recover` of a knockd one-time file.
//!
//! Records of grants, closes, burns and resyncs carry the ledger's identity in `key` (a key's
//! fingerprint, a sequence file's `file-<sha256>` label, a knockd one-time file's
//! `knockd-<sha256>` label; docs/AUDIT.md), so a client whose key was replaced under the same
//! name is held only to its new key's records. Records written before that field existed are
//! matched by (door, client) instead, unless something shows they are not the current key's: a
//! later `revoke` of that name, a later record of that name under another key, or a key file
//! written after the record.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde_json::{Map, Value};

/// The events whose `sequence` was used up in a ledger.
const USES: [&str; 4] = ["grant", "close", "burn", "resync"];

/// The position a record's `sequence` label names: `counter N` (hotp, totp) is N; `line L`
/// (a file door, `incoming file line L`, a knockd one-time file) is the line number L.
fn position(label: &str) -> Option<u64> {
    if let Some(n) = label.strip_prefix("counter ") {
        return n.parse().ok();
    }
    label.rsplit_once("line ").filter(|(before, _)| before.is_empty() || before.ends_with(' '))?.1.parse().ok()
}

/// What records without `key` say about one (door, client) name.
#[derive(Debug, Default)]
struct NameHistory {
    /// Positions recorded used, with each record's time (unix ms).
    legacy: Vec<(u64, u64)>,
    /// Keys recorded for this name after the last record without a key.
    keys_since: HashSet<String>,
}

/// What the audit log records as used.
#[derive(Debug, Default)]
pub struct AuditedUse {
    by_key: HashMap<String, BTreeSet<u64>>,
    by_name: HashMap<(String, String), NameHistory>,
}

impl AuditedUse {
    /// Reads the records in the order they were written.
    pub fn from_records(records: &[Map<String, Value>]) -> AuditedUse {
        let mut out = AuditedUse::default();
        for r in records {
            let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
            let name = (text("door").to_string(), text("client").to_string());
            let key = Some(text("key")).filter(|k| !k.is_empty());
            let event = text("event");
            if event == "revoke" {
                out.by_name.remove(&name);
                continue;
            }
            if !USES.contains(&event) {
                continue;
            }
            let Some(n) = position(text("sequence")) else { continue };
            match key {
                Some(key) => {
                    out.by_key.entry(key.to_string()).or_default().insert(n);
                    if let Some(h) = out.by_name.get_mut(&name) {
                        h.keys_since.insert(key.to_string());
                    }
                }
                None => {
                    let ts = r.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
                    let h = out.by_name.entry(name).or_default();
                    h.keys_since.clear();
                    h.legacy.push((n, ts));
                }
            }
        }
        out
    }

    /// Positions recorded used by the ledger `key`.
    pub fn of_key(&self, key: &str) -> BTreeSet<u64> {
        self.by_key.get(key).cloned().unwrap_or_default()
    }

    /// Positions a keyed client must have used: its key's, and those of records without a key
    /// for its (door, client) that can be its key's: made at or after `key_since_ms` (when its
    /// key file was written), with no later revoke of the name and no later record of the name
    /// under another key.
    pub fn of_client(&self, door: &str, client: &str, key: &str, key_since_ms: u64) -> BTreeSet<u64> {
        let mut used = self.of_key(key);
        if let Some(h) = self.by_name.get(&(door.to_string(), client.to_string())) {
            if h.keys_since.iter().all(|k| k == key) {
                used.extend(h.legacy.iter().filter(|(_, ts)| *ts >= key_since_ms).map(|(n, _)| *n));
            }
        }
        used
    }
}

/// What the current audit file records as used (`None` when it cannot be read: nothing to
/// compare with). Rotated files are not read.
pub fn audited_use(audit_log: &Path) -> Option<AuditedUse> {
    super::files::read_records(audit_log).ok().map(|r| AuditedUse::from_records(&r))
}

/// The events whose record the daemon syncs at the same time as the ledger's record of the
/// same use (docs/ARCHITECTURE.md, "Two durable writes at once").
const SYNCED_WITH_THE_LEDGER: [&str; 2] = ["grant", "close"];

/// What the current audit file records as used (as [`audited_use`]), and the use the daemon
/// may have been making durable when it stopped: the one the file's last record names, when
/// that is a `grant` or `close`. Its ledger record was synced at the same time as the audit
/// record, so a crash may have kept the one and lost the other; any later record was written
/// after both syncs returned.
pub fn audited_use_and_interrupted(audit_log: &Path) -> Option<(AuditedUse, AuditedUse)> {
    let records = super::files::read_records(audit_log).ok()?;
    let last = records
        .last()
        .filter(|r| r.get("event").and_then(Value::as_str).is_some_and(|e| SYNCED_WITH_THE_LEDGER.contains(&e)));
    let interrupted = AuditedUse::from_records(last.map(std::slice::from_ref).unwrap_or_default());
    Some((AuditedUse::from_records(&records), interrupted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(event: &str, door: &str, client: &str, seq: &str, key: Option<&str>, ts: u64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("ts_ms".into(), ts.into());
        m.insert("event".into(), event.into());
        m.insert("door".into(), door.into());
        m.insert("client".into(), client.into());
        if !seq.is_empty() {
            m.insert("sequence".into(), seq.into());
        }
        if let Some(k) = key {
            m.insert("key".into(), k.into());
        }
        m
    }

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn only_a_last_grant_or_close_may_have_been_interrupted() {
        let dir = std::env::temp_dir().join(format!("knock-used-interrupted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("audit.log");
        let interrupted = |records: &[Map<String, Value>]| {
            let lines: Vec<String> = records.iter().map(|r| Value::Object(r.clone()).to_string() + "\n").collect();
            std::fs::write(&log, lines.concat()).unwrap();
            audited_use_and_interrupted(&log).unwrap()
        };
        let grant = rec("grant", "ssh", "alice", "counter 4", Some("k"), 10);
        let close = rec("close", "ssh", "alice", "counter 5", Some("k"), 11);
        let (all, last) = interrupted(&[grant.clone(), close.clone()]);
        assert_eq!((all.of_key("k"), last.of_key("k")), (set(&[4, 5]), set(&[5])));
        let (_, last) = interrupted(&[close.clone(), grant.clone()]);
        assert_eq!(last.of_key("k"), set(&[4]));
        // A record after it: both syncs had returned.
        let (all, last) = interrupted(&[grant.clone(), rec("replay", "ssh", "alice", "counter 4", Some("k"), 12)]);
        assert_eq!((all.of_key("k"), last.of_key("k")), (set(&[4]), set(&[])));
        // A burn's ledger record is durable before its audit record is written.
        let (_, last) = interrupted(&[rec("burn", "ssh", "alice", "counter 7", Some("k"), 13)]);
        assert_eq!(last.of_key("k"), set(&[]));
        let (_, last) = interrupted(&[]);
        assert_eq!(last.of_key("k"), set(&[]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_name_counters_and_lines() {
        assert_eq!(position("counter 17"), Some(17));
        assert_eq!(position("line 4"), Some(4));
        assert_eq!(position("incoming file line 12"), Some(12));
        assert_eq!(position("static"), None);
        assert_eq!(position("counter x"), None);
        assert_eq!(position("pipeline 3"), None);
    }

    #[test]
    fn a_replaced_key_is_held_to_its_own_records_only() {
        let records = vec![
            rec("grant", "ssh", "alice", "counter 0", Some("old"), 10),
            rec("burn", "ssh", "alice", "counter 5", Some("old"), 11),
            rec("replay", "ssh", "alice", "counter 9", Some("old"), 12),
            rec("grant", "ssh", "alice", "counter 0", Some("new"), 20),
            rec("grant", "paper", "-", "incoming file line 7", Some("file-ab"), 21),
        ];
        let used = AuditedUse::from_records(&records);
        assert_eq!(used.of_client("ssh", "alice", "old", 0), set(&[0, 5]), "replays use nothing up");
        assert_eq!(used.of_client("ssh", "alice", "new", 0), set(&[0]));
        assert_eq!(used.of_client("ssh", "alice", "third", 0), set(&[]), "a brand-new key starts clean");
        assert_eq!(used.of_key("file-ab"), set(&[7]));
    }

    #[test]
    fn records_without_a_key_count_for_their_name_until_shown_to_be_another_keys() {
        let old =
            [rec("grant", "ssh", "alice", "counter 3", None, 100), rec("burn", "ssh", "alice", "counter 8", None, 110)];
        // Alone, they hold whichever key the name has (made before them).
        let used = AuditedUse::from_records(&old);
        assert_eq!(used.of_client("ssh", "alice", "k1", 50), set(&[3, 8]));
        assert_eq!(used.of_client("ssh", "bob", "k1", 50), set(&[]), "per name");
        assert_eq!(used.of_client("other", "alice", "k1", 50), set(&[]), "per door");
        // A key file written after them is another key's.
        assert_eq!(used.of_client("ssh", "alice", "k1", 105), set(&[8]));
        assert_eq!(used.of_client("ssh", "alice", "k1", 200), set(&[]));
        // The same key recorded after them: still that key's.
        let mut same = old.to_vec();
        same.push(rec("grant", "ssh", "alice", "counter 9", Some("k1"), 120));
        assert_eq!(AuditedUse::from_records(&same).of_client("ssh", "alice", "k1", 0), set(&[3, 8, 9]));
        // Another key recorded after them: the name has had that key since; they may be its
        // own earlier records, but they are no other key's.
        let mut other = old.to_vec();
        other.push(rec("grant", "ssh", "alice", "counter 12", Some("k2"), 120));
        let used = AuditedUse::from_records(&other);
        assert_eq!(used.of_client("ssh", "alice", "k2", 0), set(&[3, 8, 12]));
        assert_eq!(used.of_client("ssh", "alice", "k1", 0), set(&[]));
        assert_eq!(used.of_client("ssh", "alice", "k3", 0), set(&[]));
        // A revoke of the name after them: forgotten.
        let mut revoked = old.to_vec();
        revoked.push(rec("revoke", "ssh", "alice", "", None, 130));
        assert_eq!(AuditedUse::from_records(&revoked).of_client("ssh", "alice", "k1", 0), set(&[]));
        // ... but not records without a key written after the revoke.
        revoked.push(rec("grant", "ssh", "alice", "counter 2", None, 140));
        assert_eq!(AuditedUse::from_records(&revoked).of_client("ssh", "alice", "k1", 0), set(&[2]));
    }
}
