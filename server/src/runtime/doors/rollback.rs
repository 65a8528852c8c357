//! Rolled-back ledgers: every ledger that lacks a sequence the audit log records as used
//! ([`crate::state::audit::used`]) is refused, since a ledger restored from a backup or VM
//! snapshot would make used sequences open again (docs/OPERATIONS.md, "Locked out?" case 6).
//! Records of file doors written before records carried the ledger's `key` are not compared: a
//! line number alone does not say which file it was.
//!
//! One gap is not a rollback: the use the audit file's last record names when that is a grant
//! or close, whose ledger record was synced at the same time as it and may have been lost in a
//! crash (docs/ARCHITECTURE.md, "Two durable writes at once"). Its ledger is rolled forward
//! first: the use is written to it again, durably.

use std::collections::BTreeSet;
use std::path::Path;

use knock_core::ledger::{ConsumeStore, LedgerError};
use knock_core::seqfile::SequenceFile;
use knock_core::sequence::Mode;
use tracing::warn;

use super::error::{FileFix, Refusal};
use super::{DoorKind, Doors, RuntimeDoor};
use crate::state::audit::used::{audited_use_and_interrupted, AuditedUse};
use crate::state::legacy_onetime::OneTimeFile;

/// The highest sequence index of `file` that the audit log records as used (`lines`) and that
/// `store` does not have, and the highest recorded index.
fn file_gap(file: &SequenceFile, store: &dyn ConsumeStore, lines: &BTreeSet<u64>) -> Option<(usize, usize)> {
    let index = |line: &u64| file.sequences.binary_search_by_key(line, |s| s.line as u64).ok();
    let recorded: Vec<usize> = lines.iter().filter_map(index).collect();
    let missing = recorded.iter().rev().find(|i| !store.is_used(**i as u64))?;
    Some((*missing, *recorded.last()?))
}

/// The first line of a knockd one-time file not marked used though the audit log records that
/// line or a later one as used (they are used in order), and the last recorded line.
fn one_time_gap(f: &OneTimeFile, lines: &BTreeSet<u64>) -> Option<(usize, u64)> {
    let last = *lines.last()?;
    let open = f.entries().iter().find(|e| !e.used && !e.knocks.is_empty() && e.line as u64 <= last)?;
    Some((open.line, last))
}

/// Checks one door against the audit log: drops its rolled-back clients (or incoming file),
/// noting why in `refused`; false when the whole door is refused.
fn check_door(d: &mut RuntimeDoor, used: &AuditedUse, refused: &mut Vec<Refusal>) -> bool {
    let door = d.config.name.clone();
    match &mut d.kind {
        DoorKind::Keyed(clients) => {
            clients.retain(|c| {
                let recorded = used.of_client(&door, &c.name, &c.fingerprint, c.key_since_ms);
                let Some(n) = recorded.iter().rev().find(|n| !c.store.is_used(**n)) else { return true };
                let next = recorded.last().map_or(n + 1, |last| last + 1);
                refused.push(Refusal::ClientRolledBack {
                    door: door.clone(),
                    client: c.name.clone(),
                    ledger: c.store.location().to_path_buf(),
                    counter: *n,
                    next,
                });
                false
            });
            !clients.is_empty()
        }
        DoorKind::File(files) => {
            if let Some(incoming) = files.get(1) {
                let recorded = used.of_key(&incoming.file.ledger_label());
                if let Some((missing, _)) = file_gap(&incoming.file, incoming.store(), &recorded) {
                    refused.push(Refusal::IncomingRolledBack {
                        door: door.clone(),
                        file: incoming.file.path.clone(),
                        ledger: incoming.store().location().to_path_buf(),
                        line: incoming.file.sequences[missing].line,
                    });
                    files.truncate(1);
                }
            }
            let Some(current) = files.first() else { return false };
            let recorded = used.of_key(&current.file.ledger_label());
            let Some((missing, last)) = file_gap(&current.file, current.store(), &recorded) else {
                return true;
            };
            let fix = match current.file.sequences.get(last + 1) {
                Some(s) => FileFix::Line(s.line),
                None => FileFix::Next(last as u64 + 1),
            };
            refused.push(Refusal::FileRolledBack {
                door,
                ledger: current.store().location().to_path_buf(),
                file: current.file.path.clone(),
                line: current.file.sequences[missing].line,
                fix,
            });
            false
        }
        DoorKind::KnockdOneTime(f) => {
            let Some((line, last)) = one_time_gap(f, &used.of_key(f.label())) else { return true };
            refused.push(Refusal::OneTimeRolledBack { door, file: f.path().to_path_buf(), line, last });
            false
        }
        DoorKind::Static => true,
    }
}

/// Writes `position` to `store` again (`alone`: a `totp` step), durably; a store opened for
/// reading (`knockd status`) only takes it in memory, as the daemon will write it. An error
/// is logged and leaves the gap, which the check then refuses.
fn roll_forward(store: &mut dyn ConsumeStore, position: u64, alone: bool, door: &str, what: &str) {
    if store.is_used(position) {
        return;
    }
    let written = if alone { store.mark_used(position).map(drop) } else { store.consume(position).map(drop) };
    match written {
        Ok(()) => warn!(door, ledger = %store.location().display(),
            "{what}: position {position} written to the ledger from the audit log's last record \
             (the daemon stopped while that use was being made durable)"),
        Err(LedgerError::ReadOnly(_)) => {
            store.burn_in_memory(position);
        }
        Err(e) => warn!(door, "{what}: cannot roll the ledger forward from the audit log's last record: {e}"),
    }
}

/// Rolls one door's ledgers forward to the use `interrupted` names (at most one).
fn roll_door_forward(d: &mut RuntimeDoor, interrupted: &AuditedUse) {
    let door = d.config.name.clone();
    let totp = d.config.mode == Mode::Totp;
    match &mut d.kind {
        DoorKind::Keyed(clients) => {
            for c in clients.iter_mut() {
                for n in interrupted.of_client(&door, &c.name, &c.fingerprint, c.key_since_ms) {
                    roll_forward(c.store.as_mut(), n, totp, &door, &format!("client {}", c.name));
                }
            }
        }
        DoorKind::File(files) => {
            for f in files.iter_mut() {
                let lines = interrupted.of_key(&f.file.ledger_label());
                for line in lines {
                    let Ok(index) = f.file.sequences.binary_search_by_key(&line, |s| s.line as u64) else { continue };
                    roll_forward(f.store.as_mut(), index as u64, false, &door, "sequence file");
                }
            }
        }
        // A knockd one-time file is marked durably before the audit record is written.
        DoorKind::KnockdOneTime(_) | DoorKind::Static => {}
    }
}

impl Doors {
    /// Refuses every ledger that lacks a sequence the audit log records as used: a `hotp` or
    /// `totp` client, a file door (its incoming file alone, during a rotation), a knockd
    /// one-time door whose file lost `#` marks. Each stays refused until `knockd ledger
    /// recover`. The use the audit file's last record names, when the daemon may have stopped
    /// while making it durable, is written to its ledger first (see the module doc). Call right
    /// after `load`. Only the current audit file is read; a ledger and audit
    /// log restored together go unnoticed (for `hotp`, the epoch still limits that to two days).
    pub fn refuse_rolled_back(&mut self, audit_log: &Path) {
        let Some((used, interrupted)) = audited_use_and_interrupted(audit_log) else { return };
        for d in &mut self.doors {
            roll_door_forward(d, &interrupted);
        }
        let refused = &mut self.refused;
        self.doors.retain_mut(|d| check_door(d, &used, refused));
    }
}
