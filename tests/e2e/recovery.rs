//! Recovery paths: never locked out, never open by accident (issue 6; docs/OPERATIONS.md, "Locked out?").

use std::process::{Command, Output};
use std::thread::sleep;
use std::time::{Duration, Instant};

use knock_test_support::netns::{unique_tag, Netns};

use crate::lab::{bin, Host, Lab, OUTSIDER, SERVER, SERVER6};
use crate::{answered, hotp_door, lose_knocks, require_root};

const OUTSIDER6: &str = "2001:db8::3";

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Door `ssh` (22) always allows the outsider's addresses (.3, ::3); door `web` (8080) does not.
fn allow_outsider_doors() -> String {
    let ssh = hotp_door("ssh", "22/tcp", "always_allow = [\"198.18.0.3/32\", \"2001:db8::3\"]");
    let web = hotp_door("web", "8080/tcp", "knock_ports = \"43000-43999\"");
    format!("{ssh}\n{web}")
}

#[test]
fn always_allow_passes_without_a_knock_even_with_the_daemon_killed() {
    require_root();
    let mut lab = Lab::new(&allow_outsider_doors());
    lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.add_client("web", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let set = lab.exec(Host::Server, "nft", &["list", "set", "inet", "knockd", "allow4"]);
    assert!(out(&set).contains("198.18.0.3 . tcp . 22"), "{}", out(&set));

    let check = |lab: &Lab, when: &str| {
        assert!(lab.can_connect(Host::Outsider, SERVER, 22, 500), "{when}: the allowed outsider must reach 22");
        assert!(lab.can_connect(Host::Outsider, SERVER6, 22, 500), "{when}: ... over IPv6 too");
        assert!(
            !lab.can_connect(Host::Outsider, SERVER, 8080, 500),
            "{when}: only the ports of the door that allows it"
        );
        assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "{when}: a source not allowed is dropped");
        assert!(!lab.can_connect(Host::Client, SERVER6, 22, 500), "{when}: ... over IPv6 too");
    };
    check(&lab, "daemon running");
    lab.stop_daemon("KILL");
    check(&lab, "daemon killed");
}

/// `knockd grant ARGS` run at the server's console (inside its namespace).
fn console_grant(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["-c", "knockd.toml", "grant"];
    all.extend_from_slice(args);
    lab.exec(Host::Server, bin("knockd"), &all)
}

#[test]
fn a_console_grant_is_audited_and_expires_by_itself_with_or_without_the_daemon() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));

    let o = console_grant(&lab, &[OUTSIDER, "--door", "ssh", "--for", "3s"]);
    let granted = Instant::now();
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("granted 198.18.0.3 access to 22/tcp of door ssh for 3s"), "{}", out(&o));
    assert!(lab.can_connect(Host::Outsider, SERVER, 22, 500), "the console grant opens 22");
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "for that address only");
    let audit = lab.audit_events("manual-grant");
    assert!(
        audit.len() == 1
            && audit[0].contains("\"source\":\"198.18.0.3\"")
            && audit[0].contains("\"door\":\"ssh\"")
            && audit[0].contains("\"open_for_ms\":3000")
            && audit[0].contains("\"operator\""),
        "{audit:?}"
    );
    sleep(Duration::from_millis(3300).saturating_sub(granted.elapsed()));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "the kernel timeout ends the grant");

    // With the daemon dead (its table stays in the kernel), a grant over IPv6.
    lab.stop_daemon("KILL");
    let o = console_grant(&lab, &[OUTSIDER6, "--door", "ssh", "--for", "10s"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(lab.can_connect(Host::Outsider, SERVER6, 22, 500));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "IPv6 only");

    // Refusals say why: unknown door, absurd duration.
    let o = console_grant(&lab, &[OUTSIDER, "--door", "web", "--for", "1m"]);
    assert!(!o.status.success() && out(&o).contains("no door `web`"), "{}", out(&o));
    let o = console_grant(&lab, &[OUTSIDER, "--door", "ssh", "--for", "30d"]);
    assert!(!o.status.success() && out(&o).contains("--for"), "{}", out(&o));
    assert_eq!(lab.audit_events("manual-grant").len(), 2);
}

