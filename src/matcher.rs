//! The matcher: per-source progress through candidate sequences.
//!
//! Pure state machine, driven by the caller with packets and a millisecond clock. State is
//! created only when a packet is the first knock of a candidate in a door's precomputed
//! first-knock table; everything else from an unknown source is dropped at once. Within an
//! attempt (a *track*: one source following one candidate), the next knock advances it, a
//! repeat of an already matched knock is ignored, and anything else in the door's range is a
//! miss. Tracks end on completion, on more than `misses` misses, on `seq_timeout`, or when
//! evicted; a fresh candidate whose track had matched enough knocks (see [`burn_threshold`])
//! and then ended incomplete is burned ("burn on sight", docs/PROTOCOL.md section 7).
//!
//! A first-knock hit starts two tracks on our doors (docs/PROTOCOL.md section 7, "Attempts"):
//! one that sees only packets from the same source *port* (a client sends every knock of an
//! attempt from one port, so a neighbour behind the same address, knocking at random, cannot
//! spoil it with misses), and one that sees every packet of the source *address* (for NATs that
//! give each connection a new port). They are siblings: the first to complete wins, and the
//! candidate burns only when the last of them ends incomplete. knockd's doors keep knockd's
//! one track per address. State is bounded in total, per attempt, per address and per IPv6 /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::TcpFlagRule;
use crate::knock::{Knock, Proto};
use crate::packet::KnockPacket;
use crate::sequence::{Alphabet, Purpose};

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
    /// Tracks in all.
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
        Limits { max_tracks: 100_000, per_slot: 16, per_address: 1024, per_ipv6_64: 1024 }
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
    expected: Vec<Knock>,
    progress: usize,
    /// The most any ended sibling of this track had matched (see [`Matcher::end`]).
    peak: usize,
    misses: u8,
    started_ms: u64,
    /// Creation order, to tell apart tracks started in the same millisecond.
    order: u64,
}

/// Where a track lives within its source address: the door, and the source port for a track
/// that follows one port (`None`: it follows every port of the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot {
    door: usize,
    port: Option<u16>,
}

/// Every track of one source address.
#[derive(Debug, Default)]
struct AddressTracks {
    slots: HashMap<Slot, Vec<Track>>,
    count: usize,
}

#[derive(Debug, Default)]
struct DoorState {
    rules: Option<DoorRules>,
    /// First knock -> candidates starting with it.
    table: HashMap<Knock, Vec<Candidate>>,
    /// Client -> the first knocks it put in `table`, for cheap replacement.
    by_client: HashMap<usize, Vec<Knock>>,
}

/// The matcher for every door.
#[derive(Debug, Default)]
pub struct Matcher {
    doors: Vec<DoorState>,
    tracks: HashMap<IpAddr, AddressTracks>,
    /// Addresses holding a track at or past the door's burn threshold, per fresh candidate.
    prefixes: HashMap<CandidateId, Vec<IpAddr>>,
    per_64: HashMap<u64, usize>,
    track_count: usize,
    /// Tracks created so far (their `order`).
    created: u64,
    limits: Limits,
}

/// The least number of matched knocks, two at least, after which the knocks left to guess
/// carry fewer than 64 bits ((K − b)·log2(N − 1) < 64): an attempt that ends incomplete past it
/// burns its candidate (docs/PROTOCOL.md §7). Below it, finishing the sequence is still a
/// 64-bit guess, and burning would only hand a spoofed flood a way to burn candidates at random.
pub fn burn_threshold(alphabet_size: u32, length: usize) -> usize {
    let per_knock = f64::from(alphabet_size.saturating_sub(1).max(1)).log2();
    (2..length).find(|b| (length - b) as f64 * per_knock < 64.0).unwrap_or(length).max(2)
}

/// Whether `knock` repeats a matched knock (a retransmission or duplicate, ignored).
fn is_repeat(matched: &[Knock], knock: Knock, strict: bool) -> bool {
    if strict {
        matched.last() == Some(&knock)
    } else {
        matched.contains(&knock)
    }
}

