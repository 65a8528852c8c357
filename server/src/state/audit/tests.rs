//! The audit log's writer: chain, key steps, crash recovery, rotation, flood safety, anchors.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use knock_core::auditchain::{self, ChainFile, Fault};

use super::keyfile::read_auditor_key;
use super::*;

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh state directory (0700) with its log path.
fn scratch(tag: &str) -> (PathBuf, PathBuf) {
    let d = std::env::temp_dir().join(format!(
        "knockd-audit-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = d.join("audit.log");
    (d, log)
}

fn opts() -> AuditOptions {
    AuditOptions { rotate_bytes: ROTATE_BYTES, anchor_every_records: 5, anchor_every_ms: 10_000 }
}

fn rec(event: &str, i: u64) -> Record {
    Record::new(event).with("door", "ssh").with("client", "alice").with("source", "198.18.0.2").with("n", i)
}

/// The first key, read from the state before anything is written.
fn first_key(log: &Path) -> AuditKey {
    KeyFile::for_log(log).load().unwrap().unwrap().key
}

fn check(log: &Path, key: Option<&AuditKey>) -> auditchain::Report {
    let paths = files::chain_files(log).unwrap();
    let data: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(p).unwrap()))
        .collect();
    let chain: Vec<ChainFile<'_>> = data.iter().map(|(n, b)| ChainFile { name: n, bytes: b }).collect();
    auditchain::verify(&chain, key, KeyFile::for_log(log).tail().unwrap())
}

#[test]
fn records_are_chained_maced_and_the_key_file_is_private_and_moves_forward() {
    let (_d, log) = scratch("chain");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    a.write(rec("grant", 1), true).unwrap();
    a.write(rec("burn", 2), false).unwrap();
    a.sync().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(&format!("{{\"seq\":0,\"prev\":\"{}\",\"ts_ms\":", "0".repeat(64))), "{}", lines[0]);
    assert!(lines[0].contains("\"event\":\"grant\""), "the e2e tests look for this: {}", lines[0]);
    assert!(lines[1].starts_with("{\"seq\":1,\"prev\":\""));
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["event"], "burn");
    assert_eq!(v["n"], 2);
    let r = check(&log, Some(&k0));
    assert!(r.ok() && r.records == 2 && r.tail_checked, "{r:?}");
    // audit.key: 0600, at seq 2, holding k_2 and nothing older.
    let key_path = KeyFile::for_log(&log).path().to_path_buf();
    assert_eq!(std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777, 0o600);
    let state = KeyFile::for_log(&log).load().unwrap().unwrap();
    assert_eq!(state.next_seq, 2);
    assert_eq!(state.key.expose(), k0.stepped(2).expose());
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    for old in [&k0, &k0.next()] {
        assert!(!key_text.contains(&hex(old.expose())), "an earlier key is still on file");
    }
    // No key of any step ever appears in the log.
    for i in 0..4 {
        assert!(!text.contains(&hex(k0.stepped(i).expose())));
    }
}

#[test]
fn reserved_field_names_cannot_forge_the_frame() {
    let (_d, log) = scratch("reserved");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    a.write(Record::new("x").with("seq", 99).with("mac", "zz").with("prev", "p"), true).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"seq_field\":99") && text.contains("\"mac_field\":\"zz\""), "{text}");
    assert!(check(&log, Some(&k0)).ok());
}

#[test]
fn a_restart_continues_the_chain_even_when_the_key_file_lags() {
    let (_d, log) = scratch("restart");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    a.write(rec("start", 0), true).unwrap();
    a.write(rec("grant", 1), true).unwrap();
    // A crash: no sync, no drop, so audit.key still says seq 0.
    std::mem::forget(a);
    assert_eq!(KeyFile::for_log(&log).load().unwrap().unwrap().next_seq, 0);
    let mut b = AuditLog::open_with(&log, opts()).unwrap();
    assert_eq!(b.next_seq(), 2, "the key was stepped past the records it found");
    b.write(rec("start", 2), true).unwrap();
    drop(b);
    let r = check(&log, Some(&k0));
    assert!(r.ok() && r.records == 3, "{r:?}");
    assert_eq!(KeyFile::for_log(&log).load().unwrap().unwrap().next_seq, 3);
}

