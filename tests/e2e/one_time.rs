//! The one-time knock: opens for the knocker only, once, for `open_for`; replays, restarts and
//! IPv6 (issue 2, points a-h).

use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::lab::{bin, Host, Lab, CLIENT, OUTSIDER, SERVER, SERVER6};
use crate::{answered, hotp_door, require_root};

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_profile_knock_opens_22_for_the_knocker_only_once_and_replays_open_nothing() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();

    // (a) Before knocking, 22 is dropped for the client.
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "22 must be closed before knocking");

    // (b) The knock opens 22 within a second (knock gives up after 1 s and fails otherwise).
    let cap = lab
        .capture_knocks("client.pcap", "tcp dst portrange 40000-42047 and dst host 198.18.0.1 and src host 198.18.0.2");
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    let granted = Instant::now();
    assert!(o.status.success(), "{}", out(&o));
    let (secs, seq) = answered(&String::from_utf8_lossy(&o.stdout)).expect("knock reports the time");
    assert!(secs < 1.0 && seq == 0, "{}", out(&o));
    lab.interrupt(cap);
    lab.wait_background(cap, Duration::from_secs(3));
    let set = lab.exec(Host::Server, "nft", &["list", "set", "inet", "knockd", "grants4"]);
    assert!(out(&set).contains("198.18.0.2 . tcp . 22 timeout 4s"), "{}", out(&set));

    // (e) A session opened during the grant, held past its expiry.
    let session = lab.background(Host::Client, bin("knock-lab"), &["probe", "--addr", SERVER, "--hold-ms", "6500"]);

    // (c) The outsider still cannot connect.
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));

    // (e) After open_for the grant is gone by itself (a kernel timeout).
    sleep(Duration::from_millis(4500).saturating_sub(granted.elapsed()));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "the grant must expire after open_for");

    // (d) The client's exact packets, re-sent byte-exact (spoofing the client) by the outsider...
    assert_eq!(lab.replay(Host::Outsider, "client.pcap", &[]), 8, "the capture holds the 8 knocks");
    lab.wait_log("replayed knock sequence", Duration::from_secs(3));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    // ...and rewritten to the outsider's own address.
    let mac = lab.mac(Host::Outsider);
    assert_eq!(lab.replay(Host::Outsider, "client.pcap", &["--src", OUTSIDER, "--src-mac", &mac]), 8);
    lab.wait_log_count("replayed knock sequence", 2, Duration::from_secs(3));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    let replays = lab.audit_events("replay");
    assert!(replays.iter().any(|l| l.contains(&format!("\"source\":\"{CLIENT}\""))), "{replays:?}");
    assert!(replays.iter().any(|l| l.contains(&format!("\"source\":\"{OUTSIDER}\""))), "{replays:?}");
    assert_eq!(lab.audit_events("grant").len(), 1, "only the real knock was granted");
    // The auditor's view of it (issue 5): both replays in `knockd audit --replays`, and a chain that verifies.
    let table = lab.knockd(&["audit", "--replays"]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert!(rows.iter().all(|r| r.split_whitespace().nth(2) == Some("replay")), "{table}");
    assert!(rows.iter().any(|r| r.contains(&format!(" {CLIENT} "))), "{table}");
    assert!(rows.iter().any(|r| r.contains(&format!(" {OUTSIDER} "))), "{table}");
    let verified = lab.knockd(&["audit", "--verify"]);
    assert!(verified.trim_end().ends_with("verified"), "{verified}");

    // (e) The session opened during the grant survived the grant's expiry.
    let s = lab.wait_background(session, Duration::from_secs(10));
    assert!(s.status.success(), "session broke: {}", out(&s));

    // (f) The next sequence works.
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1));

    // SIGTERM exits cleanly and says so in the audit.
    assert!(lab.stop_daemon("TERM").success());
    assert_eq!(lab.audit_events("stop").len(), 1);
}

#[test]
fn a_knock_survives_sigkill_of_the_daemon_as_consumed() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let cap = lab.capture_knocks("client.pcap", "tcp dst portrange 40000-42047 and dst host 198.18.0.1");
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    // (g) Killed right after the knock: no chance to write anything more.
    lab.stop_daemon("KILL");
    lab.interrupt(cap);
    lab.wait_background(cap, Duration::from_secs(3));
    sleep(Duration::from_millis(4200)); // the grant expires by itself
    lab.start_daemon();
    assert_eq!(lab.replay(Host::Client, "client.pcap", &[]), 8);
    lab.wait_log("replayed knock sequence", Duration::from_secs(3));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "the consumed knock must not open again");
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{}", out(&o));
}

#[test]
fn an_ipv6_knock_opens_over_ipv6_only() {
    require_root();
    // Capturing on `any` also covers Linux cooked frames end to end.
    let mut lab = Lab::capturing_on("any", &hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "bob", SERVER6, Host::Client);
    lab.start_daemon();
    assert!(!lab.can_connect(Host::Client, SERVER6, 22, 500));
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(lab.can_connect(Host::Client, SERVER6, 22, 500));
    // (h) The grant is for the family the knock came over.
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "an IPv6 knock must not open IPv4");
    assert!(!lab.can_connect(Host::Outsider, SERVER6, 22, 500));
    let set = lab.exec(Host::Server, "nft", &["list", "set", "inet", "knockd", "grants6"]);
    assert!(out(&set).contains("2001:db8::2 . tcp . 22"), "{}", out(&set));
}

#[test]
fn a_closing_sequence_removes_the_grant_at_once() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "close = true"));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = lab.knock(Host::Client, &["--profile", &profile, "--close"]);
    assert!(o.status.success(), "{}", out(&o));
    lab.wait_log("door closed by closing sequence", Duration::from_secs(3));
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "closed long before open_for");
    let closes = lab.audit_events("close");
    assert!(closes.len() == 1 && closes[0].contains("\"sequence\":\"counter 1\""), "{closes:?}");
    // Open and close share one counter stream: the next open uses counter 2.
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(2), "{}", out(&o));
}

/// bind_source: the outsider sends the client's next sequence (read with `--dry-run`) from its
/// own address before the client knocks: nothing opens, nothing is consumed (issue 4).
#[test]
fn with_bind_source_a_pre_played_sequence_opens_nothing_and_consumes_nothing() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", "bind_source = true"));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let seq = lab.dry_run(Host::Client, &profile);
    lab.count_knocks_seen("40000-42047");
    lab.send_crafted(Host::Outsider, OUTSIDER, &seq, &["--delay-ms", "5"]);
    assert_eq!(lab.knocks_seen(), 8, "the outsider's knocks reached the server");
    sleep(Duration::from_millis(2500)); // seq_timeout passes
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
    assert!(lab.audit_events("grant").is_empty() && lab.audit_events("burn").is_empty(), "{:?}", lab.audit_lines());
    // The client's own knock with that very counter still works.
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(0), "{}", out(&o));
}

/// The one-line export travels through standard input (issue 4).
#[test]
fn a_one_line_export_imports_from_standard_input() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let line = lab.knockd(&["client", "add", "--door", "ssh", "--name", "bob", "--server-addr", SERVER, "--export"]);
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    let mut import = lab.spawn(Host::Client, bin("knock"), &["profile", "import", "-"]);
    import.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = import.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), line.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    lab.start_daemon();
    let o = lab.knock(Host::Client, &["--profile", "ssh-bob", "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "{}", out(&o));
}
