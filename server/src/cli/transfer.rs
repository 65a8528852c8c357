//! `knockd ledger export` and `knockd ledger import`: every ledger of the configured backend as
//! JSON lines, and back into a backend, so file ledgers move into etcd (and back) without
//! enrolling any client again. One line per ledger:
//!
//! ```text
//! {"label":"<key fingerprint or file-<sha256>>","next":12,"used":[15,17]}
//! ```
//!
//! Import merges: a ledger ends with everything either side knows is used (the later `next`,
//! every used counter), so an import never makes a used sequence fresh again, whatever order
//! things happen in. Into files it needs the writer's lock (stop knockd first); into etcd it is
//! one compare-and-swap per ledger beside the running daemons.

use std::io::Write as _;
use std::path::Path;

use knock_core::config::{Config, LedgerBackend};
use knock_core::counters::Counters;
use knock_core::ledger::{ConsumeStore, Ledger, LedgerError, WriterLock};
use serde_json::{json, Value};

use super::error::CliError;
use crate::state::ledgers::{FileLedgers, LedgerStores};
use crate::state::shared_ledgers::EtcdLedgers;
use crate::state::StateDir;

/// One exported ledger.
fn line(label: &str, c: &Counters) -> String {
    json!({ "label": label, "next": c.next(), "used": c.used().collect::<Vec<_>>() }).to_string()
}

/// Every ledger of the state directory's files, read-only.
fn file_ledgers(dir: &Path) -> Result<Vec<(String, Counters)>, CliError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(CliError::Io { path: dir.to_path_buf(), source: e }),
    };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| p.extension().is_some_and(|x| x == "ledger")) {
        let Some(label) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let ledger = Ledger::read(&path, label)?;
        out.push((label.to_string(), ledger.counters()));
    }
    Ok(out)
}

/// `knockd ledger export [--out FILE]`: the text, or where it went.
pub fn export(config: &Config, out: Option<&Path>) -> Result<String, CliError> {
    let ledgers = match &config.ledger {
        LedgerBackend::File => file_ledgers(&StateDir::new(&config.server.state_dir).ledger_dir())?,
        LedgerBackend::Etcd(etcd) => EtcdLedgers::new(etcd, false)?.all()?,
    };
    let text: String = ledgers.iter().map(|(label, c)| line(label, c) + "\n").collect();
    match out {
        None => Ok(text.trim_end().to_string()),
        Some(path) => {
            knock_core::keys::write_private_file(path, text.as_bytes()).map_err(CliError::io(path))?;
            Ok(format!("{} ledger(s) exported to {} (mode 0600)", ledgers.len(), path.display()))
        }
    }
}

/// Reads an export: (label, counters) per line, refusing anything else with its line number.
fn parse(path: &Path, text: &str) -> Result<Vec<(String, Counters)>, CliError> {
    let bad = |n: usize, why: &str| CliError::BadExport { path: path.to_path_buf(), line: n + 1, reason: why.into() };
    let mut out = Vec::new();
    for (n, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).map_err(|e| bad(n, &e.to_string()))?;
        let label = v["label"].as_str().filter(|s| valid_label(s)).ok_or_else(|| bad(n, "no valid `label`"))?;
        let next = v["next"].as_u64().filter(|n| *n < u64::MAX).ok_or_else(|| bad(n, "no valid `next`"))?;
        let used = v["used"].as_array().ok_or_else(|| bad(n, "no `used` list"))?;
        let used: Vec<u64> = used
            .iter()
            .map(|u| u.as_u64().filter(|u| *u < u64::MAX).ok_or_else(|| bad(n, "a used counter is not a counter")))
            .collect::<Result<_, _>>()?;
        out.push((label.to_string(), Counters::new(next, used)));
    }
    Ok(out)
}

/// A ledger label: a key fingerprint (hex) or `file-<sha256>`: nothing that could escape the
/// ledger directory or the key prefix.
fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `knockd ledger import FILE`: merges every ledger of an export into the configured backend.
pub fn import(config: &Config, path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(CliError::io(path))?;
    let ledgers = parse(path, &text)?;
    let mut moved = 0;
    match &config.ledger {
        LedgerBackend::File => {
            let dir = StateDir::new(&config.server.state_dir).ledger_dir();
            let lock = WriterLock::acquire(&dir)?;
            let files = FileLedgers::writable(&dir, &lock);
            for (label, wanted) in &ledgers {
                let mut store = match files.open(label) {
                    Ok(store) => store,
                    Err(LedgerError::Missing(_)) => {
                        files.create(label)?;
                        files.open(label)?
                    }
                    Err(e) => return Err(e.into()),
                };
                moved += usize::from(merge_records(store.as_mut(), wanted)?);
            }
        }
        LedgerBackend::Etcd(etcd) => {
            let shared = EtcdLedgers::new(etcd, true)?;
            for (label, wanted) in &ledgers {
                let before = shared.open(label).map(|s| s.counters()).ok();
                let after = shared.merge_into(label, wanted)?;
                moved += usize::from(before.as_ref() != Some(&after));
            }
        }
    }
    let _ = std::io::stderr().flush();
    Ok(format!(
        "{} ledger(s) in {}: {moved} changed, the rest knew as much already. Reload knockd so it takes them up.",
        ledgers.len(),
        path.display()
    ))
}

/// Appends to a file ledger what `wanted` knows and it does not: a consumption up to `next`,
/// and each used counter. True when anything was written.
fn merge_records(store: &mut dyn ConsumeStore, wanted: &Counters) -> Result<bool, LedgerError> {
    let mut changed = false;
    if wanted.next() > store.next() {
        store.skip_to(wanted.next())?;
        changed = true;
    }
    for c in wanted.used() {
        changed |= store.burn(c)?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_read_back_and_bad_lines_are_named() {
        let c = Counters::new(12, [15, 17]);
        let text = format!("{}\n\n{}\n", line("0123abcd", &c), line("file-00ff", &Counters::default()));
        let got = parse(Path::new("x.jsonl"), &text).unwrap();
        assert_eq!(got, vec![("0123abcd".to_string(), c), ("file-00ff".to_string(), Counters::default())]);
        for (bad, why) in [
            (r#"{"label":"../x","next":1,"used":[]}"#, "label"),
            (r#"{"label":"ab","next":18446744073709551615,"used":[]}"#, "next"),
            (r#"{"label":"ab","next":1,"used":["x"]}"#, "used counter"),
            ("not json", "expected"),
        ] {
            let e = parse(Path::new("x.jsonl"), &format!("{}\n{bad}\n", line("ab", &Counters::default()))).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("x.jsonl:2") && e.contains(why), "{e}");
        }
    }
}