#[test]
fn a_crash_mid_write_leaves_a_torn_record_that_verifies_and_is_cut_and_noted_on_reopen() {
    let (_d, log) = scratch("torn");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    for i in 0..3 {
        a.write(rec("grant", i), true).unwrap();
    }
    a.sync().unwrap();
    std::mem::forget(a);
    // Half a line, as a crash inside write() leaves it.
    let partial = seal(3, &[0; 32], "\"event\":\"grant\"", &k0.stepped(3));
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&partial.as_bytes()[..40]).unwrap();
    drop(f);
    let r = check(&log, Some(&k0));
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.records, 3);
    assert_eq!(r.torn.as_ref().unwrap().at.line, 4);

    let mut b = AuditLog::open_with(&log, opts()).unwrap();
    b.write(rec("start", 9), true).unwrap();
    drop(b);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[3].contains("\"event\":\"torn\"") && lines[3].contains("\"cut_bytes\":40"), "{}", lines[3]);
    let r = check(&log, Some(&k0));
    assert!(r.ok() && r.torn.is_none() && r.records == 5, "{r:?}");
}

#[test]
fn truncation_in_the_middle_is_caught_by_the_key_file_and_answered_on_reopen() {
    let (_d, log) = scratch("trunc");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    for i in 0..6 {
        a.write(rec("grant", i), true).unwrap();
    }
    drop(a);
    let text = std::fs::read_to_string(&log).unwrap();
    let cut = text.match_indices('\n').nth(2).unwrap().0 + 30;
    std::fs::write(&log, &text[..cut]).unwrap();
    let r = check(&log, Some(&k0));
    let (_, fault) = r.fault.clone().unwrap();
    assert_eq!(fault, Fault::Truncated { last: Some(2), written: 5 }, "{r:?}");
    // The daemon starts again: it cuts the partial line, notes the gap and goes on from audit.key,
    // so the break stays visible.
    let mut b = AuditLog::open_with(&log, opts()).unwrap();
    assert_eq!(b.next_seq(), 8, "torn and audit-gap notes at seq 6 and 7");
    b.write(rec("start", 0), true).unwrap();
    drop(b);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"event\":\"audit-gap\""));
    let (at, fault) = check(&log, Some(&k0)).fault.unwrap();
    assert_eq!(fault, Fault::Deleted { expected: 3, found: 6 });
    assert_eq!(at.line, 4);
}

#[test]
fn a_missing_key_file_moves_the_old_chain_aside_and_starts_a_new_one() {
    let (d, log) = scratch("orphan");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    a.write(rec("grant", 0), true).unwrap();
    drop(a);
    std::fs::remove_file(KeyFile::for_log(&log).path()).unwrap();
    let b = AuditLog::open_with(&log, opts()).unwrap();
    drop(b);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("{\"seq\":0,") && text.contains("\"event\":\"chain-start\""), "{text}");
    let orphaned: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit.orphaned-"))
        .collect();
    assert_eq!(orphaned.len(), 1);
    assert!(orphaned[0].path().join("audit.log").exists());
    assert!(check(&log, None).ok());
}

#[test]
fn two_writers_take_turns_without_forking_the_chain() {
    // The daemon and `knockd grant` at the console both write.
    let (_d, log) = scratch("two");
    let mut daemon = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    daemon.write(rec("start", 0), true).unwrap();
    daemon.write(rec("burn", 1), false).unwrap(); // not yet synced, audit.key lags
    let mut console = AuditLog::open_with(&log, opts()).unwrap();
    assert_eq!(console.next_seq(), 2);
    console.write(rec("manual-grant", 2), true).unwrap();
    drop(console);
    daemon.write(rec("grant", 3), true).unwrap();
    assert_eq!(daemon.next_seq(), 4);
    daemon.sync().unwrap();
    let r = check(&log, Some(&k0));
    assert!(r.ok() && r.records == 4, "{r:?}");
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let (_d, log) = scratch("rotate");
    let small = AuditOptions { rotate_bytes: 600, ..opts() };
    let mut a = AuditLog::open_with(&log, small).unwrap();
    let k0 = first_key(&log);
    for i in 0..12 {
        a.write(rec("grant", i), true).unwrap();
    }
    drop(a);
    let files = files::chain_files(&log).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    assert!(files[0].ends_with("audit.log.1") && files.last().unwrap().ends_with("audit.log"));
    let r = check(&log, Some(&k0));
    assert!(r.ok() && r.records == 12, "{r:?}");
    // The first record of the second file links to the last of the first.
    let first = std::fs::read_to_string(&files[0]).unwrap();
    let second = std::fs::read_to_string(&files[1]).unwrap();
    let last_of_first = first.lines().last().unwrap();
    let f = parse_line(second.lines().next().unwrap().as_bytes()).unwrap();
    assert_eq!(f.prev, line_hash(last_of_first.as_bytes()));
    // A reopen whose live file is still empty (a crash right after rotating) finds the tail in
    // the newest rotated file.
    std::fs::rename(&log, files::rotated_path(&log, files.len() as u64)).unwrap();
    let mut b = AuditLog::open_with(&log, small).unwrap();
    b.write(rec("start", 0), true).unwrap();
    drop(b);
    assert!(check(&log, Some(&k0)).ok());
    assert_eq!(files::chain_files(&log).unwrap().len(), files.len() + 1);
    // Deleting the oldest rotated file is caught.
    std::fs::remove_file(&files[0]).unwrap();
    assert!(matches!(check(&log, Some(&k0)).fault.unwrap().1, Fault::StartMissing { .. }));
}

