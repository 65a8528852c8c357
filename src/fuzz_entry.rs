//! Entry points for fuzzing every parser of this crate that meets outside input: captured
//! frames, knockd.toml and knockd.conf, sequence files, profiles and bundles, audit logs and
//! ledgers. Each takes arbitrary bytes and panics only when an invariant breaks (a parser
//! panicked, or accepted something it cannot write back, or gave an error without a message).
//!
//! The cargo-fuzz targets in `fuzz/` call these, and so does a short mutating smoke test here
//! (`cargo test`), so CI runs the same checks on every change. [`seeds`] gives valid inputs for
//! both to start from.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::auditchain::{self, AuditKey, ChainFile, Tail, HASH_LEN, KEY_LEN};
use crate::config::{legacy::parse_knockd_conf, migrate::migrate, Config, ConfigError};
use crate::keys::hex;
use crate::ledger::{ConsumeStore, Ledger, WriterLock};
use crate::packet::{parse_frame, LinkType};
use crate::profile::{Bundle, Profile};
use crate::seqfile::SequenceFile;

/// The link types a frame may arrive over, chosen by the first input byte.
const LINKS: [LinkType; 6] =
    [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Null, LinkType::Loop, LinkType::Raw];

/// A captured frame: the first byte picks the link type, the rest is the frame. A parsed
/// packet has a source a host can have, and TCP flags exactly when it is TCP.
pub fn packet_frame(data: &[u8]) {
    let Some((&link, frame)) = data.split_first() else { return };
    let Ok(p) = parse_frame(LINKS[usize::from(link) % LINKS.len()], frame) else { return };
    let bad_source = match p.src {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.to_ipv4_mapped().is_some(),
    };
    assert!(!bad_source, "source {} accepted", p.src);
    assert_eq!(p.tcp_flags.is_some(), p.knock.proto == crate::Proto::Tcp, "{p:?}");
    let _ = p.is_knock();
}

/// Checks a config error: it names a line inside the text (if any) and says something.
fn located(e: &ConfigError, text: &str) {
    assert!(!e.message.trim().is_empty(), "error without a message at {:?}:{:?}", e.line, e.column);
    if let Some(line) = e.line {
        assert!(line >= 1 && line <= text.split('\n').count(), "line {line} outside the text: {e}");
        assert!(e.column.is_some_and(|c| c >= 1), "line without a column: {e}");
    }
}

/// `knockd migrate`'s output for an accepted config must parse back.
fn migrates_back(c: &Config) {
    assert!(!c.doors.is_empty());
    if let Ok(out) = migrate(c) {
        if let Err(e) = Config::parse(Path::new("/etc/knockd/knockd.toml"), &out) {
            panic!("migrate wrote a knockd.toml that does not parse back: {e}\n{out}");
        }
    }
}

/// knockd.toml text ([`Config::parse`]); an accepted config migrates to one that parses back.
pub fn knockd_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(Path::new("/etc/knockd/knockd.toml"), text) {
        Ok(c) => migrates_back(&c),
        Err(e) => located(&e, text),
    }
}

/// knockd 0.8's knockd.conf text; an accepted config migrates to a knockd.toml that parses back.
pub fn knockd_conf(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_knockd_conf(Path::new("/etc/knockd.conf"), text) {
        Ok(c) => migrates_back(&c),
        Err(e) => located(&e, text),
    }
}

/// A `file` door's sequence file: every sequence has two knocks at least, on a line of the file.
pub fn sequence_file(data: &[u8]) {
    match SequenceFile::parse(Path::new("/etc/knockd/ssh.seq"), data) {
        Ok(f) => {
            let lines = data.split(|b| *b == b'\n').count();
            for s in &f.sequences {
                assert!(s.knocks.len() >= 2 && (1..=lines).contains(&s.line), "{s:?}");
            }
            assert!(f.ledger_label().starts_with("file-"));
        }
        Err(e) => assert!(!e.message.is_empty() && e.line <= data.split(|b| *b == b'\n').count(), "{e}"),
    }
}

