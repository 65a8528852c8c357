//! Flood safety for every record that packets from the network can cause: replays, near
//! misses, burns, second-source alerts and knocks refused because nothing could be consumed
//! durably (grants and consumption are never folded).
//!
//! - The first record of its kind (same fields but the time) opens a one-second window and is
//!   written at once; identical ones inside the window are only counted, and when the window
//!   is over one record with `count` (how many were folded), `first_ms` and the last time stamp
//!   is written.
//! - Opening a window takes a token from one budget: [`BURST`] at once, then one per
//!   [`REFILL_MS`]. Past it, records are only counted per event and summed up once a second in
//!   a record with `count`, `sources` (distinct sources, up to a cap) and `rate_limited: true`.
//!
//! So in any minute a flood costs at most 2 × (BURST + 60 000 / REFILL_MS) records plus one
//! summary per event kind and second ([`records_per_minute_bound`]: 1 080 records, about
//! 6.3 KB/s at 350 bytes a record), whatever its rate and however many sources it spoofs. The
//! daemon logs a line only for what is written here, so its log lines obey the same bound.
//! Time is the records' own `ts_ms`.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::record::Record;

use knock_core::ratelimit::TokenBucket;

/// Length of a folding window.
pub(crate) const WINDOW_MS: u64 = 1000;
/// Records that may open a window at once...
pub(crate) const BURST: u32 = 60;
/// ...and one more per this many milliseconds.
pub(crate) const REFILL_MS: u64 = 200;
/// Distinct sources counted in a rate-limited summary.
const SOURCES_CAP: usize = 4096;
/// The events folded here: all of them per packet, none of them a grant or a consumption.
const AGGREGATED: [&str; 6] = ["replay", "near-miss", "near_miss", "burn", "alert", "refused"];

/// The most records [`Aggregator`] lets through in any minute: each window's first record and
/// its summary, and one overflow summary per event kind and second.
#[cfg(test)]
pub(crate) const fn records_per_minute_bound() -> u64 {
    2 * (BURST as u64 + 60_000 / REFILL_MS) + AGGREGATED.len() as u64 * 60
}

/// Whether records of this event may be folded.
pub(crate) fn aggregated(r: &Record) -> bool {
    AGGREGATED.contains(&r.event())
}

#[derive(Debug)]
struct Window {
    record: Record,
    opened: u64,
    folded: u64,
    first: u64,
    last: u64,
}

#[derive(Debug)]
struct Overflow {
    opened: u64,
    count: u64,
    first: u64,
    last: u64,
    sources: HashSet<String>,
}

#[derive(Debug)]
pub(crate) struct Aggregator {
    windows: HashMap<String, Window>,
    budget: TokenBucket,
    overflow: BTreeMap<String, Overflow>,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator { windows: HashMap::new(), budget: TokenBucket::new(BURST, REFILL_MS, 0), overflow: BTreeMap::new() }
    }
}

fn over(opened: u64, now: u64) -> bool {
    now >= opened.saturating_add(WINDOW_MS) || now.saturating_add(WINDOW_MS) < opened
}

/// The record without its time: records equal in this are folded.
fn identity(r: &Record) -> String {
    let mut m = r.0.clone();
    m.remove("ts_ms");
    Value::Object(m).to_string()
}

impl Aggregator {
    /// `Some(record)` to write now, `None` when it was counted into a window.
    pub(crate) fn admit(&mut self, record: Record, now: u64) -> Option<Record> {
        let id = identity(&record);
        if let Some(w) = self.windows.get_mut(&id).filter(|w| !over(w.opened, now)) {
            if w.folded == 0 {
                w.first = now;
            }
            w.folded += 1;
            w.last = now;
            return None;
        }
        if !self.budget.take(now) {
            let o = self.overflow.entry(record.event().to_string()).or_insert_with(|| Overflow {
                opened: now,
                count: 0,
                first: now,
                last: now,
                sources: HashSet::new(),
            });
            o.count += 1;
            o.last = now;
            if let Some(s) = record.0.get("source").and_then(Value::as_str) {
                if o.sources.len() < SOURCES_CAP {
                    o.sources.insert(s.to_string());
                }
            }
            return None;
        }
        self.windows.insert(id, Window { record: record.clone(), opened: now, folded: 0, first: now, last: now });
        Some(record)
    }

