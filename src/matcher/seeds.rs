//! Seeds: first knocks remembered without any state per candidate (docs/PROTOCOL.md section 7).
//!
//! A packet that is the first knock of some candidate leaves a *seed* in each of the attempts it
//! may start: the one that follows its (address, source port) and the one that follows its
//! address. A seed holds the knock, when it came and the misses counted since, in that
//! attempt's view. A later packet of the same view whose knock is some candidate's second after
//! the seed's knock turns that candidate into a track of two matched knocks (src/matcher.rs),
//! with the misses the seed counted; for every other candidate starting with the seed's knock
//! the packet is a miss, as it would have been for an attempt of theirs. A seed therefore costs
//! the same whether one candidate or a thousand start with its knock.
//!
//! Seeds live in a table of sets of [`WAYS`] entries (set-associative, like a CPU cache), placed
//! by a keyed hash of (address, door) for the address's view and (address, source port, door)
//! for the port's: a lookup reads one set, memory is bounded whatever comes, and a spoofer
//! cannot aim at the set of a source he does not send as. A full set gives up its oldest seed;
//! seeds never burn anything. The table is allocated zeroed (pages the kernel hands out as they
//! are first touched) and packs each seed into four words.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

use super::CandidateId;
use crate::knock::{Knock, Proto};

/// Seeds per set.
pub(super) const WAYS: usize = 4;
/// Longest a seed is kept: ages are counted in `u32` milliseconds.
const MAX_AGE_MS: u64 = (u32::MAX / 2) as u64;

/// Which attempt a seed belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum View {
    /// The address's, whatever the source port.
    Address,
    /// The (address, this source port)'s.
    Port(u16),
}

/// Whose seeds: a source, a door, a view; and where they go (see [`SeedTable::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SeedKey {
    pub source: IpAddr,
    pub door: u16,
    pub view: View,
    hash: u64,
    /// The keyed hash of (source, door) alone, the same in both views (see
    /// [`SeedKey::address_hash`]).
    address_hash: u64,
    /// Its seeds' words as [`SeedKey::owns`] compares them: the address, and in the third
    /// word the bits under `mask` (door, flags, and the port in the port's view).
    addr_words: [u64; 2],
    mask: u64,
    expect: u64,
}

impl SeedKey {
    fn with_base(source: IpAddr, door: u16, view: View, base: u64) -> SeedKey {
        let address_hash = mix(base);
        let hash = match view {
            View::Address => address_hash,
            View::Port(p) => mix(base ^ (u64::from(p) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        };
        let (addr, family) = addr_bytes(source);
        let addr = u128::from_be_bytes(addr);
        let (view_bits, port_mask, port_bits) = match view {
            View::Address => (0, 0, 0),
            View::Port(p) => (PORT_VIEW, 0xFFFF << 16, u64::from(p) << 16),
        };
        let flags_mask = u64::from(LIVE | V4 | PORT_VIEW) << 56;
        SeedKey {
            source,
            door,
            view,
            hash,
            address_hash,
            addr_words: [(addr >> 64) as u64, addr as u64],
            mask: 0xFFFF | port_mask | flags_mask,
            expect: u64::from(door) | port_bits | u64::from(LIVE | family | view_bits) << 56,
        }
    }

    /// Whether the packed seed `w` is a live seed of this key: [`Seed::is`] on the words,
    /// without unpacking them.
    fn owns(&self, w: &[u64]) -> bool {
        w[2] & self.mask == self.expect && w[0] == self.addr_words[0] && w[1] == self.addr_words[1]
    }

    /// The table's keyed hash of the source and door, whatever the view: what the tracks'
    /// filter (src/matcher/filter.rs) is indexed by, so a packet is hashed once.
    pub fn address_hash(&self) -> u64 {
        self.address_hash
    }
}

/// splitmix64's finaliser: a bijective mix, so a secret input gives an unpredictable output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// [`Seed::flags`]: the entry holds a seed.
const LIVE: u8 = 1;
/// The source is an IPv4 address (its 4 bytes first in `addr`).
const V4: u8 = 2;
/// The seed is the port's view (its port is `origin_port`).
const PORT_VIEW: u8 = 4;
/// The knock is UDP.
const UDP: u8 = 8;

/// One remembered first knock, in 32 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seed {
    addr: [u8; 16],
    door: u16,
    /// The source port of the packet that planted it.
    pub origin_port: u16,
    knock_port: u16,
    pub misses: u8,
    flags: u8,
    /// When it was planted (`now_ms` as `u32`, wrapping).
    started: u32,
    /// Index + 1 of its list of candidates already taken from it (0: none).
    done: u16,
}

fn addr_bytes(a: IpAddr) -> ([u8; 16], u8) {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, V4)
        }
        IpAddr::V6(v6) => (v6.octets(), 0),
    }
}

