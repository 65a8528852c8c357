//! The daemon's side of recovery (docs/OPERATIONS.md, "Locked out?" case 4): the reinstallation
//! of the firewall's ruleset, with the doors' `always_allow` ranges, when it is deleted under the
//! daemon (`nft flush ruleset`, as a `nftables.service` restart does).
//!
//! The nftables backend learns of the deletion from netlink notifications (see
//! `runtime/firewall/watch.rs`); the tick asks it every 100 ms, so the table is back well within a second.
//! The grants the daemon made and those made at the console (`knockd grant`) are then added
//! again with the time they have left.

use std::time::Instant;

use knock_core::time::unix_now_ms;
use tracing::error;

use super::Daemon;
use crate::runtime::firewall::setup;
use crate::state::audit::Record;
use crate::state::manual_grants::live_manual_grants;

impl Daemon {
    /// From the tick: when the firewall's ruleset was removed under us, install it again (with
    /// an alert in the log and the audit) and restore the live grants. A failed reinstallation is
    /// retried on the next tick.
    pub(super) fn watch_firewall(&mut self) {
        let Some(fw) = self.actions.firewall.as_mut() else { return };
        let Some(what) = fw.ruleset_lost() else { return };
        let started = Instant::now();
        if let Err(e) = setup::install(fw.as_mut(), &self.config) {
            error!("ALERT: {what}; reinstalling it failed, retrying: {e}");
            return;
        }
        let mut restored = 0u64;
        let mut failed = 0u64;
        let daemon_grants: Vec<_> =
            self.actions.grants.live().map(|(g, left)| (g.door.clone(), g.addr, g.ports.clone(), left)).collect();
        let now_ms = unix_now_ms();
        let manual = live_manual_grants(&self.config.server.state_dir, now_ms).into_iter().map(|g| {
            let left = std::time::Duration::from_millis(g.until_ms.saturating_sub(now_ms));
            (g.door, g.addr, g.ports, left)
        });
        for (door, addr, ports, left) in daemon_grants.into_iter().chain(manual) {
            match fw.grant(addr, &ports, left) {
                Ok(()) => restored += 1,
                Err(e) => {
                    failed += 1;
                    error!(door, %addr, "could not restore a live grant after reinstalling the table: {e}");
                }
            }
        }
        error!(
            restored,
            failed,
            took_ms = started.elapsed().as_millis() as u64,
            "ALERT: {what}; the ruleset is reinstalled (protected ports are dropped again) and live grants restored"
        );
        self.audit_write(
            Record::new("firewall-reinstalled")
                .with("reason", what)
                .with("restored_grants", restored)
                .with("failed_grants", failed),
            true,
        );
    }
}
