//! Which ledger stores the configuration names (`[ledger] backend`): the state directory's files
//! ([`FileLedgers`]) or the etcd cluster shared with the other nodes ([`EtcdLedgers`]).

use std::path::Path;

use knock_core::config::{Config, LedgerBackend};
use knock_core::ledger::WriterLock;

use super::ledgers::{FileLedgers, LedgerStores};
use super::shared_ledgers::{EtcdLedgers, SharedLedgerSetupError};

/// The stores `config` names: the state directory's files (with the writer's lock, to write),
/// or the etcd cluster of `[ledger]` (to write when `writer` is given).
pub fn configured<'a>(
    config: &Config,
    ledger_dir: &Path,
    writer: Option<&'a WriterLock>,
) -> Result<Box<dyn LedgerStores + 'a>, SharedLedgerSetupError> {
    Ok(match (&config.ledger, writer) {
        (LedgerBackend::File, Some(lock)) => Box::new(FileLedgers::writable(ledger_dir, lock)),
        (LedgerBackend::File, None) => Box::new(FileLedgers::read_only(ledger_dir)),
        (LedgerBackend::Etcd(etcd), writer) => Box::new(EtcdLedgers::new(etcd, writer.is_some())?),
    })
}