impl Seed {
    fn pack(&self) -> [u64; 4] {
        let addr = u128::from_be_bytes(self.addr);
        [
            (addr >> 64) as u64,
            addr as u64,
            u64::from(self.door)
                | u64::from(self.origin_port) << 16
                | u64::from(self.knock_port) << 32
                | u64::from(self.misses) << 48
                | u64::from(self.flags) << 56,
            u64::from(self.started) | u64::from(self.done) << 32,
        ]
    }

    fn unpack(w: &[u64; 4]) -> Seed {
        Seed {
            addr: ((u128::from(w[0]) << 64) | u128::from(w[1])).to_be_bytes(),
            door: w[2] as u16,
            origin_port: (w[2] >> 16) as u16,
            knock_port: (w[2] >> 32) as u16,
            misses: (w[2] >> 48) as u8,
            flags: (w[2] >> 56) as u8,
            started: w[3] as u32,
            done: (w[3] >> 32) as u16,
        }
    }

    const EMPTY: Seed =
        Seed { addr: [0; 16], door: 0, origin_port: 0, knock_port: 0, misses: 0, flags: 0, started: 0, done: 0 };

    fn new(key: &SeedKey, knock: Knock, origin_port: u16, now_ms: u64) -> Seed {
        let (addr, family) = addr_bytes(key.source);
        let view = if matches!(key.view, View::Port(_)) { PORT_VIEW } else { 0 };
        let proto = if knock.proto == Proto::Udp { UDP } else { 0 };
        Seed {
            addr,
            door: key.door,
            origin_port,
            knock_port: knock.port,
            misses: 0,
            flags: LIVE | family | view | proto,
            started: now_ms as u32,
            done: 0,
        }
    }

    fn live(&self) -> bool {
        self.flags & LIVE != 0
    }

    /// The knock it remembers.
    pub fn knock(&self) -> Knock {
        let proto = if self.flags & UDP != 0 { Proto::Udp } else { Proto::Tcp };
        Knock { port: self.knock_port, proto }
    }

    /// Its source, door and view.
    #[cfg(test)]
    fn owner(&self) -> (IpAddr, u16, View) {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let source = if self.flags & V4 != 0 {
            IpAddr::V4(Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.addr))
        };
        let view = if self.flags & PORT_VIEW != 0 { View::Port(self.origin_port) } else { View::Address };
        (source, self.door, view)
    }

    fn is(&self, key: &SeedKey) -> bool {
        if !self.live() || self.door != key.door {
            return false;
        }
        let (addr, family) = addr_bytes(key.source);
        let view_ok = match key.view {
            View::Address => self.flags & PORT_VIEW == 0,
            View::Port(p) => self.flags & PORT_VIEW != 0 && self.origin_port == p,
        };
        view_ok && self.flags & V4 == family && self.addr == addr
    }

    fn age(&self, now_ms: u64) -> u64 {
        u64::from((now_ms as u32).wrapping_sub(self.started))
    }

    /// When it was planted, on the caller's clock.
    pub fn started_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.age(now_ms))
    }
}

/// Where a seed is in its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Slot {
    set: usize,
    way: usize,
}

/// The live seeds of one key.
#[derive(Debug)]
pub(super) struct Found {
    seeds: [(Slot, Seed); WAYS],
    len: usize,
}

impl Found {
    /// The seeds, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &(Slot, Seed)> {
        self.seeds[..self.len].iter()
    }
}

