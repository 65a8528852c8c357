//! The daemon loop: knocks from the capture threads go through the matcher, whose decisions
//! `decision.rs` acts on (a completed fresh sequence is consumed, then audited, both made
//! durable at once with `ledger_sync.rs`, then the door opens); the tick rebuilds doors whose time bucket changed, runs due stop commands,
//! syncs the audit log and watches the firewall (`recovery.rs`). SIGHUP reloads the
//! configuration (`reload.rs`), SIGTERM/SIGINT stop it cleanly.

mod decision;
mod ledger_sync;
mod recovery;
mod reload;
mod resync;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knock_core::config::{Config, ConfigError, LedgerBackend};
use knock_core::keys::hex;
use knock_core::ledger::{LedgerError, WriterLock};
use knock_core::matcher::{Limits, Matcher};
use knock_core::ratelimit::TokenBucket;
use knock_core::sequence::Mode;
use knock_core::time::unix_now;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::runtime::actions::{Actions, SetupError};
use crate::runtime::capture::{self, CaptureError, CaptureHandle, CapturedKnock, KnockBatch};
use crate::runtime::doors::error::Refusal;
use crate::runtime::doors::Doors;
use crate::runtime::notify::Notifier;
use crate::state::audit::{AuditLog, Record};
use crate::state::ledger_backend;
use crate::state::shared_ledgers::SharedLedgerSetupError;
use crate::state::{StateDir, StateError};
use ledger_sync::LedgerSyncer;
use resync::PendingResyncs;

/// How often timeouts are checked and lazy audit records synced.
const TICK: Duration = Duration::from_millis(100);

/// Other log lines packets can cause (errors on the knock path): at once, then one a second.
const CHATTER_BURST: u32 = 20;
const CHATTER_REFILL_MS: u64 = 1_000;