#[test]
fn a_flushed_ruleset_is_reinstalled_within_a_second_with_its_live_grants() {
    require_root();
    let door = "[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\nopen_for = \"30s\"\nseq_timeout = \"2s\"\n";
    let mut lab = Lab::new(door);
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = console_grant(&lab, &[OUTSIDER6, "--door", "ssh", "--for", "30s"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));

    // What a nftables.service restart does.
    let o = lab.exec(Host::Server, "nft", &["flush", "ruleset"]);
    assert!(o.status.success(), "{}", out(&o));
    let flushed = Instant::now();
    while !lab.exec(Host::Server, "nft", &["list", "table", "inet", "knockd"]).status.success() {
        assert!(flushed.elapsed() < Duration::from_secs(1), "table inet knockd not back within a second");
        sleep(Duration::from_millis(20));
    }
    let back = flushed.elapsed();
    lab.wait_log("the ruleset is reinstalled", Duration::from_secs(1));
    assert!(flushed.elapsed() < Duration::from_millis(1500));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "the outsider is dropped again");
    assert!(lab.can_connect(Host::Client, SERVER, 22, 500), "the client's live grant was restored");
    assert!(lab.can_connect(Host::Outsider, SERVER6, 22, 500), "the console grant was restored");
    assert!(lab.log().contains("ALERT: table inet knockd was deleted"), "{}", lab.log());
    let audit = lab.audit_events("firewall-reinstalled");
    assert!(audit.len() == 1 && audit[0].contains("\"restored_grants\":2"), "{audit:?}");
    eprintln!("table back {back:?} after the flush");

    // A set deleted by hand is noticed too.
    let o = lab.exec(Host::Server, "nft", &["delete", "table", "inet", "knockd"]);
    assert!(o.status.success(), "{}", out(&o));
    lab.wait_log_count("the ruleset is reinstalled", 2, Duration::from_secs(1));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));

    // So is either base chain: input, which judges what is delivered after NAT, comes back too.
    let o = lab.exec(Host::Server, "nft", &["delete", "chain", "inet", "knockd", "input"]);
    assert!(o.status.success(), "{}", out(&o));
    lab.wait_log_count("the ruleset is reinstalled", 3, Duration::from_secs(1));
    assert!(lab.log().contains("chain input of table inet knockd was deleted"), "{}", lab.log());
    let o = lab.exec(Host::Server, "nft", &["list", "chain", "inet", "knockd", "input"]);
    assert!(o.status.success() && out(&o).contains("drop"), "chain input not reinstalled: {}", out(&o));
}

/// The next sequence number a profile would send (`knock --dry-run` prints "next sequence N").
fn next_sequence(lab: &Lab, host: Host, profile: &str) -> String {
    let o = lab.knock(host, &["--profile", profile, "--dry-run"]);
    let text = out(&o);
    let n = text.split("next sequence ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next());
    n.unwrap_or_else(|| panic!("no next sequence in {text}")).to_string()
}

/// The ledger files in the lab's state directory.
fn ledgers(lab: &Lab) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(lab.dir.join("state/ledger")).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    v.sort();
    v
}

