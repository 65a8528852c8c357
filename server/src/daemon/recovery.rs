//! The daemon's side of recovery (DESIGN "Recovery"): the doors' `always_allow` ranges handed
//! to the firewall backend.

use knock_core::config::Config;
use tracing::warn;

use crate::firewall::{Allowed, Firewall};

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
