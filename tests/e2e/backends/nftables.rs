//! The nftables backend against a real kernel, in network namespaces (needs root; fails
//! otherwise).
//!
//! The test creates a server and a peer namespace joined by a veth pair (addresses only in
//! 198.18.0.0/15 and 2001:db8::/32), then re-executes this binary inside the server namespace
//! (`ip netns exec`, `KNFT_ROLE=firewall`), so the firewall's nft runs and netlink socket act
//! there without any setns. That side runs echo listeners and, in the peer namespace, probes that
//! are re-executions of this binary too: a TCP connect with a timeout (`KNFT_ROLE=connect`) or a
//! connection held open and driven over stdin (`KNFT_ROLE=hold`). Guards delete the namespaces
//! even when the test fails.

use std::net::IpAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use knock_core::Proto;
use knock_test_support::reexec::Reexec;
use knock_test_support::require_root;
use knockd::runtime::firewall::{Firewall, FirewallError, Nftables, OpenPort};

use super::{Lab, Listeners, Outcome};

/// This test's name, for re-executing only it.
const TEST: &str = "nftables_backend_in_namespaces";

const SRV4: &str = "198.18.66.1";
const PEER4: &str = "198.18.66.2";
const SRV6: &str = "2001:db8:66::1";
const PEER6: &str = "2001:db8:66::2";

static LAB: Lab = Lab {
    reexec: Reexec { module: module_path!(), test: TEST, role_env: "KNFT_ROLE" },
    peer_ns_env: "KNFT_PEER_NS",
    target_env: "KNFT_TARGET",
    ns_prefix: "knft",
    server4: SRV4,
    peer4: PEER4,
    server6: SRV6,
    peer6: PEER6,
};

#[test]
fn nftables_backend_in_namespaces() {
    match LAB.reexec.role().as_deref() {
        Some("firewall") => return firewall_side(),
        Some("connect") => LAB.connect_probe(),
        Some("hold") => LAB.hold_probe(),
        _ => {}
    }
    require_root();
    LAB.run_in_namespaces();
}

/// Runs inside the server namespace: the firewall, the listeners, and the checks.
fn firewall_side() {
    let probes = LAB.probes();
    let ssh = [OpenPort { port: 22, proto: Proto::Tcp }];
    let peer4: IpAddr = PEER4.parse().unwrap();
    let peer6: IpAddr = PEER6.parse().unwrap();
    let Listeners { ssh4, open4, ssh6, open6 } = LAB.listen();

    let mut fw = Nftables::new("knockd").expect("open the netlink socket");

    // Before install: the error names the table, the set and the address, and a fix.
    let err = fw.grant(peer4, &ssh, Duration::from_secs(2)).expect_err("no table yet");
    let msg = err.to_string();
    assert!(matches!(err, FirewallError::Refused { errno: 2, .. }), "{msg}");
    for part in ["grants4", "inet knockd", PEER4, "restart knockd"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    println!("error before install: {msg}");
    assert!(matches!(fw.grant(peer4, &ssh, Duration::ZERO), Err(FirewallError::InvalidDuration { .. })));

    fw.install(&ssh).expect("install");
    println!("{}", nft(&["list", "table", "inet", "knockd"]));
    assert_eq!(probes.connect(open4), Outcome::Connected, "unprotected port 23 must stay reachable");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "port 22 must be dropped before a grant");

    // Grant: connects pass, the element is in the set with a timeout.
    let granted_at = Instant::now();
    fw.grant(peer4, &ssh, Duration::from_secs(3)).expect("grant");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "port 22 must open after the grant");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(set.contains("198.18.66.2 . tcp . 22 timeout 3s expires"), "{set}");
    let mut held = probes.hold(ssh4);
    assert_eq!(held.echo("during the grant"), Some("during the grant".into()));

    // A second install keeps the grant.
    fw.install(&ssh).expect("second install");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(set.contains("198.18.66.2 . tcp . 22 timeout 3s"), "second install lost the grant: {set}");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "still granted after the second install");
    assert!(granted_at.elapsed() < Duration::from_millis(2500), "too slow to test expiry: {:?}", granted_at.elapsed());

    // Expiry: new connects are dropped, the established connection still passes data.
    thread::sleep(Duration::from_millis(3500).saturating_sub(granted_at.elapsed()));
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "new connects must be dropped after expiry");
    assert_eq!(held.echo("after expiry"), Some("after expiry".into()), "established connection cut");
    held.close();

    // Revoke removes at once, and revoking again is no error.
    fw.grant(peer4, &ssh, Duration::from_secs(30)).expect("grant for revoke");
    assert_eq!(probes.connect(ssh4), Outcome::Connected);
    fw.revoke(peer4, &ssh).expect("revoke");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(!set.contains("198.18.66.2 . tcp . 22"), "revoke left the element: {set}");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "port 22 must close at once on revoke");
    fw.revoke(peer4, &ssh).expect("revoking what is not granted");
    let two = [ssh[0], OpenPort { port: 2222, proto: Proto::Tcp }];
    fw.grant(peer4, &two[1..], Duration::from_secs(30)).expect("grant 2222");
    fw.revoke(peer4, &two).expect("revoke with one of two elements absent");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(!set.contains("198.18.66.2 . tcp . 2222"), "partial revoke left the element: {set}");

    // Re-granting restarts the clock.
    let first = Instant::now();
    fw.grant(peer4, &ssh, Duration::from_secs(3)).expect("grant");
    thread::sleep(Duration::from_millis(1500));
    fw.grant(peer4, &ssh, Duration::from_secs(3)).expect("re-grant with the same timeout");
    thread::sleep(Duration::from_millis(3500).saturating_sub(first.elapsed()));
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "a re-grant must restart the clock");
    fw.revoke(peer4, &ssh).expect("revoke");

    // IPv6.
    assert_eq!(probes.connect(open6), Outcome::Connected, "unprotected port 23 over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "port 22 over IPv6 must be dropped before a grant");
    fw.grant(peer6, &ssh, Duration::from_secs(3)).expect("grant over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::Connected, "port 22 over IPv6 must open after the grant");
    let set = nft(&["list", "set", "inet", "knockd", "grants6"]);
    assert!(set.contains("2001:db8:66::2 . tcp . 22 timeout 3s"), "{set}");
    fw.revoke(peer6, &ssh).expect("revoke over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "port 22 over IPv6 must close on revoke");

    // Grant latency: 50 grants to distinct addresses, each one batch + ack.
    let mut took: Vec<Duration> = (0..50u8)
        .map(|i| {
            let addr = IpAddr::from([198, 19, 7, i + 1]);
            let t = Instant::now();
            fw.grant(addr, &ssh, Duration::from_secs(60)).expect("latency grant");
            t.elapsed()
        })
        .collect();
    took.sort();
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(set.contains("198.19.7.1 . tcp . 22") && set.contains("198.19.7.50 . tcp . 22"), "{set}");
    println!(
        "nftables grant latency over 50 grants (netlink batch + ack): median {:?}, min {:?}, p90 {:?}, max {:?}",
        took[25], took[0], took[45], took[49]
    );
}

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("run nft (install nftables)");
    assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
