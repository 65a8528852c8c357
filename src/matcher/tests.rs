//! Matcher behaviour with real derivations and a controlled clock.

use super::*;
use crate::config::TcpFlagRule;
use crate::keys::Secret;
use crate::knock::{PortRange, Proto};
use crate::sequence::{derive, first_knock, rest_knocks, Mode, SequenceId};

const CLIENT: &str = "198.18.0.2";
const OUTSIDER: &str = "198.18.0.66";
const SERVER: &str = "198.18.0.1";

struct Keys {
    key: Secret,
    alphabet: Alphabet,
    length: usize,
    bind_source: bool,
}

impl Keys {
    fn seq_id(&self, id: &CandidateId) -> SequenceId {
        SequenceId {
            purpose: id.purpose,
            server_id: [9; 16],
            door: "ssh".into(),
            client: format!("c{}", id.client),
            mode: Mode::Hotp,
            counter: id.counter,
            epoch: id.epoch,
        }
    }
    fn sequence(&self, id: &CandidateId, source: &str) -> Vec<Knock> {
        let src = self.bind_source.then(|| source.parse().unwrap());
        derive(&self.key, &self.seq_id(id), &self.alphabet, self.length, src)
    }
    fn candidate(&self, counter: u64, used: bool) -> Candidate {
        let id = cid(counter);
        Candidate { id, first: first_knock(&self.key, &self.seq_id(&id), &self.alphabet), used, rest: None }
    }
}

impl RestOfSequence for Keys {
    fn rest(&self, id: &CandidateId, first: Knock, source: IpAddr) -> Vec<Knock> {
        let src = self.bind_source.then_some(source);
        rest_knocks(&self.key, &self.seq_id(id), &self.alphabet, first, self.length, src)
    }
}

fn rules(alphabet: Alphabet, seq_timeout_ms: u64, misses: u8) -> DoorRules {
    DoorRules {
        knocks: KnockSet::Range(alphabet),
        tcp_flags: TcpFlagRule::SYN_ONLY,
        burn_at: Some(2),
        addresses: vec![],
        seq_timeout_ms,
        misses,
        strict_order: false,
        per_port: true,
    }
}

/// The source port the tests' clients knock from.
const PORT: u16 = 50505;

/// A packet from `src`:`src_port` to the server.
fn packet(src: &str, src_port: u16, knock: Knock, flags: Option<u8>) -> KnockPacket {
    KnockPacket { src: src.parse().unwrap(), src_port, dst: SERVER.parse().unwrap(), knock, tcp_flags: flags }
}

fn cid(counter: u64) -> CandidateId {
    CandidateId { door: 0, client: 0, purpose: Purpose::Open, counter, epoch: 20782 }
}

fn setup(ports: (u16, u16), length: usize, bind_source: bool, window: u64) -> (Matcher, Keys) {
    let alphabet = Alphabet::new(PortRange::new(ports.0, ports.1).unwrap(), &[Proto::Tcp]).unwrap();
    let keys = Keys { key: Secret::from_bytes([5; 32]), alphabet: alphabet.clone(), length, bind_source };
    let mut m = Matcher::new(Limits::default());
    m.set_door(0, rules(alphabet, 5_000, 2));
    let cands: Vec<Candidate> = (0..window).map(|c| keys.candidate(c, false)).collect();
    m.set_client_candidates(0, 0, &cands);
    (m, keys)
}

fn send(m: &mut Matcher, keys: &Keys, src: &str, knocks: &[Knock], t: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for k in knocks {
        out.extend(m.on_packet(&packet(src, PORT, *k, Some(0x02)), t, keys));
    }
    out
}

fn completed(events: &[Event]) -> Vec<(CandidateId, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Completed { id, used, .. } => Some((*id, *used)),
            _ => None,
        })
        .collect()
}

fn burned(events: &[Event]) -> Vec<CandidateId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Burned { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_sequence_completes_once_and_leaves_no_state() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(3), CLIENT);
    let ev = send(&mut m, &keys, CLIENT, &seq, 100);
    assert_eq!(completed(&ev), vec![(cid(3), false)]);
    assert_eq!(m.track_count(), 0);
}

