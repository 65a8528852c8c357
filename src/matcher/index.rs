//! The candidates of one door, indexed for the matcher (docs/PROTOCOL.md section 7): how many
//! start with each knock (a packet that starts none leaves nothing behind), and each candidate
//! under its first *two* knocks when the rest of its sequence is known when the table is built,
//! under its first knock alone when knocks 2..K depend on the source (`bind_source`), or as a
//! one-knock sequence (knockd allows them). Finding what a packet continues is then one lookup,
//! whatever the number of clients behind the door.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::Candidate;
use crate::knock::Knock;

/// A fast hash for knocks: the keys of these maps are the door's own knocks, so a packet's
/// knock, whatever it is, cannot make a lookup slower than the door's knocks make it.
#[derive(Debug, Default)]
struct KnockHasher(u64);

impl Hasher for KnockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u8(*b);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

type KnockMap<K, V> = HashMap<K, V, BuildHasherDefault<KnockHasher>>;

/// How many candidates of two knocks or more start with a knock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Starts {
    /// Not used yet: their attempts are followed per source port and per address.
    pub fresh: u32,
    /// Consumed or burned: their replays are followed per address only.
    pub used: u32,
}

/// Where one candidate is filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Under its first two knocks.
    Pair(Knock, Knock),
    /// Under its first knock; the rest is derived for each source.
    Unbound(Knock),
    /// A one-knock sequence.
    Single(Knock),
}

/// A bitmap of the pairs filed, in front of the `pairs` map: under a flood most pairs a
/// packet makes with a remembered first knock start no candidate, and one bit (a cache line at
/// most) says so where the map's probe reads two. Bits are not cleared one by one; the map is
/// read again when it doubles or when as many pairs left as are filed.
#[derive(Debug, Default)]
struct PairBits {
    words: Vec<u64>,
    /// Pairs removed since the bits were last set from the map.
    stale: usize,
}

/// Bits per pair filed: about one pair in sixteen that is not filed passes the filter when the
/// map is at its largest since the last rebuild.
const BITS_PER_PAIR: usize = 16;

impl PairBits {
    fn bit(&self, pair: &(Knock, Knock)) -> Option<(usize, u64)> {
        let bits = self.words.len() * 64;
        if bits == 0 {
            return None;
        }
        let mut h = KnockHasher::default();
        pair.hash(&mut h);
        // The multiplier leaves the low bits weak: take the high ones.
        let b = ((u128::from(h.finish()) * bits as u128) >> 64) as usize;
        Some((b / 64, 1 << (b % 64)))
    }

    fn insert(&mut self, pair: &(Knock, Knock)) {
        if let Some((w, m)) = self.bit(pair) {
            self.words[w] |= m;
        }
    }

    fn may_hold(&self, pair: &(Knock, Knock)) -> bool {
        self.bit(pair).is_some_and(|(w, m)| self.words[w] & m != 0)
    }

    /// Whether the bits must be set again from `filed` pairs (too few bits, or too many stale).
    fn outgrown(&self, filed: usize) -> bool {
        self.words.len() * 64 < filed * BITS_PER_PAIR / 2 || (self.stale > 64 && self.stale >= filed)
    }

    fn rebuild<'a>(&mut self, filed: usize, pairs: impl Iterator<Item = &'a (Knock, Knock)>) {
        let bits = (filed * BITS_PER_PAIR).next_power_of_two().max(512);
        self.words = vec![0; bits / 64];
        self.stale = 0;
        for p in pairs {
            self.insert(p);
        }
    }
}

/// One door's candidates, by client.
#[derive(Debug, Default)]
pub(super) struct DoorIndex {
    starts: KnockMap<Knock, Starts>,
    pairs: KnockMap<(Knock, Knock), Vec<Candidate>>,
    pair_bits: PairBits,
    unbound: KnockMap<Knock, Vec<Candidate>>,
    singles: KnockMap<Knock, Vec<Candidate>>,
    by_client: HashMap<usize, Vec<(Place, bool)>>,
    len: usize,
}

fn place_of(c: &Candidate) -> Place {
    match &c.rest {
        None => Place::Unbound(c.first),
        Some(rest) => match rest.first() {
            Some(second) => Place::Pair(c.first, *second),
            None => Place::Single(c.first),
        },
    }
}

fn remove_client(map: &mut KnockMap<Knock, Vec<Candidate>>, k: Knock, client: usize) {
    if let Some(list) = map.get_mut(&k) {
        list.retain(|c| c.id.client != client);
        if list.is_empty() {
            map.remove(&k);
        }
    }
}