    /// The summary records of windows over at `now` (`u64::MAX`: all), oldest first.
    pub(crate) fn due(&mut self, now: u64) -> Vec<Record> {
        let all = now == u64::MAX;
        let mut done: Vec<Window> = Vec::new();
        self.windows.retain(|_, w| {
            if all || over(w.opened, now) {
                done.push(Window { record: w.record.clone(), ..*w });
                false
            } else {
                true
            }
        });
        done.sort_by_key(|w| (w.opened, w.first));
        let mut out: Vec<Record> = done
            .into_iter()
            .filter(|w| w.folded > 0)
            .map(|w| w.record.with("ts_ms", w.last).with("count", w.folded).with("first_ms", w.first))
            .collect();
        let expired: Vec<String> =
            self.overflow.iter().filter(|(_, o)| all || over(o.opened, now)).map(|(k, _)| k.clone()).collect();
        for event in expired {
            if let Some(o) = self.overflow.remove(&event) {
                let mut r = Record::new(&event)
                    .with("ts_ms", o.last)
                    .with("count", o.count)
                    .with("first_ms", o.first)
                    .with("rate_limited", true);
                if !o.sources.is_empty() {
                    r = r.with("sources", o.sources.len() as u64);
                }
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(src: &str, at: u64) -> Record {
        Record::new("replay").with("door", "ssh").with("source", src).with("sequence", "hotp#3").with("ts_ms", at)
    }

    #[test]
    fn identical_replays_within_a_second_fold_into_one_count() {
        let mut a = Aggregator::default();
        assert!(a.admit(replay("10.0.0.1", 1000), 1000).is_some());
        for t in [1100, 1500, 1999] {
            assert!(a.admit(replay("10.0.0.1", t), t).is_none());
        }
        // Another source is another record.
        assert!(a.admit(replay("10.0.0.2", 1200), 1200).is_some());
        assert!(a.due(1999).is_empty());
        let out = a.due(2000);
        assert_eq!(out.len(), 1, "only the window with folded records gives a summary");
        let r = &out[0].0;
        assert_eq!(r["count"], 3);
        assert_eq!(r["first_ms"], 1100);
        assert_eq!(r["ts_ms"], 1999);
        assert_eq!(r["source"], "10.0.0.1");
        // The next one opens a new window.
        assert!(a.admit(replay("10.0.0.1", 2100), 2100).is_some());
    }

    #[test]
    fn a_spoofed_flood_is_bounded_per_second() {
        let mut a = Aggregator::default();
        let mut written = 0;
        for i in 0..10_000u64 {
            let t = 5000 + i / 10; // 10 000 replays over one second, each from its own source
            if a.admit(replay(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), t), t).is_some() {
                written += 1;
            }
        }
        assert_eq!(written, u64::from(BURST) + 999 / REFILL_MS, "the burst, then one per {REFILL_MS} ms");
        let out = a.due(u64::MAX);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0["count"], 10_000 - written);
        assert_eq!(out[0].0["rate_limited"], true);
        assert_eq!(out[0].0["sources"], 4096);
    }

    /// Issue 9, lockout 1: a minute of every foldable kind, each record different (fresh
    /// sources and counters), at 1 000 a second: what is written stays within the bound.
    #[test]
    fn regression_9_a_minute_of_mixed_flood_stays_within_the_bound() {
        let mut a = Aggregator::default();
        let mut written = 0u64;
        for i in 0..60_000u64 {
            let t = 1_000 + i;
            let event = AGGREGATED[(i % AGGREGATED.len() as u64) as usize];
            let r = Record::new(event).with("source", format!("198.18.{}.{}", (i >> 8) & 255, i & 255)).with("n", i);
            written += u64::from(a.admit(r.with("ts_ms", t), t).is_some());
            if i % 100 == 0 {
                written += a.due(t).len() as u64;
            }
        }
        written += a.due(u64::MAX).len() as u64;
        assert!(written <= records_per_minute_bound(), "{written} > {}", records_per_minute_bound());
        assert!(written > 300, "the budget lets some through individually: {written}");
    }
}
