//! What the daemon does with the matcher's decisions, in one place. A completed fresh sequence
//! goes through [`Daemon::completed`], whose steps are the order that makes it safe:
//!
//! 1. a resync candidate (beyond the client's window) waits for its second half;
//! 2. the state directory must have room, or nothing can be made durable: refused;
//! 3. the candidate is used up through its door's store ([`Doors::consume`], the ledger seam:
//!    docs/ARCHITECTURE.md): a replay if it was used, refused if that cannot be made durable;
//! 4. the `grant` (or `close`) audit record is written durably while the ledger's record of
//!    the use is synced on another thread; nothing opens unless both are durable;
//! 5. the door's action runs ([`Actions::run`]: firewall grant or knockd command);
//! 6. one log line says what happened;
//! 7. only then, off the knock's path: a completed rotation of a file door's sequence file
//!    takes effect, or the client's candidates are rebuilt (no packet is read meanwhile, so the
//!    matcher sees the same state as if it had been done before the grant).
//!
//! Replays, burns and second-source alerts are audited (folded under a flood) and logged;
//! burns are made durable within each client's budget.
//!
//! [`Doors::consume`]: crate::runtime::doors::Doors::consume
//! [`Actions::run`]: crate::runtime::actions::Actions::run

use std::net::IpAddr;
use std::time::Instant;

use knock_core::ledger::Consumed;
use knock_core::matcher::{BurnReason, CandidateId, Event};
use knock_core::ratelimit::TokenBucket;
use knock_core::sequence::Purpose;
use knock_core::time::unix_now;
use tracing::{error, info, warn};

use super::ledger_sync::Syncing;
use super::Daemon;
use crate::runtime::doors::Knocked;
use crate::state::audit::Record;

/// Burns a client may make durable at once, and then one per [`BURN_REFILL_MS`]: its own knocks
/// burn rarely (a lost packet), so only a holder of its key goes past this.
const BURN_BURST: u32 = 16;
const BURN_REFILL_MS: u64 = 4_000;

fn burn_bucket(now_ms: u64) -> TokenBucket {
    TokenBucket::new(BURN_BURST, BURN_REFILL_MS, now_ms)
}

/// An audit record about a sequence: its door, client, source and sequence label.
fn record(event: &str, who: &Knocked, source: IpAddr) -> Record {
    Record::new(event)
        .with("door", who.door.clone())
        .with("client", who.client.clone())
        .with("source", source.to_string())
        .with("sequence", who.sequence.clone())
}

impl Daemon {
    /// Acts on the matcher's decisions; `seen` is when the packet that caused them was captured.
    pub(super) fn handle(&mut self, events: Vec<Event>, seen: Instant) {
        for e in events {
            match e {
                Event::Completed { id, source, used: false } => self.completed(id, source, seen),
                Event::Completed { id, source, used: true } => self.replay(id, source, "already used"),
                Event::Burned { id, source, progress, reason } => self.burned(id, source, progress, reason),
                Event::PrefixFromSecondSource { id, first, second } => self.alert(id, first, second),
            }
        }
    }

