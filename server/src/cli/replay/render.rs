//! `knockd replay`'s output: a text report whose every table is folded to its top rows, or
//! one JSON document with stable keys (documented in docs/OPERATIONS.md; serde_json writes an
//! object's keys in sorted order).

use std::fmt::Write as _;
use std::net::IpAddr;

use knock_core::packet::LinkType;
use knock_core::time::format_utc_ms;
use serde_json::{json, Value};

use super::findings::{Finding, Outcome, Verdict};
use super::sources::Traffic;

/// Version of the JSON document: raised when a key changes meaning or goes away.
const JSON_VERSION: u64 = 1;

fn link_name(link: LinkType) -> &'static str {
    match link {
        LinkType::Ethernet => "ethernet",
        LinkType::LinuxSll => "linux-sll",
        LinkType::LinuxSll2 => "linux-sll2",
        LinkType::Null => "null",
        LinkType::Loop => "loop",
        LinkType::Raw => "raw",
    }
}

/// One section of findings: its JSON key, its title in the text, and what it holds.
type Section = (&'static str, &'static str, fn(&Verdict) -> bool);

/// The sections of findings, in the order they are printed.
const SECTIONS: [Section; 5] = [
    ("opened", "would have opened", |v| matches!(v, Verdict::Opened)),
    ("replays", "replays of a used sequence (nothing opens)", |v| {
        matches!(v, Verdict::ReplayOfLedger | Verdict::ReplayInCapture { .. })
    }),
    ("resyncs", "beyond the window (half of a resync: opens only with the next sequence)", |v| {
        matches!(v, Verdict::Resync)
    }),
    ("burned", "would have been burned", |v| matches!(v, Verdict::Burned { .. })),
    ("alerts", "the same prefix from two sources (burned for both)", |v| matches!(v, Verdict::Alert { .. })),
];

/// The text report.
pub fn text(o: &Outcome, top: usize) -> String {
    let mut out = String::new();
    let ts = if o.nanosecond { "nanosecond" } else { "microsecond" };
    let _ = writeln!(out, "capture {} ({}, {ts} timestamps)", o.file.display(), link_name(o.link));
    let _ = writeln!(out, "frames: {}, of which TCP/UDP packets: {}", o.frames, o.packets);
    if let Some((first, last)) = o.span_ms {
        let _ = writeln!(
            out,
            "capture time: {} to {} UTC ({:.3} s)",
            format_utc_ms(first),
            format_utc_ms(last),
            (last - first) as f64 / 1000.0
        );
    }
    let secs = o.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { o.frames as f64 / secs } else { 0.0 };
    let _ = writeln!(out, "replayed in {secs:.3} s ({rate:.0} frames/s)");
    let _ = writeln!(
        out,
        "doors: {} (ledgers of {} read only; nothing was written)",
        if o.doors.is_empty() { "none".to_string() } else { o.doors.join(", ") },
        o.state_dir.display()
    );
    for r in &o.refused {
        let _ = writeln!(out, "refused: {r}");
    }
    for (_, title, pick) in SECTIONS {
        let rows: Vec<&Finding> = o.findings.iter().filter(|f| pick(&f.verdict)).collect();
        let _ = writeln!(out, "\n{title}: {}", rows.len());
        for f in rows.iter().take(top) {
            let _ = writeln!(out, "  {}", finding_line(f));
        }
        if rows.len() > top {
            let _ = writeln!(out, "  ... and {} more (--top N shows more, --json lists all)", rows.len() - top);
        }
    }
    let s = &o.sources;
    let _ = writeln!(out, "\nguessing traffic by source: {} sources, the top {} by packets", s.total.0, s.top.len());
    let _ = writeln!(out, "  {:<39} {:>12} {:>12} {:>12}", "source", "packets", "range hits", "near misses");
    for (source, t) in &s.top {
        let _ = writeln!(out, "  {}", traffic_line(&source.to_string(), t));
    }
    if s.others.0 > 0 {
        let _ = writeln!(out, "  {}", traffic_line(&format!("{} other sources", s.others.0), &s.others.1));
    }
    let _ = writeln!(out, "  {}", traffic_line(&format!("total ({} sources)", s.total.0), &s.total.1));
    out
}

