//! Ledgers shared by the nodes of an HA pair: one etcd key per key fingerprint or sequence-file
//! label (`<prefix>ledger/<label>`), holding the whole ledger (knock_core::shared_ledger), changed
//! only by compare-and-swap transactions. Each use of a sequence is one transaction that
//! compares the key's revision this node last saw and writes the new ledger; it commits before
//! the grant, as the file ledger's fdatasync does. A lost race means another node used it
//! first: the node reads the key again and refuses (a replay) if the sequence is used now.
//!
//! Nothing here grants from a local copy: the copy only says what is used for certain (used
//! never becomes unused), and whether a sequence is fresh is decided by the transaction.
//! An etcd that does not answer in time (down, without quorum, cut off) makes the write fail,
//! and the knock fails closed. A failed write whose answer was lost may still have committed:
//! the sequence then reads as used later, and the client moves on to its next one. A write one
//! member committed but answered too late, so that the next member tried finds it in place, is
//! recognised by its random nonce and counts as this node's use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use knock_core::config::EtcdSettings;
use knock_core::counters::Counters;
use knock_core::keys::{read_private_file, KeyError};
use knock_core::ledger::{ConsumeStore, Consumed, LedgerError};
use knock_core::shared_ledger::{decode, encode, SharedValue, Writer};
use knock_core::time::unix_now_ms;
use knock_etcd::{Client, EtcdError, Settings, Swap, TlsFiles};

use super::ledgers::LedgerStores;

/// How often one use retries after losing a race to another node (each retry reads the key
/// back in the same transaction, so a retry costs one round trip).
const RACE_RETRIES: usize = 4;