#[test]
fn a_missing_ledger_refuses_its_client_only_until_ledger_recover() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let alice_ledger = ledgers(&lab).pop().expect("alice's ledger");
    let bob = lab.add_client("ssh", "bob", SERVER, Host::Outsider);
    let knock = |lab: &Lab, host, profile: &str| {
        lab.knock(host, &["--profile", profile, "--wait", "--wait-timeout", "1", "--attempts", "1"])
    };
    lab.start_daemon();
    let o = knock(&lab, Host::Client, &alice);
    assert!(o.status.success(), "{}", out(&o));
    lab.stop_daemon("TERM");

    // The state is lost for alice's key only.
    std::fs::remove_file(&alice_ledger).unwrap();
    lab.start_daemon();
    lab.wait_log("door ssh client alice refused: ledger", Duration::from_secs(2));
    assert!(lab.log().contains("knockd ledger recover"), "the refusal names the fix:\n{}", lab.log());
    let o = knock(&lab, Host::Outsider, &bob);
    assert!(o.status.success(), "bob keeps working: {}", out(&o));
    lab.wait_closed(Host::Client, Duration::from_secs(6)); // her grant from before has expired
    let o = knock(&lab, Host::Client, &alice);
    assert!(!o.status.success(), "alice stays refused: {}", out(&o));

    // The admin reads alice's next sequence, stops the daemon (the ledgers' only writer) and
    // starts her ledger there.
    let next = next_sequence(&lab, Host::Client, &alice);
    assert_eq!(next, "2", "counter 0 opened, counter 1 was refused");
    lab.stop_daemon("TERM");
    let o = lab.exec(
        Host::Server,
        bin("knockd"),
        &["-c", "knockd.toml", "ledger", "recover", "--door", "ssh", "--client", "alice", "--next", &next],
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("ledger of door ssh client alice (missing) now starts at counter 2"), "{}", out(&o));
    let audit = lab.audit_events("ledger-recover");
    assert!(
        audit.len() == 1 && audit[0].contains("\"next\":2") && audit[0].contains("\"client\":\"alice\""),
        "{audit:?}"
    );

    lab.start_daemon();
    let o = knock(&lab, Host::Client, &alice);
    assert!(o.status.success(), "alice is back: {}", out(&o));
    assert!(lab.can_connect(Host::Client, SERVER, 22, 500));
    // Forward only: asking for an earlier start changes nothing.
    lab.stop_daemon("TERM");
    let o = lab.exec(
        Host::Server,
        bin("knockd"),
        &["-c", "knockd.toml", "ledger", "recover", "--door", "ssh", "--client", "alice", "--next", "1"],
    );
    assert!(o.status.success() && out(&o).contains("nothing to do"), "{}", out(&o));
}

/// A power loss while a grant is being made durable: the ledger's record and the audit
/// record are synced at the same time (docs/ARCHITECTURE.md, "Two durable writes at once"), so
/// either may reach the disk without the other. Each crash point is made by killing the daemon
/// right after a grant and cutting the files back to what a crash at that point would have
/// left (a lost audit record takes `audit.key`'s later state with it: it is saved only after
/// the log is synced). After each restart the client is not refused, the ledger holds the use
/// whenever either record survived (rolled forward from the audit log when only that did),
/// the audit chain verifies, and the next knock opens.
#[test]
fn a_crash_between_a_grants_two_durable_writes_leaves_ledger_and_audit_consistent() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let ledger = ledgers(&lab).pop().expect("alice's ledger");
    let (audit, key) = (lab.dir.join("state/audit.log"), lab.dir.join("state/audit.key"));
    let knock =
        |lab: &Lab| lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    let consumed =
        |n: usize| std::fs::read_to_string(&ledger).unwrap().lines().any(|l| l.starts_with(&format!("consume {n} ")));
    lab.start_daemon();
    // (ledger record on disk, audit record on disk) at the crash.
    let points = [(true, true), (true, false), (false, true), (false, false)];
    for (n, &(ledger_kept, audit_kept)) in points.iter().enumerate() {
        let before = (std::fs::read(&ledger).unwrap(), std::fs::read(&audit).unwrap(), std::fs::read(&key).ok());
        let o = knock(&lab);
        assert!(o.status.success(), "knock {n}: {}", out(&o));
        lab.wait_log_count("door opened", n + 1, Duration::from_secs(2));
        lab.stop_daemon("KILL");
        if !ledger_kept {
            std::fs::write(&ledger, &before.0).unwrap();
        }
        if !audit_kept {
            std::fs::write(&audit, &before.1).unwrap();
            match &before.2 {
                Some(k) => std::fs::write(&key, k).unwrap(),
                None => drop(std::fs::remove_file(&key)),
            }
        }
        let log_before = lab.log().len();
        lab.spawn_daemon(&[]);
        lab.wait_log_count("knockd started", n + 2, Duration::from_secs(10));
        let log = lab.log()[log_before..].to_string();
        assert!(!log.contains("rolled back") && !log.contains("refused"), "crash point {n}: {log}");
        assert_eq!(
            consumed(n),
            ledger_kept || audit_kept,
            "crash point {n}: the ledger holds the use iff a record of it survived"
        );
        let rolled = log.contains("written to the ledger from the audit log's last record");
        assert_eq!(rolled, !ledger_kept && audit_kept, "crash point {n}: {log}");
        let verified = lab.knockd(&["audit", "--verify"]);
        assert!(verified.trim_end().ends_with("verified"), "crash point {n}: {verified}");
        // The grant from before the crash is still in the set: take it out, so the next knock
        // must open by itself.
        let flushed = lab.exec(Host::Server, "nft", &["flush", "set", "inet", "knockd", "grants4"]);
        assert!(flushed.status.success(), "{}", out(&flushed));
        sleep(Duration::from_millis(200)); // the capture threads attach
    }
    let o = knock(&lab);
    assert!(o.status.success(), "the knock after the last crash: {}", out(&o));
    lab.wait_log_count("door opened", points.len() + 1, Duration::from_secs(2));
    assert!(consumed(points.len()));
}

