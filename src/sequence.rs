//! Derivation of one-time knock sequences (docs/PROTOCOL.md, sections 3-5).
//!
//! A sequence is drawn from HMAC-SHA256 streams over a versioned, domain-separated message
//! whose fields are all length-prefixed. The first knock comes from a stream that never
//! includes the source address (so the server can precompute a first-knock table); knocks
//! 2..K come from a second stream that includes the source when the door binds it.
//! Symbols are mapped to (port, protocol) without modulo bias by rejection sampling, and
//! adjacent knocks are always distinct.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::keys::Secret;
use crate::knock::{Knock, PortRange, Proto};

/// Version byte carried in every derivation message.
pub const PROTOCOL_VERSION: u8 = 1;
/// Domain label that starts every derivation message.
pub const DOMAIN_LABEL: &[u8] = b"one-time-knock/sequence";
/// Length of the server id in bytes.
pub const SERVER_ID_LEN: usize = 16;
/// Longest sequence a door may use.
pub const MAX_LENGTH: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// What a sequence does when completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Purpose {
    /// Opens the door for the knocking address.
    Open,
    /// Closes the knocker's grant at once.
    Close,
}

impl Purpose {
    /// The label that goes into the derivation message.
    pub fn label(self) -> &'static str {
        match self {
            Purpose::Open => "open",
            Purpose::Close => "close",
        }
    }
}

/// How a door's sequences are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// HMAC over a per-client counter.
    Hotp,
    /// HMAC over the time step.
    Totp,
    /// Listed in a pre-generated sequence file, used in order.
    File,
    /// knockd's fixed sequence: replayable, kept for migration.
    Static,
}

impl Mode {
    /// The label used in configs and in the derivation message.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Hotp => "hotp",
            Mode::Totp => "totp",
            Mode::File => "file",
            Mode::Static => "static",
        }
    }
    /// Whether a captured sequence of this mode can be replayed.
    pub fn replayable(self) -> bool {
        matches!(self, Mode::Static)
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hotp" => Ok(Mode::Hotp),
            "totp" => Ok(Mode::Totp),
            "file" => Ok(Mode::File),
            "static" => Ok(Mode::Static),
            other => Err(format!("unknown mode `{other}` (expected hotp, totp, file or static)")),
        }
    }
}

/// The set of knocks a door draws from: its port range times its protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alphabet {
    range: PortRange,
    protos: Vec<Proto>,
}

impl Alphabet {
    /// An alphabet over `range` and `protos` (sorted, duplicates removed; TCP before UDP).
    /// `None` when `protos` is empty.
    pub fn new(range: PortRange, protos: &[Proto]) -> Option<Self> {
        let mut protos = protos.to_vec();
        protos.sort();
        protos.dedup();
        (!protos.is_empty()).then_some(Alphabet { range, protos })
    }
    /// Number of distinct knocks, N = ports × protocols.
    pub fn size(&self) -> u32 {
        self.range.len() * self.protos.len() as u32
    }
    /// The port range.
    pub fn range(&self) -> PortRange {
        self.range
    }
    /// The protocols, TCP first.
    pub fn protos(&self) -> &[Proto] {
        &self.protos
    }
    /// The knock for symbol `v` (`v < size()`): protocol index `v / ports`, port `first + v % ports`.
    pub fn knock(&self, v: u32) -> Knock {
        let ports = self.range.len();
        let proto = self.protos[(v / ports) as usize];
        let port = self.range.first() + (v % ports) as u16;
        Knock { port, proto }
    }
    /// Whether a knock belongs to the alphabet.
    pub fn contains(&self, k: Knock) -> bool {
        self.range.contains(k.port) && self.protos.contains(&k.proto)
    }
}