#[test]
fn unknown_sources_create_no_state_for_non_first_knocks() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let firsts: Vec<Knock> = (0..10).map(|c| keys.candidate(c, false).first).collect();
    let noise: Vec<Knock> = (40000..42048).map(Knock::tcp).filter(|k| !firsts.contains(k)).collect();
    let ev = send(&mut m, &keys, OUTSIDER, &noise, 0);
    assert!(ev.is_empty());
    assert_eq!(m.track_count(), 0);
    // Knocks outside the range are not the door's at all.
    send(&mut m, &keys, OUTSIDER, &[Knock::tcp(22), Knock::udp(firsts[0].port)], 0);
    assert_eq!(m.track_count(), 0);
}

#[test]
fn duplicates_are_ignored_and_misses_within_budget_tolerated() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(0), CLIENT);
    let mut wire = Vec::new();
    for (i, k) in seq.iter().enumerate() {
        wire.push(*k);
        wire.push(*k); // every knock duplicated
        if i == 2 || i == 5 {
            // two strays, within the budget of 2
            wire.push(Knock::tcp(if seq.contains(&Knock::tcp(40000)) { 40001 } else { 40000 }));
        }
    }
    let ev = send(&mut m, &keys, CLIENT, &wire, 0);
    assert_eq!(completed(&ev), vec![(cid(0), false)]);
}

#[test]
fn a_miss_over_budget_ends_the_attempt_and_burns_a_two_knock_prefix() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(1), CLIENT);
    let stray: Vec<Knock> = (40000..42048).map(Knock::tcp).filter(|k| !seq.contains(k)).take(3).collect();
    let mut wire = seq[..3].to_vec();
    wire.extend(&stray);
    wire.extend(&seq[3..]);
    let ev = send(&mut m, &keys, CLIENT, &wire, 0);
    assert!(completed(&ev).is_empty(), "{ev:?}");
    assert_eq!(burned(&ev), vec![cid(1)]);
}

#[test]
fn one_knock_then_silence_burns_nothing_but_two_knocks_then_timeout_burns() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let a = keys.sequence(&cid(0), CLIENT);
    let b = keys.sequence(&cid(1), CLIENT);
    send(&mut m, &keys, CLIENT, &a[..1], 0);
    send(&mut m, &keys, "198.18.0.3", &b[..2], 0);
    assert!(m.tick(5_000).is_empty(), "not yet timed out");
    let ev = m.tick(5_001);
    assert_eq!(burned(&ev), vec![cid(1)]);
    assert_eq!(m.track_count(), 0);
}

#[test]
fn the_same_prefix_from_a_second_source_burns_for_both() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(2), CLIENT);
    send(&mut m, &keys, CLIENT, &seq[..3], 0);
    let ev = send(&mut m, &keys, OUTSIDER, &seq[..2], 10);
    assert!(ev.iter().any(|e| matches!(e, Event::PrefixFromSecondSource { id, .. } if *id == cid(2))));
    assert_eq!(burned(&ev), vec![cid(2), cid(2)]);
    // Neither can finish it now.
    let ev = send(&mut m, &keys, CLIENT, &seq[3..], 20);
    assert!(completed(&ev).is_empty());
}

#[test]
fn a_used_candidate_completes_as_a_replay_and_never_burns() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 0);
    m.set_client_candidates(0, 0, &[keys.candidate(7, true)]);
    let seq = keys.sequence(&cid(7), CLIENT);
    let ev = send(&mut m, &keys, OUTSIDER, &seq, 0);
    assert_eq!(completed(&ev), vec![(cid(7), true)]);
    send(&mut m, &keys, OUTSIDER, &seq[..4], 0);
    assert!(burned(&m.tick(60_000)).is_empty());
}

#[test]
fn with_bind_source_the_clients_knocks_from_elsewhere_do_not_complete() {
    let (mut m, keys) = setup((40000, 42047), 8, true, 10);
    let seq = keys.sequence(&cid(0), CLIENT);
    let ev = send(&mut m, &keys, OUTSIDER, &seq, 0);
    assert!(completed(&ev).is_empty());
    let ev = send(&mut m, &keys, CLIENT, &seq, 10);
    assert_eq!(completed(&ev), vec![(cid(0), false)]);
}

#[test]
fn sweeping_every_port_in_order_k_times_opens_nothing() {
    // A small door: 64 ports, K = 4, so first knocks are hit often.
    let (mut m, keys) = setup((50000, 50063), 4, false, 10);
    let sweep: Vec<Knock> = (0..4).flat_map(|_| (50000..50064).map(Knock::tcp)).collect();
    let ev = send(&mut m, &keys, OUTSIDER, &sweep, 0);
    assert!(completed(&ev).is_empty(), "{ev:?}");
}