/// A ledger restored from an older backup (rolled back) is caught against the audit log: its
/// client stays refused until `knockd ledger recover`, while the other client works.
#[test]
fn a_rolled_back_ledger_refuses_its_client_until_ledger_recover() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let alice_ledger = ledgers(&lab).pop().expect("alice's ledger");
    let backup = std::fs::read(&alice_ledger).unwrap(); // before any knock
    let bob = lab.add_client("ssh", "bob", SERVER, Host::Outsider);
    let knock = |lab: &Lab, host, profile: &str| {
        lab.knock(host, &["--profile", profile, "--wait", "--wait-timeout", "1", "--attempts", "1"])
    };
    lab.start_daemon();
    assert!(knock(&lab, Host::Client, &alice).status.success());
    lab.stop_daemon("TERM");
    std::fs::write(&alice_ledger, backup).unwrap(); // the restored backup
    lab.start_daemon();
    lab.wait_log("was rolled back", Duration::from_secs(2));
    assert!(lab.log().contains("knockd ledger recover --door ssh --client alice --next 1"), "{}", lab.log());
    assert!(knock(&lab, Host::Outsider, &bob).status.success(), "bob keeps working");
    lab.wait_closed(Host::Client, Duration::from_secs(6));
    assert!(!knock(&lab, Host::Client, &alice).status.success(), "alice stays refused");
    lab.stop_daemon("TERM");
    let o = lab.exec(
        Host::Server,
        bin("knockd"),
        &["-c", "knockd.toml", "ledger", "recover", "--door", "ssh", "--client", "alice", "--next", "2"],
    );
    assert!(o.status.success(), "{}", out(&o));
    lab.start_daemon();
    assert!(knock(&lab, Host::Client, &alice).status.success(), "alice is back");
}

/// A tiny tmpfs mounted over the lab's state directory (its files copied in); unmounted when
/// dropped, also when the test fails. Declare it after the lab, so it is dropped first.
struct TinyStateDir {
    mount: std::path::PathBuf,
}

impl TinyStateDir {
    fn mount(lab: &Lab, size: &str) -> TinyStateDir {
        let state = lab.dir.join("state");
        let orig = lab.dir.join("state.orig");
        std::fs::rename(&state, &orig).unwrap();
        std::fs::create_dir(&state).unwrap();
        let guard = TinyStateDir { mount: state.clone() };
        let opts = format!("size={size},mode=0700");
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &opts, "tmpfs"]).arg(&state).status().unwrap();
        assert!(ok.success(), "mount tmpfs on {}", state.display());
        let copied = Command::new("cp").arg("-a").arg(orig.join(".")).arg(&state).status().unwrap();
        assert!(copied.success());
        guard
    }

    /// Fills the file system to the last block.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.mount.join("fill")).unwrap();
        let block = vec![0u8; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.mount.join("fill")).unwrap();
    }
}

impl Drop for TinyStateDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn a_full_state_directory_fails_knocks_closed_and_keeps_always_allow() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "always_allow = [\"198.18.0.3/32\"]"));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let tiny = TinyStateDir::mount(&lab, "64k");
    lab.start_daemon();
    let knock =
        |lab: &Lab| lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);

    tiny.fill();
    let o = knock(&lab);
    assert!(!o.status.success(), "a knock must fail closed on a full state directory: {}", out(&o));
    lab.wait_log("knock refused, nothing can be consumed durably: state directory", Duration::from_secs(2));
    assert!(lab.log().contains("is full"), "{}", lab.log());
    assert!(lab.can_connect(Host::Outsider, SERVER, 22, 500), "always_allow still works");
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));

    tiny.free();
    let o = knock(&lab);
    assert!(o.status.success(), "space is back, so is the door: {}", out(&o));
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{}", out(&o));
    assert_eq!(lab.audit_events("grant").len(), 1, "only the knock after the space came back was granted");

    // The ledger came through intact: a restart takes alice again.
    lab.stop_daemon("TERM");
    lab.start_daemon();
    assert!(!lab.log().contains("refused: ledger"), "{}", lab.log());
}

