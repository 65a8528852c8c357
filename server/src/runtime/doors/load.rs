//! Loading the doors of a configuration: each keyed client's key and ledger, a file door's
//! sequence file (and incoming file) with their ledgers, knockd's one-time file. A door or client
//! that cannot be loaded is refused with its reason ([`Refusal`]) while the others keep working.
//! Ledgers are reached through [`LedgerStores`] only (the ledger seam).

use std::path::Path;

use knock_core::config::{valid_name, Config, Door};
use knock_core::keys::read_key_file;
use knock_core::sequence::{Mode, SERVER_ID_LEN};

use super::error::{ClientError, DoorError, Refusal};
use super::{DoorKind, Doors, KeyedClient, RuntimeDoor, SequenceList};
use crate::state::door_files::{incoming_path, key_files, load_sequence_file, modified_ms};
use crate::state::ledgers::LedgerStores;
use crate::state::legacy_onetime::OneTimeFile;

impl Doors {
    /// Loads every door of `config`, with the ledgers `stores` opens (to write for the daemon,
    /// read-only for `knockd status`); what cannot be loaded is collected in `refused`.
    pub fn load(config: &Config, server_id: [u8; SERVER_ID_LEN], stores: &dyn LedgerStores) -> Doors {
        let mut doors = Vec::new();
        let mut refused = Vec::new();
        for door in &config.doors {
            let knockd_file = door.legacy.as_ref().and_then(|l| l.one_time_sequences.as_ref());
            let kind = match (door.mode, knockd_file) {
                (_, Some(path)) => OneTimeFile::load(path).map(DoorKind::KnockdOneTime).map_err(DoorError::from),
                (Mode::Hotp | Mode::Totp, None) => load_keyed(door, stores, &mut refused),
                (Mode::File, None) => load_file(door, stores),
                (Mode::Static, None) => Ok(DoorKind::Static),
            };
            match kind {
                Ok(kind) => doors.push(RuntimeDoor { config: door.clone(), kind }),
                Err(reason) => refused.push(Refusal::Door { door: door.name.clone(), reason }),
            }
        }
        Doors { server_id, doors, refused }
    }
}

fn load_keyed(door: &Door, stores: &dyn LedgerStores, refused: &mut Vec<Refusal>) -> Result<DoorKind, DoorError> {
    let dir = door.keys_dir.as_ref().ok_or(DoorError::NoKeysDir)?;
    let paths = key_files(dir).map_err(|source| DoorError::KeysDir { dir: dir.clone(), source })?;
    let mut clients = Vec::new();
    for path in paths {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        if !valid_name(&name) {
            refused.push(Refusal::BadKeyName { door: door.name.clone(), path });
            continue;
        }
        match load_client(&path, &name, stores) {
            Ok(c) => clients.push(c),
            Err(reason) => refused.push(Refusal::Client { door: door.name.clone(), client: name, reason }),
        }
    }
    if clients.is_empty() {
        return Err(DoorError::NoUsableKeys { dir: dir.clone(), door: door.name.clone() });
    }
    Ok(DoorKind::Keyed(clients))
}

/// One client: its key, and the store of the key's fingerprint.
fn load_client(path: &Path, name: &str, stores: &dyn LedgerStores) -> Result<KeyedClient, ClientError> {
    let secret = read_key_file(path)?;
    let fingerprint = secret.fingerprint();
    let store = stores.open(&fingerprint)?;
    Ok(KeyedClient { name: name.to_string(), secret, fingerprint, key_since_ms: modified_ms(path), store })
}

fn load_file(door: &Door, stores: &dyn LedgerStores) -> Result<DoorKind, DoorError> {
    let path = door.sequence_file.as_ref().ok_or(DoorError::NoSequenceFile)?;
    let file = load_sequence_file(path)?;
    if let Some(bad) = file.sequences.iter().flat_map(|s| s.knocks.iter()).find(|k| !door.alphabet.contains(**k)) {
        return Err(DoorError::KnockOutside { path: path.clone(), knock: *bad, range: door.alphabet.range() });
    }
    let store = stores.open(&file.ledger_label())?;
    let mut lists = vec![SequenceList { file, store }];
    let incoming = incoming_path(path);
    if incoming.exists() {
        let file = load_sequence_file(&incoming)?;
        let store = stores.open(&file.ledger_label())?;
        lists.push(SequenceList { file, store });
    }
    Ok(DoorKind::File(lists))
}