/// Words per seed and per set.
const SEED_WORDS: usize = 4;
const SET_WORDS: usize = SEED_WORDS * WAYS;
/// Sets start on this boundary in memory (bytes): a set of 128 bytes is then two cache lines,
/// where a set placed as the allocator happens to place it mostly straddles three.
const SET_ALIGN: usize = SET_WORDS * 8;

/// The seeds of every door.
#[derive(Debug)]
pub(super) struct SeedTable {
    /// The sets, [`SET_WORDS`] words each, from `first` on (see [`SET_ALIGN`]).
    words: Vec<u64>,
    first: usize,
    sets: usize,
    /// Per set, when its oldest live seed may have been planted at the earliest (`now_ms` as
    /// `u32`): no live seed of the set is older. Planting never has to lower it (a new seed is
    /// the youngest); a sweep that reads the set sets it exactly (see [`SeedTable::sweep`]).
    /// Unused (zeroed) until the first sweep, which reads every set.
    oldest: Vec<u32>,
    /// No sweep has read every set yet.
    unswept: bool,
    hasher: RandomState,
    live: usize,
    /// Candidates already taken from a seed (rare: only pairs that matched).
    done: Vec<Vec<CandidateId>>,
    free_done: Vec<u16>,
}

impl SeedTable {
    /// A table of at most `capacity` seeds (rounded down to whole sets, one set at least).
    pub fn new(capacity: usize) -> SeedTable {
        let sets = (capacity / WAYS).max(1);
        // Zeroed words: allocated by the kernel as they are first written.
        let words = vec![0u64; sets * SET_WORDS + SET_WORDS];
        let misalign = words.as_ptr() as usize % SET_ALIGN;
        let first = (SET_ALIGN - misalign) % SET_ALIGN / 8;
        SeedTable {
            words,
            first,
            sets,
            oldest: vec![0; sets],
            unswept: true,
            hasher: RandomState::new(),
            live: 0,
            done: Vec::new(),
            free_done: Vec::new(),
        }
    }

    /// The most seeds it holds.
    pub fn capacity(&self) -> usize {
        self.sets * WAYS
    }

    /// Seeds held now.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The key of a source's seeds in one door and view. The source and door go through the
    /// table's keyed hash once (a spoofer cannot know where his seeds land, nor aim at
    /// another source's set); the view is mixed in after.
    pub fn key(&self, source: IpAddr, door: u16, view: View) -> SeedKey {
        let base = self.hasher.hash_one((source, door));
        SeedKey::with_base(source, door, view, base)
    }

    /// The keys of both views of a source in a door, hashing the source once.
    pub fn keys(&self, source: IpAddr, door: u16, port: u16) -> (SeedKey, SeedKey) {
        let base = self.hasher.hash_one((source, door));
        (
            SeedKey::with_base(source, door, View::Port(port), base),
            SeedKey::with_base(source, door, View::Address, base),
        )
    }

    fn set_of(&self, key: &SeedKey) -> usize {
        ((u128::from(key.hash) * self.sets as u128) >> 64) as usize
    }

    fn at(set: usize, way: usize) -> usize {
        set * SET_WORDS + way * SEED_WORDS
    }

    fn words_of(&self, set: usize, way: usize) -> &[u64] {
        let i = self.first + Self::at(set, way);
        &self.words[i..i + SEED_WORDS]
    }

    fn get(&self, set: usize, way: usize) -> Seed {
        let w = self.words_of(set, way);
        Seed::unpack(&[w[0], w[1], w[2], w[3]])
    }

    fn put(&mut self, set: usize, way: usize, seed: &Seed) {
        let i = self.first + Self::at(set, way);
        self.words[i..i + SEED_WORDS].copy_from_slice(&seed.pack());
    }

    /// The flags of the seed at (set, way) (see [`Seed::flags`]), read alone.
    fn flags(&self, set: usize, way: usize) -> u8 {
        (self.words_of(set, way)[2] >> 56) as u8
    }

    fn kill(&mut self, set: usize, way: usize) {
        let mut s = self.get(set, way);
        if !s.live() {
            return;
        }
        s.flags &= !LIVE;
        self.live -= 1;
        let done = std::mem::take(&mut s.done);
        self.put(set, way, &s);
        self.release_done(done);
    }