    /// A completed sequence that was fresh when the matcher saw it: consume, audit, open.
    fn completed(&mut self, id: CandidateId, source: IpAddr, seen: Instant) {
        let who = self.doors.knocked(&id);
        let (door, client) = (who.door.clone(), who.client.clone());
        // 1. A sequence beyond the window opens nothing until its second half comes.
        let resync = self.doors.beyond_window(&id);
        if resync && !self.resync_completes(&id, &who, source) {
            return;
        }
        // 2, 3. Used up durably, or refused.
        let now_ms = self.now_ms(Instant::now());
        let consumed = self
            .state
            .room()
            .map_err(|e| e.to_string())
            .and_then(|()| self.doors.consume(&id).map_err(|e| e.to_string()));
        let pending = match consumed {
            Ok((Consumed::Fresh, pending)) => pending,
            Ok((Consumed::AlreadyUsed, _)) => return self.replay(id, source, "already used"),
            Err(why) => return self.refused(&who, source, &why, now_ms),
        };
        // The ledger's record is made durable on the syncer's thread while this one writes the
        // audit record; nothing opens before both are (docs/ARCHITECTURE.md, "Two durable writes
        // at once").
        let mut syncing = self.ledger_sync.begin(pending);
        if resync {
            // Only once the counters are consumed durably: the record of a consumption that
            // failed would make the next start refuse the client's ledger as rolled back.
            if let Err(e) = std::mem::replace(&mut syncing, Syncing::Nothing).wait() {
                return self.refused(&who, source, &e.to_string(), now_ms);
            }
            let mut rec = record("resync", &who, source);
            if let Some(key) = &who.key {
                rec = rec.with("key", key.clone());
            }
            self.audit_write(rec, true);
            info!(door, client, %source, counter = id.counter, "client resynchronised by two consecutive sequences");
        }
        // 4. The audit record of the grant goes before the grant.
        let Some(d) = self.doors.door(&id) else { return self.after_use(&id, &door) };
        let door_config = d.config.clone();
        let ports: Vec<String> = door_config.open.iter().map(|o| o.to_string()).collect();
        let event = if id.purpose == Purpose::Close { "close" } else { "grant" };
        let mut rec = record(event, &who, source).with("ports", ports.join(","));
        if id.purpose == Purpose::Open {
            rec = rec.with("open_for_ms", door_config.open_for.as_millis() as u64);
        }
        if door_config.mode.replayable() {
            rec = rec.with("replayable", true);
        }
        if let Some(key) = who.key.clone() {
            rec = rec.with("key", key);
        }
        if let Some(revision) = self.doors.receipt(&id) {
            // The shared ledger's revision of this consumption (etcd).
            rec = rec.with("store_revision", revision);
        }
        let written = self.audit_write(rec, true);
        let synced = syncing.wait();
        if !written {
            error!(door, client, %source, "knock refused: its audit record could not be written");
            return self.after_use(&id, &door);
        }
        if let Err(e) = synced {
            // The audit log holds the grant record, then this refusal.
            self.refused(&who, source, &e.to_string(), now_ms);
            return self.after_use(&id, &door);
        }
        // 5, 6. The door acts, and says so.
        let sequence = &who.sequence;
        match (self.actions.run(&door_config, &client, id.purpose, source), id.purpose) {
            (Ok(()), Purpose::Open) => info!(door, client, %source, sequence = %sequence, ports = %ports.join(","),
                open_for_s = door_config.open_for.as_secs_f64(), decided_us = seen.elapsed().as_micros() as u64,
                "door opened"),
            (Ok(()), Purpose::Close) => {
                info!(door, client, %source, sequence = %sequence, "door closed by closing sequence")
            }
            (Err(e), _) => error!(door, client, %source, "the door's action failed: {e}"),
        }
        // 7. The first use of a door's incoming sequence file completes its rotation; otherwise
        // the client's candidates are rebuilt.
        self.after_use(&id, &door);
    }

    /// A use that could not be made durable: audited (folded under a flood, as only a key
    /// holder can repeat it fast), and logged within the chatter budget. Nothing opens.
    fn refused(&mut self, who: &Knocked, source: IpAddr, why: &str, now_ms: u64) {
        let written = self.audit_flood(record("refused", who, source).with("reason", why.to_string()));
        if written && self.chatter.take(now_ms) {
            error!(door = who.door, client = who.client, %source, "knock refused, nothing can be consumed durably: {why}");
        }
    }

    /// After a candidate was used: a rotation completes (the door is rebuilt), or the client's
    /// candidates are refreshed.
    fn after_use(&mut self, id: &CandidateId, door: &str) {
        match self.doors.promote_incoming(id) {
            Ok(true) => {
                self.audit_write(Record::new("rotate").with("door", door.to_string()), true);
                info!(door, "the door's incoming sequence file is now its sequence file (rotation done)");
                self.matcher.clear_door(id.door);
                self.doors.install_door(&mut self.matcher, id.door, unix_now());
            }
            Ok(false) => self.refresh(id),
            Err(e) => {
                error!(door, "sequence file rotation failed, both files stay in use: {e}");
                self.refresh(id);
            }
        }
    }