/// A resync whose counters cannot be consumed (the state directory is full) leaves no `resync`
/// record behind: such a record would make the next start refuse the client's ledger as rolled
/// back. After space is freed and knockd restarted, the client's resync works (issue 9).
#[test]
fn a_resync_that_could_not_be_consumed_does_not_refuse_its_client_at_the_next_start() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "window = 4"));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let tiny = TinyStateDir::mount(&lab, "64k");
    lab.start_daemon();
    lose_knocks(&lab, &alice, 4 + 3);
    let resync = |lab: &Lab| {
        lab.knock(Host::Client, &["--profile", &alice, "--resync", "--wait", "--wait-timeout", "1", "--attempts", "1"])
    };

    tiny.fill();
    let o = resync(&lab);
    assert!(!o.status.success(), "nothing can be consumed, nothing opens: {}", out(&o));
    lab.wait_log("knock refused, nothing can be consumed durably", Duration::from_secs(2));
    assert!(lab.audit_events("resync").is_empty(), "{:?}", lab.audit_lines());

    tiny.free();
    lab.stop_daemon("TERM");
    lab.start_daemon();
    assert!(!lab.log().contains("rolled back"), "{}", lab.log());
    let o = resync(&lab);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(lab.audit_events("resync").len(), 1, "{:?}", lab.audit_lines());
}

/// A "container": a namespace behind the server (198.18.1.2, the server's side 198.18.1.1)
/// serving `port`, published on the server's addresses by a DNAT rule as Docker does. Its
/// namespace and service go when dropped, also when the test fails: declare it after the lab.
struct Container {
    service: Option<std::process::Child>,
    /// Dropped after the service ended (fields drop after `Drop::drop`).
    _ns: Netns,
}

impl Container {
    const ADDR: &'static str = "198.18.1.2";

