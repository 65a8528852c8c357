//! A filter in front of the tracks map: one bit per keyed hash of (source address, door), set
//! for every address and door holding a track, so that a packet from a source with no track in
//! its door (nearly every packet of a flood) skips the map lookup and its hash.
//!
//! The bit is chosen by the seed table's keyed hash of (address, door) (src/matcher/seeds.rs,
//! SipHash-1-3 with a per-process key), already computed for the packet's seeds: a spoofer
//! cannot aim at bits, and a bit set for him only costs the map lookup every packet paid before.
//! Bits are never cleared one by one (two sources may share a bit); the filter is rebuilt from
//! the tracks map once as many tracks have ended since the last rebuild as are live (see
//! [`TrackFilter::wants_rebuild`]), so a rebuild costs at most one hash per ended track.

/// Bits in the filter: 32 KiB, allocated zeroed (its pages are touched as bits are set).
const BITS: usize = 1 << 18;
/// Ended tracks before a rebuild is worth it, however few are live.
const MIN_STALE: usize = 1024;

#[derive(Debug)]
pub(super) struct TrackFilter {
    words: Vec<u64>,
    /// Tracks ended since the last rebuild (their bits may be stale).
    stale: usize,
}

impl Default for TrackFilter {
    fn default() -> Self {
        TrackFilter { words: vec![0; BITS / 64], stale: 0 }
    }
}

fn bit(hash: u64) -> (usize, u64) {
    let b = (hash as usize) & (BITS - 1);
    (b / 64, 1 << (b % 64))
}

impl TrackFilter {
    /// Notes that the address and door of `hash` hold a track.
    pub fn insert(&mut self, hash: u64) {
        let (w, m) = bit(hash);
        self.words[w] |= m;
    }

    /// Whether the address and door of `hash` may hold a track (false: they hold none).
    pub fn may_hold(&self, hash: u64) -> bool {
        let (w, m) = bit(hash);
        self.words[w] & m != 0
    }

    /// Notes that a track ended.
    pub fn ended(&mut self) {
        self.stale += 1;
    }

    /// Whether enough tracks ended since the last rebuild for one to pay for itself.
    pub fn wants_rebuild(&self, live: usize) -> bool {
        self.stale >= live.max(MIN_STALE)
    }

    /// Forgets every bit; the caller inserts those of the live tracks again.
    pub fn clear(&mut self) {
        self.words.fill(0);
        self.stale = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_hashes_are_held_until_cleared() {
        let mut f = TrackFilter::default();
        let hashes = [0u64, 1, 63, 64, BITS as u64 - 1, u64::MAX, 0x9E37_79B9_7F4A_7C15];
        assert!(hashes.iter().all(|h| !f.may_hold(*h)));
        hashes.iter().for_each(|h| f.insert(*h));
        assert!(hashes.iter().all(|h| f.may_hold(*h)));
        assert!(!f.may_hold(2) && !f.may_hold(65));
        for _ in 0..MIN_STALE {
            assert!(!f.wants_rebuild(10));
            f.ended();
        }
        assert!(f.wants_rebuild(10) && !f.wants_rebuild(MIN_STALE + 1));
        f.clear();
        assert!(hashes.iter().all(|h| !f.may_hold(*h)) && !f.wants_rebuild(0));
    }
}
