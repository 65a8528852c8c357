//! Keys and clients (issue 4): two clients on one door, one revoked on a reload that removes
//! its live grant at once; a reload with a broken configuration keeps serving. A key replaced
//! under the same name, and resyncs under a flood (issue 9).

use std::thread::sleep;
use std::time::Duration;

use crate::lab::{Host, Lab, CLIENT, OUTSIDER, SERVER};
use crate::{answered, hotp_door, lose_knocks, require_root};

#[test]
fn revoking_one_of_two_clients_on_reload_removes_its_grant_and_keeps_the_other() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "").replace("open_for = \"4s\"", "open_for = \"20s\""));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let bob = lab.add_client("ssh", "bob", SERVER, Host::Outsider);
    lab.start_daemon();
    for (host, profile) in [(Host::Client, &alice), (Host::Outsider, &bob)] {
        let o = lab.knock(host, &["--profile", profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
        assert!(o.status.success(), "{o:?}");
    }
    let listed = lab.knockd(&["client", "list", "--door", "ssh"]);
    assert!(listed.contains("alice") && listed.contains("bob"), "{listed}");

    lab.knockd(&["client", "revoke", "--door", "ssh", "--name", "bob"]);
    lab.signal_daemon("HUP");
    lab.wait_log("configuration reloaded", Duration::from_secs(3));
    lab.wait_log("live grant of a revoked client removed", Duration::from_secs(1));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "bob's grant is gone at once");
    assert!(lab.can_connect(Host::Client, SERVER, 22, 800), "alice's grant stays");
    let o = lab.knock(Host::Outsider, &["--profile", &bob, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(!o.status.success(), "a revoked client's knock opens nothing");
    for event in ["revoke", "revoke-grant", "reload"] {
        assert_eq!(lab.audit_events(event).len(), 1, "{event}: {:?}", lab.audit_lines());
    }

    // A broken configuration is refused on reload; the daemon keeps serving the old one.
    let good = lab.config();
    lab.write_config(&format!("{good}\n[[door]\n"));
    lab.signal_daemon("HUP");
    lab.wait_log("reload refused, the running configuration stays", Duration::from_secs(3));
    let o = lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{o:?}");
    lab.wait_log_count("door opened", 3, Duration::from_secs(2));
    assert_eq!(lab.audit_events("reload-refused").len(), 1);
}

/// totp: each time step opens once; a replay of a used step is refused; the client's next
/// knock takes the next step (issue 4).
#[test]
fn totp_steps_open_once_each() {
    require_root();
    let door = "[[door]]\nname = \"ssh\"\nmode = \"totp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\n\
                open_for = \"1s\"\nseq_timeout = \"2s\"\nstep = \"5s\"\n";
    let mut lab = Lab::new(door);
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let cap = lab.capture_knocks("first.pcap", "tcp dst portrange 40000-42047 and dst host 198.18.0.1");
    let o = lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    let (_, first) = answered(&String::from_utf8_lossy(&o.stdout)).unwrap_or_else(|| panic!("{o:?}"));
    lab.interrupt(cap);
    lab.wait_background(cap, Duration::from_secs(3));
    // The same step again, right away: the client waits for the next step, which opens.
    let o = lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    let (_, second) = answered(&String::from_utf8_lossy(&o.stdout)).unwrap_or_else(|| panic!("{o:?}"));
    assert!(second > first, "each step once: {first} then {second}");
    lab.wait_closed(Host::Client, Duration::from_secs(4));
    // A replay of the first step's packets (within the skew) is refused.
    assert_eq!(lab.replay(Host::Client, "first.pcap", &[]), 8);
    lab.wait_log("replayed knock sequence", Duration::from_secs(3));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    assert_eq!(lab.audit_events("grant").len(), 2);
}

/// A client whose knocks never arrived for longer than the window (W+3 lost) gets back in
/// with `knock --resync`; one sequence beyond the window alone opens nothing (issue 4).
#[test]
fn resync_brings_back_a_client_that_fell_behind_the_window() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "window = 4"));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    lose_knocks(&lab, &alice, 4 + 3);
    let o = lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(!o.status.success(), "one sequence beyond the window must not open: {o:?}");
    let o =
        lab.knock(Host::Client, &["--profile", &alice, "--resync", "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(lab.audit_events("resync").len(), 1, "{:?}", lab.audit_lines());
    lab.wait_closed(Host::Client, Duration::from_secs(6));
    let o = lab.knock(Host::Client, &["--profile", &alice, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "back in step after the resync: {o:?}");
}

/// `knockd client revoke` then `knockd client add` under the same name, for a new key imported
/// on `host` (what an admin does when a laptop is stolen). Returns the new profile's name.
fn replace_key(lab: &Lab, door: &str, name: &str, host: Host) -> String {
    lab.knockd(&["client", "revoke", "--door", door, "--name", name]);
    std::fs::remove_file(lab.dir.join(format!("{door}-{name}.knock"))).unwrap();
    lab.add_client(door, name, SERVER, host)
}

/// The fingerprint `knockd client list` shows for a client.
fn fingerprint(lab: &Lab, door: &str, name: &str) -> String {
    let list = lab.knockd(&["client", "list", "--door", door]);
    let line = list.lines().find(|l| l.split_whitespace().next() == Some(name));
    line.and_then(|l| l.split_whitespace().nth(1)).unwrap_or_else(|| panic!("{name} in {list}")).to_string()
}

/// A client whose key was replaced under the same name (revoke + add, then reload) is let in
/// with the new key: its old key's records in the audit log do not make the new ledger look
/// rolled back. The old key's live grant goes at once, and a restart keeps the new key (issue 9).
#[test]
fn a_key_replaced_under_the_same_name_opens_after_reload_and_restart() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "").replace("open_for = \"4s\"", "open_for = \"20s\""));
    let old = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let old_key = fingerprint(&lab, "ssh", "alice");
    lab.start_daemon();
    let knock = |lab: &Lab, host, profile: &str| {
        lab.knock(host, &["--profile", profile, "--wait", "--wait-timeout", "1", "--attempts", "1"])
    };
    for n in 0..2 {
        let o = knock(&lab, Host::Client, &old);
        assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(n), "{o:?}");
    }
    let grants = lab.audit_events("grant");
    assert!(grants.iter().all(|g| g.contains(&format!("\"key\":\"{old_key}\""))), "{grants:?}");

    // The laptop with the old key is stolen: a new key for alice, on another machine.
    let new = replace_key(&lab, "ssh", "alice", Host::Outsider);
    assert_ne!(fingerprint(&lab, "ssh", "alice"), old_key);
    lab.signal_daemon("HUP");
    lab.wait_log("configuration reloaded", Duration::from_secs(3));
    assert!(!lab.log().contains("rolled back"), "{}", lab.log());
    lab.wait_log("live grant of a revoked client removed", Duration::from_secs(1));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "the old key's grant is gone at once");
    let revoke = lab.audit_events("revoke");
    assert!(revoke.len() == 1 && revoke[0].contains(&format!("\"key\":\"{old_key}\"")), "{revoke:?}");

    let o = knock(&lab, Host::Outsider, &new);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(0), "the new key opens: {o:?}");
    let o = knock(&lab, Host::Client, &old);
    assert!(!o.status.success(), "the old key opens nothing: {o:?}");
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));

    lab.stop_daemon("TERM");
    lab.start_daemon();
    assert!(!lab.log().contains("rolled back"), "{}", lab.log());
    let o = knock(&lab, Host::Outsider, &new);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "after a restart: {o:?}");
}