/// Why the etcd backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SharedLedgerSetupError {
    /// The client key is readable by others, or unreadable.
    #[error("[ledger] key_file: {0}")]
    Key(#[from] KeyError),
    /// A TLS file or an endpoint is not usable.
    #[error("[ledger]: {0}")]
    Etcd(#[from] EtcdError),
}

/// The ledgers of the configured etcd cluster.
#[derive(Debug)]
pub struct EtcdLedgers {
    client: Arc<Client>,
    prefix: String,
    node: String,
    writable: bool,
}

impl EtcdLedgers {
    /// A connection (made lazily) to the cluster of `config`: writable for the daemon and the
    /// admin commands that change ledgers, read-only for `status` and `client list`.
    pub fn new(config: &EtcdSettings, writable: bool) -> Result<EtcdLedgers, SharedLedgerSetupError> {
        // The key of this node's certificate: refused like a client key when others can read it.
        read_private_file(&config.key_file, "etcd client key", 1 << 16)?;
        let settings = Settings {
            endpoints: config.endpoints.clone(),
            tls: Some(TlsFiles {
                ca: config.ca_file.clone(),
                cert: config.cert_file.clone(),
                key: config.key_file.clone(),
            }),
            timeout: config.timeout,
        };
        Ok(EtcdLedgers {
            client: Arc::new(Client::new(&settings)?),
            prefix: config.prefix.clone(),
            node: config.node.clone(),
            writable,
        })
    }

    fn key(&self, label: &str) -> Vec<u8> {
        format!("{}ledger/{label}", self.prefix).into_bytes()
    }

    fn location(&self, label: &str) -> PathBuf {
        PathBuf::from(format!("etcd:{}ledger/{label}", self.prefix))
    }

    /// Every ledger under the prefix, decoded: (label, ledger).
    pub fn all(&self) -> Result<Vec<(String, Counters)>, LedgerError> {
        let prefix = format!("{}ledger/", self.prefix);
        let shared = |reason: String| LedgerError::Shared { location: PathBuf::from(format!("etcd:{prefix}")), reason };
        let (kvs, _) = self.client.list(prefix.as_bytes()).map_err(|e| shared(e.to_string()))?;
        kvs.into_iter()
            .map(|kv| {
                let label = String::from_utf8_lossy(&kv.key[prefix.len().min(kv.key.len())..]).into_owned();
                let value = decode(&label, &kv.value).map_err(|e| shared(format!("{label}: {e}")))?;
                Ok((label, value.counters))
            })
            .collect()
    }

    /// Writes `counters` merged into what the ledger of `label` holds (creating it if missing):
    /// never moves a ledger back (`knockd ledger import`). Returns the ledger as written.
    pub fn merge_into(&self, label: &str, counters: &Counters) -> Result<Counters, LedgerError> {
        let mut store = match self.open_ledger(label) {
            Ok(store) => store,
            Err(LedgerError::Missing(_)) => {
                self.create(label)?;
                self.open_ledger(label)?
            }
            Err(e) => return Err(e),
        };
        let wanted = counters.clone();
        store.write(move |c| {
            let merged = c.merge(&wanted);
            let changed = merged != *c;
            *c = merged;
            changed
        })?;
        Ok(store.counters)
    }

    fn open_ledger(&self, label: &str) -> Result<EtcdLedger, LedgerError> {
        let key = self.key(label);
        let location = self.location(label);
        let shared = |reason: String| LedgerError::Shared { location: location.clone(), reason };
        let (kv, _) = self.client.get(&key).map_err(|e| shared(e.to_string()))?;
        let kv = kv.ok_or_else(|| LedgerError::Missing(location.clone()))?;
        let value = read_value(label, &location, &kv.value)?;
        Ok(EtcdLedger {
            client: self.client.clone(),
            key,
            label: label.to_string(),
            location: location.clone(),
            node: self.node.clone(),
            writable: self.writable,
            counters: value.counters,
            mod_revision: kv.mod_revision,
            receipt: None,
        })
    }
}

fn read_value(label: &str, location: &Path, bytes: &[u8]) -> Result<SharedValue, LedgerError> {
    decode(label, bytes).map_err(|e| LedgerError::Corrupt {
        path: location.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })
}

impl LedgerStores for EtcdLedgers {
    fn open(&self, label: &str) -> Result<Box<dyn ConsumeStore>, LedgerError> {
        Ok(Box::new(self.open_ledger(label)?))
    }

    fn create(&self, label: &str) -> Result<(), LedgerError> {
        let location = self.location(label);
        let text = encode(label, &Counters::default(), None);
        match self.client.put_if(&self.key(label), 0, text.as_bytes()) {
            Ok(Swap::Written { .. }) => Ok(()),
            Ok(Swap::Conflict { .. }) => Err(LedgerError::Shared {
                location,
                reason: "it exists already (another node created it, or the key was added before)".into(),
            }),
            Err(e) => Err(LedgerError::Shared { location, reason: e.to_string() }),
        }
    }

    fn describe(&self, label: &str) -> PathBuf {
        self.location(label)
    }
}

/// One shared ledger, as this node last read it.
#[derive(Debug)]
pub struct EtcdLedger {
    client: Arc<Client>,
    key: Vec<u8>,
    label: String,
    location: PathBuf,
    node: String,
    writable: bool,
    /// What the cluster held at `mod_revision`, plus burns kept in this process only.
    counters: Counters,
    mod_revision: i64,
    /// The revision of this node's last write.
    receipt: Option<u64>,
}

impl EtcdLedger {
    fn shared(&self, reason: impl Into<String>) -> LedgerError {
        LedgerError::Shared { location: self.location.clone(), reason: reason.into() }
    }

    /// Applies `change` to the ledger in one transaction, retrying against what another node
    /// wrote meanwhile. Ok(false): `change` found nothing to do (the counter is used already).
    fn write(&mut self, change: impl Fn(&mut Counters) -> bool) -> Result<bool, LedgerError> {
        if !self.writable {
            return Err(LedgerError::ReadOnly(self.location.clone()));
        }
        for _ in 0..RACE_RETRIES {
            let mut next = self.counters.clone();
            if !change(&mut next) {
                return Ok(false);
            }
            let writer = Writer { node: self.node.clone(), unix_ms: unix_now_ms(), nonce: rand::random() };
            let text = encode(&self.label, &next, Some(&writer));
            match self.client.put_if(&self.key, self.mod_revision, text.as_bytes()) {
                Ok(Swap::Written { revision }) => {
                    self.counters = next;
                    self.mod_revision = revision;
                    self.receipt = u64::try_from(revision).ok();
                    return Ok(true);
                }
                Ok(Swap::Conflict { current: Some(kv) }) => {
                    let theirs = read_value(&self.label, &self.location, &kv.value)?;
                    if theirs.writer.as_ref() == Some(&writer) {
                        // This very write: a member committed it but its answer came too late,
                        // and the next member found it in place (its random nonce says so). It
                        // is this node's use, made once.
                        self.counters = next;
                        self.mod_revision = kv.mod_revision;
                        self.receipt = u64::try_from(kv.mod_revision).ok();
                        return Ok(true);
                    }
                    // Another node wrote first: take what it wrote (and keep this process's own
                    // burns), then decide again.
                    self.counters = theirs.counters.merge(&self.counters);
                    self.mod_revision = kv.mod_revision;
                }
                Ok(Swap::Conflict { current: None }) => {
                    return Err(self.shared("the key is gone (deleted in etcd); recover it with `knockd ledger import`"))
                }
                Err(e) => return Err(self.shared(e.to_string())),
            }
        }
        Err(self.shared(format!("{RACE_RETRIES} writes in a row lost to other nodes")))
    }
}

impl ConsumeStore for EtcdLedger {
    fn is_used(&self, counter: u64) -> bool {
        self.counters.is_used(counter)
    }

    fn consume(&mut self, counter: u64) -> Result<Consumed, LedgerError> {
        let fresh = self.write(|c| c.consume(counter))?;
        Ok(if fresh { Consumed::Fresh } else { Consumed::AlreadyUsed })
    }

    fn mark_used(&mut self, counter: u64) -> Result<Consumed, LedgerError> {
        let fresh = self.write(|c| c.mark(counter))?;
        Ok(if fresh { Consumed::Fresh } else { Consumed::AlreadyUsed })
    }

    fn burn(&mut self, counter: u64) -> Result<bool, LedgerError> {
        self.write(|c| c.mark(counter))
    }

    fn burn_in_memory(&mut self, counter: u64) -> bool {
        self.counters.mark(counter)
    }

    fn next(&self) -> u64 {
        self.counters.next()
    }

    fn location(&self) -> &Path {
        &self.location
    }

    fn skip_to(&mut self, next: u64) -> Result<(), LedgerError> {
        if next > self.counters.next() {
            self.write(|c| {
                c.apply_consume(next - 1);
                true
            })?;
        }
        Ok(())
    }

    fn receipt(&self) -> Option<u64> {
        self.receipt
    }

    fn refresh(&mut self) -> Result<bool, LedgerError> {
        let (kv, _) = self.client.get(&self.key).map_err(|e| self.shared(e.to_string()))?;
        let kv = kv.ok_or_else(|| self.shared("the key is gone (deleted in etcd)"))?;
        if kv.mod_revision == self.mod_revision {
            return Ok(false);
        }
        let theirs = read_value(&self.label, &self.location, &kv.value)?;
        let merged = theirs.counters.merge(&self.counters);
        let changed = merged != self.counters;
        self.counters = merged;
        self.mod_revision = kv.mod_revision;
        Ok(changed)
    }

    fn counters(&self) -> Counters {
        self.counters.clone()
    }
}