    fn release_done(&mut self, done: u16) {
        if done != 0 {
            self.done[usize::from(done - 1)].clear();
            self.free_done.push(done - 1);
        }
    }

    /// The live seeds of `key` (dropping those older than `timeout_ms` first), oldest first,
    /// with where they are for [`SeedTable::set_misses`] and [`SeedTable::end`].
    pub fn find(&mut self, key: &SeedKey, now_ms: u64, timeout_ms: u64) -> Found {
        let mut found = Found { seeds: [(Slot::default(), Seed::EMPTY); WAYS], len: 0 };
        let set = self.set_of(key);
        for way in 0..WAYS {
            if !key.owns(self.words_of(set, way)) {
                continue;
            }
            let s = self.get(set, way);
            if s.age(now_ms) > timeout_ms.min(MAX_AGE_MS) {
                self.kill(set, way);
                continue;
            }
            found.seeds[found.len] = (Slot { set, way }, s);
            found.len += 1;
        }
        found.seeds[..found.len].sort_by_key(|(_, s)| std::cmp::Reverse(s.age(now_ms)));
        found
    }

    /// The set a key's seeds live in (see [`super::Matcher::warm`]).
    pub fn set_index(&self, key: &SeedKey) -> usize {
        self.set_of(key)
    }

    /// Reads the sets at `sets` (a word of each way: both cache lines of the set) and
    /// changes nothing: see [`super::Matcher::warm`].
    pub fn peek(&self, sets: &[usize]) -> u64 {
        let mut acc = 0;
        for &set in sets.iter().filter(|s| **s < self.sets) {
            acc ^= (0..WAYS).fold(0, |a, way| a ^ self.words_of(set, way)[2]);
        }
        acc
    }

    /// Sets the misses of the seed at `at`.
    pub fn set_misses(&mut self, at: Slot, misses: u8) {
        let mut s = self.get(at.set, at.way);
        if s.live() {
            s.misses = misses;
            self.put(at.set, at.way, &s);
        }
    }

    /// Ends the seed at `at`.
    pub fn end(&mut self, at: Slot) {
        self.kill(at.set, at.way);
    }

    /// Whether a live seed of `key` holds `knock` (a repeat of it plants nothing new).
    pub fn holds(&self, key: &SeedKey, knock: Knock, now_ms: u64, timeout_ms: u64) -> bool {
        let set = self.set_of(key);
        (0..WAYS)
            .filter(|w| key.owns(self.words_of(set, *w)))
            .map(|w| self.get(set, w))
            .any(|s| s.knock() == knock && s.age(now_ms) <= timeout_ms.min(MAX_AGE_MS))
    }

    /// Plants a seed of `knock` for `key`, giving up the oldest seed of its set when it is full.
    pub fn plant(
        &mut self,
        key: &SeedKey,
        knock: Knock,
        origin_port: u16,
        now_ms: u64,
        timeout_of: impl Fn(u16) -> u64,
    ) {
        let set = self.set_of(key);
        let seeds: [Seed; WAYS] = std::array::from_fn(|w| self.get(set, w));
        let stale = |s: &Seed| !s.live() || s.age(now_ms) > timeout_of(s.door).min(MAX_AGE_MS);
        let way = match seeds.iter().position(stale) {
            Some(w) => w,
            None => (0..WAYS).max_by_key(|w| seeds[*w].age(now_ms)).unwrap_or(0),
        };
        self.kill(set, way);
        self.put(set, way, &Seed::new(key, knock, origin_port, now_ms));
        self.live += 1;
    }

    /// Whether `id` was already taken from the seed at `at`.
    pub fn taken(&self, at: Slot, id: &CandidateId) -> bool {
        let s = self.get(at.set, at.way);
        s.live() && s.done != 0 && self.done[usize::from(s.done - 1)].contains(id)
    }

