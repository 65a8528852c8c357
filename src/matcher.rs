//! The matcher: per-source progress through candidate sequences.
//!
//! Pure state machine, driven by the caller with packets and a millisecond clock. State is
//! created only when a packet is the first knock of a candidate of a door (`index.rs` files
//! every candidate under its first two knocks); everything else from an unknown source is
//! dropped at once. A first knock leaves a *seed* (`seeds.rs`): one entry whatever the number
//! of candidates starting with that knock, in a table of fixed size. The packet that follows it
//! with some candidate's second knock makes a *track* of that candidate (one source following
//! one candidate, two knocks matched). Within an attempt, the next knock advances it, a repeat
//! of an already matched knock is ignored, and anything else in the door's range is a miss
//! (seeds count misses too). Tracks end on completion, on more than `misses` misses, on
//! `seq_timeout`, or when evicted; a fresh candidate whose track had matched enough knocks (see
//! [`burn_threshold`]) and then ended incomplete is burned ("burn on sight", docs/PROTOCOL.md
//! section 7).
//!
//! A first-knock hit starts two attempts on our doors (docs/PROTOCOL.md section 7, "Attempts"),
//! each with its seed and then its tracks: one that sees only packets from the same source *port* (a client sends every knock of an
//! attempt from one port, so a neighbour behind the same address, knocking at random, cannot
//! spoil it with misses), and one that sees every packet of the source *address* (for NATs that
//! give each connection a new port). They are siblings: the first to complete wins, and the
//! candidate burns only when the last of them ends incomplete. knockd's doors keep knockd's
//! one track per address. Seeds are bounded by their table (half of [`Limits::max_tracks`]);
//! tracks in total, per attempt, per address and per IPv6 /64.

mod filter;
mod index;
mod seeds;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::TcpFlagRule;
use crate::knock::{Knock, Proto};
use crate::packet::KnockPacket;
use crate::sequence::{Alphabet, Purpose};
use filter::TrackFilter;
use index::DoorIndex;
use seeds::{Seed, SeedKey, SeedTable, View};

/// Identifies one candidate sequence of one door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CandidateId {
    /// Index of the door in the matcher.
    pub door: usize,
    /// Index of the client within the door (0 for `file` and `static` doors).
    pub client: usize,
    /// Open or close.
    pub purpose: Purpose,
    /// HOTP counter, TOTP step or file line.
    pub counter: u64,
    /// UTC day the sequence was derived for (0 where the mode has none).
    pub epoch: u32,
}

/// One entry of a first-knock table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Which sequence.
    pub id: CandidateId,
    /// Its first knock.
    pub first: Knock,
    /// Already consumed or burned: completing it is a replay and opens nothing.
    pub used: bool,
    /// Knocks 2..K when they do not depend on the source (no `bind_source`), derived once when
    /// the table is built so that a packet never costs an HMAC; `None`: ask [`RestOfSequence`].
    pub rest: Option<Arc<[Knock]>>,
}

/// Supplies knocks 2..K of a candidate for a source (derivation needs keys the matcher lacks).
pub trait RestOfSequence {
    /// Knocks 2..K of `id` as knocked from `source`.
    fn rest(&self, id: &CandidateId, first: Knock, source: IpAddr) -> Vec<Knock>;
}

/// Why a candidate was burned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurnReason {
    /// More than the miss budget of wrong knocks.
    Misses,
    /// Not complete within `seq_timeout`.
    Timeout,
    /// Pushed out when the state was full.
    Evicted,
    /// The same prefix came from a second source while the first attempt was alive.
    SecondSource,
}

/// What the matcher decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A sequence was completed. When `used`, it is a replay and must open nothing.
    Completed {
        /// The candidate.
        id: CandidateId,
        /// Who completed it.
        source: IpAddr,
        /// Consumed or burned before.
        used: bool,
    },
    /// A fresh candidate was burned: it must never open, whoever knocks it.
    Burned {
        /// The candidate.
        id: CandidateId,
        /// The source whose attempt ended.
        source: IpAddr,
        /// Knocks it had matched.
        progress: usize,
        /// Why.
        reason: BurnReason,
    },
    /// The same prefix seen from a second source (an alert; both tracks are also burned).
    PrefixFromSecondSource {
        /// The candidate.
        id: CandidateId,
        /// The source that had it first.
        first: IpAddr,
        /// The second source.
        second: IpAddr,
    },
}

/// Limits on matcher state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attempts in all: first knocks remembered (seeds, at most half of this) and tracks (two
    /// knocks matched or more, the rest). The bounds below are the tracks'.
    pub max_tracks: usize,
    /// Tracks per attempt slot: (address, source port, door), or (address, door) for the tracks
    /// that follow the whole address.
    pub per_slot: usize,
    /// Tracks per source address, over all its ports and doors.
    pub per_address: usize,
    /// Tracks per IPv6 /64 (all doors).
    pub per_ipv6_64: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_tracks: 262_144, per_slot: 16, per_address: 1024, per_ipv6_64: 1024 }
    }
}

