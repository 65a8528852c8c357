//! The ruleset of table `inet <table>` as an nft script, and its installation with `nft -f -`.
//!
//! The script is idempotent and applied as one transaction: it creates the table, sets and
//! chains if they are missing (an existing grant set keeps its elements), re-populates
//! `protected` and the `always_allow` sets (`allow4`, `allow6`: `prefix . l4proto . port`
//! intervals) and replaces the chains' rules. Both chains only ever drop: whatever they let
//! through still meets the admin's own rules.
//!
//! Two chains, because no single hook sees every way to a protected port (docs/THREAT-MODEL.md,
//! "Ways past the door"):
//! - `input` (hook input, priority filter) judges what is delivered to this host, after NAT:
//!   unicast, broadcast, multicast and anycast alike, in any routing table or VRF, with the port
//!   it is delivered to (an admin's `redirect` from 443 to 22 is judged as 22).
//! - `prerouting` (priority -150: after conntrack, before DNAT at -100) judges connections
//!   addressed to a local address before an admin's or Docker's DNAT sends them on to a
//!   container, with the port they were addressed to. It also sees what `input` sees again; it
//!   asks the routing tables whether the address is local both as the main tables see it and as
//!   the tables of the incoming interface see it (a VRF's own table).
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use knock_core::config::OpenPort;

use super::allow::{elements, nft_element, Allowed};
use super::error::FirewallError;
use super::names::{ALLOW4_SET, ALLOW6_SET, GRANTS4_SET, GRANTS6_SET, INPUT_CHAIN, PREROUTING_CHAIN, PROTECTED_SET};

/// The nft script that installs table `inet table` protecting `protected`, letting `allowed`
/// pass.
///
/// `table` must be a valid nft identifier (checked by `Nftables::new`).
pub fn script(table: &str, protected: &[OpenPort], allowed: &[Allowed]) -> String {
    let mut s = format!(
        "table inet {table} {{\n\
         \tset {PROTECTED_SET} {{\n\t\ttype inet_proto . inet_service\n\t}}\n\
         \tset {GRANTS4_SET} {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags timeout\n\t}}\n\
         \tset {GRANTS6_SET} {{\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tflags timeout\n\t}}\n\
         \tset {ALLOW4_SET} {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval\n\t}}\n\
         \tset {ALLOW6_SET} {{\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tflags interval\n\t}}\n\
         \tchain {PREROUTING_CHAIN} {{\n\t\ttype filter hook prerouting priority -150; policy accept;\n\t}}\n\
         \tchain {INPUT_CHAIN} {{\n\t\ttype filter hook input priority filter; policy accept;\n\t}}\n\
         }}\n\
         flush set inet {table} {PROTECTED_SET}\n\
         flush set inet {table} {ALLOW4_SET}\n\
         flush set inet {table} {ALLOW6_SET}\n\
         flush chain inet {table} {PREROUTING_CHAIN}\n\
         flush chain inet {table} {INPUT_CHAIN}\n"
    );
    // Not addressed to this host as either routing view sees it: routed through, or broadcast,
    // multicast or anycast (those are judged in `input` if they are delivered here).
    let not_local = "fib daddr type != local fib daddr . iif type != local return";
    for (chain, local_test) in [(PREROUTING_CHAIN, Some(not_local)), (INPUT_CHAIN, None)] {
        for rule in rules(local_test) {
            let _ = writeln!(s, "add rule inet {table} {chain} {rule}");
        }
    }
    let mut ports: Vec<OpenPort> = protected.to_vec();
    ports.sort_by_key(|p| (p.proto, p.port));
    ports.dedup();
    if !ports.is_empty() {
        let elements: Vec<String> = ports.iter().map(|p| format!("{} . {}", p.proto, p.port)).collect();
        let _ = writeln!(s, "add element inet {table} {PROTECTED_SET} {{ {} }}", elements.join(", "));
    }
    let (allow4, allow6) = elements(allowed);
    for (set, elements) in [(ALLOW4_SET, allow4), (ALLOW6_SET, allow6)] {
        if !elements.is_empty() {
            let list: Vec<String> = elements.iter().map(nft_element).collect();
            let _ = writeln!(s, "add element inet {table} {set} {{ {} }}", list.join(", "));
        }
    }
    s
}

