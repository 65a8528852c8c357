//! The doors as the running daemon holds them: each door's clients with their keys and
//! ledgers (or its sequence file and ledger), the first-knock candidates they contribute to the
//! matcher, and the derivation of the rest of a sequence for a source.
//!
//! A door that cannot be loaded (bad key or sequence-file permissions, missing ledger, unreadable
//! sequence file) is refused with its reason while the other doors keep working; one whose ledger
//! was rolled back is refused by [`Doors::refuse_rolled_back`] (in `doors/rollback.rs`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use knock_core::config::{valid_name, Config, Door, TcpFlagRule};
use knock_core::keys::{read_key_file, read_private_file, Secret};
use knock_core::ledger::{ConsumeStore, Consumed, Ledger, LedgerError, WriterLock};
use knock_core::matcher::{burn_threshold, Candidate, CandidateId, DoorRules, KnockSet, Matcher, RestOfSequence};
use knock_core::seqfile::SequenceFile;
use knock_core::sequence::{first_knock, rest_knocks, Mode, Purpose, SequenceId, SERVER_ID_LEN};
use knock_core::time::utc_day;
use knock_core::Knock;

use crate::state::legacy_onetime::OneTimeFile;

pub(crate) mod rollback;

/// Used sequences (per client, or knockd one-time lines) that stay recognisable as replays.
const RECENT_USED: usize = 3;
/// How many windows beyond the window a client can be resynchronised from.
const RESYNC_AHEAD: u64 = 2;
/// What a sequence file is called in errors (as a key file is: the same private-file check).
const SEQUENCE_FILE: &str = "sequence file";
/// The largest sequence file read (a million sequences of 16 knocks fit).
const MAX_SEQUENCE_FILE: u64 = 256 << 20;

/// One client of a keyed door.
#[derive(Debug)]
pub struct KeyedClient {
    /// Client name (key file stem).
    pub name: String,
    secret: Secret,
    /// The key's fingerprint: its ledger's label and its identity in the audit log.
    fingerprint: String,
    /// When its key file was last written (unix ms): audit records older than that are not
    /// this key's.
    key_since_ms: u64,
    ledger: Ledger,
}

/// How a door's sequences are known.
#[derive(Debug)]
pub enum DoorKind {
    /// `hotp`: one key and ledger per client.
    Keyed(Vec<KeyedClient>),
    /// `file`: the sequence file and its ledger; during a rotation also the incoming file
    /// (`<sequence_file>.next`) and its ledger, accepted alongside so there is no gap. The index
    /// plays the client's part in candidate ids: 0 current, 1 incoming.
    File(Vec<(SequenceFile, Ledger)>),
    /// `static`: knockd's fixed sequence, never consumed.
    Static,
    /// knockd's `one_time_sequences`: the file is its own ledger (used lines start with `#`).
    KnockdOneTime(OneTimeFile),
}

/// A loaded door.
#[derive(Debug)]
pub struct RuntimeDoor {
    /// Its configuration.
    pub config: Door,
    /// Its sequences.
    pub kind: DoorKind,
}

/// Every loaded door, indexed as in the matcher.
#[derive(Debug)]
pub struct Doors {
    server_id: [u8; SERVER_ID_LEN],
    /// Loaded doors.
    pub doors: Vec<RuntimeDoor>,
    /// Doors or clients refused at load, with the reason (to log loudly).
    pub refused: Vec<String>,
}