/// Everything that selects one sequence, except the key and the source address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceId {
    /// Open or close.
    pub purpose: Purpose,
    /// The server's random id.
    pub server_id: [u8; SERVER_ID_LEN],
    /// Door name.
    pub door: String,
    /// Client name.
    pub client: String,
    /// `Hotp` or `Totp`.
    pub mode: Mode,
    /// HOTP counter or TOTP time step.
    pub counter: u64,
    /// UTC day for HOTP; ignored (encoded empty) for TOTP.
    pub epoch: u32,
}

/// Which of the two streams a message feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    First,
    Rest,
}

/// Canonical 16-byte form of an address: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
pub fn canonical_source(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().octets(),
            None => v6.octets(),
        },
    }
}

fn push_field(msg: &mut Vec<u8>, field: &[u8]) {
    // Fields are short by construction (names are validated to <= 64 bytes).
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(&field[..usize::from(len)]);
}

/// The derivation message for one stream (docs/PROTOCOL.md, section 3).
fn message(id: &SequenceId, part: Part, source: Option<IpAddr>) -> Vec<u8> {
    let mut msg = Vec::with_capacity(128);
    push_field(&mut msg, DOMAIN_LABEL);
    push_field(&mut msg, &[PROTOCOL_VERSION]);
    push_field(&mut msg, id.purpose.label().as_bytes());
    push_field(
        &mut msg,
        match part {
            Part::First => b"first",
            Part::Rest => b"rest",
        },
    );
    push_field(&mut msg, &id.server_id);
    push_field(&mut msg, id.door.as_bytes());
    push_field(&mut msg, id.client.as_bytes());
    push_field(&mut msg, id.mode.label().as_bytes());
    push_field(&mut msg, &id.counter.to_be_bytes());
    match id.mode {
        Mode::Hotp => push_field(&mut msg, &id.epoch.to_be_bytes()),
        _ => push_field(&mut msg, &[]),
    }
    match source {
        Some(addr) if part == Part::Rest => push_field(&mut msg, &canonical_source(addr)),
        _ => push_field(&mut msg, &[]),
    }
    msg
}

/// An endless stream of bytes: HMAC(key, message || u32be(block)) for block = 0, 1, 2, ...
struct Stream<'a> {
    key: &'a Secret,
    msg: Vec<u8>,
    block: u32,
    buf: [u8; 32],
    pos: usize,
}

impl<'a> Stream<'a> {
    fn new(key: &'a Secret, msg: Vec<u8>) -> Self {
        let mut s = Stream { key, msg, block: 0, buf: [0; 32], pos: 32 };
        s.refill();
        s
    }

    fn refill(&mut self) {
        let mut mac = HmacSha256::new_from_slice(self.key.expose()).expect("HMAC takes any key length");
        mac.update(&self.msg);
        mac.update(&self.block.to_be_bytes());
        self.buf.copy_from_slice(&mac.finalize().into_bytes());
        self.block = self.block.wrapping_add(1);
        self.pos = 0;
    }

