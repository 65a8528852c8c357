//! SIGHUP: the daemon takes a new configuration without dropping what it holds. Grants stay in
//! the kernel and in the live-grant list, ledgers stay on disk, and the matcher keeps every
//! attempt in progress on doors whose clients did not change. A client is its name *and* its
//! key's fingerprint: a key replaced under the same name is a revoked client and a new one, so
//! the old key's attempts in progress are dropped (they could otherwise finish on the new key's
//! ledger). A revoked client's live grants are removed at once. A configuration that does not
//! load keeps the running one, and says why.

use std::collections::HashSet;

use knock_core::config::{Config, ConfigError};
use knock_core::matcher::{Limits, Matcher};
use tracing::{error, info, warn};

use super::{config_hash, Daemon};
use crate::runtime::capture;
use crate::runtime::doors::error::Refusal;
use crate::runtime::doors::Doors;
use crate::runtime::firewall::setup;
use crate::state::audit::Record;
use crate::state::ledger_backend;
use crate::state::StateDir;

impl Daemon {
    /// Applies a newly loaded configuration. Returns true when the capture must be restarted
    /// (interfaces or the compiled filter changed).
    pub(super) fn reload(&mut self, loaded: Result<Config, ConfigError>) -> bool {
        let new = match loaded {
            Ok(c) => c,
            Err(e) => return self.refuse_reload(&e.to_string()),
        };
        if new.server.state_dir != self.config.server.state_dir || new.server.firewall != self.config.server.firewall {
            return self.refuse_reload("state_dir and firewall can only change with a restart");
        }
        let state = StateDir::new(&new.server.state_dir);
        let loaded = ledger_backend::configured(&new, &state.ledger_dir(), Some(&self.ledger_lock))
            .map(|stores| Doors::load(&new, self.server_id, stores.as_ref()));
        let mut doors = match loaded {
            Ok(doors) => doors,
            Err(e) => return self.refuse_reload(&e.to_string()),
        };
        doors.refuse_rolled_back(&state.audit_log());
        for r in &doors.refused {
            error!("{r}");
        }
        if doors.doors.is_empty() {
            if self.retrying && doors.refused.iter().any(Refusal::waits_for_shared_ledger) {
                return false; // still waiting for the shared ledger: the daemon tries again
            }
            return self.refuse_reload("every door of the new configuration was refused (see above)");
        }
        if let Some(fw) = &mut self.actions.firewall {
            if let Err(e) = setup::install(fw.as_mut(), &new) {
                return self.refuse_reload(&format!("the firewall refused the new protected ports: {e}"));
            }
        }
        self.revoke_gone_clients(&doors);
        let old_names: Vec<String> = self.doors.doors.iter().map(|d| d.config.name.clone()).collect();
        let new_names: Vec<String> = doors.doors.iter().map(|d| d.config.name.clone()).collect();
        if old_names == new_names {
            // Same doors in the same order: keep attempts in progress, except on doors whose
            // clients or keys changed (indices may have moved, a replaced key's attempts must
            // not finish on its successor's ledger).
            let (before, after) = (self.doors.client_keys(), doors.client_keys());
            for (i, name) in new_names.iter().enumerate() {
                let of = |list: &[(String, String, String)]| -> Vec<(String, String)> {
                    list.iter().filter(|(d, _, _)| d == name).map(|(_, c, k)| (c.clone(), k.clone())).collect()
                };
                if of(&before) != of(&after) {
                    self.matcher.clear_door(i);
                    self.resyncs.forget_door(i);
                }
            }
        } else {
            warn!("the doors changed: knocks in progress start over");
            self.matcher = Matcher::new(Limits::default());
            self.resyncs.clear();
        }
        let now = knock_core::time::unix_now();
        doors.install(&mut self.matcher, now);
        let old_filter = capture::bpf_filter_rules(&self.doors.filter_rules(now));
        let new_filter = capture::bpf_filter_rules(&doors.filter_rules(now));
        self.buckets = doors.time_buckets(now);
        let recapture = old_filter != new_filter || new.server.interfaces != self.config.server.interfaces;
        let hash = config_hash(&new);
        self.config = new;
        self.doors = doors;
        // The audit record first: whoever reads the log line finds the record written.
        self.audit_write(
            Record::new("reload").with("config_sha256", hash.clone()).with("doors", new_names.join(",")),
            true,
        );
        info!(config = %self.config.path.display(), sha256 = %hash, "configuration reloaded");
        recapture
    }

    fn refuse_reload(&mut self, why: &str) -> bool {
        self.audit_write(Record::new("reload-refused").with("reason", why.to_string()), true);
        error!("reload refused, the running configuration stays: {why}");
        false
    }

    /// Removes the live grants of clients that the new doors no longer have (revoked), or have
    /// with another key (replaced: the grants were the old key's).
    fn revoke_gone_clients(&mut self, new: &Doors) {
        let after: HashSet<(String, String, String)> = new.client_keys().into_iter().collect();
        let before: HashSet<(String, String, String)> = self.doors.client_keys().into_iter().collect();
        let mut gone: Vec<&(String, String, String)> = before.difference(&after).collect();
        gone.sort();
        for (door, client, key) in &gone {
            let rec = Record::new("revoke").with("door", door.clone()).with("client", client.clone());
            self.audit_write(rec.with("key", key.clone()), true);
            warn!(door, client, key, "client revoked");
        }
        let names: HashSet<(&str, &str)> = gone.iter().map(|(d, c, _)| (d.as_str(), c.as_str())).collect();
        let taken = self.actions.grants.take_where(|g| names.contains(&(g.door.as_str(), g.client.as_str())));
        for g in taken {
            let result = self.actions.firewall.as_mut().map_or(Ok(()), |fw| fw.revoke(g.addr, &g.ports));
            self.audit_write(
                Record::new("revoke-grant")
                    .with("door", g.door.clone())
                    .with("client", g.client.clone())
                    .with("source", g.addr.to_string()),
                true,
            );
            match result {
                Ok(()) => {
                    info!(door = %g.door, client = %g.client, source = %g.addr, "live grant of a revoked client removed")
                }
                Err(e) => {
                    error!(door = %g.door, client = %g.client, source = %g.addr, "cannot remove a revoked client's grant: {e}")
                }
            }
        }
    }
}