/// The knocks a door listens to; packets outside are not the door's at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnockSet {
    /// A port range times protocols: our doors, where every knock in the range counts.
    Range(Alphabet),
    /// Exactly these knocks: knockd's doors, which watch only their sequence's ports.
    Exact(Vec<Knock>),
}

impl KnockSet {
    /// Whether `k` belongs to the set.
    pub fn contains(&self, k: Knock) -> bool {
        match self {
            KnockSet::Range(a) => a.contains(k),
            KnockSet::Exact(list) => list.contains(&k),
        }
    }
}

/// How the doors hear a packet ([`Matcher::heard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Heard {
    /// No door listens to it: outside every knock set, to another address, or TCP flags that
    /// do not count.
    Not,
    /// Some door listens to it (it lies in a door's knock range), but it starts no candidate.
    InRange,
    /// It is the first knock of some candidate of a door that listens to it.
    FirstKnock,
}

/// Doors whose seed keys a [`Prepared`] packet carries (further ones are hashed when fed): one,
/// as doors' knock ranges seldom overlap.
const PREPARED_DOORS: usize = 1;

/// What [`Matcher::prepare`] worked out about a packet.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    heard: Heard,
    /// The seed keys (port's view, address's view) of the first doors that hear it.
    doors: [Option<(usize, (SeedKey, SeedKey))>; PREPARED_DOORS],
}

impl Prepared {
    /// How the doors hear the packet (see [`Matcher::heard`]).
    pub fn heard(&self) -> Heard {
        self.heard
    }

    fn keys_of(&self, door: usize) -> Option<(SeedKey, SeedKey)> {
        self.doors.iter().flatten().find(|(d, _)| *d == door).map(|(_, k)| *k)
    }
}

impl DoorRules {
    /// Whether the door listens to `packet`: its knock, destination and TCP flags.
    fn hears(&self, packet: &KnockPacket) -> bool {
        self.knocks.contains(packet.knock)
            && (self.addresses.is_empty() || self.addresses.contains(&packet.dst))
            && (packet.knock.proto != Proto::Tcp || self.tcp_flags.matches(packet.tcp_flags.unwrap_or(0)))
    }
}

/// Per-door matching parameters.
#[derive(Debug, Clone)]
pub struct DoorRules {
    /// Knocks the door listens to; packets outside are not the door's.
    pub knocks: KnockSet,
    /// Which TCP packets count (UDP always does); others are ignored by this door.
    pub tcp_flags: TcpFlagRule,
    /// Burn on sight (docs/PROTOCOL.md §7): a fresh candidate whose attempt ended incomplete
    /// after at least this many matched knocks is burned, and so is one whose prefix of that
    /// length comes from a second source. `None` for knockd's doors, which keep knockd's rules.
    pub burn_at: Option<usize>,
    /// Destination addresses (empty: any).
    pub addresses: Vec<IpAddr>,
    /// Milliseconds from first knock to last.
    pub seq_timeout_ms: u64,
    /// Misses allowed per attempt.
    pub misses: u8,
    /// knockd's order: only a repeat of the last matched knock is a retransmission; a repeat of
    /// an earlier one is a wrong knock. Off for our doors, which ignore any matched knock again.
    pub strict_order: bool,
    /// Whether attempts are also followed per source port (our doors). Off for knockd's doors,
    /// whose clients send each knock from a new port.
    pub per_port: bool,
}

#[derive(Debug)]
struct Track {
    id: CandidateId,
    used: bool,
    expected: Expected,
    progress: usize,
    /// The most any ended sibling of this track had matched (see [`Matcher::end`]).
    peak: usize,
    misses: u8,
    started_ms: u64,
    /// Creation order, to tell apart tracks started in the same millisecond.
    order: u64,
    /// The source port of its first knock (its seed's, see [`Matcher::end`]).
    origin_port: u16,
}

/// Where a track lives within its source address: the door, and the source port for a track
/// that follows one port (`None`: it follows every port of the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    door: usize,
    port: Option<u16>,
}

/// The knocks a track expects: its first, and the rest as its candidate holds them (shared,
/// not copied) or as derived for the source.
#[derive(Debug, Clone)]
struct Expected {
    first: Knock,
    rest: Arc<[Knock]>,
}

impl Expected {
    fn len(&self) -> usize {
        1 + self.rest.len()
    }

    fn get(&self, i: usize) -> Option<&Knock> {
        match i {
            0 => Some(&self.first),
            _ => self.rest.get(i - 1),
        }
    }

    /// Whether `knock` repeats one of the first `matched` knocks (a retransmission or
    /// duplicate, ignored): with `strict`, only the last of them counts.
    fn repeats(&self, matched: usize, knock: Knock, strict: bool) -> bool {
        let rest = &self.rest[..matched.saturating_sub(1).min(self.rest.len())];
        if strict {
            rest.last().unwrap_or(&self.first) == &knock
        } else {
            self.first == knock || rest.contains(&knock)
        }
    }
}

