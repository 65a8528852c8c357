//! The audit log's chain: line framing, forward-secure MAC keys and verification, on bytes only.
//!
//! Every audit record is one line (see `docs/AUDIT.md`):
//!
//! ```text
//! {"seq":7,"prev":"<64 hex>",<JSON members of the record>,"mac":"<64 hex>"}
//! ```
//!
//! - `seq` counts records from 0 across every file of the log (rotation continues it).
//! - `prev` is SHA-256 of the previous line's bytes (without its newline); the first record of
//!   a chain has 64 zeros ([`GENESIS_PREV`]).
//! - `mac` is HMAC-SHA256 under the record's key `k_seq` over every byte of the line before
//!   `,"mac":"` (the *body*).
//! - Keys step forward: `k_{i+1} = SHA-256("one-time-knock/audit-key" || k_i)`, and `k_i` is
//!   erased once record `i` is written. `k_0` is random and exported once for the auditor, who
//!   steps it forward to check every MAC; whoever takes the machine over later holds only the
//!   current key, which cannot recompute the MAC of any earlier record.
//!
//! [`parse_line`] checks the framing (fixed prefix, fixed suffix, lengths) before it slices, so
//! any input, however damaged, gives an error rather than a panic. The JSON members between the
//! frame are opaque bytes here; the daemon checks they parse.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::{hex, unhex};

/// Length of an audit key.
pub const KEY_LEN: usize = 32;
/// Length of a line hash and of a MAC.
pub const HASH_LEN: usize = 32;
/// The `prev` of a chain's first record.
pub const GENESIS_PREV: [u8; HASH_LEN] = [0; HASH_LEN];

const KEY_STEP_LABEL: &[u8] = b"one-time-knock/audit-key";
const FINGERPRINT_LABEL: &[u8] = b"one-time-knock/audit-key-fingerprint";
const SEQ_PREFIX: &[u8] = b"{\"seq\":";
const PREV_PREFIX: &[u8] = b",\"prev\":\"";
const MAC_PREFIX: &[u8] = b",\"mac\":\"";
/// `,"mac":"` + 64 hex + `"}`.
const MAC_SUFFIX_LEN: usize = MAC_PREFIX.len() + 2 * HASH_LEN + 2;

/// One record's MAC key. `Debug` is redacted; the bytes are wiped when dropped or stepped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey([u8; KEY_LEN]);

impl AuditKey {
    /// Wraps raw bytes (key files, tests).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        AuditKey(bytes)
    }

    /// A fresh first key `k_0` from the operating system's RNG.
    pub fn generate() -> Result<Self, String> {
        let mut k = [0u8; KEY_LEN];
        rand::rngs::OsRng.try_fill_bytes(&mut k).map_err(|e| format!("the OS random number generator failed: {e}"))?;
        let key = AuditKey(k);
        k.zeroize();
        Ok(key)
    }

    /// The raw bytes, for the key file only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        unhex::<KEY_LEN>(s).map(AuditKey)
    }

    /// A public fingerprint: hex of the first 16 bytes of
    /// SHA-256("one-time-knock/audit-key-fingerprint" || key).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_LABEL);
        h.update(self.0);
        hex(&h.finalize()[..16])
    }

    /// The next record's key: SHA-256("one-time-knock/audit-key" || self).
    pub fn next(&self) -> AuditKey {
        let mut h = Sha256::new();
        h.update(KEY_STEP_LABEL);
        h.update(self.0);
        AuditKey(h.finalize().into())
    }

    /// Replaces this key by the next one; the old bytes are wiped.
    pub fn advance(&mut self) {
        let next = self.next();
        self.0.zeroize();
        self.0 = *next.expose();
    }

    /// This key stepped forward `n` times (`k_{i+n}` from `k_i`).
    pub fn stepped(&self, n: u64) -> AuditKey {
        let mut k = self.clone();
        for _ in 0..n {
            k.advance();
        }
        k
    }

    /// HMAC-SHA256 of `body` under this key.
    pub fn mac(&self, body: &[u8]) -> [u8; HASH_LEN] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// Whether `mac` is the MAC of `body` (compared in constant time).
    pub fn verify(&self, body: &[u8], mac: &[u8]) -> bool {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(body);
        m.verify_slice(mac).is_ok()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

/// SHA-256 of a line's bytes (without its newline): the next record's `prev`.
pub fn line_hash(line: &[u8]) -> [u8; HASH_LEN] {
    Sha256::digest(line).into()
}

/// Builds record `seq`'s line (without the newline). `members` are the record's JSON members
/// without braces (`"ts_ms":1,"event":"start"`), or empty; the caller makes them valid JSON and
/// keeps `seq`, `prev` and `mac` out of them.
pub fn seal(seq: u64, prev: &[u8; HASH_LEN], members: &str, key: &AuditKey) -> String {
    let mut line = format!("{{\"seq\":{seq},\"prev\":\"{}\"", hex(prev));
    if !members.is_empty() {
        line.push(',');
        line.push_str(members);
    }
    let mac = key.mac(line.as_bytes());
    line.push_str(",\"mac\":\"");
    line.push_str(&hex(&mac));
    line.push_str("\"}");
    line
}

/// A line split along its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The record's number.
    pub seq: u64,
    /// Its `prev` hash.
    pub prev: [u8; HASH_LEN],
    /// The bytes the MAC covers: everything before `,"mac":"`.
    pub body: &'a [u8],
    /// Its MAC.
    pub mac: [u8; HASH_LEN],
    /// The record's JSON members (between `prev` and `mac`), possibly empty.
    pub members: &'a [u8],
}