impl DoorIndex {
    /// Replaces every candidate of `client` with `candidates`.
    pub fn set_client(&mut self, client: usize, candidates: &[Candidate]) {
        for (place, used) in self.by_client.remove(&client).unwrap_or_default() {
            self.len -= 1;
            let first = match place {
                Place::Pair(a, b) => {
                    if let Some(list) = self.pairs.get_mut(&(a, b)) {
                        list.retain(|c| c.id.client != client);
                        if list.is_empty() {
                            self.pairs.remove(&(a, b));
                            self.pair_bits.stale += 1;
                        }
                    }
                    Some(a)
                }
                Place::Unbound(a) => {
                    remove_client(&mut self.unbound, a, client);
                    Some(a)
                }
                Place::Single(a) => {
                    remove_client(&mut self.singles, a, client);
                    None
                }
            };
            let Some(first) = first else { continue };
            if let Some(s) = self.starts.get_mut(&first) {
                if used {
                    s.used -= 1;
                } else {
                    s.fresh -= 1;
                }
                if *s == Starts::default() {
                    self.starts.remove(&first);
                }
            }
        }
        let mut filed = Vec::with_capacity(candidates.len());
        for c in candidates {
            let place = place_of(c);
            match place {
                Place::Pair(a, b) => {
                    self.pairs.entry((a, b)).or_default().push(c.clone());
                    self.pair_bits.insert(&(a, b));
                }
                Place::Unbound(a) => self.unbound.entry(a).or_default().push(c.clone()),
                Place::Single(a) => self.singles.entry(a).or_default().push(c.clone()),
            }
            if !matches!(place, Place::Single(_)) {
                let s = self.starts.entry(c.first).or_default();
                if c.used {
                    s.used += 1;
                } else {
                    s.fresh += 1;
                }
            }
            filed.push((place, c.used));
            self.len += 1;
        }
        if !filed.is_empty() {
            self.by_client.insert(client, filed);
        }
        if self.pair_bits.outgrown(self.pairs.len()) {
            self.pair_bits.rebuild(self.pairs.len(), self.pairs.keys());
        }
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many candidates of two knocks or more start with `k`.
    pub fn starts(&self, k: Knock) -> Starts {
        self.starts.get(&k).copied().unwrap_or_default()
    }

    /// Whether any candidate's first two knocks are `first`, `second` (or whose rest must be
    /// derived: `unbound` then says so).
    pub fn pair(&self, first: Knock, second: Knock) -> &[Candidate] {
        if !self.pair_bits.may_hold(&(first, second)) {
            return &[];
        }
        self.pairs.get(&(first, second)).map_or(&[], Vec::as_slice)
    }

    /// Candidates starting with `first` whose rest depends on the source.
    pub fn unbound(&self, first: Knock) -> &[Candidate] {
        self.unbound.get(&first).map_or(&[], Vec::as_slice)
    }

    /// One-knock candidates that are `k`.
    pub fn singles(&self, k: Knock) -> &[Candidate] {
        self.singles.get(&k).map_or(&[], Vec::as_slice)
    }

    /// Whether the door has any one-knock candidate (most have none: no lookup then).
    pub fn has_singles(&self) -> bool {
        !self.singles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::CandidateId;
    use crate::sequence::Purpose;
    use std::sync::Arc;

    fn candidate(client: usize, counter: u64, first: u16, second: u16) -> Candidate {
        Candidate {
            id: CandidateId { door: 0, client, purpose: Purpose::Open, counter, epoch: 0 },
            first: Knock::tcp(first),
            used: false,
            rest: Some(Arc::from([Knock::tcp(second), Knock::tcp(7)])),
        }
    }

    /// Client `c`'s candidates in round `round`: pairs spread over a small range so that
    /// clients share some.
    fn candidates(c: usize, round: u16) -> Vec<Candidate> {
        (0..30u16)
            .map(|i| {
                let n = (c as u16).wrapping_mul(31).wrapping_add(i).wrapping_add(round.wrapping_mul(977));
                candidate(c, u64::from(i), 40000 + n % 300, 40000 + (n / 3) % 300)
            })
            .collect()
    }

    #[test]
    fn every_pair_filed_is_found_through_its_bits_as_clients_come_and_go() {
        let mut index = DoorIndex::default();
        for round in 0..3u16 {
            // Clients replaced one by one, as a reload or a new time step does.
            for c in 0..400 {
                index.set_client(c, &candidates(c, round));
            }
            for c in 0..400 {
                for cand in candidates(c, round) {
                    let second = cand.rest.as_ref().unwrap()[0];
                    assert!(index.pair(cand.first, second).iter().any(|x| x.id == cand.id), "{round} {c}");
                }
            }
        }
        for c in 0..400 {
            index.set_client(c, &[]);
        }
        assert_eq!(index.len(), 0);
        assert!(index.pair(Knock::tcp(40000), Knock::tcp(40000)).is_empty());
        // With nothing filed, the bits were set again from nothing.
        assert!(index.pair_bits.words.iter().all(|w| *w == 0));
    }
}