fn ipv6_64(addr: IpAddr) -> Option<u64> {
    match addr {
        IpAddr::V6(v6) => Some((u128::from(v6) >> 64) as u64),
        IpAddr::V4(_) => None,
    }
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
        Matcher { limits, ..Matcher::default() }
    }

    /// Sets (or replaces) door `door`'s rules. Doors are numbered from 0 by the caller.
    pub fn set_door(&mut self, door: usize, rules: DoorRules) {
        if self.doors.len() <= door {
            self.doors.resize_with(door + 1, DoorState::default);
        }
        self.doors[door].rules = Some(rules);
    }

    /// Replaces every first-knock table entry of `client` on `door` with `candidates`.
    pub fn set_client_candidates(&mut self, door: usize, client: usize, candidates: &[Candidate]) {
        let Some(ds) = self.doors.get_mut(door) else { return };
        for k in ds.by_client.remove(&client).unwrap_or_default() {
            if let Some(list) = ds.table.get_mut(&k) {
                list.retain(|c| c.id.client != client);
                if list.is_empty() {
                    ds.table.remove(&k);
                }
            }
        }
        let mut firsts = Vec::with_capacity(candidates.len());
        for c in candidates {
            ds.table.entry(c.first).or_default().push(c.clone());
            firsts.push(c.first);
        }
        ds.by_client.insert(client, firsts);
    }

    /// Number of live tracks.
    pub fn track_count(&self) -> usize {
        self.track_count
    }

    /// Number of first-knock table entries of a door.
    pub fn table_len(&self, door: usize) -> usize {
        self.doors.get(door).map_or(0, |d| d.table.values().map(Vec::len).sum())
    }

    /// Feeds one packet seen at `now_ms` (monotonic). Returns what was decided.
    pub fn on_packet(&mut self, packet: &KnockPacket, now_ms: u64, rest: &dyn RestOfSequence) -> Vec<Event> {
        let mut events = Vec::new();
        let (source, knock) = (packet.src, packet.knock);
        for door in 0..self.doors.len() {
            let Some(rules) = &self.doors[door].rules else { continue };
            if !rules.knocks.contains(knock) || !(rules.addresses.is_empty() || rules.addresses.contains(&packet.dst)) {
                continue;
            }
            if knock.proto == Proto::Tcp && !rules.tcp_flags.matches(packet.tcp_flags.unwrap_or(0)) {
                continue;
            }
            let pace = Pace { timeout_ms: rules.seq_timeout_ms, misses: rules.misses, strict: rules.strict_order };
            let port_slot = rules.per_port.then_some(Slot { door, port: Some(packet.src_port) });
            let address_slot = Slot { door, port: None };
            // Candidates this packet completed: a sibling completing on the same packet is the
            // same attempt, not a replay.
            let mut done = Vec::new();
            for slot in port_slot.into_iter().chain([address_slot]) {
                self.advance_tracks(source, slot, knock, now_ms, pace, &mut done, &mut events);
            }
            self.start_tracks(source, port_slot, door, knock, now_ms, rest, &mut events);
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
        let mut kept = Vec::with_capacity(list.len());
        let mut ended = Vec::new();
        let mut reached_prefix = Vec::new();
        let prefix_len = self.prefix_len(slot.door);
        for mut t in list.drain(..) {
            if now_ms.saturating_sub(t.started_ms) > pace.timeout_ms {
                ended.push((t, BurnReason::Timeout));
                continue;
            }
            if t.expected.get(t.progress) == Some(&knock) {
                t.progress += 1;
                if t.progress == t.expected.len() {
                    if !done.contains(&t.id) {
                        events.push(Event::Completed { id: t.id, source, used: t.used });
                        done.push(t.id);
                    }
                    self.forget(source, &t);
                    continue;
                }
                if t.progress == prefix_len && !t.used {
                    reached_prefix.push(t.id);
                }
            } else if !is_repeat(&t.expected[..t.progress], knock, pace.strict) {
                t.misses = t.misses.saturating_add(1);
                if t.misses > pace.misses {
                    ended.push((t, BurnReason::Misses));
                    continue;
                }
            }
            kept.push(t);
        }
        if !kept.is_empty() {
            self.tracks.entry(source).or_default().slots.insert(slot, kept);
        }
        // Ended tracks are judged with their list back in place, so siblings are seen.
        for (t, reason) in ended {
            self.end(source, t, reason, events);
        }
        for id in reached_prefix {
            self.note_prefix(source, id, events);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_tracks(
        &mut self,
        source: IpAddr,
        port_slot: Option<Slot>,
        door: usize,
        knock: Knock,
        now_ms: u64,
        rest: &dyn RestOfSequence,
        events: &mut Vec<Event>,
    ) {
        // Borrow the list out of the table while tracks change (no copy on this hot path);
        // nothing below touches the table, and the list goes back afterwards.
        let Some(cands) = self.doors[door].table.get_mut(&knock).map(std::mem::take) else { return };
        let slots: Vec<Slot> = port_slot.into_iter().chain([Slot { door, port: None }]).collect();
        for c in &cands {
            let mut expected: Option<Vec<Knock>> = None;
            // A used candidate can only be replayed: one track per address is enough to tell
            // the audit so, and a replayer sending from ever new ports creates no more state.
            let slots = if c.used { &slots[slots.len() - 1..] } else { &slots[..] };
            for &slot in slots {
                let known = self
                    .tracks
                    .get(&source)
                    .and_then(|a| a.slots.get(&slot))
                    .is_some_and(|l| l.iter().any(|t| t.id == c.id));
                if known {
                    continue;
                }
                let expected = expected
                    .get_or_insert_with(|| {
                        let mut e = Vec::with_capacity(8);
                        e.push(c.first);
                        match &c.rest {
                            Some(known) => e.extend_from_slice(known),
                            None => e.extend(rest.rest(&c.id, c.first, source)),
                        }
                        e
                    })
                    .clone();
                if expected.len() == 1 {
                    // A one-knock sequence (knockd allows it) completes here, once.
                    events.push(Event::Completed { id: c.id, source, used: c.used });
                    break;
                }
                self.make_room(source, slot, events);
                self.created += 1;
                let track = Track {
                    id: c.id,
                    used: c.used,
                    expected,
                    progress: 1,
                    peak: 0,
                    misses: 0,
                    started_ms: now_ms,
                    order: self.created,
                };
                let at = self.tracks.entry(source).or_default();
                at.slots.entry(slot).or_default().push(track);
                at.count += 1;
                self.track_count += 1;
                if let Some(n) = ipv6_64(source) {
                    *self.per_64.entry(n).or_default() += 1;
                }
            }
        }
        if let Some(entry) = self.doors[door].table.get_mut(&knock) {
            *entry = cands;
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
        if self.track_count >= self.limits.max_tracks {
            // Evict an eighth at once so a flood pays the scan rarely.
            let batch = (self.limits.max_tracks / 8).max(1);
            self.evict(events, batch, Scope::All);
        }
    }

    /// Evicts up to `n` tracks of `scope`, lowest progress and oldest first.
    fn evict(&mut self, events: &mut Vec<Event>, n: usize, scope: Scope) {
        let mut victims: Vec<(usize, u64, IpAddr, Slot, CandidateId)> = Vec::new();
        let mut add = |s: IpAddr, a: &AddressTracks| {
            for (slot, l) in &a.slots {
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
        events
    }

    /// Forgets a door entirely: its rules, its first-knock table and its live tracks, quietly
    /// (a reload changed its clients). Set it up again with `set_door` and the candidates.
    pub fn clear_door(&mut self, door: usize) {
        if let Some(ds) = self.doors.get_mut(door) {
            *ds = DoorState::default();
        }
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
            for (slot, l) in &a.slots {
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