#[test]
fn state_is_bounded_and_evicts_lowest_progress_first() {
    let (_, keys) = setup((40000, 42047), 8, false, 10);
    let mut m = Matcher::new(Limits { max_tracks: 64, per_slot: 4, per_address: 16, per_ipv6_64: 8 });
    m.set_door(0, rules(keys.alphabet.clone(), 60_000, 2));
    let cands: Vec<Candidate> = (0..10).map(|c| keys.candidate(c, false)).collect();
    m.set_client_candidates(0, 0, &cands);
    // The client is well into its sequence.
    let seq = keys.sequence(&cid(4), CLIENT);
    send(&mut m, &keys, CLIENT, &seq[..5], 0);
    // A spoofed flood: every source hits some first knock.
    for i in 0..2000u32 {
        let src = format!("198.19.{}.{}", i / 250, i % 250 + 1);
        send(&mut m, &keys, &src, &[cands[(i % 10) as usize].first], 1);
        assert!(m.track_count() <= 64);
    }
    // IPv6 sources sharing a /64 are held to their quota.
    for i in 0..100u32 {
        send(&mut m, &keys, &format!("2001:db8:1:2::{:x}", i + 1), &[cands[0].first], 2);
    }
    assert!(m.per_64.values().all(|&n| n <= 8));
    let ev = send(&mut m, &keys, CLIENT, &seq[5..], 3);
    assert_eq!(completed(&ev), vec![(cid(4), false)], "the advanced track survived the flood");
}

#[test]
fn replacing_a_clients_candidates_forgets_the_old_ones() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    assert_eq!(m.table_len(0), 10);
    let next: Vec<Candidate> = (5..15).map(|c| keys.candidate(c, c < 5)).collect();
    m.set_client_candidates(0, 0, &next);
    assert_eq!(m.table_len(0), 10);
    let old = keys.sequence(&cid(0), CLIENT);
    assert!(completed(&send(&mut m, &keys, CLIENT, &old, 0)).is_empty());
}

#[test]
fn tcp_packets_with_the_wrong_flags_are_not_knocks() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(0), CLIENT);
    let mut ev = Vec::new();
    for k in &seq {
        // A SYN-ACK (reflection) and a bare ACK on every port first: ignored, not misses.
        for flags in [0x12, 0x10] {
            ev.extend(m.on_packet(&packet(CLIENT, PORT, *k, Some(flags)), 0, &keys));
        }
        ev.extend(m.on_packet(&packet(CLIENT, PORT, *k, Some(0x02)), 0, &keys));
    }
    assert_eq!(completed(&ev), vec![(cid(0), false)]);
}

/// knockd's rules: only the sequence's ports count, a wrong one ends the attempt at once
/// (a retransmission does not), nothing is burned, and the packet may start a new attempt.
#[test]
fn legacy_rules_reset_on_a_wrong_knock_and_never_burn() {
    let seq = vec![Knock::tcp(7000), Knock::tcp(8000), Knock::tcp(9000)];
    let mut m = Matcher::new(Limits::default());
    m.set_door(
        0,
        DoorRules {
            knocks: KnockSet::Exact(seq.clone()),
            tcp_flags: TcpFlagRule::ANY,
            burn_at: None,
            addresses: vec![],
            seq_timeout_ms: 5_000,
            misses: 0,
            strict_order: true,
            per_port: false,
        },
    );
    let id = cid(0);
    let fixed: Arc<[Knock]> = seq[1..].to_vec().into();
    m.set_client_candidates(0, 0, &[Candidate { id, first: seq[0], used: false, rest: Some(fixed) }]);
    struct NoDerivation;
    impl RestOfSequence for NoDerivation {
        fn rest(&self, _: &CandidateId, _: Knock, _: IpAddr) -> Vec<Knock> {
            panic!("a precomputed rest must be used")
        }
    }
    let send = |m: &mut Matcher, ks: &[Knock]| -> Vec<Event> {
        ks.iter()
            .flat_map(|k| {
                // knockd's clients knock from a new port each time.
                m.on_packet(&packet(CLIENT, 40000 + k.port % 7, *k, Some(0x10)), 0, &NoDerivation)
            })
            .collect()
    };
    // 7000 8000 7000(wrong: resets, and starts anew) 8000 9000: opens.
    let ev = send(&mut m, &[seq[0], seq[1], seq[0], seq[1], seq[2]]);
    assert_eq!(completed(&ev), vec![(id, false)]);
    // 7000 8000 8000 (retransmission) 9000: opens; ports outside the sequence are not seen.
    let ev = send(&mut m, &[seq[0], seq[1], seq[1], Knock::tcp(7500), seq[2]]);
    assert_eq!(completed(&ev), vec![(id, false)]);
    // 7000 8000 8000 then 7000 (wrong: a fresh start) and 9000 (wrong again): nothing opens,
    // nothing is burned, and the same sequence works right after.
    let ev = send(&mut m, &[seq[0], seq[1], seq[1], seq[0], seq[2]]);
    assert!(burned(&ev).is_empty() && completed(&ev).is_empty(), "{ev:?}");
    assert_eq!(completed(&send(&mut m, &seq)), vec![(id, false)]);
}

