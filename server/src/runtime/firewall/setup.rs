//! The firewall backend a configuration names (`firewall = "nftables" | "iptables" | "none"`),
//! and its preparation before it protects anything: the doors' `always_allow` handed over, the
//! protected ports installed.

use knock_core::config::{Config, FirewallKind, OpenPort};
use tracing::warn;

use super::allow::Allowed;
use super::backend::Firewall;
use super::error::FirewallError;
use super::iptables::Iptables;
use super::nftables::Nftables;

/// The backend of `config` (`None` for `firewall = "none"`), not installed yet.
pub fn backend(config: &Config) -> Result<Option<Box<dyn Firewall>>, FirewallError> {
    Ok(match config.server.firewall {
        FirewallKind::Nftables => Some(Box::new(Nftables::new(&config.server.nft_table)?)),
        FirewallKind::Iptables => Some(Box::new(Iptables::new())),
        FirewallKind::None => None,
    })
}

/// Every port the configured doors protect.
pub fn protected(config: &Config) -> Vec<OpenPort> {
    config.doors.iter().flat_map(|d| d.open.iter().copied()).collect()
}

/// Hands every door's `always_allow` to the backend before it installs its ruleset; warns when
/// the backend cannot honour them (an admin relying on them would be locked out).
pub fn set_always_allow(fw: &mut dyn Firewall, config: &Config) {
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

/// Installs (or reinstalls) the protection `config` asks for: `always_allow`, then the ports.
pub fn install(fw: &mut dyn Firewall, config: &Config) -> Result<(), FirewallError> {
    set_always_allow(fw, config);
    fw.install(&protected(config))
}
