//! Knocks over a bad link: loss, duplication and reordering on the client's side. This kernel
//! has no netem, so nftables rules in the client's namespace drop and duplicate, and
//! reordering is sent as crafted packets (issue 2, k).

use std::time::Duration;

use crate::lab::{Host, Lab, CLIENT, SERVER};
use crate::{answered, hotp_door, require_root};

fn nft(lab: &Lab, host: Host, script: &str) -> String {
    let o = lab.exec(host, "nft", &[script]);
    assert!(o.status.success(), "nft {script}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn knocks_get_through_loss_duplication_and_reordering() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let knock = |lab: &Lab| {
        let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "0.8", "--attempts", "6"]);
        assert!(o.status.success(), "{o:?}");
        answered(&String::from_utf8_lossy(&o.stdout)).expect("answered").1
    };

    // Loss: one knock in eleven is dropped, so the first two sequences each lose one.
    nft(
        &lab,
        Host::Client,
        "add table inet lossy; add chain inet lossy out { type filter hook output priority 0; }; \
        add rule inet lossy out tcp dport 40000-42047 tcp flags syn numgen inc mod 11 == 3 counter drop",
    );
    let used = knock(&lab);
    assert!(used >= 1, "a lost knock means a retry with the next counter (used {used})");
    assert!(lab.nft_counter(Host::Client, "inet", "lossy") >= 1, "the loss rule dropped knocks");
    nft(&lab, Host::Client, "delete table inet lossy");

    lab.wait_closed(Host::Client, Duration::from_secs(6));

    // Duplication: every knock leaves the client's eth0 at least twice.
    lab.count_knocks_seen("40000-42047");
    nft(
        &lab,
        Host::Client,
        "add table netdev dupe; \
        add chain netdev dupe egress { type filter hook egress device \"eth0\" priority 0; }; \
        add rule netdev dupe egress tcp dport 40000-42047 dup to \"eth0\"",
    );
    let before = used;
    let used = knock(&lab);
    assert_eq!(used, before + 1, "duplicates alone must not cost a retry");
    let seen = lab.knocks_seen();
    assert!(seen >= 16, "the server saw {seen} knock packets for 8 knocks: duplicates arrived");
    nft(&lab, Host::Client, "delete table netdev dupe");

    lab.wait_closed(Host::Client, Duration::from_secs(6));

    // Reordering: the next sequence arrives with knocks 3 and 4 swapped (and duplicated).
    let mut seq = lab.dry_run(Host::Client, &profile);
    seq.swap(2, 3);
    let before = lab.knocks_seen();
    lab.send_crafted(Host::Client, CLIENT, &seq, &["--delay-ms", "5", "--repeat-each", "2"]);
    assert_eq!(lab.knocks_seen() - before, 16, "the reordered, duplicated knocks reached the server");
    let after = knock(&lab);
    assert!(after >= used + 2, "the reordered sequence {} was burned; the client moved on to {after}", used + 1);
}