#[test]
fn a_spoofed_packet_from_the_clients_address_does_not_evict_its_attempt() {
    let (_, keys) = setup((40000, 42047), 8, false, 10);
    let mut m = Matcher::new(Limits { max_tracks: 1000, per_slot: 2, per_address: 16, per_ipv6_64: 8 });
    m.set_door(0, rules(keys.alphabet.clone(), 60_000, 2));
    let cands: Vec<Candidate> = (0..10).map(|c| keys.candidate(c, false)).collect();
    m.set_client_candidates(0, 0, &cands);
    let seq = keys.sequence(&cid(3), CLIENT);
    send(&mut m, &keys, CLIENT, &seq[..1], 0);
    // Two later first knocks "from the client" (spoofed): within its miss budget, but over its
    // per-source quota of two attempts.
    let others: Vec<Knock> =
        cands.iter().filter(|c| c.id != cid(3) && !seq.contains(&c.first)).map(|c| c.first).take(2).collect();
    send(&mut m, &keys, CLIENT, &others, 10);
    let ev = send(&mut m, &keys, CLIENT, &seq[1..], 20);
    assert_eq!(completed(&ev), vec![(cid(3), false)]);
}

#[test]
fn the_burn_threshold_keeps_64_bits_to_guess() {
    // Defaults: 2048 knocks, K = 8: after 2 matched, 6 x 11 = 66 bits are left; after 3, 55.
    assert_eq!(burn_threshold(2048, 8), 3);
    // A small door burns at two already; a huge one later.
    assert_eq!(burn_threshold(256, 4), 2);
    assert_eq!(burn_threshold(65535 * 2, 16), 13);
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let alphabet = keys.alphabet.clone();
    m.set_door(0, DoorRules { burn_at: Some(burn_threshold(2048, 8)), ..rules(alphabet, 5_000, 2) });
    let a = keys.sequence(&cid(0), CLIENT);
    let b = keys.sequence(&cid(1), "198.18.0.3");
    send(&mut m, &keys, CLIENT, &a[..2], 0);
    send(&mut m, &keys, "198.18.0.3", &b[..3], 0);
    let ev = m.tick(6_000);
    assert_eq!(burned(&ev), vec![cid(1)], "two knocks leave 66 bits: no burn; three do");
}

/// Sends `knocks` from `src`, each from the port `port_of` gives its index.
fn send_ports(
    m: &mut Matcher,
    keys: &Keys,
    src: &str,
    knocks: &[Knock],
    port_of: impl Fn(usize) -> u16,
    t: u64,
) -> Vec<Event> {
    knocks
        .iter()
        .enumerate()
        .flat_map(|(i, k)| m.on_packet(&packet(src, port_of(i), *k, Some(0x02)), t, keys))
        .collect()
}

/// Knocks of the door's range that are in none of the first `window` candidates' sequences.
fn strays(keys: &Keys, window: u64) -> Vec<Knock> {
    let used: Vec<Knock> = (0..window).flat_map(|c| keys.sequence(&cid(c), CLIENT)).collect();
    (40000..42048).map(Knock::tcp).filter(|k| !used.contains(k)).collect()
}