/// A knock of the old key in progress while its key is replaced under the same name cannot
/// finish on the new key's ledger: the reload drops the attempts of the replaced key (issue 9).
#[test]
fn an_attempt_of_a_replaced_key_cannot_finish_on_the_new_keys_ledger() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "").replace("seq_timeout = \"2s\"", "seq_timeout = \"20s\""));
    let old = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let seq = lab.dry_run(Host::Client, &old);
    assert_eq!(seq.len(), 8, "{seq:?}");
    lab.send_crafted(Host::Client, CLIENT, &seq[..7], &[]);

    let new = replace_key(&lab, "ssh", "alice", Host::Outsider);
    lab.signal_daemon("HUP");
    lab.wait_log("configuration reloaded", Duration::from_secs(3));
    lab.send_crafted(Host::Client, CLIENT, &seq[7..], &[]);
    sleep(Duration::from_millis(800));
    assert!(!lab.log().contains("door opened"), "{}", lab.log());
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "the old key's last knock opened the door");
    assert!(lab.audit_events("grant").is_empty(), "{:?}", lab.audit_lines());

    // The new key's first sequence was not consumed by the old key's attempt.
    let o = lab.knock(Host::Outsider, &["--profile", &new, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(0), "{o:?}");
}

/// One key holder sending the same first half of a resync over and over (nothing is consumed
/// until the second half) cannot push another client's first half out of the daemon's list:
/// that client's `knock --resync` still gets it back in (issue 9).
#[test]
fn a_flood_of_one_clients_resync_first_halves_does_not_block_another_clients_resync() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "window = 4"));
    let alice = lab.add_client("ssh", "alice", SERVER, Host::Client);
    let bob = lab.add_client("ssh", "bob", SERVER, Host::Outsider);
    lab.start_daemon();
    lose_knocks(&lab, &alice, 4 + 3);

    // Bob's sequence 6 lies beyond the window (0..=3) and within the resync counters.
    std::fs::write(lab.dir.join("outsider/state/knock/ssh-bob.next"), "6\n").unwrap();
    let first_half = lab.dry_run(Host::Outsider, &bob);
    const ROUNDS: usize = 1100;
    for _ in 0..ROUNDS / 100 {
        let knocks: Vec<String> = (0..100).flat_map(|_| first_half.iter().cloned()).collect();
        lab.send_crafted(Host::Outsider, OUTSIDER, &knocks, &[]);
    }
    // The daemon logs only the first of them (its log is rate-limited under floods): give it
    // a moment for the rest, 8 800 packets.
    lab.wait_log("a sequence beyond the window: waiting", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));

    let o =
        lab.knock(Host::Client, &["--profile", &alice, "--resync", "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "alice's resync was pushed out by bob's flood: {o:?}");
    let resync = lab.audit_events("resync");
    assert!(resync.len() == 1 && resync[0].contains("\"client\":\"alice\""), "{resync:?}");
}
