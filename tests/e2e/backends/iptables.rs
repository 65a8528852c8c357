//! The iptables + ipset backend against a real kernel, in network namespaces (needs root; fails
//! otherwise).
//!
//! The test creates a server and a peer namespace joined by a veth pair (addresses only in
//! 198.18.0.0/15 and 2001:db8::/32), then re-executes this binary inside the server namespace
//! (`ip netns exec`, `KIPT_ROLE=firewall`), so iptables, ip6tables and ipset act there. That side
//! runs echo listeners and, in the peer namespace, probes that are re-executions of this binary
//! too: a TCP connect with a timeout (`KIPT_ROLE=connect`) or a connection held open and driven
//! over stdin (`KIPT_ROLE=hold`). A daemon that dies without cleanup is a re-execution in the
//! server namespace (`KIPT_ROLE=granter`) that grants and is then SIGKILLed. Guards delete the
//! namespaces even when the test fails.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use knock_core::Proto;
use knockd::runtime::firewall::iptables::Iptables;
use knockd::runtime::firewall::{Firewall, FirewallError, OpenPort};

use knock_test_support::reexec::Reexec;
use knock_test_support::require_root;

use super::{sock, Lab, Listeners, Outcome};

/// This test's name, for re-executing only it.
const TEST: &str = "iptables_backend_in_namespaces";

const SRV4: &str = "198.18.67.1";
const PEER4: &str = "198.18.67.2";
const SRV6: &str = "2001:db8:67::1";
const PEER6: &str = "2001:db8:67::2";
/// Tagged rules per family for one protected port: the jump, established, lo, set match, drop.
const TAGGED_RULES: usize = 5;

static LAB: Lab = Lab {
    reexec: Reexec { module: module_path!(), test: TEST, role_env: "KIPT_ROLE" },
    peer_ns_env: "KIPT_PEER_NS",
    target_env: "KIPT_TARGET",
    ns_prefix: "kipt",
    server4: SRV4,
    peer4: PEER4,
    server6: SRV6,
    peer6: PEER6,
};