/// Why a line is not a framed audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Does not start with `{"seq":`.
    NoSeq,
    /// `seq` is not a decimal u64 without leading zeros.
    BadSeq,
    /// `prev` is missing or not 64 lower-case hex digits.
    BadPrev,
    /// Does not end with `,"mac":"<64 hex>"}`.
    BadMac,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::NoSeq => "does not start with {\"seq\":",
            FrameError::BadSeq => "its seq is not a number",
            FrameError::BadPrev => "its prev is not 64 hex digits",
            FrameError::BadMac => "does not end with a \"mac\" of 64 hex digits",
        })
    }
}

fn lower_hex32(s: &[u8]) -> Option<[u8; HASH_LEN]> {
    if s.len() != 2 * HASH_LEN || !s.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)) {
        return None;
    }
    unhex::<HASH_LEN>(std::str::from_utf8(s).ok()?)
}

/// Splits a line (without its newline) along the frame. Any input gives `Ok` or `Err`, never a panic.
pub fn parse_line(line: &[u8]) -> Result<Framed<'_>, FrameError> {
    let rest = line.strip_prefix(SEQ_PREFIX).ok_or(FrameError::NoSeq)?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return Err(FrameError::BadSeq);
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok().and_then(|s| s.parse().ok()).ok_or(FrameError::BadSeq)?;
    let rest = rest[digits..].strip_prefix(PREV_PREFIX).ok_or(FrameError::BadPrev)?;
    if rest.len() < 2 * HASH_LEN + 1 || rest[2 * HASH_LEN] != b'"' {
        return Err(FrameError::BadPrev);
    }
    let prev = lower_hex32(&rest[..2 * HASH_LEN]).ok_or(FrameError::BadPrev)?;
    let after_prev = &rest[2 * HASH_LEN + 1..];
    // The head (seq and prev) is followed by the members, then the MAC suffix.
    if after_prev.len() < MAC_SUFFIX_LEN {
        return Err(FrameError::BadMac);
    }
    let split = line.len() - MAC_SUFFIX_LEN;
    let (body, suffix) = line.split_at(split);
    let mac_hex = suffix.strip_prefix(MAC_PREFIX).and_then(|s| s.strip_suffix(b"\"}")).ok_or(FrameError::BadMac)?;
    let mac = lower_hex32(mac_hex).ok_or(FrameError::BadMac)?;
    let members_all = &after_prev[..after_prev.len() - MAC_SUFFIX_LEN];
    let members = match members_all {
        [] => members_all,
        [b',', m @ ..] if !m.is_empty() => m,
        _ => return Err(FrameError::BadMac),
    };
    Ok(Framed { seq, prev, body, mac, members })
}

/// One file of the log, in chain order (oldest rotated file first, the live file last).
#[derive(Debug, Clone, Copy)]
pub struct ChainFile<'a> {
    /// Its name, for reports.
    pub name: &'a str,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// Where the writer says the chain ends: `next_seq` records written, the last hashing to `head`.
