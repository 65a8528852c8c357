//! `knockd audit`: its clap arguments and its output: the table or JSON lines of the records,
//! the `--verify` report, and `init-key`. Reading the files is `state/audit`'s.

use std::path::{Path, PathBuf};

use knock_core::auditchain::{self, ChainFile};
use knock_core::keys::hex;
use knock_core::time::{format_utc_ms, parse_utc_ms};
use serde_json::{Map, Value};

use super::report::Report;
use crate::state::audit::files::{self, all_records};
use crate::state::audit::keyfile::{read_auditor_key, KeyFile};
use crate::state::audit::{export_first_key, AuditError};

/// The arguments of `knockd audit`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    /// `init-key`.
    #[command(subcommand)]
    pub action: Option<AuditAction>,
    /// Only this door.
    #[arg(long)]
    pub door: Option<String>,
    /// Only this client.
    #[arg(long)]
    pub client: Option<String>,
    /// Only records at or after T: RFC 3339 UTC (2026-11-25T13:00:00Z) or unix seconds.
    #[arg(long, value_name = "T", value_parser = parse_utc_ms)]
    pub since: Option<u64>,
    /// Only records at or before T: RFC 3339 UTC (2026-11-25T13:00:00Z) or unix seconds.
    #[arg(long, value_name = "T", value_parser = parse_utc_ms)]
    pub until: Option<u64>,
    /// Only replays.
    #[arg(long)]
    pub replays: bool,
    /// JSON lines (the records exactly as written) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Check the log instead of listing it: sequence numbers, the hash chain and, with --key,
    /// every record's MAC. Names the first bad record and exits 1 if the log was changed.
    #[arg(long, conflicts_with_all = ["door", "client", "since", "until", "replays", "json"])]
    pub verify: bool,
    /// The auditor's first key, from `knockd audit init-key` (for --verify).
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub key: Option<PathBuf>,
}

/// `knockd audit` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditAction {
    /// Export the audit chain's first key for the auditor: once, before knockd writes its first record.
    InitKey {
        /// Where to write it (created 0600, never over an existing file); then move it off this host.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Runs `knockd audit` for the log at `log`. Only `--verify` can find problems: a changed log.
pub fn command(log: &Path, args: &AuditArgs) -> Result<Report, AuditError> {
    match &args.action {
        Some(AuditAction::InitKey { out }) => init_key(log, out).map(Report::clean),
        None if args.verify => verify(log, args.key.as_deref()),
        None => list(log, args).map(Report::clean),
    }
}

/// `knockd audit init-key --out FILE`: the chain's first key for the auditor, and what to do with it.
fn init_key(log: &Path, out: &Path) -> Result<String, AuditError> {
    let fingerprint = export_first_key(log, out)?;
    Ok(format!(
        "wrote the audit log's first key to {} (fingerprint {fingerprint}).\n\
         It is the auditor's: move it off this host; knockd never needs it again.\n\
         Check the log with: knockd audit --verify --key {}",
        out.display(),
        out.display()
    ))
}

fn detail(r: &Map<String, Value>) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let event = s("event");
    let rate_limited = r.get("rate_limited").and_then(Value::as_bool).unwrap_or(false);
    match event.as_str() {
        "grant" => format!("{} for {}s", s("ports"), n("open_for_ms") / 1000),
        "close" => format!("{} closed", s("ports")),
        "burn" => format!("{} after {} knocks", s("reason"), n("progress")),
        "alert" => format!("second source {}", s("second_source")),
        "replay" | "near-miss" | "near_miss" if rate_limited => {
            format!("{} more from {} source(s) in 1s, rate limited", n("count"), n("sources"))
        }
        "replay" if r.contains_key("count") => format!("nothing opened, {} more within 1s", n("count")),
        "replay" => "nothing opened".into(),
        "torn" => format!("a torn write of {} bytes was cut at restart", n("cut_bytes")),
        "audit-gap" => "the log did not end where audit.key said: see --verify".into(),
        "chain-start" => format!("new chain: {}", s("reason")),
        _ => s("doors"),
    }
}

