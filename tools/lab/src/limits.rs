//! Bounds: the hard caps on every sending loop (packet counts and wall-clock
//! time) and a deadline helper that sleeps between packets without ever
//! overrunning the time limit.

use std::thread;
use std::time::{Duration, Instant};

/// Most packets one `flood` may send.
pub const MAX_FLOOD_COUNT: u64 = 5_000_000;
/// Most packets one `send` may send (knocks × repeats).
pub const MAX_SEND_PACKETS: usize = 100_000;
/// Most frames one `replay` may read from its file.
pub const MAX_REPLAY_FRAMES: usize = 1_000_000;
/// Longest any command may run, in seconds.
pub const MAX_SECONDS: u64 = 120;
/// Longest `grants` may watch, in seconds (it sends nothing).
pub const MAX_WATCH_SECONDS: u64 = 3600;
/// Longest delay between two packets, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;

/// Refuses a value above its cap (or zero when zero makes no sense).
pub fn check_cap(name: &str, value: u64, cap: u64) -> Result<(), String> {
    if value == 0 {
        return Err(format!("{name} must be at least 1"));
    }
    if value > cap {
        return Err(format!("{name} {value} is above the hard cap of {cap}"));
    }
    Ok(())
}

/// A point in time after which no more packets are sent.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    start: Instant,
    end: Instant,
}

impl Deadline {
    /// A deadline `seconds` from now (callers check the cap first).
    pub fn after_seconds(seconds: u64) -> Self {
        let start = Instant::now();
        Deadline { start, end: start + Duration::from_secs(seconds) }
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.end
    }

    /// Time left until the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Time since the deadline was set.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sleeps `ms` milliseconds; false (after sleeping only up to the
    /// deadline) when the deadline comes first.
    pub fn sleep_ms(&self, ms: u64) -> bool {
        if ms == 0 {
            return !self.expired();
        }
        let want = Instant::now() + Duration::from_millis(ms);
        let until = want.min(self.end);
        let now = Instant::now();
        if until > now {
            thread::sleep(until - now);
        }
        want <= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        assert!(check_cap("--count", 0, 10).is_err());
        assert!(check_cap("--count", 11, 10).is_err());
        check_cap("--count", 10, 10).unwrap();
    }

    #[test]
    fn deadline_bounds_sleep() {
        let d = Deadline::after_seconds(0);
        let t = Instant::now();
        assert!(!d.sleep_ms(5_000));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(d.expired());
        assert_eq!(d.remaining(), Duration::ZERO);
        let d = Deadline::after_seconds(10);
        assert!(d.remaining() > Duration::from_secs(9));
        assert!(d.sleep_ms(1));
        assert!(!d.expired());
    }
}
