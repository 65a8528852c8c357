//! What a door does when a knock opens or closes it: a firewall grant (through the
//! [`crate::runtime::firewall`] backend, remembered in [`grants`]) or knockd's start and stop
//! shell commands ([`shell`]). [`Actions`] holds all three for the daemon.

pub mod grants;
pub mod shell;

use std::net::IpAddr;

use knock_core::config::{Action, CommandAction, Config, Door};
use knock_core::sequence::Purpose;

use crate::runtime::firewall::{setup, Firewall, FirewallError};
use crate::state::pending_stops::JournalError;
use grants::LiveGrants;
use shell::{CommandRunner, ShellError};

/// Why a door's action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The firewall refused the grant or revoke.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// A start or stop command did not run, or failed.
    #[error(transparent)]
    Shell(#[from] ShellError),
}

/// Why the actions could not be set up when the daemon starts.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The firewall backend cannot be opened or installed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The journal of pending stop commands cannot be read.
    #[error(transparent)]
    PendingStops(#[from] JournalError),
}

/// The daemon's means of acting.
pub struct Actions {
    /// The firewall backend (`None`: `firewall = "none"`).
    pub firewall: Option<Box<dyn Firewall>>,
    /// knockd's start and stop commands, with the journal of pending stops.
    pub shell: CommandRunner,
    /// The grants made and not expired yet.
    pub grants: LiveGrants,
}

impl Actions {
    /// The firewall backend of `config`, installed (protected ports dropped from now on), and
    /// the stop commands journaled by the last run, the overdue ones run now.
    pub fn start(config: &Config) -> Result<Actions, SetupError> {
        let mut firewall = setup::backend(config)?;
        if let Some(fw) = &mut firewall {
            setup::install(fw.as_mut(), config)?;
        }
        let mut shell = CommandRunner::open(&config.server.state_dir)?;
        if shell.pending() > 0 {
            tracing::info!(pending = shell.pending(), "stop commands pending from the last run; overdue ones run now");
        }
        shell.overdue_at_start();
        Ok(Actions { firewall, shell, grants: LiveGrants::default() })
    }

    /// Opens (`Purpose::Open`) or closes `door` for `source`: a firewall grant for the door's
    /// `open_for` (or its revoke), remembered as a live grant; or the door's start command (its
    /// stop command at once for a closing sequence).
    pub fn run(&mut self, door: &Door, client: &str, purpose: Purpose, source: IpAddr) -> Result<(), ActionError> {
        match (&door.action, purpose) {
            (Action::Commands(c), Purpose::Open) => self.shell.start(&door.name, c, source)?,
            (Action::Commands(c), Purpose::Close) => {
                // A closing sequence runs the stop command at once.
                let now = CommandAction { start: c.stop.clone(), start6: c.stop6.clone(), ..Default::default() };
                self.shell.start(&door.name, &now, source)?
            }
            // Without a backend (`firewall = "none"`) the grant is only remembered.
            (Action::Firewall, Purpose::Open) => {
                if let Some(fw) = &mut self.firewall {
                    fw.grant(source, &door.open, door.open_for)?;
                }
                self.grants.add(&door.name, client, source, &door.open, door.open_for);
            }
            (Action::Firewall, Purpose::Close) => {
                if let Some(fw) = &mut self.firewall {
                    fw.revoke(source, &door.open)?;
                }
                self.grants.remove(&door.name, source);
            }
        }
        Ok(())
    }

    /// From the daemon's tick: runs the stop commands due at `now_ms`, forgets expired grants.
    pub fn tick(&mut self, now_ms: u64) {
        self.shell.run_due(now_ms);
        self.grants.prune();
    }
}
