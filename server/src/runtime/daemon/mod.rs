//! The daemon loop: knocks from the capture threads go through the matcher; completed fresh
//! sequences are consumed durably (ledger, then audit) before the firewall opens; replays,
//! burns and alerts are audited and logged. SIGTERM/SIGINT stop it cleanly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knock_core::config::Action;
use knock_core::config::{Config, FirewallKind};
use knock_core::ledger::{Consumed, WriterLock};
use knock_core::matcher::{BurnReason, CandidateId, Event, Limits, Matcher};
use knock_core::ratelimit::TokenBucket;
use knock_core::sequence::{Mode, Purpose};
use knock_core::time::unix_now;
use tracing::{error, info, warn};

mod reload;
mod resync;

use crate::runtime::actions::grants::LiveGrants;
use crate::runtime::actions::shell::CommandRunner;
use crate::runtime::capture::{self, CaptureHandle, CapturedKnock};
use crate::runtime::doors::Doors;
use crate::runtime::firewall::{Firewall, Nftables};
use crate::runtime::notify::Notifier;
use crate::state::audit::{AuditLog, Record};
use crate::state::StateDir;
use resync::PendingResyncs;

mod recovery;

/// How often timeouts are checked and lazy audit records synced.
const TICK: Duration = Duration::from_millis(100);

/// Burns a client may make durable at once, and then one per [`BURN_REFILL_MS`]: its own knocks
/// burn rarely (a lost packet), so only a holder of its key goes past this.
const BURN_BURST: u32 = 16;
const BURN_REFILL_MS: u64 = 4_000;

/// Other log lines packets can cause (errors on the knock path): at once, then one a second.
const CHATTER_BURST: u32 = 20;
const CHATTER_REFILL_MS: u64 = 1_000;

fn burn_bucket(now_ms: u64) -> TokenBucket {
    TokenBucket::new(BURN_BURST, BURN_REFILL_MS, now_ms)
}

/// Everything the loop needs.
pub struct Daemon {
    config: Config,
    doors: Doors,
    matcher: Matcher,
    audit: AuditLog,
    firewall: Option<Box<dyn Firewall>>,
    commands: CommandRunner,
    grants: LiveGrants,
    /// First halves of resyncs waiting for their second.
    resyncs: PendingResyncs,
    /// Held while the daemon runs: it alone writes (and repairs) ledgers.
    ledger_lock: WriterLock,
    /// Each (door, client)'s budget of durable burns.
    burn_budget: HashMap<(usize, usize), TokenBucket>,
    /// The budget of log lines on the knock path that no audit record bounds.
    chatter: TokenBucket,
    server_id: [u8; knock_core::sequence::SERVER_ID_LEN],
    started: Instant,
    /// Each door's time bucket its candidates were built for (day, or totp step).
    buckets: Vec<u64>,
    only_ipv4: bool,
    /// systemd's readiness notifications (`Type=notify`), when started by it.
    notifier: Option<Notifier>,
}

fn firewall_for(config: &Config) -> Result<Option<Box<dyn Firewall>>, String> {
    let mut fw: Box<dyn Firewall> = match config.server.firewall {
        FirewallKind::Nftables => Box::new(Nftables::new(&config.server.nft_table).map_err(|e| e.to_string())?),
        FirewallKind::Iptables => Box::new(crate::runtime::firewall::iptables::Iptables::new()),
        FirewallKind::None => return Ok(None),
    };
    let protected: Vec<_> = config.doors.iter().flat_map(|d| d.open.iter().copied()).collect();
    recovery::set_always_allow(fw.as_mut(), config);
    fw.install(&protected).map_err(|e| e.to_string())?;
    Ok(Some(fw))
}