/// The counters (or file lines) worth a first-knock entry: the last few used ones (so their
/// replays are recognised), the next `window` unused ones, and a few burned ones among them.
/// Burned counters take no window slot, so a flood that burns candidates cannot empty the
/// window; the span stays within four windows of `next`.
fn window_counters(next: u64, window: u64, is_used: impl Fn(u64) -> bool) -> Vec<u64> {
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
fn keyed_slots(door: &Door, now: u64, is_used: impl Fn(u64) -> bool, next: u64, window: u64) -> Vec<(u64, u32)> {
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
fn window_end(next: u64, window: u64, is_used: impl Fn(u64) -> bool) -> u64 {
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

/// The key file of `client` on a door with keys in `dir`.
pub fn key_path(dir: &Path, client: &str) -> PathBuf {
    dir.join(format!("{client}.key"))
}

/// Opens a ledger: to write, for the holder of the writer lock (the daemon); else read-only.
fn open_ledger(ledger_dir: &Path, label: &str, writer: Option<&WriterLock>) -> Result<Ledger, LedgerError> {
    let path = Ledger::path_for(ledger_dir, label);
    match writer {
        Some(lock) => Ledger::open(&path, label, lock),
        None => Ledger::read(&path, label),
    }
}

fn load_keyed(
    door: &Door,
    ledger_dir: &Path,
    writer: Option<&WriterLock>,
    refused: &mut Vec<String>,
) -> Result<DoorKind, String> {
    let dir = door.keys_dir.as_ref().ok_or("no keys directory")?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("keys directory {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    paths.sort();
    let mut clients = Vec::new();
    for path in paths {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        if !valid_name(&name) {
            refused.push(format!(
                "door {}: key file {} skipped: client names are a-z, 0-9, _ or -",
                door.name,
                path.display()
            ));
            continue;
        }
        let loaded = read_key_file(&path).map_err(|e| e.to_string()).and_then(|secret| {
            let label = secret.fingerprint();
            let key_since_ms = modified_ms(&path);
            open_ledger(ledger_dir, &label, writer)
                .map(|ledger| KeyedClient { name: name.clone(), secret, fingerprint: label, key_since_ms, ledger })
                .map_err(|e| e.to_string())
        });
        match loaded {
            Ok(c) => clients.push(c),
            Err(e) => refused.push(format!("door {} client {name} refused: {e}", door.name)),
        }
    }
    if clients.is_empty() {
        return Err(format!(
            "no usable client keys in {} (add one with `knockd client add --door {}`)",
            dir.display(),
            door.name
        ));
    }
    Ok(DoorKind::Keyed(clients))
}

/// When `path` was last modified, in unix milliseconds (0 when unknown: then every record counts).
fn modified_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads a door's sequence file, refused like a key file when group or others may read it.
pub fn load_sequence_file(path: &Path) -> Result<SequenceFile, String> {
    let bytes = read_private_file(path, SEQUENCE_FILE, MAX_SEQUENCE_FILE).map_err(|e| e.to_string())?;
    SequenceFile::parse(path, &bytes).map_err(|e| e.to_string())
}

fn load_file(door: &Door, ledger_dir: &Path, writer: Option<&WriterLock>) -> Result<DoorKind, String> {
    let path = door.sequence_file.as_ref().ok_or("no sequence file")?;
    let file = load_sequence_file(path)?;
    if let Some(bad) = file.sequences.iter().flat_map(|s| s.knocks.iter()).find(|k| !door.alphabet.contains(**k)) {
        return Err(format!("{}: knock {bad} lies outside knock_ports {}", path.display(), door.alphabet.range()));
    }
    let label = file.ledger_label();
    let ledger = open_ledger(ledger_dir, &label, writer).map_err(|e| e.to_string())?;
    let mut files = vec![(file, ledger)];
    let incoming = incoming_path(path);
    if incoming.exists() {
        let next = load_sequence_file(&incoming)?;
        let label = next.ledger_label();
        let ledger = open_ledger(ledger_dir, &label, writer).map_err(|e| e.to_string())?;
        files.push((next, ledger));
    }
    Ok(DoorKind::File(files))
}

/// Where `knockd sequences rotate` puts the incoming sequence file of a door.
pub fn incoming_path(sequence_file: &Path) -> PathBuf {
    let mut name = sequence_file.as_os_str().to_owned();
    name.push(".next");
    PathBuf::from(name)
}

impl Doors {
    /// Loads every door of `config`; failures are collected in `refused`. With `writer` (the
    /// daemon's lock) the ledgers are opened to write; without, read-only (`knockd status`).
    pub fn load(
        config: &Config,
        server_id: [u8; SERVER_ID_LEN],
        ledger_dir: &Path,
        writer: Option<&WriterLock>,
    ) -> Doors {
        let mut doors = Vec::new();
        let mut refused = Vec::new();
        for door in &config.doors {
            let knockd_file = door.legacy.as_ref().and_then(|l| l.one_time_sequences.as_ref());
            let kind = match (door.mode, knockd_file) {
                (_, Some(path)) => OneTimeFile::load(path).map(DoorKind::KnockdOneTime),
                (Mode::Hotp | Mode::Totp, None) => load_keyed(door, ledger_dir, writer, &mut refused),
                (Mode::File, None) => load_file(door, ledger_dir, writer),
                (Mode::Static, None) => Ok(DoorKind::Static),
            };
            match kind {
                Ok(kind) => doors.push(RuntimeDoor { config: door.clone(), kind }),
                Err(e) => refused.push(format!("door {} refused: {e}", door.name)),
            }
        }
        Doors { server_id, doors, refused }
    }

    fn seq_id(&self, door: &RuntimeDoor, client: &str, purpose: Purpose, counter: u64, epoch: u32) -> SequenceId {
        SequenceId {
            purpose,
            server_id: self.server_id,
            door: door.config.name.clone(),
            client: client.to_string(),
            mode: door.config.mode,
            counter,
            epoch,
        }
    }

    /// The first-knock candidates of one client (or of a file/static door): the next `window`
    /// unused counters as fresh, and the `window` counters before them plus burned ones as
    /// used (so their completion is recognised as a replay), for yesterday, today and tomorrow.
    pub fn candidates(&self, door_idx: usize, client_idx: usize, now: u64) -> Vec<Candidate> {
        let Some(door) = self.doors.get(door_idx) else { return Vec::new() };
        let window = u64::from(door.config.window);
        let mk = |counter, epoch, purpose, knocks: &[Knock], used| Candidate {
            id: CandidateId { door: door_idx, client: client_idx, purpose, counter, epoch },
            first: knocks[0],
            used,
            rest: Some(Arc::from(&knocks[1..])),
        };
        let mut out = Vec::new();
        match &door.kind {
            DoorKind::Keyed(clients) => {
                let Some(c) = clients.get(client_idx) else { return out };
                let purposes: &[Purpose] =
                    if door.config.close { &[Purpose::Open, Purpose::Close] } else { &[Purpose::Open] };
                for (counter, epoch) in keyed_slots(&door.config, now, |n| c.ledger.is_used(n), c.ledger.next(), window)
                {
                    let used = c.ledger.is_used(counter);
                    for &purpose in purposes {
                        let id = self.seq_id(door, &c.name, purpose, counter, epoch);
                        let alphabet = &door.config.alphabet;
                        let first = first_knock(&c.secret, &id, alphabet);
                        if door.config.bind_source {
                            // Knocks 2..K depend on the source: derived when a source starts.
                            let id = CandidateId { door: door_idx, client: client_idx, purpose, counter, epoch };
                            out.push(Candidate { id, first, used, rest: None });
                        } else {
                            let mut seq = vec![first];
                            seq.extend(rest_knocks(&c.secret, &id, alphabet, first, door.config.length, None));
                            out.push(mk(counter, epoch, purpose, &seq, used));
                        }
                    }
                }
            }
            DoorKind::File(files) => {
                let Some((file, ledger)) = files.get(client_idx) else { return out };
                for i in window_counters(ledger.next(), window, |n| ledger.is_used(n)) {
                    if let Some(s) = file.sequences.get(i as usize) {
                        out.push(mk(i, 0, Purpose::Open, &s.knocks, ledger.is_used(i)));
                    }
                }
            }
            DoorKind::Static => {
                if !door.config.static_sequence.is_empty() {
                    out.push(mk(0, 0, Purpose::Open, &door.config.static_sequence, false));
                }
            }
            DoorKind::KnockdOneTime(f) => {
                let current = f.current().unwrap_or(f.entries().len());
                let recent = current.saturating_sub(RECENT_USED);
                for (i, e) in f.entries().iter().enumerate().take(current + 1).skip(recent) {
                    if !e.knocks.is_empty() {
                        out.push(mk(i as u64, 0, Purpose::Open, &e.knocks, e.used));
                    }
                }
            }
        }
        out
    }

    /// Number of clients of a door (1 for file and static doors).
    pub fn client_count(&self, door_idx: usize) -> usize {
        match self.doors.get(door_idx).map(|d| &d.kind) {
            Some(DoorKind::Keyed(c)) => c.len(),
            Some(DoorKind::File(files)) => files.len(),
            Some(_) => 1,
            None => 0,
        }
    }

    /// The matching rules of a door: ours (the whole range counts, SYN only, burn on sight), or
    /// knockd's for a door from a knockd.conf (its sequence's knocks only, its tcpflags, a wrong
    /// knock resets, nothing burned).
    pub fn rules(&self, door_idx: usize, candidates: &[Candidate]) -> Option<DoorRules> {
        let d = &self.doors.get(door_idx)?.config;
        let (knocks, tcp_flags, legacy) = match &d.legacy {
            None => (KnockSet::Range(d.alphabet.clone()), TcpFlagRule::SYN_ONLY, false),
            Some(l) => {
                let mut set: Vec<Knock> = candidates
                    .iter()
                    .flat_map(|c| std::iter::once(c.first).chain(c.rest.iter().flat_map(|r| r.iter().copied())))
                    .collect();
                set.sort();
                set.dedup();
                (KnockSet::Exact(set), l.tcp_flags, true)
            }
        };
        Some(DoorRules {
            knocks,
            tcp_flags,
            burn_at: (!legacy).then(|| burn_threshold(d.alphabet.size(), d.length)),
            strict_order: legacy,
            addresses: d.addresses.clone(),
            seq_timeout_ms: d.seq_timeout.as_millis() as u64,
            misses: if legacy { 0 } else { d.misses },
            per_port: !legacy,
        })
    }

    /// The rules the capture filter is compiled from: each door's, with a knockd one-time door
    /// watching every line of its file (its current line changes while the filter stays).
    pub fn filter_rules(&self, now: u64) -> Vec<DoorRules> {
        (0..self.doors.len())
            .filter_map(|i| {
                // Only knockd's doors watch exact knocks taken from their candidates; ours
                // watch their whole range, so deriving candidates here would be wasted work.
                let cands: Vec<Candidate> = match &self.doors[i].kind {
                    DoorKind::KnockdOneTime(f) => f
                        .entries()
                        .iter()
                        .filter(|e| !e.knocks.is_empty())
                        .map(|e| Candidate {
                            id: CandidateId { door: i, client: 0, purpose: Purpose::Open, counter: 0, epoch: 0 },
                            first: e.knocks[0],
                            used: e.used,
                            rest: Some(Arc::from(&e.knocks[1..])),
                        })
                        .collect(),
                    _ if self.doors[i].config.legacy.is_some() => self.candidates(i, 0, now),
                    _ => Vec::new(),
                };
                self.rules(i, &cands)
            })
            .collect()
    }

    /// Sets up one client (or the one sequence list) of a door in the matcher, with the door's
    /// rules (a knockd door's watched knocks follow its current sequences).
    pub fn install_client(&self, matcher: &mut Matcher, door_idx: usize, client_idx: usize, now: u64) {
        let cands = self.candidates(door_idx, client_idx, now);
        if client_idx == 0 || self.doors.get(door_idx).is_some_and(|d| d.config.legacy.is_some()) {
            if let Some(rules) = self.rules(door_idx, &cands) {
                matcher.set_door(door_idx, rules);
            }
        }
        matcher.set_client_candidates(door_idx, client_idx, &cands);
    }

    /// Sets up every door and every client in the matcher.
    pub fn install(&self, matcher: &mut Matcher, now: u64) {
        for i in 0..self.doors.len() {
            self.install_door(matcher, i, now);
        }
    }

    /// Sets up every client of one door in the matcher.
    pub fn install_door(&self, matcher: &mut Matcher, door_idx: usize, now: u64) {
        for c in 0..self.client_count(door_idx) {
            self.install_client(matcher, door_idx, c, now);
        }
    }

    /// Each door's [`time_bucket`] at `now`.
    pub fn time_buckets(&self, now: u64) -> Vec<u64> {
        self.doors.iter().map(|d| time_bucket(&d.config, now)).collect()
    }

    fn ledger_mut(&mut self, id: &CandidateId) -> Option<&mut Ledger> {
        match &mut self.doors.get_mut(id.door)?.kind {
            DoorKind::Keyed(clients) => clients.get_mut(id.client).map(|c| &mut c.ledger),
            DoorKind::File(files) => files.get_mut(id.client).map(|f| &mut f.1),
            DoorKind::Static | DoorKind::KnockdOneTime(_) => None,
        }
    }

    /// Consumes a completed candidate durably. Static doors consume nothing (always fresh).
    pub fn consume(&mut self, id: &CandidateId) -> Result<Consumed, LedgerError> {
        if let Some(DoorKind::KnockdOneTime(f)) = self.doors.get_mut(id.door).map(|d| &mut d.kind) {
            let path = f.path().to_path_buf();
            return match f.invalidate(id.counter as usize) {
                Ok(true) => Ok(Consumed::Fresh),
                Ok(false) => Ok(Consumed::AlreadyUsed),
                Err(e) => Err(LedgerError::Io { path, source: std::io::Error::other(e) }),
            };
        }
        let is_static = matches!(self.doors.get(id.door).map(|d| &d.kind), Some(DoorKind::Static));
        let totp = self.doors.get(id.door).is_some_and(|d| d.config.mode == Mode::Totp);
        match self.ledger_mut(id) {
            Some(l) if totp => l.mark_used(id.counter),
            Some(l) => l.consume(id.counter),
            // knockd's static sequences are never consumed.
            None if is_static => Ok(Consumed::Fresh),
            // A candidate of a client or door no longer loaded (revoked on reload): never open.
            None => Ok(Consumed::AlreadyUsed),
        }
    }

    /// After a line of a door's incoming file was used, the incoming file becomes the door's
    /// file: the old one is kept as `<sequence_file>.old-<sha>` (its ledger stays in the state
    /// directory), the rename is synced, and the door is rebuilt. Returns true when it rotated.
    pub fn promote_incoming(&mut self, id: &CandidateId) -> Result<bool, String> {
        let Some(door) = self.doors.get_mut(id.door) else { return Ok(false) };
        let (DoorKind::File(files), Some(path)) = (&mut door.kind, door.config.sequence_file.clone()) else {
            return Ok(false);
        };
        if id.client != 1 || files.len() != 2 {
            return Ok(false);
        }
        let old = files.remove(0);
        let kept = PathBuf::from(format!("{}.old-{}", path.display(), &old.0.sha256[..12]));
        let err = |e: std::io::Error| format!("rotating {}: {e}", path.display());
        std::fs::rename(&path, &kept).map_err(err)?;
        std::fs::rename(incoming_path(&path), &path).map_err(err)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        Ok(true)
    }

    /// Whether a `hotp` candidate lies beyond its client's window (a resync candidate).
    pub fn beyond_window(&self, id: &CandidateId) -> bool {
        let Some(d) = self.doors.get(id.door) else { return false };
        match (&d.kind, d.config.mode) {
            (DoorKind::Keyed(clients), Mode::Hotp) => clients.get(id.client).is_some_and(|c| {
                id.counter > window_end(c.ledger.next(), u64::from(d.config.window), |n| c.ledger.is_used(n))
            }),
            _ => false,
        }
    }

    /// A report of every door for `knockd status`: clients and their next counters, unused
    /// sequences of file doors (with a warning below `warn_below`). Returns the text and the
    /// number of warnings.
    pub fn status(&self, warn_below: usize) -> (String, usize) {
        let mut out = String::new();
        let mut warnings = 0;
        for d in &self.doors {
            let name = &d.config.name;
            match &d.kind {
                DoorKind::Keyed(clients) => {
                    out.push_str(&format!("door {name} ({}): {} client(s)\n", d.config.mode.label(), clients.len()));
                    for c in clients {
                        out.push_str(&format!("  {:<16} next counter {}\n", c.name, c.ledger.next()));
                    }
                }
                DoorKind::File(files) => {
                    let unused = |(f, l): &(SequenceFile, Ledger)| {
                        (0..f.sequences.len() as u64).filter(|n| !l.is_used(*n)).count()
                    };
                    let left: usize = files.iter().map(unused).sum();
                    let total = files.first().map_or(0, |f| f.0.sequences.len());
                    out.push_str(&format!(
                        "door {name} (file): {} unused of {total} sequences",
                        files.first().map_or(0, unused)
                    ));
                    if let Some(next) = files.get(1) {
                        out.push_str(&format!("; incoming file: {} unused (rotation pending)", unused(next)));
                    }
                    out.push('\n');
                    if left < warn_below {
                        warnings += 1;
                        out.push_str(&format!(
                            "  warning: only {left} unused sequences left; run `knockd sequences rotate --door {name}`\n"
                        ));
                    }
                }
                DoorKind::Static => out.push_str(&format!("door {name} (static, replayable)\n")),
                DoorKind::KnockdOneTime(f) => {
                    let left = f.entries().iter().filter(|e| !e.used).count();
                    out.push_str(&format!("door {name} (knockd one_time_sequences): {left} unused lines\n"));
                    if left < warn_below {
                        warnings += 1;
                        out.push_str(&format!("  warning: only {left} unused lines left in {}\n", f.path().display()));
                    }
                }
            }
        }
        for r in &self.refused {
            warnings += 1;
            out.push_str(&format!("refused: {r}\n"));
        }
        (out, warnings)
    }

    /// (door, client, key fingerprint) of every loaded keyed client: a key replaced under the
    /// same name is another client.
    pub fn client_keys(&self) -> Vec<(String, String, String)> {
        self.doors
            .iter()
            .flat_map(|d| match &d.kind {
                DoorKind::Keyed(clients) => {
                    clients.iter().map(|c| (d.config.name.clone(), c.name.clone(), c.fingerprint.clone())).collect()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    /// Whether a candidate is consumed or burned already (false where nothing is kept).
    pub fn is_used(&self, id: &CandidateId) -> bool {
        match self.doors.get(id.door).map(|d| &d.kind) {
            Some(DoorKind::Keyed(clients)) => clients.get(id.client).is_some_and(|c| c.ledger.is_used(id.counter)),
            Some(DoorKind::File(files)) => files.get(id.client).is_some_and(|f| f.1.is_used(id.counter)),
            _ => false,
        }
    }

    /// The identity of a candidate's ledger, as audit records carry it in `key`: the key's
    /// fingerprint, the sequence file's ledger label, or the knockd one-time file's label
    /// (`None` for static doors, which keep nothing).
    pub fn key_label(&self, id: &CandidateId) -> Option<String> {
        match &self.doors.get(id.door)?.kind {
            DoorKind::Keyed(clients) => clients.get(id.client).map(|c| c.fingerprint.clone()),
            DoorKind::File(files) => files.get(id.client).map(|f| f.0.ledger_label()),
            DoorKind::KnockdOneTime(f) => Some(f.label().to_string()),
            DoorKind::Static => None,
        }
    }

    /// Burns a candidate, durably or (past the client's budget) in memory only; false when it
    /// was already used.
    pub fn burn(&mut self, id: &CandidateId, durable: bool) -> Result<bool, LedgerError> {
        match self.ledger_mut(id) {
            Some(l) if durable => l.burn(id.counter),
            Some(l) => Ok(l.burn_in_memory(id.counter)),
            None => Ok(false),
        }
    }

    /// The door of a candidate.
    pub fn door(&self, id: &CandidateId) -> Option<&RuntimeDoor> {
        self.doors.get(id.door)
    }

    /// The client name of a candidate (`-` for file and static doors).
    pub fn client_name(&self, id: &CandidateId) -> &str {
        match self.doors.get(id.door).map(|d| &d.kind) {
            Some(DoorKind::Keyed(c)) => c.get(id.client).map_or("?", |c| c.name.as_str()),
            _ => "-",
        }
    }

    /// For audit and logs: which sequence, as the admin counts it (`counter 5`, `line 12`).
    pub fn sequence_label(&self, id: &CandidateId) -> String {
        match self.doors.get(id.door).map(|d| &d.kind) {
            Some(DoorKind::File(files)) => {
                let line =
                    files.get(id.client).and_then(|f| f.0.sequences.get(id.counter as usize)).map_or(0, |s| s.line);
                format!("{}line {line}", if id.client > 0 { "incoming file " } else { "" })
            }
            Some(DoorKind::Static) => "static".into(),
            Some(DoorKind::KnockdOneTime(f)) => {
                format!("line {}", f.entries().get(id.counter as usize).map_or(0, |e| e.line))
            }
            _ => format!("counter {}", id.counter),
        }
    }
}

impl RestOfSequence for Doors {
    fn rest(&self, id: &CandidateId, first: Knock, source: IpAddr) -> Vec<Knock> {
        let Some(door) = self.doors.get(id.door) else { return Vec::new() };
        match &door.kind {
            DoorKind::Keyed(clients) => {
                let Some(c) = clients.get(id.client) else { return Vec::new() };
                let sid = self.seq_id(door, &c.name, id.purpose, id.counter, id.epoch);
                let src = door.config.bind_source.then_some(source);
                rest_knocks(&c.secret, &sid, &door.config.alphabet, first, door.config.length, src)
            }
            DoorKind::File(files) => files
                .get(id.client)
                .and_then(|f| f.0.sequences.get(id.counter as usize))
                .map_or(Vec::new(), |s| s.knocks[1..].to_vec()),
            DoorKind::Static => door.config.static_sequence.get(1..).map_or(Vec::new(), <[Knock]>::to_vec),
            DoorKind::KnockdOneTime(f) => {
                f.entries().get(id.counter as usize).map_or(Vec::new(), |e| e.knocks.get(1..).unwrap_or(&[]).to_vec())
            }
        }
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
        Config::parse(Path::new("/etc/knockd/knockd.toml"), text).unwrap().doors.remove(0)
    }

    #[test]
    fn totp_slots_follow_the_clock_even_when_it_jumps_back() {
        let d = totp_door();
        let t = 1_795_564_800; // 2026-11-25T00:00:00Z, step 59_852_160
        let step = t / 30;
        let slots: Vec<u64> = keyed_slots(&d, t, |_| false, 0, 10).into_iter().map(|s| s.0).collect();
        assert_eq!(slots, vec![step - 1, step, step + 1]);
        // The clock jumps back an hour: the steps of that time are offered; nothing is locked
        // out by a high-water mark (used steps are a set, see Ledger::mark_used).
        let back: Vec<u64> = keyed_slots(&d, t - 3600, |_| false, 0, 10).into_iter().map(|s| s.0).collect();
        assert_eq!(back, vec![step - 121, step - 120, step - 119]);
        assert_ne!(time_bucket(&d, t), time_bucket(&d, t + 30), "a new step rebuilds the door");
        assert_eq!(time_bucket(&d, t), time_bucket(&d, t + 29));
    }
}