    /// Notes that `id` was taken from the live seed of `key` holding `knock` (a track now
    /// follows it, or it is over); the seed ends when all `limit` candidates it could start
    /// were taken. (When 65535 seeds hold such notes at once, a further one is not noted: a
    /// track that exists is never made twice anyway.)
    pub fn take(&mut self, key: &SeedKey, knock: Knock, id: CandidateId, limit: u32) {
        let set = self.set_of(key);
        for way in 0..WAYS {
            let mut s = self.get(set, way);
            if !s.is(key) || s.knock() != knock {
                continue;
            }
            let list = if s.done == 0 {
                let i = match self.free_done.pop() {
                    Some(i) => i,
                    None if self.done.len() < usize::from(u16::MAX) => {
                        self.done.push(Vec::new());
                        (self.done.len() - 1) as u16
                    }
                    None => continue,
                };
                s.done = i + 1;
                self.put(set, way, &s);
                usize::from(i)
            } else {
                usize::from(s.done - 1)
            };
            if !self.done[list].contains(&id) {
                self.done[list].push(id);
            }
            if self.done[list].len() >= limit as usize {
                self.kill(set, way);
            }
        }
    }

    /// Drops every seed older than its door's timeout. Only the sets whose oldest live seed
    /// (as `oldest` bounds it) is older than `least_timeout`, the least timeout of any door,
    /// are read: under a steady flood a set's oldest seed expires about once per timeout, so a
    /// sweep every 100 ms reads a small share of the table.
    pub fn sweep(&mut self, now_ms: u64, least_timeout: u64, timeout_of: impl Fn(u16) -> u64) {
        if self.live == 0 {
            return;
        }
        let now = now_ms as u32;
        let least = least_timeout.min(MAX_AGE_MS);
        let all = std::mem::take(&mut self.unswept);
        for set in 0..self.sets {
            if !all && u64::from(now.wrapping_sub(self.oldest[set])) <= least {
                continue;
            }
            let mut oldest = now;
            for way in 0..WAYS {
                if self.flags(set, way) & LIVE == 0 {
                    continue;
                }
                let s = self.get(set, way);
                if s.age(now_ms) > timeout_of(s.door).min(MAX_AGE_MS) {
                    self.kill(set, way);
                } else if s.age(now_ms) > u64::from(now.wrapping_sub(oldest)) {
                    oldest = s.started;
                }
            }
            self.oldest[set] = oldest;
        }
    }

