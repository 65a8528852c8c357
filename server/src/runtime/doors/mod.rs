//! The doors as the running daemon holds them: each door's clients with their keys and
//! consumption stores (or its sequence file and store), the first-knock candidates they
//! contribute to the matcher, the derivation of the rest of a sequence for a source, and the
//! durable use of a candidate through its store ([`Doors::consume`], [`Doors::burn`]).
//!
//! Loading (`load.rs`) refuses a door that cannot be loaded (bad key or sequence-file
//! permissions, missing ledger, unreadable sequence file) with its reason while the other doors
//! keep working; `rollback.rs` refuses one whose ledger was rolled back
//! ([`Doors::refuse_rolled_back`]); `window.rs` says which counters a client may knock now.

pub mod error;
mod load;
mod rollback;
mod window;

use std::net::IpAddr;
use std::sync::Arc;

use knock_core::config::{Door, TcpFlagRule};
use knock_core::keys::Secret;
use knock_core::ledger::{ConsumeStore, Consumed, LedgerError, PendingSync};
use knock_core::matcher::{burn_threshold, Candidate, CandidateId, DoorRules, KnockSet, Matcher, RestOfSequence};
use knock_core::seqfile::SequenceFile;
use knock_core::sequence::{first_knock, rest_knocks, Mode, Purpose, SequenceId, SERVER_ID_LEN};
use knock_core::Knock;

use crate::state::door_files::{promote_incoming, RotateError};
use crate::state::legacy_onetime::{OneTimeError, OneTimeFile};
use error::Refusal;
pub use window::time_bucket;
use window::{keyed_slots, window_counters, window_end, RECENT_USED};

/// One client of a keyed door.
#[derive(Debug)]
pub struct KeyedClient {
    /// Client name (key file stem).
    pub name: String,
    secret: Secret,
    /// The key's fingerprint: its store's label and its identity in the audit log.
    fingerprint: String,
    /// When its key file was last written (unix ms): audit records older than that are not
    /// this key's.
    key_since_ms: u64,
    /// What it has used (its ledger).
    store: Box<dyn ConsumeStore>,
}

impl KeyedClient {
    /// What the client has used.
    pub fn store(&self) -> &dyn ConsumeStore {
        self.store.as_ref()
    }
}

/// A file door's sequence file with what has been used of it.
#[derive(Debug)]
pub struct SequenceList {
    /// The file.
    pub file: SequenceFile,
    /// What has been used of it (its ledger).
    store: Box<dyn ConsumeStore>,
}

impl SequenceList {
    /// What has been used of the file.
    pub fn store(&self) -> &dyn ConsumeStore {
        self.store.as_ref()
    }

    /// How many of its sequences are unused.
    pub fn unused(&self) -> usize {
        (0..self.file.sequences.len() as u64).filter(|n| !self.store.is_used(*n)).count()
    }
}

/// How a door's sequences are known.
#[derive(Debug)]
pub enum DoorKind {
    /// `hotp`, `totp`: one key and store per client.
    Keyed(Vec<KeyedClient>),
    /// `file`: the sequence file and its store; during a rotation also the incoming file
    /// (`<sequence_file>.next`) and its store, accepted alongside so there is no gap. The index
    /// plays the client's part in candidate ids: 0 current, 1 incoming.
    File(Vec<SequenceList>),
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
    pub refused: Vec<Refusal>,
}

/// Who knocked which sequence, in the words of audit records and log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knocked {
    /// The door's name (`?` when it is gone).
    pub door: String,
    /// The client's name (`-` for file and static doors).
    pub client: String,
    /// Which sequence, as the admin counts it (`counter 5`, `line 12`).
    pub sequence: String,
    /// The identity of its ledger, as audit records carry it in `key` (`None` for static doors).
    pub key: Option<String>,
}

