//! The ledger's `fdatasync` beside the audit record's: a thread of its own runs a use's
//! [`PendingSync`] while the daemon's thread writes and syncs the grant's audit record, so a
//! grant waits for the slower of the two writes, not for both in turn (docs/ARCHITECTURE.md,
//! "Two durable writes at once").

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use knock_core::ledger::{LedgerError, PendingSync};

/// One sync and where to say it is done.
type Job = (PendingSync, SyncSender<Result<(), LedgerError>>);

/// The thread that runs ledger syncs (one at a time: the daemon has one grant in flight).
#[derive(Debug)]
pub struct LedgerSyncer {
    /// `None` when the thread could not be started: syncs then run on the caller's thread.
    jobs: Option<Sender<Job>>,
}

/// A sync under way; [`Syncing::wait`] says how it ended.
#[must_use = "nothing may open before the ledger's record is durable"]
pub enum Syncing {
    /// Nothing was owed (a durable store, or no store).
    Nothing,
    /// It ended on the caller's thread.
    Done(Result<(), LedgerError>),
    /// It runs on the syncer's thread.
    Running(Receiver<Result<(), LedgerError>>),
}

impl LedgerSyncer {
    /// Starts the thread.
    pub fn start() -> LedgerSyncer {
        let (tx, rx) = channel::<Job>();
        let started = std::thread::Builder::new().name("ledger sync".into()).spawn(move || {
            for (sync, done) in rx {
                let _ = done.send(sync.run());
            }
        });
        match started {
            Ok(_) => LedgerSyncer { jobs: Some(tx) },
            Err(e) => {
                tracing::warn!("cannot start the ledger sync thread, syncing in turn: {e}");
                LedgerSyncer { jobs: None }
            }
        }
    }

    /// Starts `sync` on the thread (on this one when the thread is gone).
    pub fn begin(&self, sync: Option<PendingSync>) -> Syncing {
        let Some(sync) = sync else { return Syncing::Nothing };
        let Some(jobs) = &self.jobs else { return Syncing::Done(sync.run()) };
        let (done, result) = sync_channel(1);
        match jobs.send((sync, done)) {
            Ok(()) => Syncing::Running(result),
            Err(std::sync::mpsc::SendError((sync, _))) => Syncing::Done(sync.run()),
        }
    }
}

impl Syncing {
    /// Waits until the sync ended.
    pub fn wait(self) -> Result<(), LedgerError> {
        match self {
            Syncing::Nothing => Ok(()),
            Syncing::Done(r) => r,
            Syncing::Running(result) => result.recv().unwrap_or_else(|_| {
                Err(LedgerError::Io {
                    path: "(ledger sync thread)".into(),
                    source: std::io::Error::other("the ledger sync thread ended before the sync did"),
                })
            }),
        }
    }
}