#[test]
fn iptables_backend_in_namespaces() {
    match LAB.reexec.role().as_deref() {
        Some("firewall") => return firewall_side(),
        Some("connect") => LAB.connect_probe(),
        Some("hold") => LAB.hold_probe(),
        Some("granter") => granter(),
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

    // Leftovers of an earlier run (a stale jump twice, a stale rule, a stale chain rule) and an
    // admin's own untagged rule, which must survive.
    for tool in ["iptables", "ip6tables"] {
        run(tool, &["-N", "KNOCKD"]);
        run(
            tool,
            &["-A", "KNOCKD", "-p", "tcp", "--dport", "8888", "-m", "comment", "--comment", "knockd", "-j", "DROP"],
        );
        for _ in 0..2 {
            run(tool, &["-A", "INPUT", "-m", "comment", "--comment", "knockd", "-j", "KNOCKD"]);
        }
        run(
            tool,
            &["-A", "INPUT", "-p", "tcp", "--dport", "9999", "-m", "comment", "--comment", "knockd", "-j", "DROP"],
        );
        run(tool, &["-A", "INPUT", "-p", "tcp", "--dport", "7777", "-j", "ACCEPT"]);
    }

    let mut fw = Iptables::new();
    // Before install: no set yet. Revoking is no error; granting names the command and a fix.
    fw.revoke(peer4, &ssh).expect("revoke before install");
    let msg = fw.grant(peer4, &ssh, Duration::from_secs(2)).expect_err("no set yet").to_string();
    for part in ["ipset -exist restore", "knockd4", PEER4, "restart knockd"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    println!("error before install: {msg}");
    assert!(matches!(fw.grant(peer4, &ssh, Duration::ZERO), Err(FirewallError::InvalidDuration { .. })));

    fw.install(&ssh).expect("install");
    for tool in ["iptables", "ip6tables"] {
        let rules = run(tool, &["-S"]);
        println!("{tool} -S after install:\n{rules}");
        assert_eq!(tagged(&rules), TAGGED_RULES, "stale or missing tagged rules:\n{rules}");
        assert!(!rules.contains("9999") && !rules.contains("8888"), "stale rules left:\n{rules}");
        assert!(rules.contains("--dport 7777 -j ACCEPT"), "the admin's rule was removed:\n{rules}");
        assert!(rules.lines().position(|l| l.contains("-j KNOCKD")) < rules.lines().position(|l| l.contains("7777")));
    }
    assert_eq!(probes.connect(open4), Outcome::Connected, "unprotected port 23 must stay reachable");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "port 22 must be dropped before a grant");

    // Grant for 2 s: connects pass, the element is in the set with a timeout.
    let granted_at = Instant::now();
    fw.grant(peer4, &ssh, Duration::from_secs(2)).expect("grant");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "port 22 must open after the grant");
    let set = run("ipset", &["list", "knockd4"]);
    assert!(set.contains("198.18.67.2,tcp:22 timeout "), "{set}");
    let mut held = probes.hold(ssh4);
    assert_eq!(held.echo("during the grant"), Some("during the grant".into()));
    assert!(granted_at.elapsed() < Duration::from_millis(1900), "too slow to test expiry: {:?}", granted_at.elapsed());

    // Expiry: new connects are dropped, the established connection still passes data.
    thread::sleep(Duration::from_millis(2500).saturating_sub(granted_at.elapsed()));
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "new connects must be dropped after expiry");
    assert_eq!(held.echo("after expiry"), Some("after expiry".into()), "established connection cut");
    held.close();

    // The daemon is SIGKILLed right after granting: the grant still expires by itself.
    let mut granter = LAB
        .reexec
        .command(None, "granter")
        .env(LAB.target_env, sock(PEER4, 22).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the granter");
    let mut granter_out = BufReader::new(granter.stdout.take().expect("granter stdout"));
    let mut line = String::new();
    while !line.contains("GRANTED") {
        line.clear();
        assert!(granter_out.read_line(&mut line).expect("read the granter") > 0, "the granter did not grant");
    }
    let granted_at = Instant::now();
    granter.kill().expect("SIGKILL the granter");
    let status = granter.wait().expect("reap the granter");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "the dead daemon's grant must work");
    thread::sleep(Duration::from_millis(2500).saturating_sub(granted_at.elapsed()));
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "the dead daemon's grant must expire by itself");

    // A second install keeps a live grant and leaves exactly one set of tagged rules.
    fw.grant(peer4, &ssh, Duration::from_secs(30)).expect("long grant");
    fw.install(&ssh).expect("second install");
    let set = run("ipset", &["list", "knockd4"]);
    assert!(set.contains("198.18.67.2,tcp:22 timeout "), "second install lost the grant: {set}");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "still granted after the second install");
    for tool in ["iptables", "ip6tables"] {
        let rules = run(tool, &["-S"]);
        assert_eq!(tagged(&rules), TAGGED_RULES, "duplicate tagged rules after a second install:\n{rules}");
    }

    // Revoke removes at once, and revoking again is no error.
    fw.revoke(peer4, &ssh).expect("revoke");
    assert!(!run("ipset", &["list", "knockd4"]).contains("198.18.67.2,tcp:22"), "revoke left the element");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "port 22 must close at once on revoke");
    fw.revoke(peer4, &ssh).expect("revoking what is not granted");

    // An IPv4-mapped address is granted as IPv4.
    fw.grant("::ffff:198.18.67.2".parse().unwrap(), &ssh, Duration::from_secs(30)).expect("mapped grant");
    assert!(run("ipset", &["list", "knockd4"]).contains("198.18.67.2,tcp:22"), "mapped grant not in knockd4");
    fw.revoke("::ffff:198.18.67.2".parse().unwrap(), &ssh).expect("mapped revoke");

    // IPv6.
    assert_eq!(probes.connect(open6), Outcome::Connected, "unprotected port 23 over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "port 22 over IPv6 must be dropped before a grant");
    fw.grant(peer6, &ssh, Duration::from_secs(3)).expect("grant over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::Connected, "port 22 over IPv6 must open after the grant");
    let set = run("ipset", &["list", "knockd6"]);
    assert!(set.contains("2001:db8:67::2,tcp:22 timeout "), "{set}");
    fw.revoke(peer6, &ssh).expect("revoke over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "port 22 over IPv6 must close on revoke");

    // Grant latency: one ipset process per grant.
    let mut took: Vec<Duration> = (0..20u8)
        .map(|i| {
            let t = Instant::now();
            fw.grant(IpAddr::from([198, 19, 7, i + 1]), &ssh, Duration::from_secs(60)).expect("latency grant");
            t.elapsed()
        })
        .collect();
    took.sort();
    println!(
        "iptables/ipset grant latency over 20 grants: median {:?}, min {:?}, max {:?}",
        took[10], took[0], took[19]
    );
}

/// Role: a daemon that grants the peer for 2 s, says so, and waits to be killed.
fn granter() -> ! {
    let peer = LAB.target().ip();
    let mut fw = Iptables::new();
    fw.grant(peer, &[OpenPort { port: 22, proto: Proto::Tcp }], Duration::from_secs(2)).expect("granter: grant");
    println!("GRANTED");
    let _ = std::io::stdout().flush();
    thread::sleep(Duration::from_secs(60));
    std::process::exit(1)
}

/// How many rules carry our comment.
fn tagged(rules: &str) -> usize {
    rules.lines().filter(|l| l.starts_with("-A ") && l.contains("--comment knockd")).count()
}

/// Runs a tool in the current namespace; its stdout, or a panic with its stderr.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("run {tool} (install it): {e}"));
    assert!(out.status.success(), "{tool} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
