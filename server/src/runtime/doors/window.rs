//! Which counters (or time steps, or file lines) a client may knock now: its window of unused
//! counters, the recent used ones kept so their replays are recognised, the counters beyond the
//! window a resync may use, and the time bucket whose change rebuilds a door's candidates
//! (docs/PROTOCOL.md, section 6).

use knock_core::config::Door;
use knock_core::sequence::Mode;
use knock_core::time::utc_day;

/// Used sequences (per client, or knockd one-time lines) that stay recognisable as replays.
pub(super) const RECENT_USED: usize = 3;
/// How many windows beyond the window a client can be resynchronised from.
const RESYNC_AHEAD: u64 = 2;

/// The counters (or file lines) worth a first-knock entry: the last few used ones (so their
/// replays are recognised), the next `window` unused ones, and a few burned ones among them.
/// Burned counters take no window slot, so a flood that burns candidates cannot empty the
/// window; the span stays within four windows of `next`.
pub(super) fn window_counters(next: u64, window: u64, is_used: impl Fn(u64) -> bool) -> Vec<u64> {
    let span = next..next.saturating_add(4 * window);
    let recent = next.saturating_sub(RECENT_USED as u64)..next;
    let fresh = span.clone().filter(|n| !is_used(*n)).take(window as usize);
    let burned = span.filter(|n| is_used(*n)).take(RECENT_USED);
    let mut counters: Vec<u64> = recent.chain(fresh).chain(burned).collect();
    counters.sort_unstable();
    counters
}

/// The (counter, epoch) pairs a keyed client may knock at unix time `now`: for `hotp` its
/// window of counters on yesterday, today and tomorrow; for `totp` the time steps within the
/// skew of the current one (epoch 0: totp has none).
pub(super) fn keyed_slots(
    door: &Door,
    now: u64,
    is_used: impl Fn(u64) -> bool,
    next: u64,
    window: u64,
) -> Vec<(u64, u32)> {
    match door.mode {
        Mode::Totp => {
            let step = now / door.step.as_secs().max(1);
            let skew = u64::from(door.skew);
            (step.saturating_sub(skew)..=step.saturating_add(skew)).map(|s| (s, 0)).collect()
        }
        _ => {
            let today = utc_day(now);
            let mut counters = window_counters(next, window, &is_used);
            counters.extend(resync_counters(next, window, &is_used));
            counters
                .into_iter()
                .flat_map(|c| [today.saturating_sub(1), today, today.saturating_add(1)].map(|e| (c, e)))
                .collect()
        }
    }
}

/// The last counter of a client's window: the `window`-th unused one from `next`.
pub(super) fn window_end(next: u64, window: u64, is_used: impl Fn(u64) -> bool) -> u64 {
    (next..next.saturating_add(4 * window)).filter(|n| !is_used(*n)).take(window as usize).last().unwrap_or(next)
}

/// Counters beyond the window, for resynchronisation only: a client whose knocks were lost
/// for longer than the window gets back in with two consecutive sequences from these
/// (`knock --resync`); one alone opens nothing.
fn resync_counters(next: u64, window: u64, is_used: impl Fn(u64) -> bool) -> Vec<u64> {
    let end = window_end(next, window, &is_used);
    (end + 1..end + 1 + RESYNC_AHEAD * window).filter(|n| !is_used(*n)).collect()
}

/// Which time bucket a door's candidates were built for: the UTC day (`hotp`), the time step
/// (`totp`), or nothing (they do not depend on time). When it changes, the door is rebuilt.
pub fn time_bucket(door: &Door, now: u64) -> u64 {
    match door.mode {
        Mode::Hotp => u64::from(utc_day(now)),
        Mode::Totp => now / door.step.as_secs().max(1),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burned_counters_take_no_window_slot() {
        // Counters 0..=2 consumed (next = 3); 3..=12 burned by a flood.
        let used = |n: u64| n < 13;
        let w = window_counters(3, 10, used);
        let fresh: Vec<u64> = w.iter().copied().filter(|n| !used(*n)).collect();
        assert_eq!(fresh, (13..23).collect::<Vec<_>>(), "ten fresh counters after the burned ones");
        assert_eq!(w.iter().filter(|n| **n < 3).count(), 3, "recent used ones for replays");
        // Never further than four windows ahead.
        assert!(window_counters(0, 10, |n| n < 1000).iter().all(|n| *n < 40));
    }
}

#[cfg(test)]
mod totp_tests {
    use super::*;

    fn totp_door() -> Door {
        let text =
            "[[door]]\nname = \"ssh\"\nmode = \"totp\"\nopen = [\"22/tcp\"]\nkeys = \"k\"\nstep = \"30s\"\nskew = 1\n";
        let path = std::path::Path::new("/etc/knockd/knockd.toml");
        knock_core::config::Config::parse(path, text).unwrap().doors.remove(0)
    }

    #[test]
    fn totp_slots_follow_the_clock_even_when_it_jumps_back() {
        let d = totp_door();
        let t = 1_795_564_800; // 2026-11-25T00:00:00Z, step 59_852_160
        let step = t / 30;
        let slots: Vec<u64> = keyed_slots(&d, t, |_| false, 0, 10).into_iter().map(|s| s.0).collect();
        assert_eq!(slots, vec![step - 1, step, step + 1]);
        // The clock jumps back an hour: the steps of that time are offered; nothing is locked
        // out by a high-water mark (used steps are a set, see ConsumeStore::mark_used).
        let back: Vec<u64> = keyed_slots(&d, t - 3600, |_| false, 0, 10).into_iter().map(|s| s.0).collect();
        assert_eq!(back, vec![step - 121, step - 120, step - 119]);
        assert_ne!(time_bucket(&d, t), time_bucket(&d, t + 30), "a new step rebuilds the door");
        assert_eq!(time_bucket(&d, t), time_bucket(&d, t + 29));
    }
}
