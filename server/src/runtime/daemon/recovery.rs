//! The daemon's side of recovery (DESIGN "Recovery"): the doors' `always_allow` ranges handed
//! to the firewall backend, and the reinstallation of the firewall's ruleset when it is deleted
//! under the daemon (`nft flush ruleset`, as a `nftables.service` restart does).
//!
//! The nftables backend learns of the deletion from netlink notifications (see
//! `firewall::watch`); the tick asks it every 100 ms, so the table is back well within a second.
//! The grants the daemon made and those made at the console (`knockd grant`) are then added
//! again with the time they have left.

use std::time::Instant;

use knock_core::config::{Config, OpenPort};
use knock_core::time::unix_now_ms;
use tracing::{error, warn};

use super::Daemon;
use crate::cli::console::live_manual_grants;
use crate::runtime::firewall::{Allowed, Firewall};
use crate::state::audit::Record;

/// Hands every door's `always_allow` to the backend before it installs its ruleset; warns when
/// the backend cannot honour them (an admin relying on them would be locked out).
pub(super) fn set_always_allow(fw: &mut dyn Firewall, config: &Config) {
    let allowed = Allowed::of_config(config);
    if !fw.set_always_allow(&allowed) && !allowed.is_empty() {
        let doors: Vec<&str> =
            config.doors.iter().filter(|d| !d.always_allow.is_empty()).map(|d| d.name.as_str()).collect();
        warn!(
            doors = %doors.join(","),
            "always_allow is not supported by this firewall backend and is ignored: those sources are \
             dropped like any other until they knock (use firewall = \"nftables\", or allow them in your own rules)"
        );
    }
}

/// Below this many free bytes the state directory counts as full: a knock's consumption and
/// audit record could not be made durable (or would eat the last blocks), so knocks fail closed.
pub(super) const MIN_FREE_BYTES: u64 = 16 * 1024;

/// Whether the state directory has room for a knock's records; `Err(why)` when it is full.
/// When the space cannot be queried, the writes themselves will tell.
pub(super) fn state_room(state_dir: &std::path::Path) -> Result<(), String> {
    match crate::hardening::free_bytes(state_dir) {
        Ok(free) if free < MIN_FREE_BYTES => Err(format!(
            "state directory {} is full ({free} bytes free, {MIN_FREE_BYTES} needed): knocks fail closed \
             until space is freed there (always_allow and console grants still work)",
            state_dir.display()
        )),
        _ => Ok(()),
    }
}

/// Every port the configured doors protect.
fn protected(config: &Config) -> Vec<OpenPort> {
    config.doors.iter().flat_map(|d| d.open.iter().copied()).collect()
}

impl Daemon {
    /// From the tick: when the firewall's ruleset was removed under us, install it again (with
    /// an alert in the log and the audit) and restore the live grants. A failed reinstallation is
    /// retried on the next tick.
    pub(super) fn watch_firewall(&mut self) {
        let Some(fw) = self.firewall.as_mut() else { return };
        let Some(what) = fw.ruleset_lost() else { return };
        let started = Instant::now();
        set_always_allow(fw.as_mut(), &self.config);
        if let Err(e) = fw.install(&protected(&self.config)) {
            error!("ALERT: {what}; reinstalling it failed, retrying: {e}");
            return;
        }
        let mut restored = 0u64;
        let mut failed = 0u64;
        let daemon_grants: Vec<_> =
            self.grants.live().map(|(g, left)| (g.door.clone(), g.addr, g.ports.clone(), left)).collect();
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