#[test]
fn replay_floods_are_folded_but_grants_never_are() {
    let (_d, log) = scratch("flood");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let k0 = first_key(&log);
    let t0 = 1_795_564_800_000u64;
    let replay = |t: u64| {
        Record::new("replay")
            .with("door", "ssh")
            .with("client", "alice")
            .with("source", "203.0.113.9")
            .with("sequence", "hotp#4")
            .with("ts_ms", t)
    };
    for i in 0..500 {
        a.write(replay(t0 + i), false).unwrap();
    }
    for i in 0..3 {
        a.write(rec("grant", i).with("ts_ms", t0 + 600), true).unwrap();
    }
    a.write(replay(t0 + 700), false).unwrap();
    a.flush_due(t0 + 1700).unwrap();
    drop(a);
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<(&str, u64)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e.get("count").and_then(|c| c.as_u64()).unwrap_or(1)))
        .collect();
    assert_eq!(
        kinds,
        [("replay", 1), ("replay", 499), ("grant", 1), ("grant", 1), ("grant", 1), ("replay", 1)],
        "a grant flushes the count first; grants are one by one"
    );
    assert_eq!(events[1]["first_ms"], t0 + 1);
    assert!(check(&log, Some(&k0)).ok());
}

#[test]
fn the_chain_head_is_anchored_every_n_records_or_t_seconds() {
    let (_d, log) = scratch("anchor");
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    let t = knock_core::time::unix_now_ms();
    assert_eq!(a.anchor_if_due(t + 1_000_000), None, "nothing written, nothing to anchor");
    a.write(rec("grant", 0), true).unwrap();
    assert_eq!(a.anchor_if_due(t + 1), None);
    let (seq, head) = a.anchor_if_due(t + 10_001).unwrap();
    assert_eq!((seq, head), (0, hex(&a.head())));
    for i in 0..5 {
        a.write(rec("burn", i), false).unwrap();
    }
    assert_eq!(a.anchor_if_due(t + 10_002).map(|x| x.0), Some(5), "five records");
    // The anchor syncs first: audit.key is at the anchored head.
    assert_eq!(KeyFile::for_log(&log).load().unwrap().unwrap().next_seq, 6);
}

#[test]
fn init_key_exports_once_and_only_before_the_first_record() {
    let (d, log) = scratch("initkey");
    let out = d.join("auditor.key");
    let fingerprint = export_first_key(&log, &out).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let k0 = read_auditor_key(&out).unwrap();
    assert_eq!(k0.expose(), first_key(&log).expose());
    assert_eq!(fingerprint, k0.fingerprint());
    let mark = std::fs::read_to_string(KeyFile::for_log(&log).exported_path()).unwrap();
    assert!(mark.starts_with("exported ") && mark.contains(&fingerprint) && !mark.contains(&hex(k0.expose())));
    let again = export_first_key(&log, &d.join("again.key")).unwrap_err().to_string();
    assert!(again.contains("already exported"), "{again}");
    // The chain the daemon then writes verifies under the exported key.
    let mut a = AuditLog::open_with(&log, opts()).unwrap();
    a.write(rec("start", 0), true).unwrap();
    drop(a);
    assert!(check(&log, Some(&k0)).ok());

    // A log with records already: the first key is gone.
    let (d2, log2) = scratch("initkey-late");
    let mut a = AuditLog::open_with(&log2, opts()).unwrap();
    a.write(rec("start", 0), true).unwrap();
    drop(a);
    let late = export_first_key(&log2, &d2.join("k")).unwrap_err().to_string();
    assert!(late.contains("already holds 1 record") && late.contains("move"), "{late}");
    assert!(!d2.join("k").exists());
    // A group-readable auditor key is refused.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(read_auditor_key(&out).unwrap_err().to_string().contains("chmod 600"));
}
