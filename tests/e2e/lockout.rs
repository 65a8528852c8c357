//! Nobody without a key keeps the admin out (issue 9): a flood from the client's own address,
//! through a masquerading NAT, and a NAT that gives every knock a new port.

use std::time::Duration;

use crate::lab::{bin, Host, Lab, CLIENT, SERVER};
use crate::{answered, hotp_door, require_root};

/// Starts a flood from the outsider's wire, spoofing `source` (random source ports) into the
/// door's whole knock range at about `pps` for at most `seconds`. Returns its background index.
fn flood_from(lab: &mut Lab, source: &str, pps: u64, seconds: u64) -> usize {
    let (src_mac, dst_mac) = (lab.mac(Host::Outsider), lab.mac(Host::Server));
    let sources = format!("{source}/32");
    let (pps, count, seconds) = (pps.to_string(), (pps * seconds).to_string(), seconds.to_string());
    let args = [
        "flood",
        "--iface",
        "eth0",
        "--dst",
        SERVER,
        "--src-mac",
        &src_mac,
        "--dst-mac",
        &dst_mac,
        "--ports",
        "40000-42047",
        "--sources",
        &sources,
        "--pps",
        &pps,
        "--count",
        &count,
        "--max-seconds",
        &seconds,
    ];
    lab.background(Host::Outsider, bin("knock-lab"), &args)
}

/// The packets per second a finished flood reports ("sent N packets in S s (R pps)").
fn flood_rate(out: &std::process::Output) -> f64 {
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text.rsplit('(').next().and_then(|r| r.split(' ').next()).and_then(|r| r.parse().ok());
    rate.unwrap_or_else(|| panic!("no rate in the flood's output: {text} {}", String::from_utf8_lossy(&out.stderr)))
}

/// A neighbour behind the same address (here a spoofer who knows it) sends 10 000 knocks a
/// second to random ports of the range: before, every one of them was a miss against the
/// client's attempt, and no attempt ever completed. The client, behind a masquerading NAT,
/// still gets in within its three attempts.
#[test]
fn regression_9_a_flood_from_the_clients_own_address_does_not_keep_it_out() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    lab.nat_behind_client(false);
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Behind);
    lab.start_daemon();
    let flood = flood_from(&mut lab, CLIENT, 10_000, 12);
    std::thread::sleep(Duration::from_secs(2));
    let o = lab.knock(Host::Behind, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "3"]);
    let rate = flood_rate(&lab.wait_background(flood, Duration::from_secs(20)));
    assert!(o.status.success(), "locked out by a flood from its own address: {o:?}\n{}", lab.log());
    assert!(answered(&String::from_utf8_lossy(&o.stdout)).is_some(), "{o:?}");
    assert!(rate > 8_000.0, "the flood ran at {rate:.0} pps, not the 10k pps the test is about");
    let grants = lab.audit_events("grant");
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!(grants[0].contains(&format!("\"source\":\"{CLIENT}\"")), "the grant is for the NAT's address: {grants:?}");
}

/// A NAT that draws a new source port for every connection (symmetric): the knocks of one
/// attempt arrive from eight ports, and the attempt that follows the whole address opens.
#[test]
fn a_client_behind_a_nat_that_changes_ports_still_opens() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    lab.nat_behind_client(true);
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Behind);
    lab.start_daemon();
    let o = lab.knock(Host::Behind, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "{o:?}\n{}", lab.log());
    assert_eq!(lab.audit_events("grant").len(), 1);
    assert!(lab.audit_events("replay").is_empty(), "one attempt, one grant: {:?}", lab.audit_lines());
}