/// Why the daemon cannot start (or run).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory (its server id, its permissions).
    #[error(transparent)]
    State(#[from] StateError),
    /// The ledgers' writer lock: another daemon runs on this state directory.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// No door could be loaded: a configuration that does not heal by itself.
    #[error("{config}: every door was refused (see the errors above)")]
    EveryDoorRefused {
        /// The configuration file.
        config: PathBuf,
    },
    /// The audit log cannot be opened.
    #[error("audit log {path}: {source}")]
    Audit {
        /// The log.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The firewall or the journal of stop commands.
    #[error(transparent)]
    Actions(#[from] SetupError),
    /// The capture cannot start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// `[ledger]`'s etcd settings cannot be used (its TLS files, its key's permissions).
    #[error(transparent)]
    SharedLedger(#[from] SharedLedgerSetupError),
}

/// How often the doors are loaded again while the shared ledger did not answer at load.
const RETRY_LOAD: Duration = Duration::from_secs(5);
/// How often a shared ledger is read again for what other nodes used.
const REFRESH_SHARED: Duration = Duration::from_secs(2);

/// Everything the loop needs.
pub struct Daemon {
    config: Config,
    state: StateDir,
    doors: Doors,
    matcher: Matcher,
    audit: AuditLog,
    /// Syncs a use's ledger record while the grant's audit record is written.
    ledger_sync: LedgerSyncer,
    /// The firewall, knockd's commands, the live grants.
    actions: Actions,
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
    /// When to load the doors again, while a shared ledger did not answer at load.
    retry_load: Option<Instant>,
    /// When to read the shared ledger again for what other nodes used.
    next_refresh: Instant,
    /// The doors were loaded again and the capture's filter must follow.
    recapture: bool,
    /// A reload is the daemon's own retry while the shared ledger did not answer.
    retrying: bool,
}

/// SHA-256 of a configuration file, for the audit trail (empty when unreadable).
fn config_hash(config: &Config) -> String {
    std::fs::read(&config.path).map(|b| hex(&Sha256::digest(b))).unwrap_or_default()
}

impl Daemon {
    /// Loads state, doors, audit log and firewall. Fails when nothing could be protected.
    pub fn new(config: Config) -> Result<Daemon, DaemonError> {
        let state = StateDir::new(&config.server.state_dir);
        let derives = config.doors.iter().any(|d| matches!(d.mode, Mode::Hotp | Mode::Totp));
        let server_id = state.server_id_if(derives)?;
        for w in &config.warnings {
            warn!("{w}");
        }
        for d in config.doors.iter().filter(|d| d.mode == Mode::Static) {
            warn!(door = %d.name, "static sequence: anyone who sees it once can replay it; \
                `knockd migrate` writes a one-time equivalent");
        }
        // The one writer of the ledgers for as long as the daemon runs: a second daemon on this
        // state directory, or `ledger recover` meanwhile, is refused; readers never write.
        let ledger_lock = WriterLock::acquire(&state.ledger_dir())?;
        let stores = ledger_backend::configured(&config, &state.ledger_dir(), Some(&ledger_lock))?;
        let mut doors = Doors::load(&config, server_id, stores.as_ref());
        drop(stores);
        doors.refuse_rolled_back(&state.audit_log());
        for r in &doors.refused {
            error!("{r}");
        }
        // A shared ledger that does not answer yet heals by itself: start (the doors it keeps
        // stay shut, the firewall drops) and load them again until it answers.
        let waiting = doors.refused.iter().any(Refusal::waits_for_shared_ledger);
        if doors.doors.is_empty() && !waiting {
            return Err(DaemonError::EveryDoorRefused { config: config.path.clone() });
        }
        if waiting {
            warn!("the shared ledger does not answer: the doors it keeps stay shut until it does; trying again every {} s",
                RETRY_LOAD.as_secs());
        }
        let audit = AuditLog::open(&state.audit_log())
            .map_err(|source| DaemonError::Audit { path: state.audit_log(), source })?;
        let actions = Actions::start(&config)?;
        let now = unix_now();
        let mut matcher = Matcher::new(Limits::default());
        doors.install(&mut matcher, now);
        let buckets = doors.time_buckets(now);
        Ok(Daemon {
            config,
            state,
            doors,
            matcher,
            audit,
            ledger_sync: LedgerSyncer::start(),
            actions,
            resyncs: PendingResyncs::default(),
            ledger_lock,
            burn_budget: HashMap::new(),
            chatter: TokenBucket::new(CHATTER_BURST, CHATTER_REFILL_MS, 0),
            server_id,
            started: Instant::now(),
            buckets,
            only_ipv4: false,
            notifier: None,
            retry_load: waiting.then(|| Instant::now() + RETRY_LOAD),
            next_refresh: Instant::now() + REFRESH_SHARED,
            recapture: false,
            retrying: false,
        })
    }

    fn now_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Starts the capture threads for the current doors and interfaces.
    fn start_capture(&self, tx: &SyncSender<KnockBatch>) -> Result<CaptureHandle, CaptureError> {
        let filter = capture::bpf_filter_rules(&self.doors.filter_rules(unix_now()));
        capture::spawn_live(&self.config.server.interfaces, &filter, tx.clone())
    }

    /// Runs until `stop` is set, capturing on the configured interfaces. When `reload` is set
    /// (SIGHUP), `load` reads the configuration again and the daemon takes it if it is valid.
    pub fn run(
        mut self,
        stop: Arc<AtomicBool>,
        reload: Arc<AtomicBool>,
        load: &dyn Fn() -> Result<Config, ConfigError>,
    ) -> Result<(), DaemonError> {
        // In batches (one per capture wake-up); the knocks they hold are bounded per interface.
        let (tx, rx) = sync_channel::<KnockBatch>(1024);
        let mut handle = self.start_capture(&tx)?;
        let names: Vec<&str> = self.doors.doors.iter().map(|d| d.config.name.as_str()).collect();
        info!(
            interfaces = %self.config.server.interfaces.join(","),
            doors = %names.join(","),
            "knockd started"
        );
        let start =
            Record::new("start").with("doors", names.join(",")).with("config_sha256", config_hash(&self.config));
        self.audit_write(start, true);
        // The table was installed in `new` and every capture is open (packets queue from now on).
        self.notify_ready();
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(TICK) {
                Ok(batch) => batch.iter().for_each(|k| self.on_knock(k)),
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
            if std::mem::take(&mut self.recapture) {
                // Doors loaded again (the shared ledger answers now): their filter may differ.
                match self.start_capture(&tx) {
                    Ok(new) => handle = new,
                    Err(e) => error!("capture on the doors loaded again failed, keeping the old capture: {e}"),
                }
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
        self.actions.tick(knock_core::time::unix_now_ms());
        let now = self.now_ms(Instant::now());
        let events = self.matcher.tick(now);
        self.handle(events, Instant::now());
        if let Err(e) = self.audit.sync() {
            error!("audit log {}: {e}", self.audit.path().display());
        }
        self.log_summaries();
        self.audit.anchor_if_due(knock_core::time::unix_now_ms());
        self.follow_shared_ledger();
    }

    /// With a shared ledger: every few seconds, take what the other nodes used (so each
    /// client's window follows it), and load the doors again while the ledger did not answer
    /// at load. Nothing is granted from this: each use is decided by its own transaction.
    fn follow_shared_ledger(&mut self) {
        if self.config.ledger == LedgerBackend::File {
            return;
        }
        let now = Instant::now();
        if self.retry_load.is_some_and(|at| now >= at) {
            self.retry_load = None;
            self.retrying = true;
            let reloaded = self.reload(Ok(self.config.clone()));
            self.retrying = false;
            self.recapture |= reloaded;
            if self.doors.refused.iter().any(Refusal::waits_for_shared_ledger) {
                self.retry_load = Some(now + RETRY_LOAD);
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + REFRESH_SHARED;
            if let Err(e) = self.doors.refresh_shared(&mut self.matcher, unix_now()) {
                if self.chatter.take(self.now_ms(now)) {
                    warn!("{e}");
                }
            }
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
