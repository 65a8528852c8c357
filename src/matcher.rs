//! The matcher: per-(source, door) progress through candidate sequences.
//!
//! Pure state machine, driven by the caller with packets and a millisecond clock. State is
//! created only when a packet is the first knock of a candidate in a door's precomputed
//! first-knock table; everything else from an unknown source is dropped at once. Within an
//! attempt (a *track*: one source following one candidate), the next knock advances it, a
//! repeat of an already matched knock is ignored, and anything else in the door's range is a
//! miss. Tracks end on completion, on more than `misses` misses, on `seq_timeout`, or when
//! evicted; a fresh candidate whose track had matched enough knocks (see [`burn_threshold`])
//! and then ended incomplete is burned (DESIGN §3 "Burn on sight"). State is bounded in total, per source and per IPv6 /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::TcpFlagRule;
use crate::knock::{Knock, Proto};
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
    /// Tracks per (source, door).
    pub per_source: usize,
    /// Tracks per IPv6 /64 (all doors).
    pub per_ipv6_64: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_tracks: 100_000, per_source: 16, per_ipv6_64: 256 }
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
    /// Burn on sight (DESIGN §3): a fresh candidate whose attempt ended incomplete after at
    /// least this many matched knocks is burned, and so is one whose prefix of that length comes
    /// from a second source. `None` for knockd's doors, which keep knockd's rules.
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
}

#[derive(Debug)]
struct Track {
    id: CandidateId,
    used: bool,
    expected: Vec<Knock>,
    progress: usize,
    misses: u8,
    started_ms: u64,
    /// Creation order, to tell apart tracks started in the same millisecond.
    order: u64,
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
    tracks: HashMap<(IpAddr, usize), Vec<Track>>,
    /// Sources holding a track at or past the door's burn threshold, per candidate.
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

    /// Feeds one packet seen at `now_ms` (monotonic): `tcp_flags` is the TCP flags byte, `None`
    /// for UDP. Returns what was decided.
    pub fn on_packet(
        &mut self,
        source: IpAddr,
        dst: IpAddr,
        knock: Knock,
        tcp_flags: Option<u8>,
        now_ms: u64,
        rest: &dyn RestOfSequence,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for door in 0..self.doors.len() {
            let Some(rules) = &self.doors[door].rules else { continue };
            if !rules.knocks.contains(knock) || !(rules.addresses.is_empty() || rules.addresses.contains(&dst)) {
                continue;
            }
            if knock.proto == Proto::Tcp && !rules.tcp_flags.matches(tcp_flags.unwrap_or(0)) {
                continue;
            }
            let (timeout, misses, strict) = (rules.seq_timeout_ms, rules.misses, rules.strict_order);
            self.advance_tracks(source, door, knock, now_ms, (timeout, misses, strict), &mut events);
            self.start_tracks(source, door, knock, now_ms, rest, &mut events);
        }
        events
    }

    /// Moves every live track of (source, door) on by one packet. `rules` is (seq_timeout_ms,
    /// misses, strict_order) of the door.
    fn advance_tracks(
        &mut self,
        source: IpAddr,
        door: usize,
        knock: Knock,
        now_ms: u64,
        (timeout_ms, max_misses, strict): (u64, u8, bool),
        events: &mut Vec<Event>,
    ) {
        let Some(mut list) = self.tracks.remove(&(source, door)) else { return };
        let mut kept = Vec::with_capacity(list.len());
        let mut reached_two = Vec::new();
        let prefix_len = self.prefix_len(door);
        for mut t in list.drain(..) {
            if now_ms.saturating_sub(t.started_ms) > timeout_ms {
                self.end(source, t, BurnReason::Timeout, events);
                continue;
            }
            if t.expected.get(t.progress) == Some(&knock) {
                t.progress += 1;
                if t.progress == t.expected.len() {
                    events.push(Event::Completed { id: t.id, source, used: t.used });
                    self.forget(source, &t);
                    continue;
                }
                if t.progress == prefix_len {
                    reached_two.push(t.id);
                }
            } else if !is_repeat(&t.expected[..t.progress], knock, strict) {
                t.misses = t.misses.saturating_add(1);
                if t.misses > max_misses {
                    self.end(source, t, BurnReason::Misses, events);
                    continue;
                }
            }
            kept.push(t);
        }
        if !kept.is_empty() {
            self.tracks.insert((source, door), kept);
        }
        for id in reached_two {
            self.note_prefix(source, door, id, events);
        }
    }