/// The writer saves this only after the log is synced, so the log may run ahead of it after a
/// crash, never behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    /// Records written.
    pub next_seq: u64,
    /// Hash of record `next_seq - 1` (or [`GENESIS_PREV`]).
    pub head: [u8; HASH_LEN],
}

/// A line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file's name.
    pub file: String,
    /// Line number in the file, from 1.
    pub line: usize,
    /// The record's seq when its frame could be read.
    pub seq: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file, self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        Ok(())
    }
}

/// What is wrong at the first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Not a framed record (edited, or the file was cut or spliced there).
    Damaged(FrameError),
    /// A line without newline before the end of the log: a file was cut short.
    CutShort,
    /// The first record is not seq 0: earlier records or files are missing.
    StartMissing {
        /// The first seq found.
        first: u64,
    },
    /// The first record's prev is not the genesis value: records before it were removed.
    NotGenesis,
    /// Records `expected..found` are missing.
    Deleted {
        /// The seq that should have come.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A record out of place: the expected one comes later.
    Reordered {
        /// The seq that should have come.
        expected: u64,
        /// The seq found.
        found: u64,
        /// Where the expected one is.
        expected_at: Location,
    },
    /// A seq that already appeared.
    Duplicated {
        /// The seq found again.
        found: u64,
    },
    /// The record's MAC is invalid under the auditor's key.
    MacInvalid {
        /// The next record's prev matches this line: the chain was recomputed after the edit.
        chain_recomputed: bool,
    },
    /// `prev` does not hash the previous line: one of the two was edited, or lines between removed.
    ChainBroken {
        /// The previous line.
        previous: Location,
    },
    /// The log ends before the record the writer's state file says it wrote.
    Truncated {
        /// The last seq in the log, if any.
        last: Option<u64>,
        /// The last seq written according to the state file.
        written: u64,
    },
    /// The record the writer's state file names has another hash: the end of the log was replaced.
    TailReplaced {
        /// That record's seq.
        seq: u64,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Damaged(e) => write!(f, "damaged: not an audit record ({e}); edited, or the file was cut there"),
            Fault::CutShort => f.write_str("the line has no newline but more of the log follows: a file was cut short"),
            Fault::StartMissing { first } => write!(
                f,
                "the log starts at seq {first}: records 0..{} are missing (a deleted first line or rotated file)",
                first - 1
            ),
            Fault::NotGenesis => {
                f.write_str("the first record's prev is not the chain's start: records before it were removed")
            }
            Fault::Deleted { expected, found } if found - 1 == *expected => {
                write!(f, "deleted: record {expected} is missing (expected seq {expected}, found {found})")
            }
            Fault::Deleted { expected, found } => {
                write!(
                    f,
                    "deleted: records {expected}..{} are missing (expected seq {expected}, found {found})",
                    found - 1
                )
            }
            Fault::Reordered { expected, found, expected_at } => {
                write!(f, "reordered: expected seq {expected}, found {found}; seq {expected} is at {expected_at}")
            }
            Fault::Duplicated { found } => write!(f, "reordered or duplicated: seq {found} appeared before"),
            Fault::MacInvalid { chain_recomputed: true } => f.write_str(
                "edited: the MAC is invalid under the auditor's key, and every later hash was recomputed to hide \
                 the edit (the hash chain alone would not show it)",
            ),
            Fault::MacInvalid { chain_recomputed: false } => {
                f.write_str("edited: the MAC is invalid under the auditor's key")
            }
            Fault::ChainBroken { previous } => write!(
                f,
                "chain broken: its prev is not the hash of {previous}; one of the two lines was edited, or lines \
                 between them were removed"
            ),
            Fault::Truncated { last: Some(last), written } => write!(
                f,
                "truncated: the log ends at seq {last} but the daemon's audit.key says it wrote up to seq {written}"
            ),
            Fault::Truncated { last: None, written } => {
                write!(f, "truncated: the log is empty but the daemon's audit.key says it wrote up to seq {written}")
            }
            Fault::TailReplaced { seq } => {
                write!(f, "replaced: record {seq} is not the one the daemon wrote (its hash differs from audit.key)")
            }
        }
    }
}