    fn start(lab: &Lab, port: u16) -> Container {
        let server = lab.netns(Host::Server);
        let ns = Netns::unique("ke-d");
        let veth = format!("vd-{}", unique_tag());
        server.veth(&veth, &ns, "eth0");
        server.addr(&veth, "198.18.1.1/24");
        ns.addr("eth0", "198.18.1.2/24");
        ns.ip(&["route", "add", "default", "via", "198.18.1.1"]);
        let o = lab.exec(Host::Server, "sysctl", &["-w", "net.ipv4.ip_forward=1"]);
        assert!(o.status.success(), "{}", out(&o));
        let dnat = format!(
            "add table ip dockerlike; \
             add chain ip dockerlike pre {{ type nat hook prerouting priority -100; }}; \
             add rule ip dockerlike pre tcp dport {port} dnat to {}:{port}",
            Container::ADDR
        );
        let o = lab.exec(Host::Server, "nft", &[&dnat]);
        assert!(o.status.success(), "{}", out(&o));
        let service = ns
            .command(bin("knock-lab"))
            .args(["serve", "--port", &port.to_string(), "--max-seconds", "300"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the container's service");
        let c = Container { service: Some(service), _ns: ns };
        let start = Instant::now();
        while !lab.can_connect(Host::Server, Container::ADDR, port, 300) {
            assert!(start.elapsed() < Duration::from_secs(5), "the container's service did not come up");
            sleep(Duration::from_millis(50));
        }
        c
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut s) = self.service.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

#[test]
fn a_port_published_by_dnat_to_a_container_is_protected_before_the_dnat() {
    require_root();
    let mut lab = Lab::new(&hotp_door("app", "2222/tcp", ""));
    let alice = lab.add_client("app", "alice", SERVER, Host::Client);
    let _container = Container::start(&lab, 2222);
    assert!(
        lab.can_connect(Host::Outsider, SERVER, 2222, 1000),
        "without knockd, the DNAT rule publishes the container's port to anyone"
    );
    lab.start_daemon();
    assert!(!lab.can_connect(Host::Outsider, SERVER, 2222, 500), "our chain (-150) drops before the DNAT (-100)");
    assert!(!lab.can_connect(Host::Client, SERVER, 2222, 500), "no knock, no entry");
    let o = lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(lab.can_connect(Host::Client, SERVER, 2222, 500), "the knock opens the published port");
    assert!(!lab.can_connect(Host::Outsider, SERVER, 2222, 500), "for the client only");
    let o = lab.exec(Host::Server, "nft", &["list", "table", "ip", "dockerlike"]);
    assert!(out(&o).contains("dnat to 198.18.1.2:2222"), "the admin's DNAT rule is untouched: {}", out(&o));
}

/// The interfaces enslaved to the server's br0.
fn bridge_ports(lab: &Lab) -> Vec<String> {
    let o = lab.exec(Host::Server, "ip", &["-o", "link", "show", "master", "br0"]);
    assert!(o.status.success(), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Runs a shell script in the server's namespace.
fn server_sh(lab: &Lab, script: &str) {
    let o = lab.exec(Host::Server, "sh", &["-ec", script]);
    assert!(o.status.success(), "{script}: {}", out(&o));
}

/// Waits until the client reaches the server's unprotected port 8080 (the network is back).
fn wait_network(lab: &Lab) {
    let start = Instant::now();
    while !lab.can_connect(Host::Client, SERVER, 8080, 300) {
        assert!(start.elapsed() < Duration::from_secs(10), "the network did not come back");
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn capture_comes_back_after_a_link_flap_and_a_recreated_interface() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let knock =
        |lab: &Lab| lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "2", "--attempts", "1"]);

    // A flap of the capture interface.
    server_sh(&lab, "ip link set br0 down; sleep 1; ip link set br0 up");
    wait_network(&lab);
    let o = knock(&lab);
    assert!(o.status.success(), "a knock after the flap opens: {}\n{}", out(&o), lab.log());
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(0), "{}", out(&o));
    lab.wait_closed(Host::Client, Duration::from_secs(6));

    // The capture interface deleted and made again with the same name, addresses and ports.
    let ports = bridge_ports(&lab);
    assert_eq!(ports.len(), 2, "{ports:?}");
    server_sh(&lab, "ip link del br0; sleep 1");
    let mut script = String::from(
        "ip link add br0 type bridge; ip addr add 198.18.0.1/24 dev br0; \
         ip addr add 2001:db8::1/64 dev br0 nodad; ",
    );
    for port in &ports {
        script.push_str(&format!("ip link set {port} master br0 up; "));
    }
    script.push_str("ip link set br0 up");
    server_sh(&lab, &script);
    let recreated = Instant::now();
    wait_network(&lab);
    // Knocks sent while the capture waits to reopen (backoff up to 5 s) are not seen.
    lab.wait_log("capture reopened", Duration::from_secs(6));
    assert!(lab.log().contains("capture failed, reopening"), "the loss is logged:\n{}", lab.log());
    eprintln!("capture back {:?} after the re-creation", recreated.elapsed());
    let o = knock(&lab);
    assert!(o.status.success(), "a knock after the re-creation opens: {}\n{}", out(&o), lab.log());
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{}", out(&o));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
    assert_eq!(lab.audit_events("grant").len(), 2);
}

#[test]
fn a_key_file_others_can_read_refuses_its_door_loudly_and_the_other_door_works() {
    require_root();
    let ssh = hotp_door("ssh", "22/tcp", "");
    let web = hotp_door("web", "8080/tcp", "knock_ports = \"43000-43999\"");
    let mut lab = Lab::new(&format!("{ssh}\n{web}"));
    let ssh_alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let web_alice = lab.add_client("web", "alice", SERVER, Host::Client);
    let key = lab.dir.join("keys/ssh/alice.key");
    let o = Command::new("chmod").arg("0644").arg(&key).output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    lab.start_daemon();

    lab.wait_log("door ssh client alice refused: key file", Duration::from_secs(2));
    let log = lab.log();
    let line = log.lines().find(|l| l.contains("door ssh client alice refused")).unwrap();
    assert!(line.contains("keys/ssh/alice.key") && line.contains("0644"), "names the file: {line}");
    assert!(line.contains("chmod 600") && line.contains("ERROR"), "loudly, with the fix: {line}");
    let check = lab.exec(Host::Server, bin("knockd"), &["-c", "knockd.toml", "check"]);
    assert!(!check.status.success() && out(&check).contains("chmod 600"), "{}", out(&check));

    let knock = |lab: &Lab, profile: &str| {
        lab.knock(Host::Client, &["--profile", profile, "--wait", "--wait-timeout", "1", "--attempts", "1"])
    };
    let o = knock(&lab, &web_alice);
    assert!(o.status.success(), "the other door keeps working: {}", out(&o));
    assert!(lab.can_connect(Host::Client, SERVER, 8080, 500));
    let o = knock(&lab, &ssh_alice);
    assert!(!o.status.success(), "the refused door opens nothing: {}", out(&o));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    assert_eq!(lab.audit_events("grant").len(), 1, "{:?}", lab.audit_lines());
}

const PAPER_DOOR: &str = "[[door]]\nname = \"paper\"\nmode = \"file\"\nopen = [\"22/tcp\"]\n\
                          sequence_file = \"sequences/paper.seq\"\nknock_ports = \"43000-43999\"\n\
                          open_for = \"3s\"\nseq_timeout = \"2s\"\n";

/// Types the sheet's line `n` as printed, on the client.
fn type_sheet_line(lab: &Lab, sheet: &str, n: usize) {
    let prefix = format!("{n}.  knock ");
    let line = sheet.lines().find_map(|l| l.trim_start().strip_prefix(&prefix));
    let line = line.unwrap_or_else(|| panic!("no line {n} in the sheet:\n{sheet}"));
    let args: Vec<&str> = line.split_whitespace().collect();
    let o = lab.exec(Host::Client, bin("knock"), &args);
    assert!(o.status.success(), "knock {line}: {}", out(&o));
}

#[test]
fn the_emergency_sheet_opens_once_per_line_typed_as_printed() {
    require_root();
    let mut lab = Lab::new(PAPER_DOOR);
    let sheet = print_sheet(&lab);
    let first = sheet.lines().next().unwrap_or_default();
    assert!(first.contains("EMERGENCY") && first.contains("door paper") && first.contains(SERVER), "{sheet}");
    let today = Command::new("date").args(["-u", "+%F"]).output().unwrap();
    assert!(sheet.contains(String::from_utf8_lossy(&today.stdout).trim()), "dated: {sheet}");
    assert!(sheet.contains("CROSS OUT"), "{sheet}");
    assert_eq!(sheet.lines().filter(|l| l.contains(&format!("knock -d 50 {SERVER} "))).count(), 5, "{sheet}");
    assert!(!lab.dir.join("paper.knock").exists(), "no bundle with --emergency");
    let seq = lab.dir.join("sequences/paper.seq");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&seq).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(ledgers(&lab).len(), 1, "the file's ledger is created");
    lab.start_daemon();

    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    type_sheet_line(&lab, &sheet, 1);
    assert!(
        lab.opens_within(Host::Client, 22, Duration::from_secs(2)),
        "line 1 typed as printed opens:\n{}",
        lab.log()
    );
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
    lab.wait_closed(Host::Client, Duration::from_secs(6));

    // Line 1 again (not crossed out): refused as a replay.
    type_sheet_line(&lab, &sheet, 1);
    lab.wait_log("replayed knock sequence", Duration::from_secs(3));
    assert!(!lab.opens_within(Host::Client, 22, Duration::from_millis(800)), "a used line never opens again");
    // The next line does.
    type_sheet_line(&lab, &sheet, 2);
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(2)), "line 2 opens");
    let grants = lab.audit_events("grant");
    assert_eq!(grants.len(), 2, "{grants:?}");
}