/// The rules of one chain: pass what is established, always allowed, from this host, not
/// protected, (with `local_test`) not for this host, or granted; drop the rest.
fn rules(local_test: Option<&str>) -> Vec<String> {
    let mut rules = vec![
        "ct state established,related return".to_string(),
        format!("ip saddr . meta l4proto . th dport @{ALLOW4_SET} return"),
        format!("ip6 saddr . meta l4proto . th dport @{ALLOW6_SET} return"),
        "iif lo return".to_string(),
        format!("meta l4proto . th dport != @{PROTECTED_SET} return"),
    ];
    rules.extend(local_test.map(str::to_string));
    rules.extend([
        format!("ip saddr . meta l4proto . th dport @{GRANTS4_SET} return"),
        format!("ip6 saddr . meta l4proto . th dport @{GRANTS6_SET} return"),
        "drop".to_string(),
    ]);
    rules
}

/// Installs the ruleset by piping [`script`] into `nft -f -`.
pub fn install(table: &str, protected: &[OpenPort], allowed: &[Allowed]) -> Result<(), FirewallError> {
    let script = script(table, protected, allowed);
    let spawn_err = |error| FirewallError::NftSpawn { table: table.to_owned(), error };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // A write error (nft exited early) is reported through nft's status and stderr below.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let output = child.wait_with_output().map_err(spawn_err)?;
    if !output.status.success() {
        return Err(FirewallError::NftRejected {
            table: table.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    written.map_err(spawn_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_core::Proto;

    #[test]
    fn script_creates_keeps_grants_and_only_drops() {
        let p = |port, proto| OpenPort { port, proto };
        let s = script("knockd", &[p(22, Proto::Tcp), p(53, Proto::Udp), p(22, Proto::Tcp)], &[]);
        assert!(s.starts_with("table inet knockd {\n"));
        assert!(s.contains("\tchain prerouting {\n\t\ttype filter hook prerouting priority -150; policy accept;"));
        assert!(s.contains("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;"));
        assert!(s.contains("flush set inet knockd protected\n"));
        assert!(s.contains("flush chain inet knockd prerouting\nflush chain inet knockd input\n"));
        // The grant sets are declared (created if missing) but never flushed.
        assert!(!s.contains("flush set inet knockd grants"));
        assert!(s.contains("add element inet knockd protected { tcp . 22, udp . 53 }\n"));
        let rules: Vec<&str> = s.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(rules.len(), 9 + 8);
        assert!(rules.iter().all(|r| r.ends_with(" return") || r.ends_with(" drop")));
        assert!(!s.contains("accept\n") && !s.contains(" accept "));
        for chain in ["prerouting", "input"] {
            let prefix = format!("add rule inet knockd {chain} ");
            let mine: Vec<&str> = rules.iter().filter_map(|r| r.strip_prefix(prefix.as_str())).collect();
            assert_eq!(mine.last(), Some(&"drop"), "{chain}");
            assert!(mine.contains(&"ip saddr . meta l4proto . th dport @grants4 return"), "{chain}");
            assert!(mine.contains(&"ip6 saddr . meta l4proto . th dport @grants6 return"), "{chain}");
        }
    }

    #[test]
    fn only_prerouting_asks_whether_the_address_is_local_and_both_routing_views_must_say_no() {
        let s = script("knockd", &[OpenPort { port: 22, proto: Proto::Tcp }], &[]);
        let fib: Vec<&str> = s.lines().filter(|l| l.contains("fib")).collect();
        assert_eq!(
            fib,
            ["add rule inet knockd prerouting fib daddr type != local fib daddr . iif type != local return"],
            "input judges every delivered packet, whatever its address type"
        );
    }

    #[test]
    fn empty_protected_list_adds_no_elements() {
        assert!(!script("t", &[], &[]).contains("add element"));
    }

    #[test]
    fn always_allow_sets_are_refilled_and_checked_right_after_established() {
        let allowed = Allowed {
            prefixes: vec!["198.18.0.0/24".parse().unwrap(), "2001:db8::/64".parse().unwrap()],
            ports: vec![OpenPort { port: 22, proto: Proto::Tcp }],
        };
        let s = script("knockd", &[OpenPort { port: 22, proto: Proto::Tcp }], &[allowed]);
        assert!(s.contains("\tset allow4 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval\n"));
        assert!(s.contains("flush set inet knockd allow4\nflush set inet knockd allow6\n"));
        assert!(s.contains("add element inet knockd allow4 { 198.18.0.0/24 . tcp . 22 }\n"));
        assert!(s.contains("add element inet knockd allow6 { 2001:db8::/64 . tcp . 22 }\n"));
        let rules: Vec<&str> = s.lines().filter(|l| l.starts_with("add rule")).collect();
        assert!(rules[0].ends_with("ct state established,related return"));
        assert!(rules[1].ends_with("ip saddr . meta l4proto . th dport @allow4 return"));
        assert!(rules[2].ends_with("ip6 saddr . meta l4proto . th dport @allow6 return"));
    }
}
