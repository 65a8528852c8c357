//! The daemon's loop as `knockd replay` runs it: the matcher fed with the capture's packets and
//! its timestamps as the clock, the daemon's tick every 100 ms of capture time, and each
//! decision recorded as a [`Finding`] instead of acted on. Uses are marked in memory only.

use std::collections::HashMap;
use std::net::IpAddr;

use knock_core::matcher::{BurnReason, CandidateId, Event, Limits, Matcher, Prepared};
use knock_core::packet::KnockPacket;
use knock_core::sequence::Mode;

use super::findings::{Finding, Verdict};
use super::sources::Sources;
use crate::runtime::doors::{DoorKind, Doors};

/// How often the daemon ticks (timeouts, time buckets), here in capture time.
const TICK_MS: u64 = 100;
/// Frames read, parsed and warmed up together.
pub(super) const BATCH: usize = 32;

/// The capture's clock: its first timestamp and the latest so far (frames out of order never
/// move it back), in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) first_ns: u64,
    pub(super) now_ns: u64,
}

impl Clock {
    /// The matcher's clock: milliseconds since the first frame (the daemon's: since its start).
    fn matcher_ms(&self) -> u64 {
        (self.now_ns - self.first_ns) / 1_000_000
    }
    fn unix_ms(&self) -> u64 {
        self.now_ns / 1_000_000
    }
    fn unix_secs(&self) -> u64 {
        self.now_ns / 1_000_000_000
    }
}

/// Who used a sequence first in the capture.
#[derive(Debug, Clone, Copy)]
struct Spent {
    at_ms: u64,
    source: IpAddr,
}

/// The daemon's loop, with its decisions recorded instead of acted on.
pub(super) struct Replay {
    pub(super) doors: Doors,
    matcher: Matcher,
    pub(super) sources: Sources,
    pub(super) findings: Vec<Finding>,
    /// Sequences used or burned in the capture, by (door, client, counter).
    spent: HashMap<(usize, usize, u64), Spent>,
    /// Each door's time bucket its candidates were built for.
    buckets: Vec<u64>,
    pub(super) clock: Option<Clock>,
    next_tick_ms: u64,
    /// Scratch for [`Replay::warm`]: where each packet of the batch is counted, and what the
    /// matcher worked out about it.
    source_slots: Vec<usize>,
    prepared: Vec<Prepared>,
    /// How often candidates were installed, and how often when the batch was prepared.
    installs: u64,
    prepared_at: u64,
}

impl Replay {
    pub(super) fn new(doors: Doors) -> Replay {
        Replay {
            doors,
            matcher: Matcher::new(Limits::default()),
            sources: Sources::default(),
            findings: Vec::new(),
            spent: HashMap::new(),
            buckets: Vec::new(),
            clock: None,
            next_tick_ms: TICK_MS,
            source_slots: Vec::with_capacity(BATCH),
            prepared: Vec::with_capacity(BATCH),
            installs: 0,
            prepared_at: 0,
        }
    }

    /// Moves the clock to a frame's time; the first frame installs the doors for its time, and
    /// every [`TICK_MS`] of capture time the daemon's tick runs.
    #[inline]
    pub(super) fn advance(&mut self, ts_ns: u64) {
        let clock = match &mut self.clock {
            Some(c) => {
                c.now_ns = c.now_ns.max(ts_ns);
                *c
            }
            None => self.start(ts_ns),
        };
        if clock.matcher_ms() >= self.next_tick_ms {
            self.tick(clock);
            self.next_tick_ms = clock.matcher_ms() + TICK_MS;
        }
    }

    /// The first frame's time starts the clock; the doors are installed for it.
    fn start(&mut self, ts_ns: u64) -> Clock {
        let c = Clock { first_ns: ts_ns, now_ns: ts_ns };
        self.clock = Some(c);
        self.doors.install(&mut self.matcher, c.unix_secs());
        self.buckets = self.doors.time_buckets(c.unix_secs());
        self.installs += 1;
        c
    }

    /// The daemon's tick: doors whose time bucket changed are rebuilt, old attempts end.
    fn tick(&mut self, clock: Clock) {
        let now = clock.unix_secs();
        let buckets = self.doors.time_buckets(now);
        for (i, (new, old)) in buckets.iter().zip(&self.buckets).enumerate() {
            if new != old {
                self.doors.install_door(&mut self.matcher, i, now);
                self.installs += 1;
            }
        }
        self.buckets = buckets;
        let events = self.matcher.tick(clock.matcher_ms());
        self.handle(events, clock);
    }

    /// Prepares the batch's packets and reads what they will update: first where, then every
    /// place one load after the other (see `Matcher::warm`).
    pub(super) fn warm(&mut self, batch: &[(u64, Option<KnockPacket>)]) {
        if let (None, Some((ts_ns, _))) = (self.clock, batch.first()) {
            self.start(*ts_ns);
        }
        self.prepared_at = self.installs;
        self.source_slots.clear();
        self.prepared.clear();
        for p in batch.iter().filter_map(|(_, p)| p.as_ref()) {
            self.source_slots.push(self.sources.slot_of(p.src));
            self.prepared.push(self.matcher.prepare(p));
        }
        std::hint::black_box(self.sources.warm(&self.source_slots) ^ self.matcher.warm(&self.prepared));
        // Counted now, while their slots are at hand (a packet whose doors change before it is
        // fed is counted again, see `packet`).
        for (p, prepared) in batch.iter().filter_map(|(_, p)| p.as_ref()).zip(&self.prepared) {
            self.sources.count(p.src, prepared.heard());
        }
    }