impl Daemon {
    /// Loads state, doors, audit log and firewall. Fails when nothing could be protected.
    pub fn new(config: Config) -> Result<Daemon, String> {
        let state = StateDir::new(&config.server.state_dir);
        let derives = config.doors.iter().any(|d| matches!(d.mode, Mode::Hotp | Mode::Totp));
        let server_id = state.server_id_if(derives).map_err(|e| e.to_string())?;
        for w in &config.warnings {
            warn!("{w}");
        }
        for d in config.doors.iter().filter(|d| d.mode == Mode::Static) {
            warn!(door = %d.name, "static sequence: anyone who sees it once can replay it; \
                `knockd migrate` writes a one-time equivalent");
        }
        // The one writer of the ledgers for as long as the daemon runs: a second daemon on this
        // state directory, or `ledger recover` meanwhile, is refused; readers never write.
        let ledger_lock = WriterLock::acquire(&state.ledger_dir()).map_err(|e| e.to_string())?;
        let mut doors = Doors::load(&config, server_id, &state.ledger_dir(), Some(&ledger_lock));
        doors.refuse_rolled_back(&state.audit_log());
        for r in &doors.refused {
            error!("{r}");
        }
        if doors.doors.is_empty() {
            return Err(format!("{}: every door was refused (see the errors above)", config.path.display()));
        }
        let audit = AuditLog::open(&state.audit_log())
            .map_err(|e| format!("audit log {}: {e}", state.audit_log().display()))?;
        let firewall = firewall_for(&config)?;
        let mut commands = CommandRunner::open(&config.server.state_dir)?;
        if commands.pending() > 0 {
            info!(pending = commands.pending(), "stop commands pending from the last run; overdue ones run now");
        }
        commands.overdue_at_start();
        let now = unix_now();
        let mut matcher = Matcher::new(Limits::default());
        doors.install(&mut matcher, now);
        let buckets = doors.time_buckets(now);
        Ok(Daemon {
            config,
            doors,
            matcher,
            audit,
            firewall,
            commands,
            grants: LiveGrants::default(),
            resyncs: PendingResyncs::default(),
            ledger_lock,
            burn_budget: HashMap::new(),
            chatter: TokenBucket::new(CHATTER_BURST, CHATTER_REFILL_MS, 0),
            server_id,
            started: Instant::now(),
            buckets,
            only_ipv4: false,
            notifier: None,
        })
    }

    fn now_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Starts the capture threads for the current doors and interfaces.
    fn start_capture(&self, tx: &SyncSender<CapturedKnock>) -> Result<CaptureHandle, String> {
        let filter = capture::bpf_filter_rules(&self.doors.filter_rules(unix_now()));
        capture::spawn_live(&self.config.server.interfaces, &filter, tx.clone()).map_err(|e| e.to_string())
    }

