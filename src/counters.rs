//! What a ledger knows: every counter below `next` is used (consumed), and so are the counters
//! in `used` at or above it (burned ones, and `totp` time steps used one by one). The file
//! ledger replays its records into this, and the shared ledger (one value in etcd) stores it
//! whole; both change it only through [`Counters::consume`] and [`Counters::mark`], so both
//! agree on what a record means.

use std::collections::BTreeSet;

/// Used counters. Counter `u64::MAX` is never accepted (nothing could come after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    next: u64,
    used: BTreeSet<u64>,
}

impl Counters {
    /// `next` and the used counters above it (those below it are ignored).
    pub fn new(next: u64, used: impl IntoIterator<Item = u64>) -> Counters {
        let mut c = Counters { next, used: used.into_iter().filter(|u| *u >= next).collect() };
        c.compact();
        c
    }

    /// Whether `counter` is consumed, burned or used.
    pub fn is_used(&self, counter: u64) -> bool {
        counter < self.next || self.used.contains(&counter)
    }

    /// The lowest counter not consumed.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// The used counters at or above `next`.
    pub fn used(&self) -> impl Iterator<Item = u64> + '_ {
        self.used.iter().copied()
    }

    /// Consumes every counter `<= counter`. False (and nothing changes) when it was used, or
    /// is `u64::MAX`.
    pub fn consume(&mut self, counter: u64) -> bool {
        if self.is_used(counter) || counter == u64::MAX {
            return false;
        }
        self.apply_consume(counter);
        true
    }

    /// Marks `counter` alone used (a burn, or a `totp` step). False when it was used already,
    /// or is `u64::MAX`.
    pub fn mark(&mut self, counter: u64) -> bool {
        if self.is_used(counter) || counter == u64::MAX {
            return false;
        }
        self.apply_mark(counter);
        true
    }

    /// What a recorded consumption means, whatever came before it: every counter `<= counter`
    /// is used (a replayed ledger may hold a consumption of a counter burned earlier).
    pub fn apply_consume(&mut self, counter: u64) {
        self.next = self.next.max(counter.saturating_add(1));
        self.used = self.used.split_off(&self.next);
        self.compact();
    }

    /// What a recorded burn or use means: `counter` is used.
    pub fn apply_mark(&mut self, counter: u64) {
        if counter >= self.next {
            self.used.insert(counter);
        }
        self.compact();
    }

    /// Everything either knows is used: the later `next`, and the used counters of both.
    pub fn merge(&self, other: &Counters) -> Counters {
        Counters::new(self.next.max(other.next), self.used.iter().chain(&other.used).copied())
    }

    /// A run of used counters at `next` is as dead as consumed ones: move past it, so marks
    /// never pile up in front of the window. `next` never wraps (u64::MAX is refused before).
    fn compact(&mut self) {
        while self.used.remove(&self.next) {
            self.next = self.next.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumption_marks_and_the_run_at_the_front() {
        let mut c = Counters::default();
        assert!(c.mark(1) && !c.mark(1));
        assert_eq!(c.next(), 0);
        assert!(c.mark(0));
        assert_eq!(c.next(), 2, "0 and 1 are both dead");
        assert!(c.consume(5) && !c.consume(3) && !c.consume(5));
        assert_eq!((c.next(), c.used().count()), (6, 0));
        assert!(c.mark(9) && c.is_used(9) && !c.is_used(8));
        assert!(!c.consume(u64::MAX) && !c.mark(u64::MAX));
    }

    #[test]
    fn merging_never_forgets_a_use() {
        let a = Counters::new(4, [7, 9]);
        let b = Counters::new(8, [9, 12]);
        let m = a.merge(&b);
        assert_eq!((m.next(), m.used().collect::<Vec<_>>()), (8, vec![9, 12]));
        assert_eq!(m, b.merge(&a));
        for n in [0, 3, 7, 9, 12] {
            assert!(m.is_used(n), "{n}");
        }
        assert!(!m.is_used(8) && !m.is_used(10) && !m.is_used(11));
        // A mark at the front joins the run.
        let c = m.merge(&Counters::new(0, [8]));
        assert_eq!((c.next(), c.used().collect::<Vec<_>>()), (10, vec![12]), "8 and 9 join the front run");
    }

    #[test]
    fn the_last_counter_is_never_taken_and_next_never_wraps() {
        let mut c = Counters::new(u64::MAX - 2, []);
        assert!(c.mark(u64::MAX - 2) && c.mark(u64::MAX - 1));
        assert_eq!(c.next(), u64::MAX);
        assert!(c.is_used(0));
    }
}