    /// Drops every seed of a door.
    pub fn clear_door(&mut self, door: u16) {
        for set in 0..self.sets {
            for way in 0..WAYS {
                let s = self.get(set, way);
                if s.live() && s.door == door {
                    self.kill(set, way);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_start_on_their_alignment() {
        for capacity in [1, 4, 64, 1000] {
            let t = SeedTable::new(capacity);
            assert_eq!((t.words.as_ptr() as usize + t.first * 8) % SET_ALIGN, 0);
            assert!(t.first + t.sets * SET_WORDS <= t.words.len());
        }
    }

    #[test]
    fn a_seed_packs_into_four_words_and_back() {
        let t = SeedTable::new(64);
        for (source, view) in [("198.18.7.9", View::Port(65535)), ("2001:db8::1:2", View::Address)] {
            let k = t.key(source.parse().unwrap(), 513, view);
            let mut s = Seed::new(&k, Knock::udp(40001), 65535, 0x1_2345_6789);
            s.misses = 16;
            s.done = 7;
            let back = Seed::unpack(&s.pack());
            assert!(back.is(&k) && k.owns(&s.pack()) && back.knock() == Knock::udp(40001));
            assert_eq!((back.origin_port, back.misses, back.done, back.started), (65535, 16, 7, 0x2345_6789));
            assert_eq!(back.owner(), (k.source, 513, view));
        }
    }

    fn key(t: &SeedTable, source: &str, door: u16, view: View) -> SeedKey {
        t.key(source.parse().unwrap(), door, view)
    }

    #[test]
    fn a_seed_is_found_by_its_own_key_only() {
        let mut t = SeedTable::new(1024);
        let k = Knock::tcp(40001);
        let port = key(&t, "198.18.0.2", 0, View::Port(5000));
        t.plant(&port, k, 5000, 10, |_| 1000);
        assert!(t.holds(&port, k, 20, 1000));
        for other in [
            key(&t, "198.18.0.2", 0, View::Address),
            key(&t, "198.18.0.2", 0, View::Port(5001)),
            key(&t, "198.18.0.2", 1, View::Port(5000)),
            key(&t, "198.18.0.3", 0, View::Port(5000)),
            // The same four bytes as an IPv6 address are another source.
            key(&t, "c612:2::", 0, View::Port(5000)),
        ] {
            assert!(t.find(&other, 20, 1000).iter().next().is_none(), "{other:?}");
            // Whatever set they land in, the words tell them apart.
            let planted = Seed::new(&port, k, 5000, 10).pack();
            assert!(!other.owns(&planted) && port.owns(&planted), "{other:?}");
            let mut dead = Seed::new(&port, k, 5000, 10);
            dead.flags &= !LIVE;
            assert!(!port.owns(&dead.pack()));
        }
        let found: Vec<Knock> = t.find(&port, 20, 1000).iter().map(|(_, s)| s.knock()).collect();
        assert_eq!(found, vec![k]);
        assert_eq!(t.find(&port, 1011, 1000).iter().count(), 0, "older than its timeout: gone");
        assert_eq!(t.live(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = SeedTable::new(256);
        for i in 0..100_000u32 {
            let source = format!("198.18.{}.{}", (i >> 8) & 0xff, i & 0xff);
            let k = key(&t, &source, 0, View::Address);
            t.plant(&k, Knock::udp(7), 1, u64::from(i), |_| u64::MAX);
            assert!(t.live() <= 256);
        }
        assert_eq!(t.capacity(), 256);
        // The newest are there.
        assert!(t.holds(&key(&t, "198.18.134.159", 0, View::Address), Knock::udp(7), 99_999, u64::MAX));
    }

    #[test]
    fn a_sweep_drops_what_expired_and_reads_only_sets_that_may_hold_it() {
        // One set: every seed shares it.
        let mut t = SeedTable::new(WAYS);
        let (a, b) = (key(&t, "198.18.0.2", 0, View::Address), key(&t, "198.18.0.3", 0, View::Address));
        let long = key(&t, "198.18.0.4", 1, View::Address);
        let timeout_of = |d: u16| if d == 0 { 100 } else { 1000 };
        t.plant(&a, Knock::tcp(1), 9, 0, timeout_of);
        t.plant(&long, Knock::tcp(1), 9, 0, timeout_of);
        t.plant(&b, Knock::tcp(1), 9, 50, timeout_of);
        t.sweep(100, 100, timeout_of);
        assert_eq!(t.live(), 3, "nothing older than its timeout yet");
        t.sweep(101, 100, timeout_of);
        assert_eq!(t.live(), 2, "a went");
        t.sweep(150, 100, timeout_of);
        assert_eq!(t.live(), 2);
        // The set's oldest live seed is `long` (planted at 0): the set is read, b goes.
        t.sweep(151, 100, timeout_of);
        assert_eq!(t.live(), 1, "b went");
        t.sweep(1000, 100, timeout_of);
        assert_eq!(t.live(), 1);
        t.sweep(1001, 100, timeout_of);
        assert_eq!(t.live(), 0, "long went");
    }

    #[test]
    fn taking_every_candidate_of_a_seed_ends_it() {
        let mut t = SeedTable::new(64);
        let a = key(&t, "2001:db8::7", 3, View::Address);
        t.plant(&a, Knock::tcp(1), 9, 0, |_| 100);
        let id =
            |client| CandidateId { door: 3, client, purpose: crate::sequence::Purpose::Open, counter: 0, epoch: 0 };
        t.take(&a, Knock::tcp(1), id(0), 2);
        let (at, _) = *t.find(&a, 1, 100).iter().next().expect("still there");
        assert!(t.taken(at, &id(0)) && !t.taken(at, &id(1)));
        t.take(&a, Knock::tcp(1), id(0), 2);
        assert_eq!(t.live(), 1, "the same candidate twice is one");
        t.take(&a, Knock::tcp(1), id(1), 2);
        assert_eq!(t.live(), 0);
    }
}