/// The tracks of one source address, by slot (a few slots each: a plain list).
#[derive(Debug, Default)]
struct Slots(Vec<(Slot, Vec<Track>)>);

impl Slots {
    fn get(&self, slot: &Slot) -> Option<&Vec<Track>> {
        self.0.iter().find(|(s, _)| s == slot).map(|(_, l)| l)
    }

    fn get_mut(&mut self, slot: &Slot) -> Option<&mut Vec<Track>> {
        self.0.iter_mut().find(|(s, _)| s == slot).map(|(_, l)| l)
    }

    fn remove(&mut self, slot: &Slot) -> Option<Vec<Track>> {
        let i = self.0.iter().position(|(s, _)| s == slot)?;
        Some(self.0.swap_remove(i).1)
    }

    fn insert(&mut self, slot: Slot, list: Vec<Track>) {
        match self.get_mut(&slot) {
            Some(l) => *l = list,
            None => self.0.push((slot, list)),
        }
    }

    fn entry(&mut self, slot: Slot) -> &mut Vec<Track> {
        let i = match self.0.iter().position(|(s, _)| *s == slot) {
            Some(i) => i,
            None => {
                self.0.push((slot, Vec::new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn iter(&self) -> impl Iterator<Item = (&Slot, &Vec<Track>)> {
        self.0.iter().map(|(s, l)| (s, l))
    }

    fn values(&self) -> impl Iterator<Item = &Vec<Track>> {
        self.0.iter().map(|(_, l)| l)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every track of one source address.
#[derive(Debug, Default)]
struct AddressTracks {
    slots: Slots,
    count: usize,
}

#[derive(Debug, Default)]
struct DoorState {
    rules: Option<DoorRules>,
    /// Its candidates.
    index: DoorIndex,
}

/// The matcher for every door.
#[derive(Debug)]
pub struct Matcher {
    doors: Vec<DoorState>,
    /// Each door's `seq_timeout` in milliseconds (for the seeds).
    timeouts: Vec<u64>,
    /// First knocks, waiting for a second.
    seeds: SeedTable,
    /// Tracks: attempts past their first knock.
    tracks: HashMap<IpAddr, AddressTracks>,
    /// Which (address, door) may hold tracks: most packets skip the `tracks` lookup.
    filter: TrackFilter,
    /// Addresses holding a track at or past the door's burn threshold, per fresh candidate.
    prefixes: HashMap<CandidateId, Vec<IpAddr>>,
    per_64: HashMap<u64, usize>,
    track_count: usize,
    /// Tracks created so far (their `order`).
    created: u64,
    limits: Limits,
    /// Most tracks: what the seeds leave of `limits.max_tracks`.
    max_real: usize,
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher::new(Limits::default())
    }
}

/// The least number of matched knocks, two at least, after which the knocks left to guess
/// carry fewer than 64 bits ((K − b)·log2(N − 1) < 64): an attempt that ends incomplete past it
/// burns its candidate (docs/PROTOCOL.md §7). Below it, finishing the sequence is still a
/// 64-bit guess, and burning would only hand a spoofed flood a way to burn candidates at random.
pub fn burn_threshold(alphabet_size: u32, length: usize) -> usize {
    let per_knock = f64::from(alphabet_size.saturating_sub(1).max(1)).log2();
    (2..length).find(|b| (length - b) as f64 * per_knock < 64.0).unwrap_or(length).max(2)
}

fn ipv6_64(addr: IpAddr) -> Option<u64> {
    match addr {
        IpAddr::V6(v6) => Some((u128::from(v6) >> 64) as u64),
        IpAddr::V4(_) => None,
    }
}

/// A door's number among the seeds (doors past 65535 share the last).
fn seed_door(door: usize) -> u16 {
    u16::try_from(door).unwrap_or(u16::MAX)
}

/// Which tracks an eviction chooses from.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Address(IpAddr),
    Ipv6Net(u64),
    All,
}

/// A door's timing and miss rules, as one packet needs them.
#[derive(Debug, Clone, Copy)]
struct Pace {
    timeout_ms: u64,
    misses: u8,
    strict: bool,
}

impl Matcher {
    /// An empty matcher with the given limits.
    pub fn new(limits: Limits) -> Self {
        let seeds = SeedTable::new(limits.max_tracks / 2);
        let max_real = limits.max_tracks.saturating_sub(seeds.capacity()).max(1);
        Matcher {
            doors: Vec::new(),
            timeouts: Vec::new(),
            seeds,
            tracks: HashMap::new(),
            filter: TrackFilter::default(),
            prefixes: HashMap::new(),
            per_64: HashMap::new(),
            track_count: 0,
            created: 0,
            limits,
            max_real,
        }
    }

    /// Sets (or replaces) door `door`'s rules. Doors are numbered from 0 by the caller.
    pub fn set_door(&mut self, door: usize, rules: DoorRules) {
        if self.doors.len() <= door {
            self.doors.resize_with(door + 1, DoorState::default);
            self.timeouts.resize(door + 1, 0);
        }
        self.timeouts[door] = rules.seq_timeout_ms;
        self.doors[door].rules = Some(rules);
    }

    /// Replaces every candidate of `client` on `door` with `candidates`.
    pub fn set_client_candidates(&mut self, door: usize, client: usize, candidates: &[Candidate]) {
        if let Some(ds) = self.doors.get_mut(door) {
            ds.index.set_client(client, candidates);
        }
    }

    /// Number of live attempts: first knocks remembered and tracks.
    pub fn track_count(&self) -> usize {
        self.track_count + self.seeds.live()
    }

    /// Number of candidates of a door.
    pub fn table_len(&self, door: usize) -> usize {
        self.doors.get(door).map_or(0, |d| d.index.len())
    }

    /// How the doors hear `packet`, without changing any state: whether some door listens to
    /// it, and whether it is the first knock of one of that door's candidates (the only packet
    /// from an unknown source that leaves anything behind).
    pub fn heard(&self, packet: &KnockPacket) -> Heard {
        let mut heard = Heard::Not;
        for d in &self.doors {
            if d.rules.as_ref().is_some_and(|r| r.hears(packet)) {
                let starts = d.index.starts(packet.knock);
                if starts.fresh + starts.used > 0 {
                    return Heard::FirstKnock;
                }
                heard = Heard::InRange;
            }
        }
        heard
    }

    /// Works out ahead what [`Matcher::on_prepared`] needs first for `packet`: how the doors
    /// hear it and its seed keys in each door that does (hashed once). The state may change
    /// between the two calls (the keys depend only on the packet and the table's hash key).
    pub fn prepare(&self, packet: &KnockPacket) -> Prepared {
        let mut p = Prepared { heard: Heard::Not, doors: [None; PREPARED_DOORS] };
        let mut n = 0;
        for (door, d) in self.doors.iter().enumerate() {
            if d.rules.as_ref().is_some_and(|r| r.hears(packet)) {
                let starts = d.index.starts(packet.knock);
                p.heard = p.heard.max(if starts.fresh + starts.used > 0 { Heard::FirstKnock } else { Heard::InRange });
                if let Some(slot) = p.doors.get_mut(n) {
                    *slot = Some((door, self.seeds.keys(packet.src, seed_door(door), packet.src_port)));
                    n += 1;
                }
            }
        }
        p
    }

    /// Reads, changing nothing, the seed sets of a batch of prepared packets, one load after
    /// the other, so that their cache misses overlap before the caller feeds the packets one by
    /// one (`knockd replay`). The value returned only keeps the reads from being optimised away.
    pub fn warm(&self, batch: &[Prepared]) -> u64 {
        let mut acc = 0;
        for (_, (port, address)) in batch.iter().flat_map(|p| p.doors.iter().flatten()) {
            acc ^= self.seeds.peek(&[self.seeds.set_index(port), self.seeds.set_index(address)]);
        }
        acc
    }

    /// [`Matcher::on_packet`] for a packet [`Matcher::prepare`]d before.
    pub fn on_prepared(
        &mut self,
        packet: &KnockPacket,
        prepared: &Prepared,
        now_ms: u64,
        rest: &dyn RestOfSequence,
    ) -> Vec<Event> {
        self.feed(packet, Some(prepared), now_ms, rest)
    }

    /// Feeds one packet seen at `now_ms` (monotonic). Returns what was decided.
    pub fn on_packet(&mut self, packet: &KnockPacket, now_ms: u64, rest: &dyn RestOfSequence) -> Vec<Event> {
        self.feed(packet, None, now_ms, rest)
    }

    fn feed(
        &mut self,
        packet: &KnockPacket,
        prepared: Option<&Prepared>,
        now_ms: u64,
        rest: &dyn RestOfSequence,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let (source, knock) = (packet.src, packet.knock);
        for door in 0..self.doors.len() {
            let Some(rules) = &self.doors[door].rules else { continue };
            if !rules.hears(packet) {
                continue;
            }
            let pace = Pace { timeout_ms: rules.seq_timeout_ms, misses: rules.misses, strict: rules.strict_order };
            let port_slot = rules.per_port.then_some(Slot { door, port: Some(packet.src_port) });
            let address_slot = Slot { door, port: None };
            // Candidates this packet completed: a sibling completing on the same packet is the
            // same attempt, not a replay.
            let mut done = Vec::new();
            let (port_key, address_key) = prepared
                .and_then(|p| p.keys_of(door))
                .unwrap_or_else(|| self.seeds.keys(source, seed_door(door), packet.src_port));
            let tracked = self.filter.may_hold(address_key.address_hash()) && self.tracks.contains_key(&source);
            for (slot, key) in port_slot.map(|s| (s, port_key)).into_iter().chain([(address_slot, address_key)]) {
                if tracked {
                    self.advance_tracks(source, slot, knock, now_ms, pace, &mut done, &mut events);
                }
                self.advance_seeds(source, slot, &key, knock, now_ms, pace, rest, &mut done, &mut events);
            }
            let keys = (port_slot.is_some().then_some(port_key), address_key);
            self.plant(source, packet.src_port, door, keys, knock, now_ms, &mut events);
        }
        events
    }

    /// Moves every live track of (source, slot) on by one packet.
    #[allow(clippy::too_many_arguments)]
    fn advance_tracks(
        &mut self,
        source: IpAddr,
        slot: Slot,
        knock: Knock,
        now_ms: u64,
        pace: Pace,
        done: &mut Vec<CandidateId>,
        events: &mut Vec<Event>,
    ) {
        let Some(mut list) = self.tracks.get_mut(&source).and_then(|a| a.slots.remove(&slot)) else { return };
        let mut ended = Vec::new();
        let mut reached_prefix = Vec::new();
        let prefix_len = self.prefix_len(slot.door);
        // In place (tracks that end leave the list, in order): a packet allocates nothing here.
        let mut i = 0;
        while i < list.len() {
            let t = &mut list[i];
            if now_ms.saturating_sub(t.started_ms) > pace.timeout_ms {
                ended.push((list.remove(i), BurnReason::Timeout));
                continue;
            }
            if t.expected.get(t.progress) == Some(&knock) {
                t.progress += 1;
                if t.progress == t.expected.len() {
                    if !done.contains(&t.id) {
                        events.push(Event::Completed { id: t.id, source, used: t.used });
                        done.push(t.id);
                    }
                    let t = list.remove(i);
                    self.forget(source, &t);
                    continue;
                }
                if t.progress == prefix_len && !t.used {
                    reached_prefix.push(t.id);
                }
            } else if !t.expected.repeats(t.progress, knock, pace.strict) {
                t.misses = t.misses.saturating_add(1);
                if t.misses > pace.misses {
                    ended.push((list.remove(i), BurnReason::Misses));
                    continue;
                }
            }
            i += 1;
        }
        if !list.is_empty() {
            self.tracks.entry(source).or_default().slots.insert(slot, list);
        }
        // Ended tracks are judged with their list back in place, so siblings are seen.
        for (t, reason) in ended {
            self.end(source, t, reason, events);
        }
        for id in reached_prefix {
            self.note_prefix(source, id, events);
        }
    }

    /// The packet as the seeds of (source, slot) see it: the second knock of some candidate
    /// after a seed's knock makes a track of it; for the seed's other candidates it is a miss.
    #[allow(clippy::too_many_arguments)]
    fn advance_seeds(
        &mut self,
        source: IpAddr,
        slot: Slot,
        key: &SeedKey,
        knock: Knock,
        now_ms: u64,
        pace: Pace,
        rest: &dyn RestOfSequence,
        done: &mut Vec<CandidateId>,
        events: &mut Vec<Event>,
    ) {
        let found = self.seeds.find(key, now_ms, pace.timeout_ms);
        let mut promoted: Vec<(Seed, Candidate, Expected)> = Vec::new();
        let port_view = slot.port.is_some();
        for (at, seed) in found.iter() {
            let index = &self.doors[slot.door].index;
            // A used candidate is followed per address only (see `plant`).
            let wanted = |c: &Candidate| !(port_view && c.used || self.seeds.taken(*at, &c.id));
            for c in index.pair(seed.knock(), knock).iter().filter(|c| wanted(c)) {
                let rest = c.rest.clone().unwrap_or_else(|| Arc::from([]));
                promoted.push((*seed, c.clone(), Expected { first: c.first, rest }));
            }
            for c in index.unbound(seed.knock()).iter().filter(|c| wanted(c)) {
                let derived = rest.rest(&c.id, c.first, source);
                if derived.first() == Some(&knock) {
                    promoted.push((*seed, c.clone(), Expected { first: c.first, rest: Arc::from(derived) }));
                }
            }
            // For every other candidate of the seed, anything but a repeat is a miss.
            if knock != seed.knock() {
                let misses = seed.misses.saturating_add(1);
                if misses > pace.misses {
                    self.seeds.end(*at);
                } else {
                    self.seeds.set_misses(*at, misses);
                }
            }
        }
        if promoted.is_empty() {
            return;
        }
        let prefix_len = self.prefix_len(slot.door);
        let mut reached_prefix = Vec::new();
        for (seed, c, expected) in promoted {
            let limit = self.seed_limit(slot.door, seed.knock(), port_view);
            self.seeds.take(key, seed.knock(), c.id, limit);
            if expected.len() == 2 {
                // A two-knock sequence is complete.
                if !done.contains(&c.id) {
                    events.push(Event::Completed { id: c.id, source, used: c.used });
                    done.push(c.id);
                }
                continue;
            }
            let known = self
                .tracks
                .get(&source)
                .and_then(|a| a.slots.get(&slot))
                .is_some_and(|l| l.iter().any(|t| t.id == c.id));
            if known {
                continue;
            }
            self.make_room(source, slot, events);
            self.created += 1;
            let track = Track {
                id: c.id,
                used: c.used,
                expected,
                progress: 2,
                peak: 0,
                misses: seed.misses,
                started_ms: seed.started_ms(now_ms),
                order: self.created,
                origin_port: seed.origin_port,
            };
            let at = self.tracks.entry(source).or_default();
            at.slots.entry(slot).push(track);
            at.count += 1;
            self.track_count += 1;
            self.filter.insert(key.address_hash());
            if let Some(n) = ipv6_64(source) {
                *self.per_64.entry(n).or_default() += 1;
            }
            if prefix_len == 2 && !c.used {
                reached_prefix.push(c.id);
            }
        }
        for id in reached_prefix {
            self.note_prefix(source, id, events);
        }
    }

    /// How many candidates a seed of `knock` can start in a view: when all were taken from it,
    /// it is over.
    fn seed_limit(&self, door: usize, knock: Knock, port_view: bool) -> u32 {
        let starts = self.doors.get(door).map(|d| d.index.starts(knock)).unwrap_or_default();
        if port_view {
            starts.fresh
        } else {
            starts.fresh + starts.used
        }
    }

    /// A packet that is some candidate's first knock leaves a seed in the port's view (when the
    /// door follows ports and a fresh candidate starts with it: a used one can only be
    /// replayed, which the address's view shows) and in the address's view, unless a seed of
    /// that knock is there already (a repeat). A one-knock sequence completes here, once.
    #[allow(clippy::too_many_arguments)]
    fn plant(
        &mut self,
        source: IpAddr,
        src_port: u16,
        door: usize,
        (port_key, address_key): (Option<SeedKey>, SeedKey),
        knock: Knock,
        now_ms: u64,
        events: &mut Vec<Event>,
    ) {
        let index = &self.doors[door].index;
        if index.has_singles() {
            for c in index.singles(knock) {
                events.push(Event::Completed { id: c.id, source, used: c.used });
            }
        }
        let starts = index.starts(knock);
        if starts.fresh + starts.used == 0 {
            return;
        }
        let timeouts = &self.timeouts;
        let timeout_of = |d: u16| timeouts.get(usize::from(d)).copied().unwrap_or(0);
        let port_key = port_key.filter(|_| starts.fresh > 0);
        for key in port_key.into_iter().chain([address_key]) {
            if !self.seeds.holds(&key, knock, now_ms, timeout_of(key.door)) {
                self.seeds.plant(&key, knock, src_port, now_ms, timeout_of);
            }
        }
    }

    /// Ensures a new track in (source, slot) fits the limits, evicting lowest progress first.
    fn make_room(&mut self, source: IpAddr, slot: Slot, events: &mut Vec<Event>) {
        let (here, at_address) =
            self.tracks.get(&source).map_or((0, 0), |a| (a.slots.get(&slot).map_or(0, Vec::len), a.count));
        if here >= self.limits.per_slot {
            // Within one slot, the newest of the least advanced goes: a packet spoofed from a
            // client's address and port must not push out the client's own older attempt.
            let victim = self
                .tracks
                .get(&source)
                .and_then(|a| a.slots.get(&slot))
                .and_then(|l| l.iter().min_by_key(|t| (t.progress, std::cmp::Reverse(t.order))).map(|t| t.id));
            if let Some(t) = victim.and_then(|id| self.take_track(source, slot, id)) {
                self.end(source, t, BurnReason::Evicted, events);
            }
        }
        if at_address >= self.limits.per_address {
            // Over the address's quota (a neighbour knocking at random from many ports): the
            // oldest of the least advanced go, never the attempt that is moving; an eighth at
            // once, so a flood pays the scan rarely.
            self.evict(events, (self.limits.per_address / 8).max(1), Scope::Address(source));
        }
        if let Some(n) = ipv6_64(source) {
            if self.per_64.get(&n).copied().unwrap_or(0) >= self.limits.per_ipv6_64 {
                self.evict(events, (self.limits.per_ipv6_64 / 8).max(1), Scope::Ipv6Net(n));
            }
        }
        if self.track_count >= self.max_real {
            // Evict an eighth at once so a flood pays the scan rarely.
            let batch = (self.max_real / 8).max(1);
            self.evict(events, batch, Scope::All);
        }
    }

    /// Evicts up to `n` tracks of `scope`, lowest progress and oldest first.
    fn evict(&mut self, events: &mut Vec<Event>, n: usize, scope: Scope) {
        let mut victims: Vec<(usize, u64, IpAddr, Slot, CandidateId)> = Vec::new();
        let mut add = |s: IpAddr, a: &AddressTracks| {
            for (slot, l) in a.slots.iter() {
                victims.extend(l.iter().map(|t| (t.progress, t.order, s, *slot, t.id)));
            }
        };
        match scope {
            // One address: look at its own tracks only (this runs under a same-address flood).
            Scope::Address(addr) => {
                if let Some(a) = self.tracks.get(&addr) {
                    add(addr, a);
                }
            }
            Scope::Ipv6Net(n) => {
                self.tracks.iter().filter(|(s, _)| ipv6_64(**s) == Some(n)).for_each(|(s, a)| add(*s, a))
            }
            Scope::All => self.tracks.iter().for_each(|(s, a)| add(*s, a)),
        }
        let n = n.min(victims.len());
        if n == 0 {
            return;
        }
        victims.select_nth_unstable_by_key(n - 1, |v| (v.0, v.1));
        for (_, _, s, slot, id) in victims.into_iter().take(n) {
            if let Some(t) = self.take_track(s, slot, id) {
                self.end(s, t, BurnReason::Evicted, events);
            }
        }
    }

    /// Takes a track out of the state; the caller ends or forgets it.
    fn take_track(&mut self, source: IpAddr, slot: Slot, id: CandidateId) -> Option<Track> {
        let at = self.tracks.get_mut(&source)?;
        let list = at.slots.get_mut(&slot)?;
        let pos = list.iter().position(|t| t.id == id)?;
        let t = list.swap_remove(pos);
        if list.is_empty() {
            at.slots.remove(&slot);
        }
        Some(t)
    }

    /// The slots of `source` holding a track of `id`.
    fn slots_holding(&self, source: IpAddr, id: CandidateId) -> Vec<Slot> {
        self.tracks.get(&source).map_or_else(Vec::new, |a| {
            a.slots
                .iter()
                .filter(|(slot, l)| slot.door == id.door && l.iter().any(|t| t.id == id))
                .map(|(slot, _)| *slot)
                .collect()
        })
    }

    /// Records that `source` matched the burn-threshold prefix of fresh `id`; a second address
    /// burns it for both. A used candidate has nothing left to burn and raises nothing.
    fn note_prefix(&mut self, source: IpAddr, id: CandidateId, events: &mut Vec<Event>) {
        if !self.burns(id.door) {
            return;
        }
        let owners = self.prefixes.entry(id).or_default();
        let others: Vec<IpAddr> = owners.iter().copied().filter(|s| *s != source).collect();
        if !owners.contains(&source) {
            owners.push(source);
        }
        if others.is_empty() {
            return;
        }
        for other in others {
            events.push(Event::PrefixFromSecondSource { id, first: other, second: source });
            self.end_all(other, id, BurnReason::SecondSource, events);
        }
        self.end_all(source, id, BurnReason::SecondSource, events);
    }

    /// Ends every track of `id` from `source` (its siblings too).
    fn end_all(&mut self, source: IpAddr, id: CandidateId, reason: BurnReason, events: &mut Vec<Event>) {
        for slot in self.slots_holding(source, id) {
            if let Some(t) = self.take_track(source, slot, id) {
                self.end(source, t, reason, events);
            }
        }
    }

    /// Ends an incomplete track (already taken out of the state). Its siblings (the same
    /// candidate from the same address, in other slots) decide what follows:
    /// - if it had matched the door's burn threshold and no sibling has matched two knocks of
    ///   its own, the attempt is over: the siblings end with it, quietly, and a fresh candidate
    ///   burns at once (a sender whose ports change, seen only by the address's track);
    /// - else such a sibling carries the attempt on (the address's track died of a neighbour's
    ///   misses, the port's did not) and inherits how far this one got; the last of them burns
    ///   if any had reached the threshold.
    fn end(&mut self, source: IpAddr, t: Track, reason: BurnReason, events: &mut Vec<Event>) {
        let reached = t.progress.max(t.peak);
        let burn_at = self.doors.get(t.id.door).and_then(|d| d.rules.as_ref()).and_then(|r| r.burn_at);
        let past = burn_at.is_some_and(|b| reached >= b);
        let slots = self.slots_holding(source, t.id);
        // A sibling that matched two knocks in its own slot is a live attempt (one knock is only
        // where a sender with changing ports started).
        let carried = past
            && slots.iter().any(|slot| {
                self.tracks
                    .get(&source)
                    .and_then(|a| a.slots.get(slot))
                    .is_some_and(|l| l.iter().any(|s| s.id == t.id && s.progress >= 2))
            });
        if past && !carried {
            for slot in slots {
                if let Some(s) = self.take_track(source, slot, t.id) {
                    self.forget(source, &s);
                }
            }
            // Its first knock's seeds must not start it again.
            let first = t.expected.first;
            for view in [View::Port(t.origin_port), View::Address] {
                let key = self.seeds.key(source, seed_door(t.id.door), view);
                let limit = self.seed_limit(t.id.door, first, view != View::Address);
                self.seeds.take(&key, first, t.id, limit);
            }
            if !t.used {
                events.push(Event::Burned { id: t.id, source, progress: reached, reason });
            }
        } else {
            for slot in slots {
                if let Some(list) = self.tracks.get_mut(&source).and_then(|a| a.slots.get_mut(&slot)) {
                    for s in list.iter_mut().filter(|s| s.id == t.id) {
                        s.peak = s.peak.max(reached);
                    }
                }
            }
        }
        self.forget(source, &t);
    }

    /// How many matched knocks make a prefix that burns when a second source shows it too: the
    /// door's burn threshold (never matched when the door does not burn).
    fn prefix_len(&self, door: usize) -> usize {
        self.doors.get(door).and_then(|d| d.rules.as_ref()).and_then(|r| r.burn_at).unwrap_or(usize::MAX)
    }

    /// Whether a door burns on sight (also on a second source's prefix).
    fn burns(&self, door: usize) -> bool {
        self.doors.get(door).and_then(|d| d.rules.as_ref()).is_some_and(|r| r.burn_at.is_some())
    }

    /// Drops the bookkeeping of a track that has left its slot.
    fn forget(&mut self, source: IpAddr, t: &Track) {
        self.track_count = self.track_count.saturating_sub(1);
        self.filter.ended();
        if let Some(at) = self.tracks.get_mut(&source) {
            at.count = at.count.saturating_sub(1);
            if at.count == 0 && at.slots.is_empty() {
                self.tracks.remove(&source);
            }
        }
        if let Some(n) = ipv6_64(source) {
            if let Some(c) = self.per_64.get_mut(&n) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.per_64.remove(&n);
                }
            }
        }
        let prefix_len = self.prefix_len(t.id.door);
        if t.progress >= prefix_len {
            let still_held = self
                .tracks
                .get(&source)
                .is_some_and(|a| a.slots.values().flatten().any(|s| s.id == t.id && s.progress >= prefix_len));
            if !still_held {
                if let Some(owners) = self.prefixes.get_mut(&t.id) {
                    owners.retain(|s| *s != source);
                    if owners.is_empty() {
                        self.prefixes.remove(&t.id);
                    }
                }
            }
        }
    }

    /// Ends every track older than its door's `seq_timeout`. Call a few times a second.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let timeouts = &self.timeouts;
        let least = self.doors.iter().zip(timeouts).filter(|(d, _)| d.rules.is_some()).map(|(_, t)| *t).min();
        self.seeds.sweep(now_ms, least.unwrap_or(0), |d| timeouts.get(usize::from(d)).copied().unwrap_or(0));
        let expired: Vec<(IpAddr, Slot, CandidateId)> = self
            .tracks
            .iter()
            .flat_map(|(s, a)| a.slots.iter().map(move |(slot, l)| (*s, *slot, l)))
            .flat_map(|(s, slot, l)| {
                let timeout = self.doors[slot.door].rules.as_ref().map_or(0, |r| r.seq_timeout_ms);
                l.iter().filter(move |t| now_ms.saturating_sub(t.started_ms) > timeout).map(move |t| (s, slot, t.id))
            })
            .collect();
        for (s, slot, id) in expired {
            if let Some(t) = self.take_track(s, slot, id) {
                self.end(s, t, BurnReason::Timeout, &mut events);
            }
        }
        if self.filter.wants_rebuild(self.track_count) {
            self.rebuild_filter();
        }
        events
    }

    /// Sets the filter's bits again from the live tracks only (see [`TrackFilter`]).
    fn rebuild_filter(&mut self) {
        self.filter.clear();
        for (source, a) in &self.tracks {
            for (slot, _) in a.slots.iter() {
                let key = self.seeds.key(*source, seed_door(slot.door), View::Address);
                self.filter.insert(key.address_hash());
            }
        }
    }

    /// Forgets a door entirely: its rules, its first-knock table and its live tracks, quietly
    /// (a reload changed its clients). Set it up again with `set_door` and the candidates.
    pub fn clear_door(&mut self, door: usize) {
        if let Some(ds) = self.doors.get_mut(door) {
            *ds = DoorState::default();
        }
        self.seeds.clear_door(seed_door(door));
        self.drop_tracks_where(|slot, _| slot.door == door);
        // `forget` no longer knows the door's prefix length: drop its prefix owners here, or a
        // candidate id reused after the reload would be burned as a "second source".
        self.prefixes.retain(|id, _| id.door != door);
    }

    /// Drops every live track of a candidate (it was consumed or burned elsewhere), quietly.
    pub fn drop_candidate(&mut self, id: CandidateId) {
        self.drop_tracks_where(|_, t| t.id == id);
    }

    /// Drops, quietly, every track for which `pick` holds.
    fn drop_tracks_where(&mut self, pick: impl Fn(Slot, &Track) -> bool) {
        let mut doomed: Vec<(IpAddr, Slot, CandidateId)> = Vec::new();
        for (s, a) in &self.tracks {
            for (slot, l) in a.slots.iter() {
                doomed.extend(l.iter().filter(|t| pick(*slot, t)).map(|t| (*s, *slot, t.id)));
            }
        }
        for (s, slot, id) in doomed {
            if let Some(t) = self.take_track(s, slot, id) {
                self.forget(s, &t);
            }
        }
    }
}

#[cfg(test)]
mod tests;