/// Why a candidate could not be used up durably: nothing opens.
#[derive(Debug, thiserror::Error)]
pub enum UseError {
    /// Its ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// knockd's one-time file, its own ledger.
    #[error(transparent)]
    OneTime(#[from] OneTimeError),
}

impl Doors {
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
                for (counter, epoch) in keyed_slots(&door.config, now, |n| c.store.is_used(n), c.store.next(), window) {
                    let used = c.store.is_used(counter);
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
                let Some(SequenceList { file, store }) = files.get(client_idx) else { return out };
                for i in window_counters(store.next(), window, |n| store.is_used(n)) {
                    if let Some(s) = file.sequences.get(i as usize) {
                        out.push(mk(i, 0, Purpose::Open, &s.knocks, store.is_used(i)));
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

    fn store_mut(&mut self, id: &CandidateId) -> Option<&mut Box<dyn ConsumeStore>> {
        match &mut self.doors.get_mut(id.door)?.kind {
            DoorKind::Keyed(clients) => clients.get_mut(id.client).map(|c| &mut c.store),
            DoorKind::File(files) => files.get_mut(id.client).map(|f| &mut f.store),
            DoorKind::Static | DoorKind::KnockdOneTime(_) => None,
        }
    }

    /// Uses up a completed candidate before anything opens: through its store (`totp` marks its
    /// time step alone), or by marking knockd's one-time line (durably). Static doors consume
    /// nothing (always fresh). A store's record is durable once the returned [`PendingSync`]
    /// has run, which the caller does while it writes the grant's audit record; nothing opens
    /// before both are done (docs/ARCHITECTURE.md, "Two durable writes at once").
    pub fn consume(&mut self, id: &CandidateId) -> Result<(Consumed, Option<PendingSync>), UseError> {
        if let Some(DoorKind::KnockdOneTime(f)) = self.doors.get_mut(id.door).map(|d| &mut d.kind) {
            let fresh = f.invalidate(id.counter as usize)?;
            return Ok((if fresh { Consumed::Fresh } else { Consumed::AlreadyUsed }, None));
        }
        let is_static = matches!(self.doors.get(id.door).map(|d| &d.kind), Some(DoorKind::Static));
        let totp = self.doors.get(id.door).is_some_and(|d| d.config.mode == Mode::Totp);
        Ok(match self.store_mut(id) {
            Some(s) => s.consume_pending(id.counter, totp)?,
            // knockd's static sequences are never consumed.
            None if is_static => (Consumed::Fresh, None),
            // A candidate of a client or door no longer loaded (revoked on reload): never open.
            None => (Consumed::AlreadyUsed, None),
        })
    }

    /// After a line of a door's incoming file was used, the incoming file becomes the door's
    /// file: the old one is kept as `<sequence_file>.old-<sha>` (its ledger stays in the state
    /// directory), the rename is synced, and the door is rebuilt. Returns true when it rotated.
    pub fn promote_incoming(&mut self, id: &CandidateId) -> Result<bool, RotateError> {
        let Some(door) = self.doors.get_mut(id.door) else { return Ok(false) };
        let (DoorKind::File(files), Some(path)) = (&mut door.kind, door.config.sequence_file.clone()) else {
            return Ok(false);
        };
        if id.client != 1 || files.len() != 2 {
            return Ok(false);
        }
        let old = files.remove(0);
        promote_incoming(&path, &old.file.sha256[..12])?;
        Ok(true)
    }

    /// Whether a `hotp` candidate lies beyond its client's window (a resync candidate).
    pub fn beyond_window(&self, id: &CandidateId) -> bool {
        let Some(d) = self.doors.get(id.door) else { return false };
        match (&d.kind, d.config.mode) {
            (DoorKind::Keyed(clients), Mode::Hotp) => clients.get(id.client).is_some_and(|c| {
                id.counter > window_end(c.store.next(), u64::from(d.config.window), |n| c.store.is_used(n))
            }),
            _ => false,
        }
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

    /// What the store of a candidate said about its last write (etcd's revision), for the
    /// audit record of the grant.
    pub fn receipt(&self, id: &CandidateId) -> Option<u64> {
        match self.doors.get(id.door).map(|d| &d.kind) {
            Some(DoorKind::Keyed(clients)) => clients.get(id.client).and_then(|c| c.store.receipt()),
            Some(DoorKind::File(files)) => files.get(id.client).and_then(|f| f.store.receipt()),
            _ => None,
        }
    }

    /// Reads every shared store again (what other nodes used) and rebuilds the candidates of
    /// the clients whose store changed. Returns the first error, after trying all of them.
    pub fn refresh_shared(&mut self, matcher: &mut Matcher, now: u64) -> Result<(), LedgerError> {
        let mut changed = Vec::new();
        let mut first_error = None;
        for (door_idx, d) in self.doors.iter_mut().enumerate() {
            let stores: Vec<&mut Box<dyn ConsumeStore>> = match &mut d.kind {
                DoorKind::Keyed(clients) => clients.iter_mut().map(|c| &mut c.store).collect(),
                DoorKind::File(files) => files.iter_mut().map(|f| &mut f.store).collect(),
                _ => Vec::new(),
            };
            for (client_idx, store) in stores.into_iter().enumerate() {
                match store.refresh() {
                    Ok(true) => changed.push((door_idx, client_idx)),
                    Ok(false) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        for (door_idx, client_idx) in changed {
            self.install_client(matcher, door_idx, client_idx, now);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether a candidate is consumed or burned already (false where nothing is kept).
    pub fn is_used(&self, id: &CandidateId) -> bool {
        match self.doors.get(id.door).map(|d| &d.kind) {
            Some(DoorKind::Keyed(clients)) => clients.get(id.client).is_some_and(|c| c.store.is_used(id.counter)),
            Some(DoorKind::File(files)) => files.get(id.client).is_some_and(|f| f.store.is_used(id.counter)),
            _ => false,
        }
    }

    /// The identity of a candidate's ledger, as audit records carry it in `key`: the key's
    /// fingerprint, the sequence file's ledger label, or the knockd one-time file's label
    /// (`None` for static doors, which keep nothing).
    pub fn key_label(&self, id: &CandidateId) -> Option<String> {
        match &self.doors.get(id.door)?.kind {
            DoorKind::Keyed(clients) => clients.get(id.client).map(|c| c.fingerprint.clone()),
            DoorKind::File(files) => files.get(id.client).map(|f| f.file.ledger_label()),
            DoorKind::KnockdOneTime(f) => Some(f.label().to_string()),
            DoorKind::Static => None,
        }
    }

    /// Who knocked which sequence (door, client, sequence and ledger labels), for the audit
    /// record and log line of a decision.
    pub fn knocked(&self, id: &CandidateId) -> Knocked {
        Knocked {
            door: self.door(id).map_or_else(|| "?".into(), |d| d.config.name.clone()),
            client: self.client_name(id).to_string(),
            sequence: self.sequence_label(id),
            key: self.key_label(id),
        }
    }

    /// Burns a candidate, durably or (past the client's budget) in memory only; false when it
    /// was already used.
    pub fn burn(&mut self, id: &CandidateId, durable: bool) -> Result<bool, LedgerError> {
        match self.store_mut(id) {
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
                    files.get(id.client).and_then(|f| f.file.sequences.get(id.counter as usize)).map_or(0, |s| s.line);
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
                .and_then(|f| f.file.sequences.get(id.counter as usize))
                .map_or(Vec::new(), |s| s.knocks[1..].to_vec()),
            DoorKind::Static => door.config.static_sequence.get(1..).map_or(Vec::new(), <[Knock]>::to_vec),
            DoorKind::KnockdOneTime(f) => {
                f.entries().get(id.counter as usize).map_or(Vec::new(), |e| e.knocks.get(1..).unwrap_or(&[]).to_vec())
            }
        }
    }
}
