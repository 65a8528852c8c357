//! `knockd replay --pcap FILE`: forensics on a capture. Its frames go through the live
//! capture's parser ([`frame_knock`]) and the daemon's matcher, with the doors loaded as the
//! daemon loads them but their ledgers opened read-only, and the packets' own timestamps as the
//! clock (seq_timeout, totp steps, the day of hotp sequences). What the daemon would have done
//! is recorded instead of done: nothing is written to a ledger, the audit log or the firewall,
//! so it runs beside a live daemon, as any user who can read the state directory, or on a copy
//! of it (`--state-dir`).
//!
//! What it finds ([`Verdict`]): sequences that would have opened, replays of a sequence used
//! per the ledger or earlier in the capture, halves of a resync, burns and second-source
//! alerts; and per source the guessing traffic (`sources.rs`). `render.rs` prints it as text
//! or as one JSON document (docs/OPERATIONS.md, "Forensics: replaying a capture").

mod findings;
mod render;
mod sources;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use knock_core::config::Config;
use knock_core::matcher::{BurnReason, CandidateId, Event, Limits, Matcher, Prepared};
use knock_core::packet::KnockPacket;
use knock_core::sequence::Mode;

use super::error::CliError;
use super::report::Report;
use crate::runtime::capture::frame_knock;
use crate::runtime::capture::pcapfile::PcapReader;
use crate::runtime::doors::{DoorKind, Doors};
use crate::state::ledger_backend;
use crate::state::StateDir;
pub use findings::{Finding, Outcome, Verdict};
pub use sources::{Folded, Traffic};

/// How often the daemon ticks (timeouts, time buckets), here in capture time.
const TICK_MS: u64 = 100;
/// Frames read, parsed and warmed up together.
const BATCH: usize = 32;

/// `knockd replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The capture file: classic pcap as `tcpdump -w` writes it (microsecond or nanosecond
    /// timestamps; Ethernet, Linux cooked, loopback or raw IP).
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Print one JSON document (keys in docs/OPERATIONS.md) instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Rows of each table of the text report (sources by packets, openings, replays, burns);
    /// the rest are summed up in one line. --json lists every finding and this many sources.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
}

/// `knockd replay`: runs the capture through the matcher and reports what would have happened.
pub fn replay(config: &Config, args: &ReplayArgs) -> Result<Report, CliError> {
    let outcome = run(config, args)?;
    let text = if args.json { render::json(&outcome, args.top) } else { render::text(&outcome, args.top) };
    Ok(Report::clean(text))
}

/// Loads the doors read-only and replays the capture through them.
pub fn run(config: &Config, args: &ReplayArgs) -> Result<Outcome, CliError> {
    let state = StateDir::new(&config.server.state_dir);
    let derives = config.doors.iter().any(|d| matches!(d.mode, Mode::Hotp | Mode::Totp));
    let server_id = if derives { state.server_id()? } else { [0; 16] };
    // Read-only: a daemon may be appending to these very ledgers.
    let stores = ledger_backend::configured(config, &state.ledger_dir(), None)?;
    let doors = Doors::load(config, server_id, stores.as_ref());
    drop(stores);
    let mut reader = PcapReader::open(&args.pcap)?;
    let (link, on) = (reader.link(), args.pcap.display().to_string());
    let started = Instant::now();
    let mut replay = Replay::new(doors);
    let (mut frames, mut packets) = (0u64, 0u64);
    // Frames go in batches: parsed first, then the table slots each will update are read
    // (their cache misses overlap), then they are fed in order.
    let mut batch: Vec<(u64, Option<KnockPacket>)> = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        while batch.len() < BATCH {
            let Some(frame) = reader.next_frame()? else { break };
            batch.push((frame.ts_ns, frame_knock(link, frame.data, &on)));
        }
        if batch.is_empty() {
            break;
        }
        frames += batch.len() as u64;
        replay.warm(&batch);
        let mut packets_in_batch = 0;
        for (ts_ns, packet) in &batch {
            replay.advance(*ts_ns);
            if let Some(p) = packet {
                replay.packet(p, packets_in_batch);
                packets_in_batch += 1;
            }
        }
        packets += packets_in_batch as u64;
    }
    replay.finish();
    Ok(Outcome {
        file: args.pcap.clone(),
        link,
        nanosecond: reader.nanosecond(),
        frames,
        packets,
        span_ms: replay.clock.map(|c| (c.first_ns / 1_000_000, c.now_ns / 1_000_000)),
        doors: replay.doors.doors.iter().map(|d| d.config.name.clone()).collect(),
        refused: replay.doors.refused.iter().map(ToString::to_string).collect(),
        state_dir: config.server.state_dir.clone(),
        sources: replay.sources.fold(args.top),
        findings: replay.findings,
        elapsed: started.elapsed(),
    })
}

/// The capture's clock: its first timestamp and the latest so far (frames out of order never
/// move it back), in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy)]
struct Clock {
    first_ns: u64,
    now_ns: u64,
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
struct Replay {
    doors: Doors,
    matcher: Matcher,
    sources: sources::Sources,
    findings: Vec<Finding>,
    /// Sequences used or burned in the capture, by (door, client, counter).
    spent: HashMap<(usize, usize, u64), Spent>,
    /// Each door's time bucket its candidates were built for.
    buckets: Vec<u64>,
    clock: Option<Clock>,
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
    fn new(doors: Doors) -> Replay {
        Replay {
            doors,
            matcher: Matcher::new(Limits::default()),
            sources: sources::Sources::default(),
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
    fn advance(&mut self, ts_ns: u64) {
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
    fn warm(&mut self, batch: &[(u64, Option<KnockPacket>)]) {
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
    fn packet(&mut self, p: &KnockPacket, i: usize) {
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
    fn finish(&mut self) {
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

#[cfg(test)]
mod tests;