/// A profile file, a bundle, or a one-line bundle: what is accepted is written back to the same.
pub fn profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("alice.knock");
    match Profile::parse(path, text) {
        Ok(p) => assert_eq!(Profile::parse(path, &p.to_toml()).as_ref().ok(), Some(&p), "{}", p.to_toml()),
        Err(e) => located(&e, text),
    }
    match Bundle::parse_any(path, text) {
        Ok(b) => {
            let again = Bundle::parse(path, &b.to_toml()).unwrap_or_else(|e| panic!("bundle does not parse back: {e}"));
            assert_eq!(again.profile, b.profile);
            let line = Bundle::parse_any(path, &b.to_line()).unwrap_or_else(|e| panic!("one-line form: {e}"));
            assert_eq!(line.profile, b.profile);
        }
        Err(e) => assert!(!e.message.trim().is_empty(), "bundle error without a message"),
    }
}

/// An audit log: its first line framed ([`auditchain::parse_line`]), then the whole input,
/// split into files at `0xff` bytes, verified without a key, with a key and with a tail taken
/// from the input. A report never counts more records than lines, and its head is the last.
pub fn audit_chain(data: &[u8]) {
    let first = data.split(|b| *b == b'\n').next().unwrap_or(&[]);
    if let Ok(f) = auditchain::parse_line(first) {
        assert!(first.starts_with(f.body) && f.body.len() < first.len());
        assert!(f.body.ends_with(f.members) || f.members.is_empty());
    }
    let parts: Vec<&[u8]> = data.split(|b| *b == 0xff).take(4).collect();
    let names = ["audit.log.2", "audit.log.1", "audit.log", "audit.log.x"];
    let files: Vec<ChainFile> = parts.iter().zip(names).map(|(bytes, name)| ChainFile { name, bytes }).collect();
    let lines: u64 = parts.iter().map(|p| p.split(|b| *b == b'\n').count() as u64).sum();
    let key = AuditKey::from_bytes([7; KEY_LEN]);
    let mut head = [0u8; HASH_LEN];
    let n = data.len().min(HASH_LEN);
    head[..n].copy_from_slice(&data[..n]);
    let tail = Tail { next_seq: data.first().map_or(0, |b| u64::from(*b % 8)), head };
    for (key, tail) in [(None, None), (Some(&key), None), (Some(&key), Some(tail))] {
        let r = auditchain::verify(&files, key, tail);
        assert!(r.records <= lines, "{r:?}");
        assert_eq!(r.head.map(|h| h.0 + 1), (r.records > 0).then_some(r.records), "{r:?}");
        if let Some((at, fault)) = &r.fault {
            assert!(!fault.to_string().is_empty() && !at.to_string().is_empty());
        }
    }
}

/// Label of the ledgers [`ledger_replay`] writes.
const LEDGER_LABEL: &str = "0123456789abcdef0123456789abcdef";
/// The ledger file's first line (docs: the format in src/ledger.rs).
const LEDGER_HEADER: &str = "one-time-knock-ledger-v1";

/// A ledger record line as the ledger writes it: `<kind> <counter> <unix_ms> <check>`, the check
/// being the first 8 hex digits of SHA-256 of the label, a newline, and the rest of the line.
pub fn ledger_record(kind: &str, counter: u64, ms: u64) -> String {
    let rest = format!("{kind} {counter} {ms}");
    let mut h = Sha256::new();
    h.update(LEDGER_LABEL.as_bytes());
    h.update(b"\n");
    h.update(rest.as_bytes());
    format!("{rest} {}\n", hex(&h.finalize()[..4]))
}

/// The ledger text for fuzz input: the first byte's low bit chooses raw text after the header,
/// or records built from 10-byte chunks (kind, counter, flags: small counter, bad check, no
/// newline), so replays reach deep states through valid checksums.
pub fn ledger_text(data: &[u8]) -> String {
    let mut text = format!("{LEDGER_HEADER} {LEDGER_LABEL}\n");
    let Some((&mode, rest)) = data.split_first() else { return text };
    if mode & 1 == 0 {
        text.push_str(&String::from_utf8_lossy(rest));
        return text;
    }
    for chunk in rest.chunks(10) {
        let [kind, c @ .., flags] = chunk else { break };
        let Ok(bytes) = <[u8; 8]>::try_from(c) else { break };
        let counter = if flags & 1 != 0 { u64::from(bytes[0] % 32) } else { u64::from_be_bytes(bytes) };
        let kind = ["consume", "burn", "use", "consume", "burn", "use", "skip", ""][usize::from(kind % 8)];
        let mut line = ledger_record(kind, counter, 1_700_000_000_000);
        if flags & 2 != 0 {
            line = line.replacen(' ', "  ", 1);
        }
        if flags & 4 != 0 {
            line.pop();
        }
        text.push_str(&line);
    }
    text
}

