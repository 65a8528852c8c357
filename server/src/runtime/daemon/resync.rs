//! The first halves of resyncs. A client whose knocks were lost for longer than its window gets
//! back in with two consecutive sequences beyond it (`knock --resync`); the first is remembered
//! here until the second arrives from the same source within [`RESYNC_WITHIN`].
//!
//! Only a key holder can send a first half, but he can send the same one over and over (nothing
//! is consumed until the second half). So the list is bounded per client and in total, and when
//! full it drops its *oldest* entries, never the one just seen: one client's flood cannot push
//! out another client's first half, and a repeated first half takes one entry.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How soon the second sequence of a resync must follow the first.
pub const RESYNC_WITHIN: Duration = Duration::from_secs(30);
/// First halves remembered per (door, client): a few sources at once.
pub const PER_CLIENT: usize = 4;
/// First halves remembered in all.
pub const TOTAL: usize = 1024;

/// One remembered first half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FirstHalf {
    door: usize,
    client: usize,
    source: IpAddr,
    counter: u64,
    at: Instant,
}

/// The pending first halves, oldest first.
#[derive(Debug)]
pub struct PendingResyncs {
    entries: VecDeque<FirstHalf>,
    per_client: usize,
    total: usize,
    within: Duration,
}

impl Default for PendingResyncs {
    fn default() -> Self {
        PendingResyncs::new(PER_CLIENT, TOTAL, RESYNC_WITHIN)
    }
}

impl PendingResyncs {
    /// An empty list holding at most `per_client` entries of one (door, client) and `total` in
    /// all, each for `within`.
    pub fn new(per_client: usize, total: usize, within: Duration) -> Self {
        PendingResyncs { entries: VecDeque::new(), per_client: per_client.max(1), total: total.max(1), within }
    }

    fn expire(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|e| now.saturating_duration_since(e.at) >= self.within) {
            self.entries.pop_front();
        }
    }

    /// Remembers the first half `counter` of (door, client) from `source`, seen at `now`. The
    /// same first half again only renews its time. Makes room by dropping that client's oldest
    /// entry, then the oldest of all.
    pub fn remember(&mut self, door: usize, client: usize, source: IpAddr, counter: u64, now: Instant) {
        self.expire(now);
        let same = |e: &FirstHalf| (e.door, e.client, e.source, e.counter) == (door, client, source, counter);
        self.entries.retain(|e| !same(e));
        let of_client = |e: &FirstHalf| (e.door, e.client) == (door, client);
        if self.entries.iter().filter(|e| of_client(e)).count() >= self.per_client {
            if let Some(oldest) = self.entries.iter().position(of_client) {
                self.entries.remove(oldest);
            }
        }
        if self.entries.len() >= self.total {
            self.entries.pop_front();
        }
        self.entries.push_back(FirstHalf { door, client, source, counter, at: now });
    }

    /// Whether `counter` completes a resync: the first half `counter - 1` of the same door and
    /// client came from `source` within the time. A matching first half is taken out.
    pub fn completes(&mut self, door: usize, client: usize, source: IpAddr, counter: u64, now: Instant) -> bool {
        self.expire(now);
        let first = self.entries.iter().position(|e| {
            (e.door, e.client, e.source) == (door, client, source) && e.counter.checked_add(1) == Some(counter)
        });
        first.and_then(|i| self.entries.remove(i)).is_some()
    }

    /// Forgets every first half of a door (its clients changed on reload).
    pub fn forget_door(&mut self, door: usize) {
        self.entries.retain(|e| e.door != door);
    }

    /// Forgets everything (the doors changed on reload).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many first halves are pending (expired ones included until the next call).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is pending.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> IpAddr {
        IpAddr::V4((0xc612_0000 + n).into()) // 198.18.x.y
    }

    #[test]
    fn the_second_half_completes_within_the_time_from_the_same_source_only() {
        let t = Instant::now();
        let mut p = PendingResyncs::default();
        p.remember(0, 1, addr(2), 40, t);
        assert!(!p.completes(0, 1, addr(3), 41, t), "another source");
        assert!(!p.completes(0, 2, addr(2), 41, t), "another client");
        assert!(!p.completes(0, 1, addr(2), 42, t), "not consecutive");
        assert!(p.completes(0, 1, addr(2), 41, t + Duration::from_secs(29)));
        assert!(!p.completes(0, 1, addr(2), 41, t), "taken out");
        p.remember(0, 1, addr(2), 40, t);
        assert!(!p.completes(0, 1, addr(2), 41, t + RESYNC_WITHIN), "too late");
        assert!(p.is_empty());
    }

    #[test]
    fn a_flood_of_one_client_never_pushes_out_another_clients_first_half() {
        let t = Instant::now();
        let mut p = PendingResyncs::default();
        p.remember(0, 0, addr(2), 7, t); // alice
        for i in 0..5000u32 {
            // bob, the same first half again and again, and from many (spoofed) sources
            p.remember(0, 1, addr(3), 20, t);
            p.remember(0, 1, addr(100 + i), 20 + u64::from(i % 60), t);
        }
        assert!(p.len() <= 1 + PER_CLIENT, "{}", p.len());
        assert!(p.completes(0, 0, addr(2), 8, t), "alice's first half is still there");
    }

    #[test]
    fn when_full_the_oldest_goes_never_the_newest() {
        let t = Instant::now();
        let mut p = PendingResyncs::new(2, 3, RESYNC_WITHIN);
        let ms = Duration::from_millis;
        for (i, client) in [10, 11, 12, 13].into_iter().enumerate() {
            p.remember(0, client, addr(2), 5, t + ms(i as u64));
        }
        assert_eq!(p.len(), 3);
        assert!(!p.completes(0, 10, addr(2), 6, t + ms(9)), "the oldest went");
        assert!(p.completes(0, 13, addr(2), 6, t + ms(9)), "the newest stayed");
        // Per client: its own oldest goes first.
        p.remember(0, 11, addr(3), 5, t + ms(10));
        p.remember(0, 11, addr(4), 5, t + ms(11));
        assert!(!p.completes(0, 11, addr(2), 6, t + ms(12)));
        assert!(p.completes(0, 12, addr(2), 6, t + ms(12)), "another client's entry stayed");
        assert!(p.completes(0, 11, addr(4), 6, t + ms(12)));
        p.forget_door(0);
        assert!(p.is_empty());
    }
}
