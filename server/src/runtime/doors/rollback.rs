//! Rolled-back ledgers: every ledger that lacks a sequence the audit log records as used
//! ([`crate::state::audit::used`]) is refused, since a ledger restored from a backup or VM
//! snapshot would make used sequences open again (docs/OPERATIONS.md, "Locked out?" case 6).
//! Records of file doors written before records carried the ledger's `key` are not compared: a
//! line number alone does not say which file it was.

use std::collections::BTreeSet;
use std::path::Path;

use knock_core::ledger::ConsumeStore;
use knock_core::seqfile::SequenceFile;

use super::error::{FileFix, Refusal};
use super::{DoorKind, Doors, RuntimeDoor};
use crate::state::audit::used::{audited_use, AuditedUse};
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

impl Doors {
    /// Refuses every ledger that lacks a sequence the audit log records as used: a `hotp` or
    /// `totp` client, a file door (its incoming file alone, during a rotation), a knockd
    /// one-time door whose file lost `#` marks. Each stays refused until `knockd ledger
    /// recover`. Call right after `load`. Only the current audit file is read; a ledger and audit
    /// log restored together go unnoticed (for `hotp`, the epoch still limits that to two days).
    pub fn refuse_rolled_back(&mut self, audit_log: &Path) {
        let Some(used) = audited_use(audit_log) else { return };
        let refused = &mut self.refused;
        self.doors.retain_mut(|d| check_door(d, &used, refused));
    }
}