/// Issue 9, lockout 2: a neighbour behind the client's address knocks at random from other
/// ports between every knock of the client; the client's attempt, from one port, still opens,
/// once.
#[test]
fn regression_9_a_neighbour_on_the_same_address_cannot_spoil_the_attempt() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(2), CLIENT);
    let noise = strays(&keys, 10);
    let mut ev = Vec::new();
    for (i, k) in seq.iter().enumerate() {
        // Five wrong knocks from five other ports of the same address before each of the
        // client's: far over the miss budget of 2 for anything that follows the whole address.
        for j in 0..5 {
            ev.extend(m.on_packet(&packet(CLIENT, 30000 + (i * 5 + j) as u16, noise[i * 5 + j], Some(0x02)), 1, &keys));
        }
        ev.extend(m.on_packet(&packet(CLIENT, PORT, *k, Some(0x02)), 1, &keys));
    }
    assert_eq!(completed(&ev), vec![(cid(2), false)], "{ev:?}");
    assert!(burned(&ev).is_empty(), "the address's own attempt died of misses, but its sibling lived: {ev:?}");
}

/// A NAT that gives every knock a new source port: the attempt that follows the address opens.
#[test]
fn a_nat_that_changes_ports_on_every_knock_still_opens_once() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(4), CLIENT);
    let ev = send_ports(&mut m, &keys, CLIENT, &seq, |i| 20000 + i as u16 * 7, 1);
    assert_eq!(completed(&ev), vec![(cid(4), false)], "{ev:?}");
    assert!(burned(&m.tick(60_000)).is_empty(), "the other ports' one-knock attempts burn nothing");
    assert_eq!(m.track_count(), 0);
}

/// The address's attempt dies of misses after 3 knocks while the port attempts (a sender whose
/// ports change) never got past one: no sibling carries the attempt, so the candidate burns at
/// once, and the one-knock siblings end with it.
#[test]
fn a_prefix_seen_only_by_the_address_burns_at_once_when_its_attempt_ends() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(1), CLIENT);
    let noise = strays(&keys, 10);
    let mut ev = send_ports(&mut m, &keys, CLIENT, &seq[..3], |i| 20000 + i as u16, 1);
    assert!(burned(&ev).is_empty());
    ev.extend(send_ports(&mut m, &keys, CLIENT, &noise[..3], |i| 31000 + i as u16, 2));
    assert_eq!(burned(&ev), vec![cid(1)], "{ev:?}");
    assert_eq!(m.track_count(), 0, "the siblings ended with it");
    assert!(burned(&m.tick(60_000)).is_empty(), "burned once");
}

/// Both siblings saw the prefix (one port): when one ends, the other carries on; when it ends
/// too, the candidate burns once.
#[test]
fn a_sibling_that_saw_the_prefix_carries_the_attempt_and_the_last_burns_once() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let seq = keys.sequence(&cid(3), CLIENT);
    let noise = strays(&keys, 10);
    let mut ev = send(&mut m, &keys, CLIENT, &seq[..4], 1);
    // Three wrong knocks from other ports: the address's attempt dies, the port's lives.
    ev.extend(send_ports(&mut m, &keys, CLIENT, &noise[..3], |i| 31000 + i as u16, 2));
    assert!(burned(&ev).is_empty(), "{ev:?}");
    assert_eq!(m.track_count(), 1);
    let ev = m.tick(60_000);
    assert_eq!(burned(&ev), vec![cid(3)], "{ev:?}");
}

/// Issue 9, lockout 1: an eavesdropper who replays the prefix of a used sequence from two
/// addresses raises nothing: there is nothing left to burn, and nothing to write.
#[test]
fn regression_9_a_used_prefix_from_two_sources_raises_no_alert() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 0);
    m.set_client_candidates(0, 0, &[keys.candidate(7, true)]);
    let seq = keys.sequence(&cid(7), CLIENT);
    let mut ev = Vec::new();
    for round in 0..50 {
        ev.extend(send(&mut m, &keys, "198.18.0.66", &seq[..3], round));
        ev.extend(send(&mut m, &keys, "198.18.0.67", &seq[..3], round));
    }
    ev.extend(m.tick(60_000));
    assert!(ev.is_empty(), "{ev:?}");
}

