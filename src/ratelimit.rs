//! A token bucket on a caller-supplied millisecond clock: the one rate limiter behind every
//! record and log line that packets from the network can cause (audit records folded past a
//! budget, burns kept in memory past a client's budget). Pure: the caller passes the time.

/// Up to `capacity` events at once, then one per `refill_ms`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: u32,
    refill_ms: u64,
    tokens: u32,
    /// When the last token was added (or the bucket was made).
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens, gaining one every `refill_ms` (at least 1) from `now_ms`.
    pub fn new(capacity: u32, refill_ms: u64, now_ms: u64) -> TokenBucket {
        TokenBucket { capacity, refill_ms: refill_ms.max(1), tokens: capacity, last_ms: now_ms }
    }

    /// Takes one token at `now_ms`: true when there was one. A clock that goes back refills nothing.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let gained = now_ms.saturating_sub(self.last_ms) / self.refill_ms;
        if gained > 0 {
            self.tokens =
                u32::try_from(u64::from(self.tokens).saturating_add(gained)).unwrap_or(u32::MAX).min(self.capacity);
            self.last_ms = if self.tokens == self.capacity { now_ms } else { self.last_ms + gained * self.refill_ms };
        } else if now_ms < self.last_ms {
            self.last_ms = now_ms;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// The most events any window of `span_ms` can admit: the burst plus the refills.
    pub fn bound(&self, span_ms: u64) -> u64 {
        u64::from(self.capacity) + span_ms / self.refill_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate() {
        let mut b = TokenBucket::new(3, 100, 1_000);
        assert_eq!((0..10).filter(|_| b.take(1_000)).count(), 3, "the burst");
        assert!(!b.take(1_099));
        assert!(b.take(1_100), "one token per 100 ms");
        assert!(!b.take(1_150));
        // A long pause refills to the capacity, not beyond.
        assert_eq!((0..10).filter(|_| b.take(60_000)).count(), 3);
    }

    #[test]
    fn a_steady_flood_gets_no_more_than_the_bound() {
        let mut b = TokenBucket::new(60, 200, 0);
        let admitted = (0..600_000u64).filter(|i| b.take(i / 10)).count() as u64; // 10 per ms for 60 s
        assert!(admitted <= b.bound(60_000), "{admitted}");
        assert!(admitted >= 60 + 60_000 / 200 - 1, "{admitted}");
    }

    #[test]
    fn a_clock_that_jumps_back_refills_nothing() {
        let mut b = TokenBucket::new(1, 1_000, 10_000);
        assert!(b.take(10_000));
        assert!(!b.take(5_000));
        assert!(!b.take(5_999), "the clock went back: a full refill period from the new time");
        assert!(b.take(6_000));
    }
}