/// `knockd sequences generate --emergency` for the paper door: five sequences, the sheet.
fn print_sheet(lab: &Lab) -> String {
    lab.knockd(&["sequences", "generate", "--door", "paper", "--count", "5", "--server-addr", SERVER, "--emergency"])
}

/// The paper door next to a hotp door `web` on 8080 (so the daemon starts when paper is refused),
/// with the emergency sheet of five sequences printed, and alice's profile for `web`.
fn paper_and_web() -> (Lab, String, String) {
    let web = hotp_door("web", "8080/tcp", "");
    let lab = Lab::new(&format!("{PAPER_DOOR}\n{web}"));
    let sheet = print_sheet(&lab);
    let web_alice = lab.add_client("web", "alice", SERVER, Host::Client);
    (lab, sheet, web_alice)
}

/// A file door's ledger restored from an older copy (a VM snapshot) would make every used line
/// of the emergency sheet open again: it is caught against the audit log and the door stays
/// refused until `knockd ledger recover`, while the other door works (issue 9).
#[test]
fn a_file_doors_ledger_restored_to_an_older_copy_is_refused_until_ledger_recover() {
    require_root();
    let (mut lab, sheet, web_alice) = paper_and_web();
    let ledger = ledgers(&lab).into_iter().find(|p| p.to_string_lossy().contains("/file-")).expect("paper's ledger");
    let backup = std::fs::read(&ledger).unwrap();
    lab.start_daemon();
    type_sheet_line(&lab, &sheet, 1);
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(2)), "line 1 opens:\n{}", lab.log());
    let grant = lab.audit_events("grant");
    assert!(grant.len() == 1 && grant[0].contains("\"key\":\"file-"), "{grant:?}");
    lab.stop_daemon("TERM");
    std::fs::write(&ledger, backup).unwrap(); // the snapshot
    lab.start_daemon();

    lab.wait_log("door paper refused: ledger", Duration::from_secs(2));
    let log = lab.log();
    let line = log.lines().find(|l| l.contains("door paper refused")).unwrap();
    assert!(line.contains("was rolled back") && line.contains("ERROR"), "{line}");
    let fix = line.split("`knockd ledger recover ").nth(1).and_then(|f| f.split('`').next());
    let fix: Vec<&str> = fix.unwrap_or_else(|| panic!("no fix in {line}")).split_whitespace().collect();
    assert_eq!(&fix[..3], ["--door", "paper", "--line"], "{line}");
    lab.wait_closed(Host::Client, Duration::from_secs(6));
    type_sheet_line(&lab, &sheet, 1);
    assert!(!lab.opens_within(Host::Client, 22, Duration::from_secs(1)), "a used line opened again after the snapshot");
    let o = lab.knock(Host::Client, &["--profile", &web_alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "the other door works: {}", out(&o));

    let mut recover = vec!["-c", "knockd.toml", "ledger", "recover"];
    recover.extend(&fix);
    lab.stop_daemon("TERM"); // recover refuses to run beside the ledgers' writer
    let o = lab.exec(Host::Server, bin("knockd"), &recover);
    assert!(o.status.success(), "{}", out(&o));
    lab.start_daemon();
    assert_eq!(lab.log().matches("was rolled back").count(), 1, "{}", lab.log());
    type_sheet_line(&lab, &sheet, 1);
    assert!(!lab.opens_within(Host::Client, 22, Duration::from_secs(1)), "line 1 stays used");
    type_sheet_line(&lab, &sheet, 2);
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(2)), "line 2 opens:\n{}", lab.log());
}

