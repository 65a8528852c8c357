//! Valid inputs to start from: the corpus seeds of `fuzz/` (`fuzz/src/write_seeds.rs`).

use super::{CHAINS, TABLE};

fn nlmsg(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

/// An ack, and a capped error with an extended ack's message and offset, for request 7.
pub fn netlink_ack() -> Vec<Vec<u8>> {
    let echoed = nlmsg(0x0a0c, 0x405, 7, &[])[..16].to_vec();
    let ack = nlmsg(2, 0x100, 7, &[&0i32.to_ne_bytes()[..], &echoed].concat());
    let mut err = [&(-2i32).to_ne_bytes()[..], &echoed].concat();
    err.extend(attr(1, b"No such file\0"));
    err.extend(attr(2, &32u32.to_ne_bytes()));
    let refused = nlmsg(2, 0x300, 7, &err);
    let with_seq = |d: Vec<u8>| [&7u32.to_ne_bytes()[..], &d].concat();
    vec![with_seq(ack), with_seq(refused)]
}

/// Deletions of our table, chain and a set, in one datagram and apart.
pub fn nft_watch() -> Vec<Vec<u8>> {
    let msg = |kind: u16, attrs: &[Vec<u8>]| {
        let body: Vec<u8> = [vec![1u8, 0, 0, 0], attrs.concat()].concat();
        nlmsg((10 << 8) | kind, 0, 0, &body)
    };
    let name = |s: &str| [s.as_bytes(), b"\0"].concat();
    let table = msg(2, &[attr(1, &name(TABLE))]);
    let chain = msg(5, &[attr(1, &name(TABLE)), attr(3, &name(CHAINS[0]))]);
    let set = msg(11, &[attr(1, &name(TABLE)), attr(2, &name("grants4"))]);
    vec![[set.clone(), chain.clone(), table.clone()].concat(), table, chain, set]
}
