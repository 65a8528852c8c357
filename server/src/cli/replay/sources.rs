//! The guessing traffic of `knockd replay`, per source address: packets, hits in some door's
//! knock range, and near misses (hits on the first knock of a candidate). Kept in a hash map
//! with a fast, per-run keyed hash (a capture's sources are chosen by whoever sent them), and
//! folded at the end into the top N sources by packets, the rest, and the total, so a flood from
//! a million addresses prints a few lines.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
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

/// A multiply-xorshift hash of a source's 128-bit key, keyed per run.
#[derive(Debug, Default)]
pub struct SourceHasher {
    state: u64,
}

impl Hasher for SourceHasher {
    fn finish(&self) -> u64 {
        let x = self.state;
        (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.state = (self.state.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

/// Builds [`SourceHasher`]s that start from this run's random key.
#[derive(Debug, Clone, Copy)]
pub struct Keyed(u64);

impl BuildHasher for Keyed {
    type Hasher = SourceHasher;
    fn build_hasher(&self) -> SourceHasher {
        SourceHasher { state: self.0 }
    }
}

/// A source as a 128-bit key: IPv6 as is, IPv4 as its IPv4-mapped IPv6 address (which no
/// parsed packet carries as a source, so the two never meet).
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

/// Every source's traffic.
#[derive(Debug)]
pub struct Sources {
    by_source: HashMap<u128, Traffic, Keyed>,
}

impl Default for Sources {
    fn default() -> Self {
        Sources { by_source: HashMap::with_hasher(Keyed(rand::random())) }
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
    /// Counts one packet from `source`, as the doors heard it.
    #[inline]
    pub fn count(&mut self, source: IpAddr, heard: Heard) {
        let t = self.by_source.entry(key(source)).or_default();
        t.packets += 1;
        t.range_hits += u64::from(heard != Heard::Not);
        t.near_misses += u64::from(heard == Heard::FirstKnock);
    }

    /// The `n` sources that sent the most packets, the others, and the total.
    pub fn fold(&self, n: usize) -> Folded {
        let mut all: Vec<(u128, Traffic)> = self.by_source.iter().map(|(k, t)| (*k, *t)).collect();
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
            total: (self.by_source.len(), total),
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