fn traffic_line(label: &str, t: &Traffic) -> String {
    format!("{label:<39} {:>12} {:>12} {:>12}", t.packets, t.range_hits, t.near_misses)
}

fn finding_line(f: &Finding) -> String {
    let what = match &f.verdict {
        Verdict::Opened | Verdict::Resync => String::new(),
        Verdict::ReplayOfLedger => ": used before the capture (per the ledger)".into(),
        Verdict::ReplayInCapture { first_ms, first_source } => {
            format!(": used earlier in this capture, at {} UTC from {first_source}", format_utc_ms(*first_ms))
        }
        Verdict::Burned { progress, reason } => format!(": {progress} knocks matched, {reason}"),
        Verdict::Alert { second } => format!(": and from {second}"),
    };
    format!(
        "{} UTC  door {}  client {}  source {}  {} ({}){what}",
        format_utc_ms(f.at_ms),
        f.door,
        f.client,
        f.source,
        f.sequence,
        f.purpose.label()
    )
}

/// The JSON document: one object, every finding, the top `top` sources.
pub fn json(o: &Outcome, top: usize) -> String {
    let mut doc = json!({
        "version": JSON_VERSION,
        "capture": {
            "file": o.file.display().to_string(),
            "link_type": link_name(o.link),
            "timestamps": if o.nanosecond { "nanosecond" } else { "microsecond" },
            "frames": o.frames,
            "packets": o.packets,
            "first_ms": o.span_ms.map(|s| s.0),
            "last_ms": o.span_ms.map(|s| s.1),
            "elapsed_ms": o.elapsed.as_millis() as u64,
        },
        "state_dir": o.state_dir.display().to_string(),
        "doors": o.doors,
        "refused": o.refused,
        "sources": {
            "top_n": top,
            "top": o.sources.top.iter().map(|(s, t)| traffic_json(Some(*s), t)).collect::<Vec<_>>(),
            "others": { "sources": o.sources.others.0, "traffic": traffic_json(None, &o.sources.others.1) },
            "total": { "sources": o.sources.total.0, "traffic": traffic_json(None, &o.sources.total.1) },
        },
    });
    for (key, _, pick) in SECTIONS {
        let rows: Vec<Value> = o.findings.iter().filter(|f| pick(&f.verdict)).map(finding_json).collect();
        doc[key] = Value::Array(rows);
    }
    let mut text = doc.to_string();
    text.push('\n');
    text
}

fn traffic_json(source: Option<IpAddr>, t: &Traffic) -> Value {
    let mut v = json!({ "packets": t.packets, "range_hits": t.range_hits, "near_misses": t.near_misses });
    if let Some(s) = source {
        v["source"] = Value::String(s.to_string());
    }
    v
}

fn finding_json(f: &Finding) -> Value {
    let mut v = json!({
        "time_ms": f.at_ms,
        "time": format!("{}Z", format_utc_ms(f.at_ms).replace(' ', "T")),
        "door": f.door,
        "client": f.client,
        "source": f.source.to_string(),
        "sequence": f.sequence,
        "counter": f.counter,
        "purpose": f.purpose.label(),
    });
    match &f.verdict {
        Verdict::Opened | Verdict::Resync => {}
        Verdict::ReplayOfLedger => v["used"] = json!("ledger"),
        Verdict::ReplayInCapture { first_ms, first_source } => {
            v["used"] = json!("capture");
            v["first_time_ms"] = json!(first_ms);
            v["first_source"] = json!(first_source.to_string());
        }
        Verdict::Burned { progress, reason } => {
            v["progress"] = json!(progress);
            v["reason"] = json!(reason);
        }
        Verdict::Alert { second } => v["second_source"] = json!(second.to_string()),
    }
    v
}
