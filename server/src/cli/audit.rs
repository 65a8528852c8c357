//! `knockd audit`: the table or JSON lines, `--verify`, and `init-key`.

use std::path::{Path, PathBuf};

use knock_core::auditchain::{self, ChainFile};
use knock_core::keys::hex;
use serde_json::{Map, Value};

use crate::cli::report::Report;
use crate::state::audit::files;
use crate::state::audit::keyfile::{export_first_key, read_auditor_key, KeyFile};

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
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<u64>,
    /// Only records at or before T: RFC 3339 UTC (2026-11-25T13:00:00Z) or unix seconds.
    #[arg(long, value_name = "T", value_parser = parse_time)]
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
pub fn command(log: &Path, args: &AuditArgs) -> Result<Report, String> {
    match &args.action {
        Some(AuditAction::InitKey { out }) => export_first_key(log, out).map(Report::clean),
        None if args.verify => verify(log, args.key.as_deref()),
        None => list(log, args).map(Report::clean),
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `--since` / `--until`: RFC 3339 in UTC (`2026-11-25T13:00:00Z`, optional fraction,
/// `Z` or `+00:00`; a bare date means its midnight) or unix seconds. Unix milliseconds out.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a time; use RFC 3339 in UTC (2026-11-25T13:00:00Z) or unix seconds");
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        return t.parse::<u64>().ok().and_then(|v| v.checked_mul(1000)).ok_or_else(bad);
    }
    if !t.is_ascii() || t.len() < 10 {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u32, String> {
        let part = t.get(r).ok_or_else(bad)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if &t[4..5] != "-" || &t[7..8] != "-" {
        return Err(bad());
    }
    let (y, mo, d) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0u64);
    if t.len() > 10 {
        let rest = &t[10..];
        let zone_at = rest
            .strip_suffix(['Z', 'z'])
            .map(str::len)
            .or_else(|| rest.strip_suffix("+00:00").map(str::len))
            .ok_or_else(|| format!("`{s}`: give the time in UTC, ending in Z (2026-11-25T13:00:00Z)"))?;
        let clock = &rest[..zone_at];
        if !(clock.starts_with(['T', 't', ' ']) && clock.len() >= 9 && &clock[3..4] == ":" && &clock[6..7] == ":") {
            return Err(bad());
        }
        let at = |r: std::ops::Range<usize>| num(r.start + 10..r.end + 10);
        (h, mi, sec) = (at(1..3)?, at(4..6)?, at(7..9)?);
        if let Some(frac) = clock.get(9..).filter(|f| !f.is_empty()) {
            let digits = frac.strip_prefix('.').filter(|f| !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()));
            let digits = digits.ok_or_else(bad)?;
            ms = format!("{:0<3}", &digits[..digits.len().min(3)]).parse().map_err(|_| bad())?;
        }
        if h > 23 || mi > 59 || sec > 59 {
            return Err(bad());
        }
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(sec);
    u64::try_from(secs).map(|s| s * 1000 + ms).map_err(|_| bad())
}

/// The records of every file of the chain, oldest first, each with its line as written. Only
/// the very last line of the live file may be torn.
fn all_records(log: &Path) -> Result<Vec<files::Line>, String> {
    let paths = files::chain_files(log).map_err(|e| format!("{}: {e}", log.display()))?;
    if paths.is_empty() {
        return Err(format!(
            "{}: no audit log (has knockd run with this state directory? see -c / --state-dir)",
            log.display()
        ));
    }
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
        out.extend(files::json_lines(&p.display().to_string(), &bytes, i + 1 == paths.len())?);
    }
    Ok(out)
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
pub fn list(log: &Path, args: &AuditArgs) -> Result<String, String> {
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
            crate::cli::admin::format_utc_ms(ms),
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
pub fn verify(log: &Path, key_file: Option<&Path>) -> Result<Report, String> {
    let paths = files::chain_files(log).map_err(|e| format!("{}: {e}", log.display()))?;
    if paths.is_empty() {
        return Err(format!(
            "{}: no audit log (has knockd run with this state directory? see -c / --state-dir)",
            log.display()
        ));
    }
    let key = key_file.map(read_auditor_key).transpose()?;
    let mut contents = Vec::new();
    for p in &paths {
        let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
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

    #[test]
    fn times_parse_as_rfc3339_utc_or_unix_seconds() {
        assert_eq!(parse_time("1795564800"), Ok(1_795_564_800_000));
        assert_eq!(parse_time("2026-11-25T00:00:00Z"), Ok(1_795_564_800_000));
        assert_eq!(parse_time("2026-11-25T13:00:00Z"), Ok(1_795_564_800_000 + 13 * 3_600_000));
        assert_eq!(parse_time("2026-11-25t13:00:00.5z"), Ok(1_795_564_800_000 + 13 * 3_600_000 + 500));
        assert_eq!(parse_time("2026-11-25 13:00:00+00:00"), Ok(1_795_564_800_000 + 13 * 3_600_000));
        assert_eq!(parse_time("2026-11-25"), Ok(1_795_564_800_000));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T13:00:00",
            "2026-11-25T13:00:00+01:00",
            "2026-11-25T13:00Z",
            "2026-11-25T13:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-25T13:00:00Zé",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert!(parse_time("2026-11-25T13:00:00+01:00").unwrap_err().contains("UTC"));
    }

    #[test]
    fn format_and_parse_agree() {
        for ms in [0u64, 951_782_400_000, 1_795_564_800_123, 4_102_444_799_999] {
            let text = crate::cli::admin::format_utc_ms(ms).replacen(' ', "T", 1) + "Z";
            assert_eq!(parse_time(&text), Ok(ms), "{text}");
        }
    }
}