/// The table (or, with `--json`, the JSON lines) of the records `args` selects.
pub fn list(log: &Path, args: &AuditArgs) -> Result<String, AuditError> {
    let records = all_records(log)?;
    let mut out = String::new();
    if !args.json {
        out = format!(
            "{:<24} {:<7} {:<10} {:<10} {:<28} {:<12} {}\n",
            "time (UTC)", "event", "door", "client", "source", "sequence", "detail"
        );
    }
    for (line, r) in records {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let ms = r.get("ts_ms").and_then(Value::as_u64).unwrap_or(0);
        let event = s("event");
        if (args.replays && event != "replay")
            || args.door.as_ref().is_some_and(|d| *d != s("door"))
            || args.client.as_ref().is_some_and(|c| *c != s("client"))
            || args.since.is_some_and(|t| ms < t)
            || args.until.is_some_and(|t| ms > t)
        {
            continue;
        }
        if args.json {
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        let row = format!(
            "{:<24} {:<7} {:<10} {:<10} {:<28} {:<12} {}",
            format_utc_ms(ms),
            event,
            s("door"),
            s("client"),
            s("source"),
            s("sequence"),
            detail(&r)
        );
        out.push_str(row.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// `knockd audit --verify [--key FILE]`: the report, clean when the log verifies (a torn last
/// record is a crash, not tampering), with one problem naming the first bad record otherwise.
/// `Err` only when the log cannot be checked at all (missing, unreadable, a bad key file).
pub fn verify(log: &Path, key_file: Option<&Path>) -> Result<Report, AuditError> {
    let paths = files::chain_files(log).map_err(|source| AuditError::Read { path: log.to_path_buf(), source })?;
    if paths.is_empty() {
        return Err(AuditError::NoLog(log.to_path_buf()));
    }
    let key = key_file.map(read_auditor_key).transpose()?;
    let mut contents = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(p).map_err(|source| AuditError::Read { path: p.clone(), source })?;
        contents
            .push((p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()), bytes));
    }
    let chain: Vec<ChainFile<'_>> = contents.iter().map(|(n, b)| ChainFile { name: n, bytes: b }).collect();
    let keys = KeyFile::for_log(log);
    let (tail, tail_note) = match keys.tail() {
        Ok(t) => (t, None),
        Err(e) => (None, Some(format!("end: not checked against audit.key ({e})"))),
    };
    let report = auditchain::verify(&chain, key.as_ref(), tail);

    let mut out = format!(
        "checked {} file(s) in {}: {}\n",
        paths.len(),
        paths[0].parent().map_or_else(String::new, |d| d.display().to_string()),
        contents.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    );
    let plural = if report.records == 1 { "" } else { "s" };
    let before = if report.fault.is_some() { " before the first bad one" } else { "" };
    match report.head {
        Some((last, _)) => {
            out.push_str(&format!("records: seq 0..{last} ({} record{plural}{before})\n", report.records))
        }
        None => out.push_str(&format!("records: none{before}\n")),
    }
    // Notes the daemon left in the chain (records the daemon wrote about itself).
    let mut notes = Vec::new();
    let mut bad_json = None;
    'files: for (name, bytes) in &contents {
        for (i, line) in bytes.split(|&c| c == b'\n').enumerate() {
            let Ok(f) = auditchain::parse_line(line) else { continue };
            if report.head.is_none_or(|(last, _)| f.seq > last) {
                break 'files;
            }
            match serde_json::from_slice::<Value>(line) {
                Ok(Value::Object(m)) => {
                    let event = m.get("event").and_then(Value::as_str).unwrap_or("");
                    if matches!(event, "torn" | "audit-gap" | "chain-start") {
                        notes.push(format!("note: {name} line {} (seq {}): {event}: {}", i + 1, f.seq, detail(&m)));
                    }
                }
                _ if bad_json.is_none() => bad_json = Some(format!("{name} line {} (seq {})", i + 1, f.seq)),
                _ => {}
            }
        }
    }
    match (&report.fault, key.is_some()) {
        (Some(_), _) => {}
        (None, true) => out.push_str("hash chain: intact\n"),
        (None, false) => out.push_str("hash chain: intact (sequence numbers and prev hashes)\n"),
    }
    match (&key, &report.fault) {
        (Some(k), None) => out.push_str(&format!(
            "MACs: every record verified under the auditor's key (fingerprint {}): none was edited, removed, \
             reordered or forged after it was written\n",
            k.fingerprint()
        )),
        (Some(_), Some(_)) => {}
        (None, _) => out.push_str(
            "MACs: not checked (no --key). Without the auditor's key this proves only that no line was edited, \
             removed or reordered on its own: someone who rewrites a record and recomputes every later hash is \
             not detected. Run `knockd audit --verify --key FILE` with the key from `knockd audit init-key`.\n",
        ),
    }
    match (tail, tail_note) {
        (_, Some(note)) => out.push_str(&format!("{note}\n")),
        (Some(t), None) if report.fault.is_none() && t.next_seq > 0 => out.push_str(&format!(
            "end: the log reaches seq {}, the last record audit.key says was written\n",
            t.next_seq - 1
        )),
        (None, None) => out.push_str("end: no audit.key here, so the end of the log was not checked\n"),
        _ => {}
    }
    if report.fault.is_none() {
        if let Some(head) = report.head {
            out.push_str(&format!(
                "head: seq {} hash {} (compare with the journal's \"audit chain head\")\n",
                head.0,
                hex(&head.1)
            ));
        }
    }
    for n in &notes {
        out.push_str(n);
        out.push('\n');
    }
    if let Some(t) = &report.torn {
        out.push_str(&format!(
            "torn last record (crash during write): {} ({} bytes), not counted; knockd cuts it and notes it at its \
             next start\n",
            t.at, t.bytes
        ));
    }
    if let Some((at, fault)) = &report.fault {
        out.push_str(&format!("NOT VERIFIED: first bad record at {at}: {fault}\n"));
        return Ok(Report { text: out, problems: 1 });
    }
    if let Some(at) = bad_json {
        out.push_str(&format!("NOT VERIFIED: first bad record at {at}: its fields are not a JSON object\n"));
        return Ok(Report { text: out, problems: 1 });
    }
    out.push_str("verified\n");
    Ok(Report::clean(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::audit::{AuditLog, Record};

    #[test]
    fn the_verify_command_names_the_first_bad_record() {
        let d = std::env::temp_dir().join(format!("knockd-verifycmd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let log = d.join("audit.log");
        let out = d.join("auditor.key");
        assert!(init_key(&log, &out).unwrap().contains("--verify --key"));
        let mut a = AuditLog::open(&log).unwrap();
        for i in 0..4u64 {
            a.write(Record::new("grant").with("door", "ssh").with("n", i), true).unwrap();
        }
        drop(a);
        let ok = verify(&log, Some(&out)).unwrap();
        assert!(
            ok.is_clean() && ok.text.contains("every record verified") && ok.text.ends_with("verified\n"),
            "{ok:?}"
        );
        let nokey = verify(&log, None).unwrap();
        assert!(nokey.is_clean() && nokey.text.contains("recomputes every later hash"), "{nokey:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::write(&log, text.replacen("\"n\":2", "\"n\":7", 1)).unwrap();
        let bad = verify(&log, Some(&out)).unwrap();
        assert_eq!(bad.problems, 1, "{bad:?}");
        assert!(bad.text.contains("NOT VERIFIED: first bad record at audit.log line 3 (seq 2): edited"), "{bad:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