/// A torn last record: a crash during its write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Where.
    pub at: Location,
    /// Its length in bytes.
    pub bytes: usize,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records checked (up to the first fault).
    pub records: u64,
    /// Whether MACs were checked (a key was given).
    pub keyed: bool,
    /// The last good record: seq and hash.
    pub head: Option<(u64, [u8; HASH_LEN])>,
    /// A torn last line, not counted.
    pub torn: Option<Torn>,
    /// The first bad record and what is wrong; `None` when the log verifies.
    pub fault: Option<(Location, Fault)>,
    /// Whether the end was checked against the writer's [`Tail`].
    pub tail_checked: bool,
}

impl Report {
    /// True when nothing is wrong (a torn last record is a crash, not tampering).
    pub fn ok(&self) -> bool {
        self.fault.is_none()
    }
}

struct Line<'a> {
    file: usize,
    number: usize,
    bytes: &'a [u8],
    terminated: bool,
}

fn split_lines<'a>(files: &[ChainFile<'a>]) -> Vec<Line<'a>> {
    let mut out = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let mut rest = f.bytes;
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            match rest.iter().position(|&c| c == b'\n') {
                Some(i) => {
                    out.push(Line { file: fi, number, bytes: &rest[..i], terminated: true });
                    rest = &rest[i + 1..];
                }
                None => {
                    out.push(Line { file: fi, number, bytes: rest, terminated: false });
                    rest = &[];
                }
            }
        }
    }
    out
}