    fn start_tracks(
        &mut self,
        source: IpAddr,
        door: usize,
        knock: Knock,
        now_ms: u64,
        rest: &dyn RestOfSequence,
        events: &mut Vec<Event>,
    ) {
        // Borrow the list out of the table while tracks change (no copy on this hot path);
        // nothing below touches the table, and the list goes back afterwards.
        let Some(cands) = self.doors[door].table.get_mut(&knock).map(std::mem::take) else { return };
        for c in &cands {
            let known = self.tracks.get(&(source, door)).is_some_and(|l| l.iter().any(|t| t.id == c.id));
            if known {
                continue;
            }
            self.make_room(source, door, events);
            let mut expected = Vec::with_capacity(8);
            expected.push(c.first);
            match &c.rest {
                Some(known) => expected.extend_from_slice(known),
                None => expected.extend(rest.rest(&c.id, c.first, source)),
            }
            self.created += 1;
            let track = Track {
                id: c.id,
                used: c.used,
                expected,
                progress: 1,
                misses: 0,
                started_ms: now_ms,
                order: self.created,
            };
            if track.expected.len() == 1 {
                events.push(Event::Completed { id: c.id, source, used: c.used });
                continue;
            }
            self.tracks.entry((source, door)).or_default().push(track);
            self.track_count += 1;
            if let Some(n) = ipv6_64(source) {
                *self.per_64.entry(n).or_default() += 1;
            }
        }
        if let Some(slot) = self.doors[door].table.get_mut(&knock) {
            *slot = cands;
        }
    }

    /// Ensures a new track for (source, door) fits the limits, evicting lowest progress first.
    fn make_room(&mut self, source: IpAddr, door: usize, events: &mut Vec<Event>) {
        let here = self.tracks.get(&(source, door)).map_or(0, Vec::len);
        if here >= self.limits.per_source {
            // Within one source, the newest of the least advanced goes: a packet spoofed from a
            // client's address must not push out the client's own older attempt.
            let victim = self
                .tracks
                .get(&(source, door))
                .and_then(|l| l.iter().min_by_key(|t| (t.progress, std::cmp::Reverse(t.order))).map(|t| t.id));
            if let Some(t) = victim.and_then(|id| self.take_track(source, door, id)) {
                self.end(source, t, BurnReason::Evicted, events);
            }
        }
        if let Some(n) = ipv6_64(source) {
            if self.per_64.get(&n).copied().unwrap_or(0) >= self.limits.per_ipv6_64 {
                self.evict_where(events, 1, |s, _| ipv6_64(s) == Some(n));
            }
        }
        if self.track_count >= self.limits.max_tracks {
            // Evict an eighth at once so a flood pays the scan rarely.
            let batch = (self.limits.max_tracks / 8).max(1);
            self.evict_where(events, batch, |_, _| true);
        }
    }

    /// Evicts up to `n` tracks among those whose key matches, lowest progress and oldest first.
    fn evict_where(&mut self, events: &mut Vec<Event>, n: usize, pick: impl Fn(IpAddr, usize) -> bool) {
        let mut victims: Vec<(usize, u64, IpAddr, usize, CandidateId)> = self
            .tracks
            .iter()
            .filter(|((s, d), _)| pick(*s, *d))
            .flat_map(|((s, d), l)| l.iter().map(move |t| (t.progress, t.started_ms, *s, *d, t.id)))
            .collect();
        let n = n.min(victims.len());
        if n == 0 {
            return;
        }
        victims.select_nth_unstable_by_key(n - 1, |v| (v.0, v.1));
        for (_, _, s, d, id) in victims.into_iter().take(n) {
            if let Some(t) = self.take_track(s, d, id) {
                self.end(s, t, BurnReason::Evicted, events);
            }
        }
    }

