//! One door behind two nodes: what one node used up, the other refuses (issue 13, item 5).

use std::time::Duration;

use super::fixture::{Backend, HaLab, Host, Node, CLIENT, OUTSIDER, VIRTUAL};
use crate::{answered, require_root};

/// How long a grant lasts in these tests.
pub const OPEN_FOR: Duration = Duration::from_secs(2);

/// Two nodes sharing door `ssh` (hotp, 22/tcp, open for 2 s, `extra` added to the door) through
/// etcd, client alice added, both daemons running; the virtual address on A. Returns alice's
/// profile.
pub fn pair(extra: &str) -> (HaLab, String) {
    let door = format!(
        "[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\nopen_for = \"{}s\"\n\
         seq_timeout = \"2s\"\n{extra}\n",
        OPEN_FOR.as_secs()
    );
    let mut lab = HaLab::new(Backend::Etcd, &door);
    let profile = lab.add_client("ssh", "alice");
    lab.start(Node::A);
    lab.start(Node::B);
    (lab, profile)
}

/// The number in `"store_revision":N` of an audit record.
fn store_revision(record: &str) -> u64 {
    let found = record.split("\"store_revision\":").nth(1).and_then(|r| {
        let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    found.unwrap_or_else(|| panic!("no store_revision in the grant record: {record}"))
}

/// Failover after a knock: an eavesdropper replays the client's packets, byte for byte, to the
/// virtual address now on B. B finds the sequence used in the shared ledger: nothing opens, and
/// B's audit log has the replay.
#[test]
fn a_knock_consumed_through_a_and_replayed_to_b_opens_nothing_and_is_audited_on_b() {
    require_root();
    let (mut lab, profile) = pair("");
    assert!(!lab.open_for_client(Node::A) && !lab.open_for_client(Node::B), "22 is closed before knocking");
    let filter = format!("tcp dst portrange 40000-42047 and src host {CLIENT} and dst host {VIRTUAL}");
    let capture = lab.capture(Host::A, "knock.pcap", &filter);
    let o = lab.knock(&profile, "1", 1);
    lab.stop_capture(capture);
    assert!(o.status.success(), "{o:?}");
    assert!(lab.open_for_client(Node::A), "the knock opened A");
    let grants = lab.audit_events(Node::A, "grant");
    assert_eq!(grants.len(), 1, "{grants:?}");
    store_revision(&grants[0]);

    lab.move_virtual(Node::B);
    assert_eq!(lab.replay(Host::Outsider, "knock.pcap", Node::B), 8, "the capture holds the 8 knocks");
    lab.wait_log(Node::B, "replayed knock sequence", 1, Duration::from_secs(5));
    assert!(!lab.open_for_client(Node::B), "the replay opened B");
    assert!(lab.audit_events(Node::B, "grant").is_empty(), "{:?}", lab.audit_lines(Node::B));
    let replays = lab.audit_events(Node::B, "replay");
    assert_eq!(replays.len(), 1, "{:?}", lab.audit_lines(Node::B));
    assert!(replays[0].contains(&format!("\"source\":\"{CLIENT}\"")), "{replays:?}");
    assert!(lab.log(Node::B).contains("already used"), "{}", lab.log(Node::B));
}

/// An attempt A saw three knocks of (the burn threshold of the default door) burns its
/// sequence in the shared ledger when it times out there; an eavesdropper who finishes the
/// sequence at B opens nothing, and the client moves on to its next sequence at B.
#[test]
fn a_partial_knock_seen_by_a_cannot_be_finished_at_b() {
    require_root();
    let (mut lab, profile) = pair("");
    let sequence = lab.dry_run(&profile);
    assert_eq!(sequence.len(), 8, "{sequence:?}");
    lab.send(Host::Client, CLIENT, VIRTUAL, Node::A, &sequence[..3]);
    lab.wait_log(Node::A, "incomplete knock: sequence burned", 1, Duration::from_secs(5));
    let burns = lab.audit_events(Node::A, "burn");
    assert!(burns.len() == 1 && burns[0].contains("\"progress\":3"), "{burns:?}");

    lab.move_virtual(Node::B);
    lab.send(Host::Outsider, OUTSIDER, VIRTUAL, Node::B, &sequence);
    lab.wait_log(Node::B, "replayed knock sequence", 1, Duration::from_secs(5));
    assert!(!lab.can_connect(Host::Outsider, VIRTUAL, 22, 500), "the finished sequence opened B");
    assert!(lab.audit_events(Node::B, "grant").is_empty(), "{:?}", lab.audit_lines(Node::B));
    let replays = lab.audit_events(Node::B, "replay");
    assert!(replays.len() == 1 && replays[0].contains(&format!("\"source\":\"{OUTSIDER}\"")), "{replays:?}");

    // The client's own knock: its first sequence is the burned one, its second opens.
    let o = lab.knock(&profile, "1", 2);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{o:?}");
    assert!(lab.open_for_client(Node::B));
}

/// The client's sequences go on from node to node: each knock opens on whichever node holds
/// the virtual address, the nodes' grants carry increasing revisions of the shared store, and
/// both nodes export the same ledgers.
#[test]
fn the_clients_next_knock_opens_through_either_node() {
    require_root();
    let (mut lab, profile) = pair("");
    let before = lab.knockd(Node::B, &["ledger", "export"]);
    assert_eq!(before.lines().count(), 1, "`client add` at A made alice's ledger in etcd, which B sees: {before}");
    let mut revisions = Vec::new();
    for (counter, node) in [Node::A, Node::B, Node::A, Node::B].into_iter().enumerate() {
        lab.move_virtual(node);
        // The node's grant of two knocks ago must not answer for this one.
        lab.wait_closed(node, OPEN_FOR * 2);
        let o = lab.knock(&profile, "1", 1);
        assert!(o.status.success(), "knock {counter} through {node:?}: {o:?}");
        assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(counter as u64), "{o:?}");
        assert!(lab.open_for_client(node), "knock {counter} did not open {node:?}");
        let grants = lab.audit_events(node, "grant");
        assert_eq!(grants.len(), counter / 2 + 1, "{grants:?}");
        revisions.push(store_revision(grants.last().unwrap()));
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "the shared store's revisions go up: {revisions:?}");
    let (a, b) = (lab.knockd(Node::A, &["ledger", "export"]), lab.knockd(Node::B, &["ledger", "export"]));
    assert_eq!(a, b, "both nodes see one ledger");
    assert_ne!(a, before, "the knocks were recorded");
}