/// A neighbour filling the address's quota with attempts from many ports evicts its own
/// attempts, oldest first, never the client's, which is moving: as long as the neighbour starts
/// fewer attempts than the quota between two of the client's knocks.
#[test]
fn the_address_quota_evicts_the_flood_not_the_moving_attempt() {
    let (_, keys) = setup((40000, 42047), 8, false, 10);
    let mut m = Matcher::new(Limits { max_tracks: 10_000, per_slot: 4, per_address: 32, per_ipv6_64: 64 });
    m.set_door(0, rules(keys.alphabet.clone(), 60_000, 2));
    let cands: Vec<Candidate> = (0..10).map(|c| keys.candidate(c, false)).collect();
    m.set_client_candidates(0, 0, &cands);
    let seq = keys.sequence(&cid(5), CLIENT);
    let mut ev = Vec::new();
    for (i, k) in seq.iter().enumerate() {
        // 24 first knocks from 24 other ports of the address before each knock of the client.
        for j in 0..24u16 {
            let first = cands[usize::from(j) % 10].first;
            ev.extend(m.on_packet(&packet(CLIENT, 1000 + i as u16 * 24 + j, first, Some(0x02)), 1, &keys));
            assert!(m.tracks.get(&CLIENT.parse().unwrap()).map_or(0, |a| a.count) <= 32);
        }
        ev.extend(m.on_packet(&packet(CLIENT, PORT, *k, Some(0x02)), 1, &keys));
    }
    assert_eq!(completed(&ev), vec![(cid(5), false)], "{ev:?}");
}

/// Issue 12: a first knock costs one seed per attempt (its port's and its address's) whatever
/// the number of candidates starting with it, and the client's candidate is found among them
/// by its first two knocks, wherever it is filed.
#[test]
fn regression_12_a_first_knock_shared_by_many_clients_costs_two_seeds_and_still_opens() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 0);
    let seq = keys.sequence(&cid(0), CLIENT);
    let mut others = (40000..42048).map(Knock::tcp).filter(|k| !seq.contains(k)).cycle();
    let alices = CandidateId { client: 250, ..cid(0) };
    for client in 0..500 {
        let id = CandidateId { client, ..cid(0) };
        let rest: Vec<Knock> = if id == alices { seq[1..].to_vec() } else { others.by_ref().take(7).collect() };
        m.set_client_candidates(
            0,
            client,
            &[Candidate { id, first: seq[0], used: false, rest: Some(Arc::from(rest)) }],
        );
    }
    assert_eq!(m.table_len(0), 500);
    let ev = send(&mut m, &keys, CLIENT, &seq[..1], 0);
    assert!(ev.is_empty());
    assert_eq!(m.track_count(), 2, "one seed for the port's attempt, one for the address's");
    let ev = send(&mut m, &keys, CLIENT, &seq[1..], 10);
    assert_eq!(completed(&ev), vec![(alices, false)], "{ev:?}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Packets of any source, port, protocol and timing never panic the matcher, never
        /// exceed its limits, and never complete a sequence that was not sent in full.
        #[test]
        fn arbitrary_traffic_is_bounded_and_completes_nothing_unsent(
            packets in proptest::collection::vec((0u8..8, 0u16..3, 39990u16..40100, any::<bool>(), 0u64..50), 0..400)
        ) {
            let alphabet = Alphabet::new(PortRange::new(40000, 40063).unwrap(), &[Proto::Tcp, Proto::Udp]).unwrap();
            let keys = Keys { key: Secret::from_bytes([6; 32]), alphabet: alphabet.clone(), length: 4, bind_source: true };
            let mut m = Matcher::new(Limits { max_tracks: 32, per_slot: 4, per_address: 8, per_ipv6_64: 8 });
            m.set_door(0, rules(alphabet, 200, 1));
            let cands: Vec<Candidate> = (0..10).map(|c| keys.candidate(c, c % 3 == 0)).collect();
            m.set_client_candidates(0, 0, &cands);
            let mut now = 0;
            let mut sent: std::collections::HashMap<IpAddr, Vec<Knock>> = Default::default();
            for (src, sport, port, udp, dt) in packets {
                now += dt;
                let source: IpAddr = if src < 4 { format!("198.18.1.{src}") } else { format!("2001:db8::{src}") }.parse().unwrap();
                let k = Knock { port, proto: if udp { Proto::Udp } else { Proto::Tcp } };
                sent.entry(source).or_default().push(k);
                let p = KnockPacket { src: source, src_port: 50000 + sport, dst: SERVER.parse().unwrap(), knock: k, tcp_flags: Some(0x02) };
                for e in m.on_packet(&p, now, &keys) {
                    if let Event::Completed { id, source, .. } = e {
                        let seq = keys.sequence(&id, &source.to_string());
                        let from = &sent[&source];
                        let mut it = from.iter();
                        prop_assert!(seq.iter().all(|k| it.any(|x| x == k)), "completed {:?} not sent by {}", seq, source);
                    }
                }
                prop_assert!(m.track_count() <= 32);
                if now % 7 == 0 {
                    m.tick(now);
                }
            }
        }
    }
}