/// A ledger replayed from a temporary file through [`Ledger::read`] and [`Ledger::open`] (which
/// agree). An opened ledger is
/// consistent: burned counters lie at or above `next`, the last consume below it, and the
/// torn bytes within the file; a ledger of well-formed records (counters below `u64::MAX`,
/// which the ledger refuses: nothing could follow it) opens.
pub fn ledger_replay(data: &[u8]) {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    static LOCK: OnceLock<WriterLock> = OnceLock::new();
    let text = ledger_text(data);
    let dir = std::env::temp_dir().join(format!("knock-fuzz-ledger-{}", std::process::id()));
    let lock = LOCK.get_or_init(|| WriterLock::acquire(&dir).expect("the temporary ledger directory"));
    let path = dir.join(format!("{}.ledger", CALLS.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, &text).expect("temporary ledger");
    let read = Ledger::read(&path, LEDGER_LABEL);
    let opened = Ledger::open(&path, LEDGER_LABEL, lock);
    let _ = std::fs::remove_file(&path);
    match (&read, &opened) {
        (Ok(r), Ok(o)) => assert_eq!((r.next(), r.last_consumed()), (o.next(), o.last_consumed())),
        (r, o) => assert_eq!(r.is_ok(), o.is_ok(), "read and open disagree: {r:?} {o:?}"),
    }
    let well_formed = text.lines().skip(1).all(|l| {
        let words: Vec<&str> = l.split(' ').collect();
        matches!(words.first(), Some(&"consume" | &"burn" | &"use"))
            && words.len() == 4
            && words[1].parse::<u64>().is_ok_and(|c| c < u64::MAX)
            && ledger_record(words[0], words[1].parse().unwrap_or(0), words[2].parse().unwrap_or(0)) == format!("{l}\n")
    }) && text.ends_with('\n');
    let ledger = match opened {
        Ok(l) => l,
        Err(e) => {
            assert!(!well_formed, "a well-formed ledger was refused: {e}\n{text}");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let next = ledger.next();
    assert!(ledger.burned().all(|b| b >= next), "burned below next {next}");
    if let Some(c) = ledger.last_consumed() {
        assert!(c < next, "last consumed {c} not below next {next}\n{text}");
    }
    assert!(ledger.torn_bytes() <= text.len());
    assert!(!well_formed || ledger.torn_bytes() == 0);
}

/// Valid inputs to start from, per entry point (also the corpus seeds of `fuzz/`).
pub mod seeds {
    use super::*;
    use crate::auditchain::{line_hash, seal, GENESIS_PREV};
    use crate::keys::Secret;
    use crate::knock::{PortRange, Proto};
    use crate::profile::BundleSecret;
    use crate::sequence::Mode;

    /// Frames: an IPv4 TCP SYN and an IPv6 UDP datagram over Ethernet and raw IP.
    pub fn packet_frame() -> Vec<Vec<u8>> {
        let mut v4 = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1];
        v4.extend_from_slice(&[0xd4, 0x31, 0x9c, 0x45, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0xd4, 0x31, 0x9c, 0x45, 0, 8, 0, 0]);
        let eth = |ethertype: [u8; 2], l3: &[u8]| {
            let mut f = vec![0]; // LINKS[0]: Ethernet
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ethertype);
            f.extend_from_slice(l3);
            f
        };
        let raw = |l3: &[u8]| [&[5u8][..], l3].concat(); // LINKS[5]: raw IP
        vec![eth([8, 0], &v4), eth([0x86, 0xdd], &v6), raw(&v4), raw(&v6)]
    }

    /// The shipped knockd.toml and a totp door.
    pub fn knockd_toml() -> Vec<Vec<u8>> {
        vec![
            include_bytes!("../etc/knockd.toml").to_vec(),
            b"[server]\ninterfaces = [\"any\"]\n\n[[door]]\nname = \"ssh\"\nmode = \"totp\"\nopen = [\"22/tcp\"]\n\
              keys = \"keys/ssh\"\nstep = \"30s\"\nskew = 2\nalways_allow = [\"198.18.0.0/15\"]\n"
                .to_vec(),
        ]
    }

    /// The shipped knockd.conf and the man page's examples.
    pub fn knockd_conf() -> Vec<Vec<u8>> {
        vec![
            include_bytes!("../etc/knockd.conf").to_vec(),
            include_bytes!("../tests/fixtures/knockd/example1.conf").to_vec(),
            include_bytes!("../tests/fixtures/knockd/example2.conf").to_vec(),
            include_bytes!("../tests/fixtures/knockd/example3.conf").to_vec(),
            include_bytes!("../tests/fixtures/knockd/example4.conf").to_vec(),
        ]
    }

    /// The example sequence file.
    pub fn sequence_file() -> Vec<Vec<u8>> {
        vec![include_bytes!("../sequences/example.seq").to_vec(), b"#used\n7000,8000:udp 9000\n1 2\n".to_vec()]
    }

    fn sample(mode: Mode) -> Profile {
        Profile {
            name: "ssh-alice".into(),
            server: "198.18.0.1".parse().expect("address"),
            server_id: [0x42; 16],
            door: "ssh".into(),
            client: "alice".into(),
            mode,
            knock_ports: PortRange::new(40000, 42047).expect("range"),
            protocols: vec![Proto::Tcp, Proto::Udp],
            length: 8,
            bind_source: true,
            source_addr: None,
            open: vec!["22/tcp".parse().expect("port")],
            delay_ms: 20,
            close: true,
            step_secs: 30,
            skew: 1,
            warn_below: 10,
        }
    }

    /// A profile, a hotp and a totp bundle, a file bundle, and a one-line bundle.
    pub fn profile() -> Vec<Vec<u8>> {
        let key = || BundleSecret::Key(Secret::from_bytes([9; 32]));
        let hotp = Bundle { profile: sample(Mode::Hotp), secret: key() };
        let totp = Bundle { profile: sample(Mode::Totp), secret: key() };
        let list = zeroize::Zeroizing::new("7000 8000\n7001 8001\n".to_string());
        let file = Bundle { profile: sample(Mode::File), secret: BundleSecret::Sequences(list) };
        vec![
            sample(Mode::Totp).to_toml().into_bytes(),
            hotp.to_toml().as_bytes().to_vec(),
            totp.to_toml().as_bytes().to_vec(),
            file.to_toml().as_bytes().to_vec(),
            hotp.to_line().as_bytes().to_vec(),
        ]
    }

    /// A log of four records under the key [`audit_chain`](super::audit_chain) verifies with.
    pub fn audit_chain() -> Vec<Vec<u8>> {
        let mut key = AuditKey::from_bytes([7; KEY_LEN]);
        let mut prev = GENESIS_PREV;
        let mut log = Vec::new();
        for i in 0..4u64 {
            let line = seal(i, &prev, &format!("\"ts_ms\":{},\"event\":\"grant\",\"client\":\"a\"", 1000 + i), &key);
            prev = line_hash(line.as_bytes());
            key.advance();
            log.extend_from_slice(line.as_bytes());
            log.push(b'\n');
            if i == 1 {
                log.push(0xff); // a rotated file ends here
            }
        }
        vec![log, include_bytes!("../tests/vectors/audit-chain-v1.log").to_vec()]
    }

    /// Record-built ledgers: consumes, burns and uses, one torn at the end.
    pub fn ledger_replay() -> Vec<Vec<u8>> {
        let record = |kind: u8, counter: u64, flags: u8| {
            let mut r = vec![kind];
            r.extend_from_slice(&counter.to_be_bytes());
            r.push(flags);
            r
        };
        let mut a = vec![1];
        for (k, c) in [(0, 3), (1, 5), (2, 4), (1, 7), (0, 5), (2, 6)] {
            a.extend(record(k, c, 0));
        }
        let mut torn = a.clone();
        torn.extend(record(0, 9, 4));
        let mut raw = vec![0];
        raw.extend_from_slice(ledger_record("consume", 2, 5).as_bytes());
        vec![a, torn, raw]
    }
}

#[cfg(test)]
mod tests;
