//! `knockd audit` as the auditor runs it: the built binary on a temporary state directory whose
//! records are written through the library (`knockd::state::audit`). The table is pinned in
//! tests/golden/knockd-audit*.txt (`BLESS=1` rewrites them after an intended change); every kind
//! of tampering of issue 5 is run through `knockd audit --verify`.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use knock_core::auditchain::{line_hash, parse_line, seal, AuditKey};
use knock_test_support::golden::check as golden;
use knockd::state::audit::{AuditLog, AuditOptions, Record};

static N: AtomicUsize = AtomicUsize::new(0);

/// 2026-11-25T13:00:00Z.
const T0: u64 = 1_795_611_600_000;

/// A directory with `knockd.toml` and an empty, private `state/`.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "knockd-audit-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("keys")).unwrap();
        fs::create_dir_all(dir.join("state")).unwrap();
        fs::set_permissions(dir.join("state"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        fs::write(
            dir.join("knockd.toml"),
            "[server]\nstate_dir = \"state\"\ninterfaces = [\"lo\"]\nfirewall = \"none\"\n\n[[door]]\nname = \"ssh\"\n\
             mode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.join("state/audit.log")
    }

    /// Runs `knockd -c knockd.toml ARGS` in the fixture: stdout + stderr and the exit code.
    fn knockd(&self, args: &[&str]) -> (String, i32) {
        let out = Command::new(env!("CARGO_BIN_EXE_knockd"))
            .arg("-c")
            .arg("knockd.toml")
            .args(args)
            .current_dir(&self.dir)
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (text.replace(&self.dir.display().to_string(), "$DIR"), out.status.code().unwrap_or(-1))
    }

    /// Exports the auditor's key, then writes a small day of records through the library.
    fn demo(&self) {
        let (out, code) = self.knockd(&["audit", "init-key", "--out", "auditor.key"]);
        assert_eq!(code, 0, "{out}");
        let mut a = AuditLog::open_with(&self.log(), AuditOptions::default()).unwrap();
        let at = |r: Record, s: u64| r.with("ts_ms", T0 + s * 1000);
        let knock = |event: &str, client: &str, source: &str, seq: &str| {
            Record::new(event).with("door", "ssh").with("client", client).with("source", source).with("sequence", seq)
        };
        a.write(at(Record::new("start").with("doors", "ssh"), 0), true).unwrap();
        let grant =
            knock("grant", "alice", "198.18.0.2", "hotp#0").with("ports", "22/tcp").with("open_for_ms", 30_000u64);
        a.write(at(grant, 60), true).unwrap();
        a.write(at(knock("replay", "alice", "198.18.0.9", "hotp#0"), 120), false).unwrap();
        a.write(at(knock("replay", "alice", "198.18.0.9", "hotp#0"), 120), false).unwrap();
        a.write(at(knock("replay", "alice", "198.18.0.9", "hotp#0"), 120), false).unwrap();
        let burn = knock("burn", "bob", "198.18.0.3", "hotp#4").with("progress", 2u64).with("reason", "seq_timeout");
        a.write(at(burn, 3600), false).unwrap();
        let grant =
            knock("grant", "bob", "2001:db8::3", "hotp#5").with("ports", "22/tcp").with("open_for_ms", 30_000u64);
        a.write(at(grant, 3700), true).unwrap();
        a.write(at(Record::new("stop"), 7200), true).unwrap();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_table_json_and_filters() {
    let f = Fixture::new("table");
    f.demo();
    let (table, code) = f.knockd(&["audit"]);
    assert_eq!(code, 0, "{table}");
    golden("knockd-audit.txt", &table);
    let (replays, _) = f.knockd(&["audit", "--replays"]);
    golden("knockd-audit-replays.txt", &replays);

    let (bob, _) = f.knockd(&["audit", "--client", "bob"]);
    assert_eq!(bob.lines().count(), 3, "{bob}");
    let (window, _) = f.knockd(&["audit", "--since", "2026-11-25T13:01:00Z", "--until", "1795615200"]);
    let events: Vec<&str> = window.lines().skip(1).map(|l| l.split_whitespace().nth(2).unwrap()).collect();
    assert_eq!(events, ["grant", "replay", "replay", "burn"], "{window}");
    let (other, _) = f.knockd(&["audit", "--door", "web"]);
    assert_eq!(other.lines().count(), 1, "only the header: {other}");

    // JSON lines are the records exactly as written, so a collector can verify them too.
    let (json, code) = f.knockd(&["audit", "--json", "--client", "alice"]);
    assert_eq!(code, 0);
    let written = fs::read_to_string(f.log()).unwrap();
    for line in json.lines() {
        assert!(written.lines().any(|w| w == line), "{line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["client"], "alice");
    }
    assert_eq!(json.lines().count(), 3);

    let (bad, code) = f.knockd(&["audit", "--since", "yesterday"]);
    assert_ne!(code, 0);
    assert!(bad.contains("RFC 3339"), "{bad}");
}

#[test]
fn verify_passes_on_an_untouched_log() {
    let f = Fixture::new("ok");
    f.demo();
    let (out, code) = f.knockd(&["audit", "--verify", "--key", "auditor.key"]);
    assert_eq!(code, 0, "{out}");
    let head = out.lines().find(|l| l.starts_with("head:")).unwrap().to_string();
    let fingerprint = out.split("fingerprint ").nth(1).unwrap()[..32].to_string();
    golden(
        "knockd-audit-verify.txt",
        &out.replace(&head, "head: seq 6 hash <HASH> (compare with the journal's \"audit chain head\")")
            .replace(&fingerprint, "<FINGERPRINT>"),
    );
    let (out, code) = f.knockd(&["audit", "--verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MACs: not checked (no --key)"), "{out}");
    // init-key runs once.
    let (again, code) = f.knockd(&["audit", "init-key", "--out", "again.key"]);
    assert_ne!(code, 0);
    assert!(again.contains("already exported"), "{again}");
}

/// Runs `--verify` with and without the key on a changed log: (with key, without key).
fn verify_both(f: &Fixture) -> ((String, i32), (String, i32)) {
    (f.knockd(&["audit", "--verify", "--key", "auditor.key"]), f.knockd(&["audit", "--verify"]))
}

fn lines(f: &Fixture) -> Vec<String> {
    fs::read_to_string(f.log()).unwrap().lines().map(String::from).collect()
}

fn put(f: &Fixture, lines: &[String]) {
    fs::write(f.log(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn every_kind_of_tampering_is_named() {
    // Each case: how the log is changed, then what --verify (with the key) must say.
    type Change = fn(&Fixture);
    let cases: [(&str, Change, &str); 5] = [
        (
            "flip a byte",
            |f| {
                let mut b = fs::read(f.log()).unwrap();
                let i = fs::read_to_string(f.log()).unwrap().find("198.18.0.2\"").unwrap() + 9;
                b[i] ^= 0x01; // 198.18.0.2 -> 198.18.0.3
                fs::write(f.log(), b).unwrap();
            },
            "NOT VERIFIED: first bad record at audit.log line 2 (seq 1): edited: the MAC is invalid under the auditor's key",
        ),
        (
            "delete a line",
            |f| {
                let mut l = lines(f);
                l.remove(3);
                put(f, &l);
            },
            "audit.log line 4 (seq 4): deleted: record 3 is missing",
        ),
        (
            "swap two lines",
            |f| {
                let mut l = lines(f);
                l.swap(1, 2);
                put(f, &l);
            },
            "audit.log line 2 (seq 2): reordered: expected seq 1, found 2; seq 1 is at audit.log line 3",
        ),
        (
            "truncate in the middle",
            |f| {
                let text = fs::read_to_string(f.log()).unwrap();
                let cut = text.match_indices('\n').nth(3).unwrap().0 + 50;
                fs::write(f.log(), &text[..cut]).unwrap();
            },
            "truncated: the log ends at seq 3 but the daemon's audit.key says it wrote up to seq 6",
        ),
        (
            "rewrite a record and recompute every later hash",
            |f| {
                let l = lines(f);
                let mut prev = line_hash(l[0].as_bytes());
                let forger = AuditKey::from_bytes([0x42; 32]);
                let mut out = vec![l[0].clone()];
                for (i, line) in l.iter().enumerate().skip(1) {
                    let p = parse_line(line.as_bytes()).unwrap();
                    let members = std::str::from_utf8(p.members).unwrap().replace("198.18.0.2", "198.18.0.66");
                    let new = seal(i as u64, &prev, &members, &forger);
                    prev = line_hash(new.as_bytes());
                    out.push(new);
                }
                put(f, &out);
                // The forger also rewrites audit.key's head so the end matches (he holds the
                // current key, not the earlier ones).
                let state = f.dir.join("state/audit.key");
                let text = fs::read_to_string(&state).unwrap();
                let words: Vec<&str> = text.split_whitespace().collect();
                let forged = format!(
                    "{} {} {} {}\n",
                    words[0],
                    words[1],
                    knock_core::keys::hex(&prev),
                    words[3]
                );
                fs::write(&state, forged).unwrap();
            },
            "audit.log line 2 (seq 1): edited: the MAC is invalid under the auditor's key, and every later hash \
             was recomputed",
        ),
    ];
    for (what, change, expect) in cases {
        let f = Fixture::new("tamper");
        f.demo();
        change(&f);
        let ((with, code), (without, code2)) = verify_both(&f);
        assert_eq!(code, 1, "{what}: {with}");
        assert!(with.contains(expect), "{what}: expected `{expect}` in:\n{with}");
        if what.starts_with("rewrite") {
            assert_eq!(code2, 0, "{what}: the hash chain alone cannot see it:\n{without}");
            assert!(without.contains("recomputes every later hash"), "{without}");
        } else {
            assert_eq!(code2, 1, "{what}: caught without the key too:\n{without}");
        }
    }
}

#[test]
fn a_torn_last_record_verifies_and_reopening_cuts_and_notes_it() {
    let f = Fixture::new("torn");
    f.demo();
    // A crash in the middle of a write: half a line, no newline.
    let mut file = fs::OpenOptions::new().append(true).open(f.log()).unwrap();
    file.write_all(b"{\"seq\":7,\"prev\":\"00").unwrap();
    drop(file);
    let (out, code) = f.knockd(&["audit", "--verify", "--key", "auditor.key"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("torn last record (crash during write): audit.log line 8 (19 bytes)"), "{out}");
    let (table, code) = f.knockd(&["audit"]);
    assert_eq!(code, 0, "the table leaves the torn line out: {table}");
    // The daemon's next open cuts it and says so in the chain.
    drop(AuditLog::open(&f.log()).unwrap());
    let (out, code) = f.knockd(&["audit", "--verify", "--key", "auditor.key"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("note: audit.log line 8 (seq 7): torn: a torn write of 19 bytes was cut at restart"), "{out}");
    assert!(!out.contains("torn last record"), "{out}");
}

#[test]
fn the_chain_runs_across_rotated_files() {
    let f = Fixture::new("rotation");
    let (out, code) = f.knockd(&["audit", "init-key", "--out", "auditor.key"]);
    assert_eq!(code, 0, "{out}");
    let mut a = AuditLog::open_with(&f.log(), AuditOptions { rotate_bytes: 1000, ..AuditOptions::default() }).unwrap();
    for i in 0..20u64 {
        a.write(Record::new("grant").with("door", "ssh").with("client", "alice").with("n", i), true).unwrap();
    }
    drop(a);
    assert!(f.dir.join("state/audit.log.3").exists());
    let (out, code) = f.knockd(&["audit", "--verify", "--key", "auditor.key"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit.log.1, audit.log.2, audit.log.3") && out.contains("(20 records)"), "{out}");
    let (table, _) = f.knockd(&["audit"]);
    assert_eq!(table.lines().count(), 21, "the table reads every file: {table}");
    // A rotated file moved away from the middle.
    fs::rename(f.dir.join("state/audit.log.2"), f.dir.join("audit.log.2")).unwrap();
    let (out, code) = f.knockd(&["audit", "--verify", "--key", "auditor.key"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit.log.3 line 1") && out.contains("deleted: records"), "{out}");
}