#[test]
fn prepared_packets_decide_as_packets_fed_directly_and_heard_tells_first_knocks() {
    // Two matchers, one stream: a client's sequence inside a noisy stream from many sources
    // (some on first knocks), a second source's prefix, packets outside the range. Fed directly
    // to one, prepared in batches of 16 ahead of feeding to the other: the same events.
    let (mut direct, keys) = setup((40000, 40999), 8, false, 10);
    let (mut prepared, _) = setup((40000, 40999), 8, false, 10);
    let firsts: Vec<Knock> = (0..10).map(|c| keys.candidate(c, false).first).collect();
    let seq = keys.sequence(&cid(2), CLIENT);
    let mut stream: Vec<KnockPacket> = Vec::new();
    for i in 0..600u16 {
        let src = format!("198.18.{}.{}", 10 + i % 7, 1 + i % 200);
        let knock = match i % 5 {
            0 => firsts[usize::from(i) % firsts.len()],
            4 => Knock::tcp(41000 + i),
            _ => Knock::tcp(40000 + (i * 37) % 1000),
        };
        stream.push(packet(&src, 40000 + i, knock, Some(0x02)));
        if i % 70 == 0 {
            let k = seq[usize::from(i / 70) % seq.len()];
            stream.push(packet(CLIENT, PORT, k, Some(0x02)));
        }
    }
    stream.extend(seq[..3].iter().map(|k| packet(OUTSIDER, PORT, *k, Some(0x02))));
    stream.extend(seq.iter().map(|k| packet(CLIENT, PORT + 1, *k, Some(0x02))));
    let mut want = Vec::new();
    let mut got = Vec::new();
    let mut heard = (0, 0);
    for (b, batch) in stream.chunks(16).enumerate() {
        let t = 10 * b as u64;
        let ready: Vec<Prepared> = batch.iter().map(|p| prepared.prepare(p)).collect();
        std::hint::black_box(prepared.warm(&ready));
        for (p, r) in batch.iter().zip(&ready) {
            assert_eq!(r.heard(), prepared.heard(p));
            heard.0 += usize::from(r.heard() == Heard::FirstKnock);
            heard.1 += usize::from(r.heard() == Heard::Not);
            want.extend(direct.on_packet(p, t, &keys));
            got.extend(prepared.on_prepared(p, r, t, &keys));
        }
    }
    assert_eq!(got, want);
    assert!(completed(&want).contains(&(cid(2), false)), "{want:?}");
    assert!(heard.0 >= 120, "every fifth packet is a first knock: {heard:?}");
    assert!(heard.1 >= 120, "every fifth packet is outside the range: {heard:?}");
    let outside = packet(CLIENT, PORT, Knock::tcp(22), Some(0x02));
    assert_eq!(direct.heard(&outside), Heard::Not);
    let ack = packet(CLIENT, PORT, firsts[0], Some(0x10));
    assert_eq!(direct.heard(&ack), Heard::Not, "an ACK is no knock");
    assert_eq!(direct.heard(&packet(CLIENT, PORT, firsts[0], Some(0x02))), Heard::FirstKnock);
}

/// The filter in front of the tracks (src/matcher/filter.rs) is rebuilt from the live tracks
/// once thousands have ended: the client's attempt, made before, is still followed after it.
#[test]
fn an_attempt_in_progress_survives_the_track_filter_rebuild() {
    let (mut m, keys) = setup((40000, 42047), 8, false, 10);
    let a = keys.sequence(&cid(0), CLIENT);
    let b = keys.sequence(&cid(1), CLIENT);
    send(&mut m, &keys, CLIENT, &a[..3], 0);
    for i in 0..1500u32 {
        send(&mut m, &keys, &format!("198.18.{}.{}", 4 + i / 256, i % 256), &b[..2], 1);
    }
    m.drop_candidate(cid(1));
    assert_eq!(m.track_count() - m.seeds.live(), 2, "the client's two attempts are left");
    assert!(m.filter.wants_rebuild(2), "thousands of tracks ended");
    assert!(m.tick(2).is_empty());
    assert!(!m.filter.wants_rebuild(2), "rebuilt");
    let ev = send(&mut m, &keys, CLIENT, &a[3..], 3);
    assert_eq!(completed(&ev), vec![(cid(0), false)], "{ev:?}");
}