    fn next_u32(&mut self) -> u32 {
        let mut word = [0u8; 4];
        for b in &mut word {
            if self.pos == self.buf.len() {
                self.refill();
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
        u32::from_be_bytes(word)
    }

    /// A uniform symbol in `0..n` by rejection sampling, different from `avoid`.
    fn draw(&mut self, n: u32, avoid: Option<u32>) -> u32 {
        // Largest multiple of n that fits in 2^32; words at or above it are rejected.
        let limit = (1u64 << 32) - ((1u64 << 32) % u64::from(n));
        loop {
            let x = u64::from(self.next_u32());
            if x >= limit {
                continue;
            }
            let v = (x % u64::from(n)) as u32;
            if Some(v) != avoid {
                return v;
            }
        }
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}

/// The first knock of a sequence: never depends on the source address.
pub fn first_knock(key: &Secret, id: &SequenceId, alphabet: &Alphabet) -> Knock {
    let mut s = Stream::new(key, message(id, Part::First, None));
    alphabet.knock(s.draw(alphabet.size(), None))
}

/// Knocks 2..=`length` of a sequence. `source` is `Some` only when the door binds the source.
/// When the alphabet has a single knock, adjacent knocks cannot differ and the rest is empty.
pub fn rest_knocks(
    key: &Secret,
    id: &SequenceId,
    alphabet: &Alphabet,
    first: Knock,
    length: usize,
    source: Option<IpAddr>,
) -> Vec<Knock> {
    let n = alphabet.size();
    if n < 2 {
        return Vec::new();
    }
    let mut s = Stream::new(key, message(id, Part::Rest, source));
    let mut prev = symbol_of(alphabet, first);
    let mut out = Vec::with_capacity(length.saturating_sub(1));
    for _ in 1..length {
        let v = s.draw(n, prev);
        out.push(alphabet.knock(v));
        prev = Some(v);
    }
    out
}

/// The whole sequence of `length` knocks.
pub fn derive(key: &Secret, id: &SequenceId, alphabet: &Alphabet, length: usize, source: Option<IpAddr>) -> Vec<Knock> {
    let first = first_knock(key, id, alphabet);
    let mut seq = vec![first];
    seq.extend(rest_knocks(key, id, alphabet, first, length, source));
    seq
}

fn symbol_of(alphabet: &Alphabet, k: Knock) -> Option<u32> {
    let pi = alphabet.protos().iter().position(|p| *p == k.proto)? as u32;
    alphabet
        .range()
        .contains(k.port)
        .then(|| pi * alphabet.range().len() + u32::from(k.port - alphabet.range().first()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(counter: u64) -> SequenceId {
        SequenceId {
            purpose: Purpose::Open,
            server_id: [7; 16],
            door: "ssh".into(),
            client: "alice".into(),
            mode: Mode::Hotp,
            counter,
            epoch: 20417,
        }
    }

    #[test]
    fn fields_are_length_prefixed_so_names_cannot_slide() {
        let mut a = id(1);
        a.door = "ab".into();
        a.client = "c".into();
        let mut b = id(1);
        b.door = "a".into();
        b.client = "bc".into();
        assert_ne!(message(&a, Part::First, None), message(&b, Part::First, None));
    }

    #[test]
    fn adjacent_knocks_differ_even_in_a_tiny_alphabet() {
        let key = Secret::from_bytes([1; 32]);
        let alpha = Alphabet::new(PortRange::new(1000, 1001).unwrap(), &[Proto::Tcp]).unwrap();
        for c in 0..200 {
            let seq = derive(&key, &id(c), &alpha, 8, None);
            assert_eq!(seq.len(), 8);
            assert!(seq.windows(2).all(|w| w[0] != w[1]), "{seq:?}");
        }
    }

    #[test]
    fn source_changes_only_the_rest() {
        let key = Secret::from_bytes([2; 32]);
        let alpha = Alphabet::new(PortRange::new(40000, 42047).unwrap(), &[Proto::Tcp]).unwrap();
        let a = derive(&key, &id(3), &alpha, 8, Some("198.18.0.2".parse().unwrap()));
        let b = derive(&key, &id(3), &alpha, 8, Some("198.18.0.3".parse().unwrap()));
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1..], b[1..]);
    }

    #[test]
    fn ipv4_and_its_mapped_form_are_the_same_source() {
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.18.0.2".parse().unwrap();
        assert_eq!(canonical_source(v4), canonical_source(mapped));
    }

    #[test]
    fn symbols_are_uniform_over_a_non_power_of_two_alphabet() {
        // 3 ports x 2 protocols = 6 symbols; 6000 draws should hit each about 1000 times.
        let key = Secret::from_bytes([3; 32]);
        let alpha = Alphabet::new(PortRange::new(5000, 5002).unwrap(), &[Proto::Tcp, Proto::Udp]).unwrap();
        let mut counts = std::collections::HashMap::new();
        for c in 0..6000 {
            *counts.entry(first_knock(&key, &id(c), &alpha)).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 6);
        assert!(counts.values().all(|&n| (850..1150).contains(&n)), "{counts:?}");
    }
}
