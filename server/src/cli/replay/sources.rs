//! The guessing traffic of `knockd replay`, per source address: packets, hits in some door's
//! knock range, and near misses (hits on the first knock of a candidate). Kept in a table of
//! its own with a per-run keyed hash (a capture's sources are chosen by whoever sent them), and
//! folded at the end into the top N sources by packets, the rest, and the total, so a flood from
//! a million addresses prints a few lines.

use std::net::{IpAddr, Ipv6Addr};

use knock_core::matcher::Heard;

/// What one source sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// TCP and UDP packets parsed from its frames.
    pub packets: u64,
    /// Of them, packets some door listens to (in a knock range, to the door's address, a SYN).
    pub range_hits: u64,
    /// Of them, packets that were the first knock of some candidate.
    pub near_misses: u64,
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        self.packets += other.packets;
        self.range_hits += other.range_hits;
        self.near_misses += other.near_misses;
    }
}

/// A source as a 128-bit key: IPv6 as is, IPv4 as its IPv4-mapped IPv6 address (which no
/// parsed packet carries as a source, so the two never meet). 0 (`::`, which parsing refuses
/// as a source) marks an empty slot.
fn key(source: IpAddr) -> u128 {
    match source {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn address(key: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// One slot of the table: 32 bytes, so that none straddles two cache lines. A source's hits
/// count up to 2^32 - 1 (its packets up to 2^64 - 1): enough for any capture file.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u128,
    packets: u64,
    range_hits: u32,
    near_misses: u32,
}

impl Slot {
    fn traffic(&self) -> Traffic {
        Traffic { packets: self.packets, range_hits: self.range_hits.into(), near_misses: self.near_misses.into() }
    }
}

/// Every source's traffic: an open-addressing table (linear probing, at most half full) whose
/// slot a caller can compute and touch ahead of the update ([`Sources::warm`]).
#[derive(Debug)]
pub struct Sources {
    slots: Vec<Slot>,
    len: usize,
    /// This run's hash key.
    seed: u64,
}

impl Default for Sources {
    fn default() -> Self {
        Sources { slots: vec![Slot::default(); 1024], len: 0, seed: rand::random() }
    }
}

/// The table `knockd replay` prints: the top sources, what the others sent, and the total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// The sources that sent the most packets, most first (ties: the lower address first).
    pub top: Vec<(IpAddr, Traffic)>,
    /// How many other sources, and what they sent together.
    pub others: (usize, Traffic),
    /// How many sources in all, and what they sent.
    pub total: (usize, Traffic),
}

impl Sources {
    /// Where the probe for `key` starts: a keyed multiply-xorshift hash.
    #[inline]
    fn home(&self, key: u128) -> usize {
        let x = (key as u64 ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((key >> 64) as u64);
        let h = (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (h ^ (h >> 32)) as usize & (self.slots.len() - 1)
    }

    /// The slot where the probe for `source` starts, for [`Sources::warm`].
    #[inline]
    pub fn slot_of(&self, source: IpAddr) -> usize {
        self.home(key(source))
    }

    /// Reads the slots at `at`, changing nothing (see `Matcher::warm`).
    pub fn warm(&self, at: &[usize]) -> u64 {
        at.iter().filter_map(|i| self.slots.get(*i)).fold(0, |acc, s| acc ^ s.packets)
    }

    /// Counts one packet from `source`, as the doors heard it.
    #[inline]
    pub fn count(&mut self, source: IpAddr, heard: Heard) {
        let key = key(source);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let here = self.slots[i].key;
            if here == key {
                break;
            }
            if here == 0 {
                if 2 * (self.len + 1) > self.slots.len() {
                    self.grow();
                    return self.count(source, heard);
                }
                self.slots[i].key = key;
                self.len += 1;
                break;
            }
            i = (i + 1) & mask;
        }
        let slot = &mut self.slots[i];
        slot.packets += 1;
        slot.range_hits = slot.range_hits.saturating_add(u32::from(heard != Heard::Not));
        slot.near_misses = slot.near_misses.saturating_add(u32::from(heard == Heard::FirstKnock));
    }

    /// Moves a packet counted from `source` as heard `was` to heard `now`.
    pub fn recount(&mut self, source: IpAddr, was: Heard, now: Heard) {
        if was == now {
            return;
        }
        let key = key(source);
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i].key != key {
            if self.slots[i].key == 0 {
                return; // never counted
            }
            i = (i + 1) & mask;
        }
        let slot = &mut self.slots[i];
        let hit = |h: Heard| u32::from(h != Heard::Not);
        let near = |h: Heard| u32::from(h == Heard::FirstKnock);
        slot.range_hits = slot.range_hits.saturating_sub(hit(was)).saturating_add(hit(now));
        slot.near_misses = slot.near_misses.saturating_sub(near(was)).saturating_add(near(now));
    }

    /// Doubles the table.
    fn grow(&mut self) {
        let bigger = vec![Slot::default(); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, bigger);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.key != 0) {
            let mut i = self.home(s.key);
            while self.slots[i].key != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// The `n` sources that sent the most packets, the others, and the total.
    pub fn fold(&self, n: usize) -> Folded {
        let mut all: Vec<(u128, Traffic)> =
            self.slots.iter().filter(|s| s.key != 0).map(|s| (s.key, s.traffic())).collect();
        let order = |a: &(u128, Traffic), b: &(u128, Traffic)| {
            (b.1.packets, b.1.range_hits, b.1.near_misses)
                .cmp(&(a.1.packets, a.1.range_hits, a.1.near_misses))
                .then(a.0.cmp(&b.0))
        };
        let n = n.min(all.len());
        if n > 0 && n < all.len() {
            all.select_nth_unstable_by(n - 1, order);
        }
        let (top, rest) = all.split_at_mut(n);
        top.sort_unstable_by(order);
        let mut others = Traffic::default();
        rest.iter().for_each(|(_, t)| others.add(t));
        let mut total = others;
        top.iter().for_each(|(_, t)| total.add(t));
        Folded {
            top: top.iter().map(|(k, t)| (address(*k), *t)).collect(),
            others: (rest.len(), others),
            total: (self.len, total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_sources_fold_into_the_top_n_the_rest_and_the_total() {
        let mut s = Sources::default();
        for i in 0..1_000_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 | (i & 0x1_ffff)));
            s.count(a, if i % 3 == 0 { Heard::InRange } else { Heard::Not });
        }
        let loud: IpAddr = "2001:db8::7".parse().unwrap();
        for _ in 0..100 {
            s.count(loud, Heard::FirstKnock);
        }
        let f = s.fold(3);
        assert_eq!(f.top.len(), 3);
        assert_eq!(f.top[0], (loud, Traffic { packets: 100, range_hits: 100, near_misses: 100 }));
        // 1_000_000 packets over 131072 addresses: the first 1_000_000 - 7 * 131072 = 82_496 got 8.
        assert_eq!(f.top[1].1.packets, 8);
        assert_eq!(f.top[1].0, "198.18.0.0".parse::<IpAddr>().unwrap(), "ties go to the lower address");
        assert_eq!(f.total.0, 131_073);
        assert_eq!(f.total.1.packets, 1_000_100);
        assert_eq!(f.total.1.near_misses, 100);
        assert_eq!(f.total.1.range_hits, 100 + 333_334);
        assert_eq!(f.others.0, 131_070);
        assert_eq!(f.others.1.packets + f.top.iter().map(|t| t.1.packets).sum::<u64>(), 1_000_100);
        // Asking for more than there are lists them all.
        assert_eq!(s.fold(usize::MAX).top.len(), 131_073);
    }
}
