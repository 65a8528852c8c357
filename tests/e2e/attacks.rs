//! An outsider's attacks: sweeping a whole knock range, and finishing a knock whose last packet
//! was dropped (issue 2, j and l).

use std::thread::sleep;
use std::time::Duration;

use crate::lab::{Host, Lab, OUTSIDER, SERVER};
use crate::{answered, hotp_door, require_root};

#[test]
fn sweeping_every_port_of_a_small_door_k_times_opens_nothing() {
    require_root();
    // A small test door: 256 ports, 4 knocks.
    let mut lab = Lab::new(&hotp_door("tiny", "22/tcp", "knock_ports = \"45000-45255\"\nlength = 4"));
    let profile = lab.add_client("tiny", "alice", SERVER, Host::Client);
    lab.start_daemon();
    lab.count_knocks_seen("45000-45255");
    let sweep: Vec<String> = (0..4).flat_map(|_| (45000..=45255).map(|p| p.to_string())).collect();
    lab.send_crafted(Host::Outsider, OUTSIDER, &sweep, &[]);
    assert_eq!(lab.knocks_seen(), 1024, "the whole sweep reached the server");
    sleep(Duration::from_millis(2500)); // every attempt the sweep started has timed out
    assert!(!lab.log().contains("door opened"), "{}", lab.log());
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
    assert!(lab.audit_events("grant").is_empty());
    // The client still gets in (with its next counter if the sweep burned one).
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "3"]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn an_outsider_cannot_finish_a_knock_whose_last_packet_was_dropped() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let seq = lab.dry_run(Host::Client, &profile);
    assert_eq!(seq.len(), 8);
    let last_port = seq[7].split(':').next().unwrap().to_string();
    // The client's last knock is dropped on the wire.
    let rule = format!(
        "add table inet lossy; add chain inet lossy out {{ type filter hook output priority 0; }}; \
         add rule inet lossy out tcp dport {last_port} counter drop"
    );
    assert!(lab.exec(Host::Client, "nft", &[&rule]).status.success());
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "0.5", "--attempts", "1"]);
    assert!(!o.status.success(), "the door must not open without the last knock");
    assert!(lab.exec(Host::Client, "nft", &["delete", "table", "inet", "lossy"]).status.success());
    // The outsider saw the first seven and tries every possible last knock from his address.
    let prefix = &seq[..7];
    let lasts: Vec<u16> = (40000..=42047).collect();
    for batch in lasts.chunks(128) {
        let tries: Vec<String> =
            batch.iter().flat_map(|p| prefix.iter().cloned().chain(std::iter::once(p.to_string()))).collect();
        lab.send_crafted(Host::Outsider, OUTSIDER, &tries, &[]);
    }
    sleep(Duration::from_millis(2500));
    assert!(!lab.log().contains("door opened"), "{}", lab.log());
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
    let burns = lab.audit_events("burn");
    assert!(
        burns.iter().any(|l| l.contains("\"sequence\":\"counter 0\"")),
        "the cut-short sequence is burned: {burns:?}"
    );
    // The client's next knock works.
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{o:?}");
}