    fn take_track(&mut self, source: IpAddr, door: usize, id: CandidateId) -> Option<Track> {
        let list = self.tracks.get_mut(&(source, door))?;
        let pos = list.iter().position(|t| t.id == id)?;
        let t = list.swap_remove(pos);
        if list.is_empty() {
            self.tracks.remove(&(source, door));
        }
        Some(t)
    }

    /// Records that `source` matched two knocks of `id`; a second live source burns both.
    fn note_prefix(&mut self, source: IpAddr, door: usize, id: CandidateId, events: &mut Vec<Event>) {
        if !self.burns(door) {
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
            if let Some(t) = self.take_track(other, door, id) {
                self.end(other, t, BurnReason::SecondSource, events);
            }
        }
        if let Some(t) = self.take_track(source, door, id) {
            self.end(source, t, BurnReason::SecondSource, events);
        }
    }

    /// Ends an incomplete track: burns a fresh candidate that had matched two knocks.
    fn end(&mut self, source: IpAddr, t: Track, reason: BurnReason, events: &mut Vec<Event>) {
        let burn_at = self.doors.get(t.id.door).and_then(|d| d.rules.as_ref()).and_then(|r| r.burn_at);
        if !t.used && burn_at.is_some_and(|b| t.progress >= b) {
            events.push(Event::Burned { id: t.id, source, progress: t.progress, reason });
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

    /// Drops the bookkeeping of a track that has left `tracks`.
    fn forget(&mut self, source: IpAddr, t: &Track) {
        self.track_count = self.track_count.saturating_sub(1);
        if let Some(n) = ipv6_64(source) {
            if let Some(c) = self.per_64.get_mut(&n) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.per_64.remove(&n);
                }
            }
        }
        if t.progress >= self.prefix_len(t.id.door) {
            if let Some(owners) = self.prefixes.get_mut(&t.id) {
                owners.retain(|s| *s != source);
                if owners.is_empty() {
                    self.prefixes.remove(&t.id);
                }
            }
        }
    }

    /// Ends every track older than its door's `seq_timeout`. Call a few times a second.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let expired: Vec<(IpAddr, usize, CandidateId)> = self
            .tracks
            .iter()
            .flat_map(|((s, d), l)| {
                let timeout = self.doors[*d].rules.as_ref().map_or(0, |r| r.seq_timeout_ms);
                l.iter().filter(move |t| now_ms.saturating_sub(t.started_ms) > timeout).map(move |t| (*s, *d, t.id))
            })
            .collect();
        for (s, d, id) in expired {
            if let Some(t) = self.take_track(s, d, id) {
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
        let keys: Vec<(IpAddr, usize)> = self.tracks.keys().filter(|(_, d)| *d == door).copied().collect();
        for key in keys {
            for t in self.tracks.remove(&key).unwrap_or_default() {
                self.forget(key.0, &t);
            }
        }
        // `forget` no longer knows the door's prefix length: drop its prefix owners here, or a
        // candidate id reused after the reload would be burned as a "second source".
        self.prefixes.retain(|id, _| id.door != door);
    }

    /// Drops every live track of a candidate (it was consumed or burned elsewhere), quietly.
    pub fn drop_candidate(&mut self, id: CandidateId) {
        let keys: Vec<(IpAddr, usize)> =
            self.tracks.iter().filter(|(_, l)| l.iter().any(|t| t.id == id)).map(|(k, _)| *k).collect();
        for (s, d) in keys {
            if let Some(t) = self.take_track(s, d, id) {
                self.forget(s, &t);
            }
        }
    }
}

#[cfg(test)]
mod tests;