    /// Rebuilds the candidates of a candidate's client after it was used.
    fn refresh(&mut self, id: &CandidateId) {
        self.matcher.drop_candidate(*id);
        self.doors.install_client(&mut self.matcher, id.door, id.client, unix_now());
    }

    /// A sequence beyond its client's window: the first of two consecutive ones from one source
    /// is remembered (false: not yet), the second completes the resync (true: go on and open,
    /// consuming every counter up to it; the caller audits the resync once that is done).
    fn resync_completes(&mut self, id: &CandidateId, who: &Knocked, source: IpAddr) -> bool {
        let now = Instant::now();
        if self.resyncs.completes(id.door, id.client, source, id.counter, now) {
            return true;
        }
        if self.chatter.take(self.now_ms(now)) {
            info!(door = who.door, client = who.client, %source, counter = id.counter,
                "a sequence beyond the window: waiting for the next one to resynchronise");
        }
        self.resyncs.remember(id.door, id.client, source, id.counter, now);
        false
    }

    /// A completed sequence that was used already: audited, nothing opens.
    fn replay(&mut self, id: CandidateId, source: IpAddr, why: &str) {
        let who = self.doors.knocked(&id);
        // Audit records go before the log lines that announce them, here and below; a record
        // folded into a summary gets no line of its own (the summary gets one).
        if self.audit_flood(record("replay", &who, source)) {
            warn!(door = who.door, client = who.client, %source, sequence = %who.sequence,
                "replayed knock sequence ({why}); nothing opened");
        }
    }

    /// An attempt that ended incomplete: its candidate is burned.
    fn burned(&mut self, id: CandidateId, source: IpAddr, progress: usize, reason: BurnReason) {
        let who = self.doors.knocked(&id);
        // Within the client's budget a burn is made durable; past it (only a holder of the key
        // burns that fast) it is kept in memory, so a key holder cannot make the ledger grow.
        if self.doors.is_used(&id) {
            return; // burned already (the second source of an alert, for one)
        }
        let now_ms = self.now_ms(Instant::now());
        let durable = self.burn_budget.entry((id.door, id.client)).or_insert_with(|| burn_bucket(now_ms)).take(now_ms);
        match self.doors.burn(&id, durable) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                if self.chatter.take(now_ms) {
                    error!(door = who.door, client = who.client, "cannot record a burned sequence: {e}");
                }
                return;
            }
        }
        self.refresh(&id);
        let reason = match reason {
            BurnReason::Misses => "too many wrong knocks",
            BurnReason::Timeout => "seq_timeout",
            BurnReason::Evicted => "evicted under load",
            BurnReason::SecondSource => "prefix from a second source",
        };
        let mut rec = record("burn", &who, source)
            .with("progress", progress as u64)
            .with("reason", reason)
            .with("key", who.key.clone().unwrap_or_default());
        if !durable {
            rec = rec.with("in_memory", true);
        }
        if self.audit_flood(rec) {
            info!(door = who.door, client = who.client, %source, sequence = %who.sequence, progress, reason, durable,
                "incomplete knock: sequence burned");
        }
    }

    /// The same prefix from two sources: the sequence is burned for both (the matcher did), and
    /// the alert audited and logged.
    fn alert(&mut self, id: CandidateId, first: IpAddr, second: IpAddr) {
        let who = self.doors.knocked(&id);
        let rec = Record::new("alert")
            .with("door", who.door.clone())
            .with("client", who.client.clone())
            .with("sequence", who.sequence.clone())
            .with("source", first.to_string())
            .with("second_source", second.to_string());
        if self.audit_flood(rec) {
            warn!(door = who.door, client = who.client, %first, %second,
                "ALERT: the same knock prefix came from two sources; the sequence is burned for both");
        }
    }
}
