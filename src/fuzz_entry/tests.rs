//! The stable smoke of the fuzz entry points: each seed, then a bounded number of mutations of
//! them from a fixed random seed (so a failure reproduces), in a few seconds in all. The long
//! runs are cargo-fuzz's, outside CI (fuzz/README.md).

use super::*;

/// xorshift64*: deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens worth splicing in: the characters and words parsers trip over.
const DICTIONARY: &[&[u8]] = &[
    b"\0",
    b"\r",
    b"\n",
    b"\x7f",
    b"\t",
    b"\xc3\xa9",
    b"\"",
    b"'''",
    b"\\u0000",
    b"=",
    b"[",
    b"]",
    b"[[door]]\n",
    b"[options]\n",
    b"#",
    b",",
    b":udp",
    b"65536",
    b"18446744073709551615",
    b"-1",
    b"::ffff:198.18.0.1",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => input[rng.below(len)] = rng.next() as u8,
            1 if len > 0 => input[rng.below(len)] ^= 1 << rng.below(8),
            2 => input.insert(rng.below(len + 1), rng.next() as u8),
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below(16.min(len - at));
                input.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let piece = input[at..(at + 1 + rng.below(32)).min(len)].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, piece);
            }
            5 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let (at, from) = (rng.below(len + 1), rng.below(other.len() + 1));
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => input.truncate(rng.below(len + 1)),
        }
    }
}

/// Runs `entry` on each seed, then on `runs` mutated seeds.
fn drive(entry: fn(&[u8]), seeds: Vec<Vec<u8>>, runs: usize, rng_seed: u64) {
    let mut rng = Rng(rng_seed);
    for s in &seeds {
        entry(s);
    }
    for _ in 0..runs {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        entry(&input);
    }
}

#[test]
fn every_seed_is_accepted_by_its_parser() {
    for (i, f) in seeds::packet_frame().iter().enumerate() {
        assert!(parse_frame(LINKS[usize::from(f[0])], &f[1..]).is_ok(), "frame {i}");
    }
    for t in seeds::knockd_toml() {
        Config::parse(Path::new("k.toml"), std::str::from_utf8(&t).unwrap()).unwrap();
    }
    for t in seeds::knockd_conf() {
        parse_knockd_conf(Path::new("k.conf"), std::str::from_utf8(&t).unwrap()).unwrap();
    }
    for t in seeds::sequence_file() {
        assert!(!SequenceFile::parse(Path::new("s"), &t).unwrap().sequences.is_empty());
    }
    let profiles = seeds::profile();
    Profile::parse(Path::new("p"), std::str::from_utf8(&profiles[0]).unwrap()).unwrap();
    for t in &profiles[1..] {
        Bundle::parse_any(Path::new("b"), std::str::from_utf8(t).unwrap()).unwrap();
    }
    let log = &seeds::audit_chain()[0];
    let files: Vec<ChainFile> = log.split(|b| *b == 0xff).map(|bytes| ChainFile { name: "a", bytes }).collect();
    let r = auditchain::verify(&files, Some(&AuditKey::from_bytes([7; KEY_LEN])), None);
    assert!(r.ok() && r.records == 4, "{r:?}");
}

/// The records [`ledger_text`] builds are the ledger's own: a replay reaches the state they say.
#[test]
fn built_ledger_records_replay_to_their_state() {
    let dir = std::env::temp_dir().join(format!("knock-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("l.ledger");
    let lock = WriterLock::acquire(&dir).unwrap();
    for (seed, torn) in seeds::ledger_replay().iter().zip([false, true]) {
        std::fs::write(&path, ledger_text(seed)).unwrap();
        let l = Ledger::open(&path, LEDGER_LABEL, &lock).unwrap();
        // consume 3, burn 5, use 4 (4 and 5 pass: next 6), burn 7, consume 5, use 6: next 8.
        assert_eq!((l.next(), l.last_consumed(), l.torn_bytes() > 0), (8, Some(5), torn));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn smoke_packet_frame() {
    drive(packet_frame, seeds::packet_frame(), 20_000, 1);
}

#[test]
fn smoke_knockd_toml() {
    drive(knockd_toml, seeds::knockd_toml(), 1_500, 2);
}

#[test]
fn smoke_knockd_conf() {
    drive(knockd_conf, seeds::knockd_conf(), 3_000, 3);
}

#[test]
fn smoke_sequence_file() {
    drive(sequence_file, seeds::sequence_file(), 5_000, 4);
}

#[test]
fn smoke_profile() {
    drive(profile, seeds::profile(), 1_500, 5);
}

#[test]
fn smoke_audit_chain() {
    drive(audit_chain, seeds::audit_chain(), 1_500, 6);
}

#[test]
fn smoke_ledger_replay() {
    drive(ledger_replay, seeds::ledger_replay(), 800, 7);
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("knock-fuzz-ledger-{}", std::process::id())));
}
