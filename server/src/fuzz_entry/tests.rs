//! The stable smoke of the netlink fuzz entry points: the seeds, then a bounded number of
//! byte-level mutations from a fixed random seed, well under a second.

use super::*;

/// Runs `entry` on each seed, then on `runs` seeds with a few bytes changed, inserted or cut.
fn drive(entry: fn(&[u8]), seeds: Vec<Vec<u8>>, runs: usize, mut state: u64) {
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for s in &seeds {
        entry(s);
    }
    for _ in 0..runs {
        let mut input = seeds[next() as usize % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = next() as usize % (input.len() + 1);
            match next() % 4 {
                0 if at < input.len() => input[at] = next() as u8,
                1 => input.insert(at, [0, 0xff, 4, 8, 16][next() as usize % 5]),
                2 if at < input.len() => input[at] ^= 0x80,
                _ => input.truncate(at),
            }
        }
        entry(&input);
    }
}

#[test]
fn seeds_are_understood() {
    let acks = seeds::netlink_ack();
    assert_eq!(ack::scan(&acks[0][4..], 7), Ok(Reply::Acked));
    let refused = ack::scan(&acks[1][4..], 7);
    assert_eq!(refused, Ok(Reply::Refused { errno: 2, message: Some("No such file".into()), offset: Some(32) }));
    let found: Vec<_> = seeds::nft_watch().iter().map(|d| watch::scan(d, TABLE, &CHAINS)).collect();
    let chain = Removed::Chain(CHAINS[0].into());
    assert_eq!(found, [Some(Removed::Table), Some(Removed::Table), Some(chain), Some(Removed::Set("grants4".into()))]);
}

#[test]
fn smoke_netlink_ack() {
    drive(netlink_ack, seeds::netlink_ack(), 20_000, 11);
}

#[test]
fn smoke_nft_watch() {
    drive(nft_watch, seeds::nft_watch(), 20_000, 12);
}