/// A sequence file others can read is refused like a key file, with the same message and fix,
/// while the other door keeps working (issue 9).
#[test]
fn a_sequence_file_others_can_read_refuses_its_door_loudly_and_the_other_door_works() {
    require_root();
    let (mut lab, sheet, web_alice) = paper_and_web();
    let seq = lab.dir.join("sequences/paper.seq");
    let o = Command::new("chmod").arg("0644").arg(&seq).output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    lab.start_daemon();

    lab.wait_log("door paper refused: sequence file", Duration::from_secs(2));
    let log = lab.log();
    let line = log.lines().find(|l| l.contains("door paper refused")).unwrap();
    let path = "sequences/paper.seq"; // as the configuration names it
    assert!(
        line.contains(&format!(
            "sequence file {path} is accessible by group or others (mode 0644); it must be private. Fix: chmod 600 {path}"
        )) && line.contains("ERROR"),
        "loudly, with the fix: {line}"
    );
    let check = lab.exec(Host::Server, bin("knockd"), &["-c", "knockd.toml", "check"]);
    assert!(!check.status.success() && out(&check).contains("chmod 600"), "{}", out(&check));

    let o = lab.knock(Host::Client, &["--profile", &web_alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "the other door keeps working: {}", out(&o));
    type_sheet_line(&lab, &sheet, 1);
    assert!(!lab.opens_within(Host::Client, 22, Duration::from_secs(1)), "the refused door opens nothing");
    assert_eq!(lab.audit_events("grant").len(), 1, "{:?}", lab.audit_lines());
}
