//! The journal of manual grants (`knockd grant` at the console), `<state_dir>/manual-grants`:
//! one JSON object a line (`door`, `addr`, `ports`, `until_ms`). A running daemon restores the
//! live ones when its table was deleted under it (docs/OPERATIONS.md, "Locked out?" case 4).
//! The audit log is the record of every grant; this journal only serves to restore them, so an
//! unreadable line is skipped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use knock_core::config::OpenPort;
use knock_core::durable::ReplaceError;
use serde_json::{json, Value};

/// The journal's file name inside the state directory.
pub const MANUAL_GRANTS: &str = "manual-grants";

/// One manual grant, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualGrant {
    /// The door whose ports it opens.
    pub door: String,
    /// The address it opens for.
    pub addr: IpAddr,
    /// The ports.
    pub ports: Vec<OpenPort>,
    /// When it expires, in unix milliseconds.
    pub until_ms: u64,
}

impl ManualGrant {
    fn to_line(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(ToString::to_string).collect();
        json!({ "door": self.door, "addr": self.addr.to_string(), "ports": ports, "until_ms": self.until_ms })
            .to_string()
    }

    fn from_line(line: &str) -> Option<ManualGrant> {
        let v: Value = serde_json::from_str(line).ok()?;
        let ports = v.get("ports")?.as_array()?.iter().map(|p| p.as_str()?.parse().ok()).collect::<Option<_>>()?;
        Some(ManualGrant {
            door: v.get("door")?.as_str()?.to_owned(),
            addr: v.get("addr")?.as_str()?.parse().ok()?,
            ports,
            until_ms: v.get("until_ms")?.as_u64()?,
        })
    }
}

/// The path of the manual-grant journal of `state_dir`.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MANUAL_GRANTS)
}

/// The manual grants of `state_dir` that have not expired at `now_ms`. An unreadable line is
/// skipped: the journal only serves to restore grants, the audit log is the record.
pub fn live_manual_grants(state_dir: &Path, now_ms: u64) -> Vec<ManualGrant> {
    let text = std::fs::read_to_string(journal_path(state_dir)).unwrap_or_default();
    text.lines().filter_map(ManualGrant::from_line).filter(|g| g.until_ms > now_ms).collect()
}

/// Rewrites the journal with the grants live at `now_ms` plus `grant` (which replaces an
/// earlier one of its door and address), durably.
pub fn journal(state_dir: &Path, grant: &ManualGrant, now_ms: u64) -> Result<(), ReplaceError> {
    let mut grants = live_manual_grants(state_dir, now_ms);
    grants.retain(|g| !(g.door == grant.door && g.addr == grant.addr));
    grants.push(grant.clone());
    let text: String = grants.iter().map(|g| g.to_line() + "\n").collect();
    // The daemon reads this journal when it reinstalls its table: its account keeps the file.
    crate::state::replace_file(&journal_path(state_dir), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_live_grants_only_and_one_per_door_and_address() {
        let dir = std::env::temp_dir().join(format!("knockd-manual-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let g = |addr: &str, until_ms| ManualGrant {
            door: "ssh".into(),
            addr: addr.parse().unwrap(),
            ports: vec!["22/tcp".parse().unwrap()],
            until_ms,
        };
        let now = knock_core::time::unix_now_ms();
        let far = now + 60_000;
        journal(&dir, &g("198.18.0.2", 1), now).unwrap();
        journal(&dir, &g("198.18.0.3", far), now).unwrap();
        journal(&dir, &g("198.18.0.3", far + 1), now).unwrap();
        journal(&dir, &g("2001:db8::2", far), now).unwrap();
        let live = live_manual_grants(&dir, now);
        assert_eq!(live, vec![g("198.18.0.3", far + 1), g("2001:db8::2", far)]);
        std::fs::write(journal_path(&dir), "not json\n").unwrap();
        assert!(live_manual_grants(&dir, 0).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