/// Walks the chain: seq continuity from 0, `prev` links (across files), with `key` (the
/// auditor's `k_0`) every MAC, and with `tail` the end against the writer's state. Only the
/// very last line may be torn (no newline, or no frame); it is reported apart, not as a fault.
pub fn verify(files: &[ChainFile<'_>], key: Option<&AuditKey>, tail: Option<Tail>) -> Report {
    let lines = split_lines(files);
    let loc = |l: &Line<'_>, seq: Option<u64>| Location { file: files[l.file].name.to_string(), line: l.number, seq };
    let mut report =
        Report { records: 0, keyed: key.is_some(), head: None, torn: None, fault: None, tail_checked: false };
    let mut key = key.cloned();
    let mut expected_prev = GENESIS_PREV;
    let mut tail_seen = false;
    for (i, l) in lines.iter().enumerate() {
        let is_last = i + 1 == lines.len();
        // Every line before this one was a good record.
        let expected_seq = report.records;
        let framed = parse_line(l.bytes);
        let framed = match framed {
            Ok(f) if l.terminated => f,
            _ if is_last => {
                report.torn = Some(Torn { at: loc(l, framed.ok().map(|f| f.seq)), bytes: l.bytes.len() });
                break;
            }
            Ok(f) => {
                report.fault = Some((loc(l, Some(f.seq)), Fault::CutShort));
                return report;
            }
            Err(_) if !l.terminated => {
                report.fault = Some((loc(l, None), Fault::CutShort));
                return report;
            }
            Err(e) => {
                report.fault = Some((loc(l, None), Fault::Damaged(e)));
                return report;
            }
        };
        let here = loc(l, Some(framed.seq));
        if framed.seq != expected_seq {
            let fault = if i == 0 {
                Fault::StartMissing { first: framed.seq }
            } else if framed.seq < expected_seq {
                Fault::Duplicated { found: framed.seq }
            } else if let Some(j) =
                lines[i + 1..].iter().position(|m| parse_line(m.bytes).is_ok_and(|f| f.seq == expected_seq))
            {
                let m = &lines[i + 1 + j];
                Fault::Reordered { expected: expected_seq, found: framed.seq, expected_at: loc(m, Some(expected_seq)) }
            } else {
                Fault::Deleted { expected: expected_seq, found: framed.seq }
            };
            report.fault = Some((here, fault));
            return report;
        }
        if let Some(k) = &key {
            if !k.verify(framed.body, &framed.mac) {
                let this_hash = line_hash(l.bytes);
                let chain_recomputed =
                    lines.get(i + 1).and_then(|m| parse_line(m.bytes).ok()).is_some_and(|f| f.prev == this_hash);
                report.fault = Some((here, Fault::MacInvalid { chain_recomputed }));
                return report;
            }
        }
        if framed.prev != expected_prev {
            let fault = if i == 0 {
                Fault::NotGenesis
            } else {
                let p = &lines[i - 1];
                Fault::ChainBroken { previous: loc(p, Some(expected_seq - 1)) }
            };
            report.fault = Some((here, fault));
            return report;
        }
        expected_prev = line_hash(l.bytes);
        if let Some(t) = tail {
            if t.next_seq > 0 && framed.seq == t.next_seq - 1 {
                tail_seen = true;
                if expected_prev != t.head {
                    report.fault = Some((here, Fault::TailReplaced { seq: framed.seq }));
                    return report;
                }
            }
        }
        report.records += 1;
        report.head = Some((framed.seq, expected_prev));
        if let Some(k) = key.as_mut() {
            k.advance();
        }
    }
    if let Some(t) = tail {
        report.tail_checked = true;
        if t.next_seq > 0 && !tail_seen {
            let at = match (lines.last(), report.head) {
                (Some(l), head) => loc(l, head.map(|h| h.0)),
                (None, _) => {
                    Location { file: files.last().map_or("(no file)", |f| f.name).to_string(), line: 0, seq: None }
                }
            };
            report.fault = Some((at, Fault::Truncated { last: report.head.map(|(s, _)| s), written: t.next_seq - 1 }));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k0() -> AuditKey {
        AuditKey::from_bytes([7; KEY_LEN])
    }

    /// A log of `n` records under k0, each line with its newline.
    fn chain(n: u64) -> Vec<String> {
        let mut key = k0();
        let mut prev = GENESIS_PREV;
        (0..n)
            .map(|i| {
                let line = seal(i, &prev, &format!("\"ts_ms\":{},\"event\":\"e{i}\"", 1000 + i), &key);
                prev = line_hash(line.as_bytes());
                key.advance();
                line
            })
            .collect()
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn run(t: &str, key: bool) -> Report {
        let k = k0();
        verify(&[ChainFile { name: "audit.log", bytes: t.as_bytes() }], key.then_some(&k), None)
    }

    /// tests/vectors/audit-chain-v1.log was made by an independent Python implementation of
    /// docs/AUDIT.md (hashlib + hmac) with k_0 = 32 bytes of 0x07.
    const VECTOR: &str = include_str!("../tests/vectors/audit-chain-v1.log");

    #[test]
    fn the_format_matches_the_independent_vector() {
        let k0 = k0();
        assert_eq!(hex(k0.next().expose()), "67ebe5d55cd7010e99473df30f0c5c822e4eedb206a64a3be5c98926dd6814e9");
        assert_eq!(hex(k0.stepped(2).expose()), "c923cfaa500d2c17f47e698271b8c8f13d1901dc730c0a9d954579f4c75a3795");
        assert_eq!(k0.fingerprint(), "bc95e2092ae6f8876fa96792afb9c992");
        let lines: Vec<&str> = VECTOR.lines().collect();
        let mut key = k0.clone();
        let mut prev = GENESIS_PREV;
        for (i, line) in lines.iter().enumerate() {
            let f = parse_line(line.as_bytes()).unwrap();
            let members = std::str::from_utf8(f.members).unwrap();
            assert_eq!(seal(i as u64, &prev, members, &key), *line, "line {}", i + 1);
            prev = line_hash(line.as_bytes());
            key.advance();
        }
        assert_eq!(hex(&prev), "a8244992baf082b692109fb887d2b3838bee9800a891e76c6da05de3a26529de");
        let r = verify(&[ChainFile { name: "audit-chain-v1.log", bytes: VECTOR.as_bytes() }], Some(&k0), None);
        assert!(r.ok() && r.records == 2, "{r:?}");
    }

    #[test]
    fn key_steps_forward_and_is_redacted() {
        let k = k0();
        let mut h = Sha256::new();
        h.update(b"one-time-knock/audit-key");
        h.update([7u8; 32]);
        let expect: [u8; 32] = h.finalize().into();
        assert_eq!(k.next().expose(), &expect);
        assert_eq!(k.stepped(2).expose(), k.next().next().expose());
        let mut a = k0();
        a.advance();
        assert_eq!(a.expose(), &expect);
        assert_eq!(format!("{k:?}"), "AuditKey(<redacted>)");
        assert_eq!(k.fingerprint().len(), 32);
    }

    #[test]
    fn sealed_lines_frame_and_verify() {
        let key = k0();
        let line = seal(7, &[0xab; 32], "\"event\":\"x\"", &key);
        assert!(line.starts_with("{\"seq\":7,\"prev\":\"abab"));
        let f = parse_line(line.as_bytes()).unwrap();
        assert_eq!(f.seq, 7);
        assert_eq!(f.prev, [0xab; 32]);
        assert_eq!(f.members, b"\"event\":\"x\"");
        assert!(key.verify(f.body, &f.mac));
        assert!(!key.next().verify(f.body, &f.mac));
        let empty = seal(0, &GENESIS_PREV, "", &key);
        assert_eq!(parse_line(empty.as_bytes()).unwrap().members, b"");
    }

    #[test]
    fn framing_never_panics_on_any_prefix_or_garbage() {
        let line = seal(12, &[1; 32], "\"a\":1", &k0());
        for cut in 0..line.len() {
            assert!(parse_line(&line.as_bytes()[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [&b""[..], b"{", b"{\"seq\":", b"{\"seq\":01,", b"{\"seq\":99999999999999999999999", b"\xff\xfe"] {
            assert!(parse_line(bad).is_err());
        }
        let upper = line.replace("0101", "0A01");
        assert_eq!(parse_line(upper.as_bytes()), Err(FrameError::BadPrev));
    }

    #[test]
    fn an_intact_chain_verifies_with_and_without_the_key() {
        let t = text(&chain(5));
        for keyed in [false, true] {
            let r = run(&t, keyed);
            assert!(r.ok(), "{r:?}");
            assert_eq!(r.records, 5);
            assert_eq!(r.head.unwrap().0, 4);
            assert_eq!(r.keyed, keyed);
        }
        assert!(run("", true).ok());
    }

    #[test]
    fn a_flipped_byte_is_found_at_its_record_with_the_key_and_next_to_it_without() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("e2", "f2");
        let t = text(&lines);
        let r = run(&t, true);
        let (at, fault) = r.fault.unwrap();
        assert_eq!((at.line, at.seq), (3, Some(2)));
        assert_eq!(fault, Fault::MacInvalid { chain_recomputed: false });
        let (at, fault) = run(&t, false).fault.unwrap();
        assert_eq!((at.line, at.seq), (4, Some(3)));
        assert!(matches!(fault, Fault::ChainBroken { previous } if previous.line == 3), "names the edited neighbour");
    }

    #[test]
    fn deletion_swap_and_duplicate() {
        let lines = chain(6);
        let mut del = lines.clone();
        del.remove(2);
        let (at, fault) = run(&text(&del), false).fault.unwrap();
        assert_eq!(at.line, 3);
        assert_eq!(fault, Fault::Deleted { expected: 2, found: 3 });

        let mut first = lines.clone();
        first.remove(0);
        assert_eq!(run(&text(&first), false).fault.unwrap().1, Fault::StartMissing { first: 1 });

        let mut swap = lines.clone();
        swap.swap(2, 3);
        let (at, fault) = run(&text(&swap), false).fault.unwrap();
        assert_eq!(at.seq, Some(3));
        assert!(matches!(fault, Fault::Reordered { expected: 2, found: 3, expected_at } if expected_at.line == 4));

        let mut dup = lines.clone();
        dup.insert(4, lines[1].clone());
        assert_eq!(run(&text(&dup), false).fault.unwrap().1, Fault::Duplicated { found: 1 });
    }

    #[test]
    fn a_rewritten_record_with_every_later_hash_recomputed_needs_the_key() {
        // The attacker edits record 2 and recomputes every later prev and seq, with made-up MACs.
        let good = chain(6);
        let mut forged: Vec<String> = good[..2].to_vec();
        let mut prev = line_hash(good[1].as_bytes());
        let attacker = AuditKey::from_bytes([9; 32]);
        for i in 2..6u64 {
            let ev = if i == 2 { "forged".to_string() } else { format!("e{i}") };
            let line = seal(i, &prev, &format!("\"ts_ms\":{},\"event\":\"{ev}\"", 1000 + i), &attacker);
            prev = line_hash(line.as_bytes());
            forged.push(line);
        }
        let t = text(&forged);
        let without = run(&t, false);
        assert!(without.ok(), "undetectable without the key: {without:?}");
        let (at, fault) = run(&t, true).fault.unwrap();
        assert_eq!(at.seq, Some(2));
        assert_eq!(fault, Fault::MacInvalid { chain_recomputed: true });
    }

    #[test]
    fn only_the_last_line_may_be_torn() {
        let lines = chain(4);
        let mut t = text(&lines);
        t.push_str(&lines[0][..30]);
        let r = run(&t, true);
        assert!(r.ok());
        assert_eq!(r.records, 4);
        assert_eq!(r.torn.as_ref().unwrap().at.line, 5);
        // Unparsable but terminated last line: torn too.
        let r = run(&format!("{}garbage\n", text(&lines)), true);
        assert!(r.ok() && r.torn.is_some());
        // A cut in the middle (bytes removed across lines) is damage, not a tear.
        let whole = text(&lines);
        let spliced = format!("{}{}", &whole[..50], &whole[whole.find(&lines[2]).unwrap() + 40..]);
        let r = run(&spliced, true);
        assert!(!r.ok(), "{r:?}");
    }

    #[test]
    fn the_chain_continues_across_files_and_a_file_cut_short_is_caught() {
        let lines = chain(6);
        let a = text(&lines[..3]);
        let b = text(&lines[3..]);
        let files = [
            ChainFile { name: "audit.log.1", bytes: a.as_bytes() },
            ChainFile { name: "audit.log", bytes: b.as_bytes() },
        ];
        let k = k0();
        let r = verify(&files, Some(&k), None);
        assert!(r.ok() && r.records == 6, "{r:?}");
        // The old file cut short: a torn line that is not the last of the log.
        let cut = &a[..a.len() - 10];
        let files = [
            ChainFile { name: "audit.log.1", bytes: cut.as_bytes() },
            ChainFile { name: "audit.log", bytes: b.as_bytes() },
        ];
        let (at, fault) = verify(&files, Some(&k), None).fault.unwrap();
        assert_eq!((at.file.as_str(), at.line, fault), ("audit.log.1", 3, Fault::CutShort));
    }

    #[test]
    fn the_tail_catches_a_truncated_or_replaced_end() {
        let lines = chain(6);
        let head5 = line_hash(lines[5].as_bytes());
        let full = text(&lines);
        let tail = Tail { next_seq: 6, head: head5 };
        let ok = verify(&[ChainFile { name: "audit.log", bytes: full.as_bytes() }], None, Some(tail));
        assert!(ok.ok() && ok.tail_checked);
        // A log that runs ahead of the state file is fine (the state is saved after the log).
        let behind = Tail { next_seq: 4, head: line_hash(lines[3].as_bytes()) };
        assert!(verify(&[ChainFile { name: "audit.log", bytes: full.as_bytes() }], None, Some(behind)).ok());
        // Cut in the middle of line 4: looks like a crash, but the state file knows better.
        let cut = &full[..full.find(&lines[3]).unwrap() + 20];
        let r = verify(&[ChainFile { name: "audit.log", bytes: cut.as_bytes() }], None, Some(tail));
        assert_eq!(r.fault.unwrap().1, Fault::Truncated { last: Some(2), written: 5 });
        // The last record replaced by a well-formed one under the current (stolen) key.
        let mut replaced = lines.clone();
        replaced[5] = seal(5, &line_hash(lines[4].as_bytes()), "\"event\":\"other\"", &k0().stepped(5));
        let t = text(&replaced);
        let r = verify(&[ChainFile { name: "audit.log", bytes: t.as_bytes() }], None, Some(tail));
        assert_eq!(r.fault.unwrap().1, Fault::TailReplaced { seq: 5 });
    }

    #[test]
    fn random_mutations_never_panic_and_are_found_with_the_key() {
        let full = text(&chain(8));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let k = k0();
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = full.clone().into_bytes();
            let i = (x as usize) % bytes.len();
            let flip = ((x >> 32) as u8) | 1;
            bytes[i] ^= flip;
            let r = verify(&[ChainFile { name: "audit.log", bytes: &bytes }], Some(&k), None);
            // Only a change to the last line can pass, and then only as a torn record.
            let last_line_start = full[..full.len() - 1].rfind('\n').unwrap() + 1;
            assert!(!r.ok() || (i >= last_line_start && r.torn.is_some()), "flip at {i} passed: {r:?}");
        }
    }
}