    /// The `i`th packet of the batch, fed to the matcher.
    #[inline]
    pub(super) fn packet(&mut self, p: &KnockPacket, i: usize) {
        if self.installs != self.prepared_at {
            // Candidates were built again since the batch was prepared: how the doors hear the
            // packet may have changed (its seed keys have not).
            let (was, now) = (self.prepared[i].heard(), self.matcher.prepare(p));
            self.sources.recount(p.src, was, now.heard());
            self.prepared[i] = now;
        }
        let prepared = &self.prepared[i];
        let Some(clock) = self.clock else { return };
        // Fed even when no door heard it as prepared: the matcher asks the doors again.
        let events = self.matcher.on_prepared(p, prepared, clock.matcher_ms(), &self.doors);
        if !events.is_empty() {
            self.handle(events, clock);
        }
    }

    /// After the last frame: the attempts still open end as the daemon would end them when
    /// nothing more comes (their seq_timeout).
    pub(super) fn finish(&mut self) {
        let Some(mut clock) = self.clock else { return };
        let longest = self.doors.doors.iter().map(|d| d.config.seq_timeout).max().unwrap_or_default();
        clock.now_ns = clock.now_ns.saturating_add(longest.as_nanos() as u64 + 1_000_000);
        let events = self.matcher.tick(clock.matcher_ms());
        self.handle(events, clock);
    }

    fn handle(&mut self, events: Vec<Event>, clock: Clock) {
        for e in events {
            match e {
                Event::Completed { id, source, used } => self.completed(id, source, used, clock),
                Event::Burned { id, source, progress, reason } => {
                    // Burned already (the second source of an alert, for one): nothing more.
                    if self.doors.is_used(&id) || self.spent.contains_key(&spent_key(&id)) {
                        continue;
                    }
                    self.use_up(&id, source, clock, Use::Burn);
                    let reason = burn_reason(reason);
                    self.record(&id, source, clock, Verdict::Burned { progress, reason });
                }
                Event::PrefixFromSecondSource { id, first, second } => {
                    self.record(&id, first, clock, Verdict::Alert { second });
                }
            }
        }
    }

    /// A completed sequence: a replay if the ledger or the capture used it before, else it
    /// would have opened (once its resync completes, beyond the window).
    fn completed(&mut self, id: CandidateId, source: IpAddr, used: bool, clock: Clock) {
        let replayable = self.doors.door(&id).is_some_and(|d| d.config.mode == Mode::Static);
        let verdict = match (self.spent.get(&spent_key(&id)), used) {
            _ if replayable => Verdict::Opened,
            (Some(first), _) => Verdict::ReplayInCapture { first_ms: first.at_ms, first_source: first.source },
            (None, true) => Verdict::ReplayOfLedger,
            (None, false) if self.doors.beyond_window(&id) => Verdict::Resync,
            (None, false) => {
                self.use_up(&id, source, clock, Use::Consume);
                Verdict::Opened
            }
        };
        self.record(&id, source, clock, verdict);
    }

    /// Marks a sequence used in memory only (the ledger is read-only): consumed, a hotp or
    /// file door's every counter up to it, a totp step alone, as the daemon's consumption
    /// would; burned, it alone. Then the client's candidates are built again, as the daemon
    /// does after a use.
    fn use_up(&mut self, id: &CandidateId, source: IpAddr, clock: Clock, how: Use) {
        self.spent.insert(spent_key(id), Spent { at_ms: clock.unix_ms(), source });
        let from = match self.doors.door(id).map(|d| (&d.kind, d.config.mode)) {
            _ if how == Use::Burn => id.counter,
            Some((_, Mode::Totp)) => id.counter,
            Some((DoorKind::Keyed(c), _)) => c.get(id.client).map_or(id.counter, |c| c.store().next()),
            Some((DoorKind::File(f), _)) => f.get(id.client).map_or(id.counter, |f| f.store().next()),
            _ => id.counter,
        };
        for counter in from.min(id.counter)..=id.counter {
            // Ledgers opened read-only burn in memory; a door without a ledger has nothing to mark.
            let _ = self.doors.burn(&CandidateId { counter, ..*id }, false);
        }
        self.matcher.drop_candidate(*id);
        self.doors.install_client(&mut self.matcher, id.door, id.client, clock.unix_secs());
        self.installs += 1;
    }

    fn record(&mut self, id: &CandidateId, source: IpAddr, clock: Clock, verdict: Verdict) {
        let who = self.doors.knocked(id);
        self.findings.push(Finding {
            at_ms: clock.unix_ms(),
            door: who.door,
            client: who.client,
            source,
            sequence: who.sequence,
            counter: id.counter,
            purpose: id.purpose,
            verdict,
        });
    }
}

/// How a sequence is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Completed fresh: the door opened.
    Consume,
    /// An attempt ended incomplete.
    Burn,
}

/// Sequences are used per (door, client, counter), whatever their purpose and day.
fn spent_key(id: &CandidateId) -> (usize, usize, u64) {
    (id.door, id.client, id.counter)
}

/// The audit log's words for why an attempt was burned.
fn burn_reason(reason: BurnReason) -> &'static str {
    match reason {
        BurnReason::Misses => "too many wrong knocks",
        BurnReason::Timeout => "seq_timeout",
        BurnReason::Evicted => "evicted under load",
        BurnReason::SecondSource => "prefix from a second source",
    }
}
