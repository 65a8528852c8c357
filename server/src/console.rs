//! Recovery commands for the admin at the server's console (DESIGN "Recovery"):
//! `knockd grant ADDR --door D --for T`, an audited manual grant through the configured
//! firewall backend with a kernel timeout, and the small journal of such grants
//! (`<state_dir>/manual-grants`) from which a running daemon restores them when its table was
//! deleted under it.
//!
//! A manual grant only adds set elements, so it works whether the daemon runs or not; it never
//! touches the daemon's ledgers.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knock_core::config::{parse_duration, Action, Config, Door, FirewallKind, OpenPort};
use knock_core::time::unix_now_ms;
use serde_json::{json, Value};

use crate::audit::{AuditLog, Record};
use crate::firewall::{iptables::Iptables, Firewall, Nftables};
use crate::state::StateDir;

/// The journal of manual grants inside the state directory.
pub const MANUAL_GRANTS: &str = "manual-grants";
/// The longest manual grant: a console grant is a way back in, not a standing rule (that is
/// what `always_allow` is for).
pub const MAX_MANUAL_GRANT: Duration = Duration::from_secs(7 * 86_400);

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

/// The manual grants of `state_dir` that have not expired at `now_ms`. An unreadable line is
/// skipped: the journal only serves to restore grants, the audit log is the record.
pub fn live_manual_grants(state_dir: &Path, now_ms: u64) -> Vec<ManualGrant> {
    let text = std::fs::read_to_string(state_dir.join(MANUAL_GRANTS)).unwrap_or_default();
    text.lines().filter_map(ManualGrant::from_line).filter(|g| g.until_ms > now_ms).collect()
}

/// Rewrites the journal with the live grants plus `grant` (write, fsync, rename).
fn journal(state_dir: &Path, grant: &ManualGrant) -> std::io::Result<()> {
    let mut grants = live_manual_grants(state_dir, unix_now_ms());
    grants.retain(|g| !(g.door == grant.door && g.addr == grant.addr));
    grants.push(grant.clone());
    let path = state_dir.join(MANUAL_GRANTS);
    let tmp = state_dir.join(format!("{MANUAL_GRANTS}.tmp"));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    for g in &grants {
        writeln!(f, "{}", g.to_line())?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(state_dir)?.sync_all()
}

fn door<'a>(config: &'a Config, name: &str) -> Result<&'a Door, String> {
    config.door(name).ok_or_else(|| {
        let names: Vec<&str> = config.doors.iter().map(|d| d.name.as_str()).collect();
        format!("{}: no door `{name}` (doors: {})", config.path.display(), names.join(", "))
    })
}

/// Who ran the command, for the audit record (`SUDO_USER`, else `USER`/`LOGNAME`).
fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "?".into())
}

/// Parses `--for`: a duration from 1 s to [`MAX_MANUAL_GRANT`].
pub fn grant_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) || d > MAX_MANUAL_GRANT {
        return Err(format!(
            "--for {text}: a manual grant lasts from 1s to 168h (to let a source in for good, add it \
             to the door's always_allow)"
        ));
    }
    Ok(d)
}

/// `knockd grant ADDR --door D --for T`: opens door `D`'s ports for `addr` for `duration`
/// through the configured backend (a kernel timeout), audited (event `manual-grant`) before the
/// firewall changes. Works while the daemon runs (it only adds set elements) and while it is down
/// (the table stays in the kernel).
pub fn grant(config: &Config, addr: IpAddr, door_name: &str, duration: Duration) -> Result<String, String> {
    let d = door(config, door_name)?;
    let addr = addr.to_canonical();
    if d.action != Action::Firewall || d.open.is_empty() {
        return Err(format!(
            "door `{door_name}` runs knockd-style commands instead of firewall grants; run its start \
             command by hand with %IP% = {addr} (and its stop command later)"
        ));
    }
    let mut fw: Box<dyn Firewall> = match config.server.firewall {
        FirewallKind::Nftables => Box::new(Nftables::new(&config.server.nft_table).map_err(|e| e.to_string())?),
        FirewallKind::Iptables => Box::new(Iptables::new()),
        FirewallKind::None => {
            return Err(format!("{}: firewall = \"none\": there is nothing to grant", config.path.display()))
        }
    };
    let state = StateDir::new(&config.server.state_dir);
    let audit_path = state.audit_log();
    let ports: Vec<String> = d.open.iter().map(ToString::to_string).collect();
    let until_ms = unix_now_ms().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    let audit_err = |e: std::io::Error| {
        format!(
            "audit log {}: {e}; nothing was granted (a grant is never made unaudited). Free space in \
             {} or fix its permissions, then retry",
            audit_path.display(),
            config.server.state_dir.display()
        )
    };
    let mut audit = AuditLog::open(&audit_path).map_err(audit_err)?;
    let record = Record::new("manual-grant")
        .with("door", door_name)
        .with("source", addr.to_string())
        .with("ports", ports.join(","))
        .with("open_for_ms", u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
        .with("operator", operator());
    audit.write(record, true).map_err(audit_err)?;
    if let Err(e) = fw.grant(addr, &d.open, duration) {
        let failed = Record::new("manual-grant-failed")
            .with("door", door_name)
            .with("source", addr.to_string())
            .with("reason", e.to_string());
        let _ = audit.write(failed, true);
        return Err(format!("nothing was granted: {e}"));
    }
    let manual = ManualGrant { door: door_name.into(), addr, ports: d.open.clone(), until_ms };
    let journaled = match journal(&config.server.state_dir, &manual) {
        Ok(()) => String::new(),
        Err(e) => format!(
            "\nwarning: {}: {e}; if the table is deleted under the daemon, this grant is not restored",
            config.server.state_dir.join(MANUAL_GRANTS).display()
        ),
    };
    Ok(format!(
        "granted {addr} access to {} of door {door_name} for {}s (a kernel timeout: it expires by itself, \
         with or without the daemon); audited as manual-grant{journaled}",
        ports.join(","),
        duration.as_secs()
    ))
}

/// The path of the manual-grant journal of `state_dir`.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join(MANUAL_GRANTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(grant_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(grant_duration("500ms").is_err());
        assert!(grant_duration("169h").unwrap_err().contains("always_allow"));
        assert!(grant_duration("soon").is_err());
    }

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
        let far = unix_now_ms() + 60_000;
        journal(&dir, &g("198.18.0.2", 1)).unwrap();
        journal(&dir, &g("198.18.0.3", far)).unwrap();
        journal(&dir, &g("198.18.0.3", far + 1)).unwrap();
        journal(&dir, &g("2001:db8::2", far)).unwrap();
        let live = live_manual_grants(&dir, unix_now_ms());
        assert_eq!(live, vec![g("198.18.0.3", far + 1), g("2001:db8::2", far)]);
        std::fs::write(journal_path(&dir), "not json\n").unwrap();
        assert!(live_manual_grants(&dir, 0).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