    /// Runs until `stop` is set, capturing on the configured interfaces. When `reload` is set
    /// (SIGHUP), `load` reads the configuration again and the daemon takes it if it is valid.
    pub fn run(
        mut self,
        stop: Arc<AtomicBool>,
        reload: Arc<AtomicBool>,
        load: &dyn Fn() -> Result<Config, String>,
    ) -> Result<(), String> {
        let (tx, rx) = sync_channel::<CapturedKnock>(65_536);
        let mut handle = self.start_capture(&tx)?;
        let names: Vec<&str> = self.doors.doors.iter().map(|d| d.config.name.as_str()).collect();
        info!(
            interfaces = %self.config.server.interfaces.join(","),
            doors = %names.join(","),
            "knockd started"
        );
        let start = Record::new("start")
            .with("doors", names.join(","))
            .with("config_sha256", reload::config_hash(&self.config));
        self.audit_write(start, true);
        // The table was installed in `new` and every capture is open (packets queue from now on).
        self.notify_ready();
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(TICK) {
                Ok(k) => self.on_knock(&k),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    error!("every capture thread ended; stopping");
                    break;
                }
            }
            if reload.swap(false, Ordering::Relaxed) {
                if let Some(n) = &mut self.notifier {
                    n.reloading();
                }
                if self.reload(load()) {
                    match self.start_capture(&tx) {
                        // The old threads are told to stop; their last packets still count.
                        Ok(new) => handle = new,
                        Err(e) => error!("capture on the new interfaces failed, keeping the old capture: {e}"),
                    }
                }
                self.notify_ready();
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick();
            }
        }
        if let Some(n) = &mut self.notifier {
            n.stopping();
        }
        // Signal the capture threads but do not join them: libpcap 1.10 can sit in its read past
        // the read timeout on an idle link, and the process is about to exit anyway.
        drop(handle);
        self.audit_write(Record::new("stop"), true);
        info!("knockd stopped");
        Ok(())
    }

    /// Ignore IPv6 knocks (knockd's -4).
    pub fn only_ipv4(&mut self, yes: bool) {
        self.only_ipv4 = yes;
    }

    /// Tells systemd (`Type=notify`) when the daemon is ready, reloading and stopping.
    pub fn notify_with(&mut self, notifier: Notifier) {
        self.notifier = Some(notifier);
    }

    /// READY=1, with the interfaces and doors as the status systemctl shows.
    fn notify_ready(&mut self) {
        let names: Vec<&str> = self.doors.doors.iter().map(|d| d.config.name.as_str()).collect();
        let status = format!("capturing on {}; doors {}", self.config.server.interfaces.join(","), names.join(","));
        if let Some(n) = &mut self.notifier {
            n.ready(&status);
        }
    }

    /// Feeds one captured knock.
    pub fn on_knock(&mut self, k: &CapturedKnock) {
        if self.only_ipv4 && k.packet.src.is_ipv6() {
            return;
        }
        let now = self.now_ms(k.at);
        let p = &k.packet;
        let events = self.matcher.on_packet(p, now, &self.doors);
        self.handle(events, k.at);
    }

    fn tick(&mut self) {
        self.watch_firewall();
        let now = unix_now();
        let buckets = self.doors.time_buckets(now);
        for (i, (new, old)) in buckets.iter().zip(&self.buckets).enumerate() {
            if new != old {
                self.doors.install_door(&mut self.matcher, i, now);
            }
        }
        self.buckets = buckets;
        self.commands.run_due(knock_core::time::unix_now_ms());
        self.grants.prune();
        let now = self.now_ms(Instant::now());
        let events = self.matcher.tick(now);
        self.handle(events, Instant::now());
        if let Err(e) = self.audit.sync() {
            error!("audit log {}: {e}", self.audit.path().display());
        }
        self.log_summaries();
        self.audit.anchor_if_due(knock_core::time::unix_now_ms());
    }

    /// Acts on the matcher's decisions; `seen` is when the packet that caused them was captured.
    fn handle(&mut self, events: Vec<Event>, seen: Instant) {
        for e in events {
            match e {
                Event::Completed { id, source, used: false } => self.completed(id, source, seen),
                Event::Completed { id, source, used: true } => self.replay(id, source, "already used"),
                Event::Burned { id, source, progress, reason } => self.burned(id, source, progress, reason),
                Event::PrefixFromSecondSource { id, first, second } => {
                    let door = self.door_name(&id);
                    let rec = Record::new("alert")
                        .with("door", door.clone())
                        .with("client", self.doors.client_name(&id))
                        .with("sequence", self.doors.sequence_label(&id))
                        .with("source", first.to_string())
                        .with("second_source", second.to_string());
                    if self.audit_flood(rec) {
                        warn!(door, client = self.doors.client_name(&id), %first, %second,
                            "ALERT: the same knock prefix came from two sources; the sequence is burned for both");
                    }
                }
            }
        }
    }

    fn door_name(&self, id: &CandidateId) -> String {
        self.doors.door(id).map_or_else(|| "?".into(), |d| d.config.name.clone())
    }

    fn refresh(&mut self, id: &CandidateId) {
        self.matcher.drop_candidate(*id);
        self.doors.install_client(&mut self.matcher, id.door, id.client, unix_now());
    }

    fn completed(&mut self, id: CandidateId, source: IpAddr, seen: Instant) {
        let door = self.door_name(&id);
        let client = self.doors.client_name(&id).to_string();
        let seq = self.doors.sequence_label(&id);
        let key = self.doors.key_label(&id);
        let resync = self.doors.beyond_window(&id);
        if resync && !self.resync_completes(&id, source) {
            return;
        }
        let now_ms = self.now_ms(Instant::now());
        if let Err(why) = recovery::state_room(&self.config.server.state_dir) {
            if self.chatter.take(now_ms) {
                error!(door, client, %source, "knock refused, nothing can be consumed durably: {why}");
            }
            return;
        }
        match self.doors.consume(&id) {
            Ok(Consumed::Fresh) => {}
            Ok(Consumed::AlreadyUsed) => return self.replay(id, source, "already used"),
            Err(e) => {
                if self.chatter.take(now_ms) {
                    error!(door, client, %source, "knock refused, nothing can be consumed durably: {e}");
                }
                return;
            }
        }
        if resync {
            // Only now that the counters are consumed: the record of a consumption that failed
            // would make the next start refuse the client's ledger as rolled back.
            let mut rec = Record::new("resync")
                .with("door", door.clone())
                .with("client", client.clone())
                .with("source", source.to_string())
                .with("sequence", seq.clone());
            if let Some(key) = &key {
                rec = rec.with("key", key.clone());
            }
            self.audit_write(rec, true);
            info!(door, client, %source, counter = id.counter, "client resynchronised by two consecutive sequences");
        }
        match self.doors.promote_incoming(&id) {
            Ok(true) => {
                self.audit_write(Record::new("rotate").with("door", door.clone()), true);
                info!(door, "the door's incoming sequence file is now its sequence file (rotation done)");
                self.matcher.clear_door(id.door);
                self.doors.install_door(&mut self.matcher, id.door, unix_now());
            }
            Ok(false) => self.refresh(&id),
            Err(e) => {
                error!(door, "sequence file rotation failed, both files stay in use: {e}");
                self.refresh(&id);
            }
        }
        let Some(d) = self.doors.door(&id) else { return };
        let (open, open_for, replayable) = (d.config.open.clone(), d.config.open_for, d.config.mode.replayable());
        let action = d.config.action.clone();
        let ports: Vec<String> = open.iter().map(|o| o.to_string()).collect();
        let event = if id.purpose == Purpose::Close { "close" } else { "grant" };
        let mut rec = Record::new(event)
            .with("door", door.clone())
            .with("client", client.clone())
            .with("source", source.to_string())
            .with("sequence", seq.clone())
            .with("ports", ports.join(","));
        if id.purpose == Purpose::Open {
            rec = rec.with("open_for_ms", open_for.as_millis() as u64);
        }
        if replayable {
            rec = rec.with("replayable", true);
        }
        if let Some(key) = key {
            rec = rec.with("key", key);
        }
        // The consumption is durable already; the audit record of the grant goes before the grant.
        if !self.audit_write(rec, true) {
            error!(door, client, %source, "knock refused: its audit record could not be written");
            return;
        }
        let result = match (&action, &mut self.firewall, id.purpose) {
            (Action::Commands(c), _, Purpose::Open) => self.commands.start(&door, c, source),
            (Action::Commands(c), _, Purpose::Close) => {
                // A closing sequence runs the stop command at once.
                let now = knock_core::config::CommandAction {
                    start: c.stop.clone(),
                    start6: c.stop6.clone(),
                    ..Default::default()
                };
                self.commands.start(&door, &now, source)
            }
            (Action::Firewall, None, _) => Ok(()),
            (Action::Firewall, Some(fw), Purpose::Open) => fw.grant(source, &open, open_for).map_err(|e| e.to_string()),
            (Action::Firewall, Some(fw), Purpose::Close) => fw.revoke(source, &open).map_err(|e| e.to_string()),
        };
        if result.is_ok() && action == Action::Firewall {
            match id.purpose {
                Purpose::Open => self.grants.add(&door, &client, source, &open, open_for),
                Purpose::Close => self.grants.remove(&door, source),
            }
        }
        match (result, id.purpose) {
            (Ok(()), Purpose::Open) => info!(door, client, %source, sequence = %seq, ports = %ports.join(","),
                open_for_s = open_for.as_secs_f64(), decided_us = seen.elapsed().as_micros() as u64, "door opened"),
            (Ok(()), Purpose::Close) => {
                info!(door, client, %source, sequence = %seq, "door closed by closing sequence")
            }
            (Err(e), _) => error!(door, client, %source, "the door's action failed: {e}"),
        }
    }

    /// A sequence beyond its client's window: the first of two consecutive ones from one source
    /// is remembered (false: not yet), the second completes the resync (true: go on and open,
    /// consuming every counter up to it; the caller audits the resync once that is done).
    fn resync_completes(&mut self, id: &CandidateId, source: IpAddr) -> bool {
        let now = Instant::now();
        if self.resyncs.completes(id.door, id.client, source, id.counter, now) {
            return true;
        }
        let door = self.door_name(id);
        let client = self.doors.client_name(id).to_string();
        if self.chatter.take(self.now_ms(now)) {
            info!(door, client, %source, counter = id.counter, "a sequence beyond the window: waiting for the next one to resynchronise");
        }
        self.resyncs.remember(id.door, id.client, source, id.counter, now);
        false
    }

    fn replay(&mut self, id: CandidateId, source: IpAddr, why: &str) {
        let door = self.door_name(&id);
        let client = self.doors.client_name(&id).to_string();
        let seq = self.doors.sequence_label(&id);
        // Audit records go before the log lines that announce them, here and below; a record
        // folded into a summary gets no line of its own (the summary gets one).
        let rec = Record::new("replay")
            .with("door", door.clone())
            .with("client", client.clone())
            .with("source", source.to_string())
            .with("sequence", seq.clone());
        if self.audit_flood(rec) {
            warn!(door, client, %source, sequence = %seq, "replayed knock sequence ({why}); nothing opened");
        }
    }

    fn burned(&mut self, id: CandidateId, source: IpAddr, progress: usize, reason: BurnReason) {
        let door = self.door_name(&id);
        let client = self.doors.client_name(&id).to_string();
        let seq = self.doors.sequence_label(&id);
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
                    error!(door, client, "cannot record a burned sequence: {e}");
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
        let mut rec = Record::new("burn")
            .with("door", door.clone())
            .with("client", client.clone())
            .with("source", source.to_string())
            .with("sequence", seq.clone())
            .with("progress", progress as u64)
            .with("reason", reason)
            .with("key", self.doors.key_label(&id).unwrap_or_default());
        if !durable {
            rec = rec.with("in_memory", true);
        }
        if self.audit_flood(rec) {
            info!(door, client, %source, sequence = %seq, progress, reason, durable, "incomplete knock: sequence burned");
        }
    }

    /// Writes an audit record; false (after logging why) when it could not be written.
    fn audit_write(&mut self, rec: Record, durable: bool) -> bool {
        match self.audit.write(rec, durable) {
            Ok(_) => true,
            Err(e) => {
                error!("audit log {}: {e}", self.audit.path().display());
                false
            }
        }
    }

    /// Writes a record that packets cause (replay, burn, alert), folded under a flood. True when
    /// it was written now: only then does the caller log a line of its own.
    fn audit_flood(&mut self, rec: Record) -> bool {
        match self.audit.write(rec, false) {
            Ok(written) => written,
            Err(e) => {
                if self.chatter.take(self.now_ms(Instant::now())) {
                    error!("audit log {}: {e}", self.audit.path().display());
                }
                false
            }
        }
    }

    /// One log line for each summary of folded records the audit log wrote.
    fn log_summaries(&mut self) {
        for s in self.audit.take_summaries() {
            let count = s.get_u64("count").unwrap_or(0);
            let (event, rate_limited) = (s.event().to_string(), s.get_bool("rate_limited"));
            warn!(event, count, rate_limited, "{count} more {event} record(s) folded into one audit record (flood)");
        }
    }
}
