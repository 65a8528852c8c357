//! Time as the protocol sees it: the coarse UTC-day epoch and a clock that tests can drive.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in one epoch (one UTC day).
pub const EPOCH_SECONDS: u64 = 86_400;

/// The epoch (UTC day number) of a unix time in seconds.
pub fn utc_day(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs / EPOCH_SECONDS).unwrap_or(u32::MAX)
}

/// The current unix time in seconds; 0 when the clock is before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The current unix time in milliseconds; 0 when the clock is before 1970.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_boundaries() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399), 0);
        assert_eq!(utc_day(86_400), 1);
        // 2026-11-25T00:00:00Z
        assert_eq!(utc_day(1_795_564_800), 20_782);
    }
}
