//! Moving in and out of the shared ledger (issue 13, item 4): a second node joins from the
//! shared state alone, and `knockd ledger export` / `import` move ledgers from files into etcd
//! and back, the client's profile unchanged throughout.

use std::fs;
use std::time::Duration;

use super::fixture::{Backend, HaLab, Host, Node, CLIENT, VIRTUAL};
use super::shared_ledger::{door, OPEN_FOR};
use crate::{answered, require_root};

/// The client's next knock through the virtual address on `node` opens it with sequence
/// `counter`, tcpdump on `node` keeping its packets in `capture` for a replay.
fn knock_opens(lab: &mut HaLab, profile: &str, node: Node, counter: u64, capture: &str) {
    lab.move_virtual(node);
    lab.wait_closed(node, OPEN_FOR * 2);
    let filter = format!("tcp dst portrange 40000-42047 and src host {CLIENT} and dst host {VIRTUAL}");
    let tcpdump = lab.capture(node.host(), capture, &filter);
    let o = lab.knock(profile, "1", 1);
    lab.stop_capture(tcpdump);
    assert!(o.status.success(), "the knock through {node:?}: {o:?}");
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(counter), "{o:?}");
    assert!(lab.open_for_client(node), "the knock did not open {node:?}");
}

/// The packets of `capture`, replayed byte for byte to the virtual address on `node`, open
/// nothing: `node` finds the sequence used, logs and audits the replay.
fn replay_refused(lab: &mut HaLab, capture: &str, node: Node) {
    lab.move_virtual(node);
    lab.wait_closed(node, OPEN_FOR * 2);
    let (said, replays) = (lab.log(node).matches("replayed knock sequence").count(), lab.audit_events(node, "replay"));
    let grants = lab.audit_events(node, "grant").len();
    assert_eq!(lab.replay(Host::Outsider, capture, node), 8, "{capture} holds the 8 knocks");
    lab.wait_log(node, "replayed knock sequence", said + 1, Duration::from_secs(5));
    assert!(!lab.open_for_client(node), "the replay of {capture} opened {node:?}");
    assert_eq!(lab.audit_events(node, "grant").len(), grants, "{:?}", lab.audit_lines(node));
    assert_eq!(lab.audit_events(node, "replay").len(), replays.len() + 1, "{:?}", lab.audit_lines(node));
}

/// Node B starts after A served a knock, its state directory holding A's server id and
/// nothing else (no ledger, no audit log): it refuses the knock A used and opens the next.
#[test]
fn a_second_node_started_later_works_from_the_shared_state_alone() {
    require_root();
    let mut lab = HaLab::new(Backend::Etcd, &door(""));
    let profile = lab.add_client("ssh", "alice");
    let state_b: Vec<_> = fs::read_dir(lab.dir.join("state-b")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(state_b, ["server-id"], "B's state directory holds the server id alone");
    lab.start(Node::A);
    knock_opens(&mut lab, &profile, Node::A, 0, "first.pcap");

    lab.start(Node::B);
    replay_refused(&mut lab, "first.pcap", Node::B);
    knock_opens(&mut lab, &profile, Node::B, 1, "second.pcap");
}

/// A single node on file ledgers moves them into etcd (`ledger export` with the file backend,
/// `ledger import` with etcd's), and node B, on etcd, refuses the knock A used on files and
/// opens the next; then B moves the shared ledgers back into files of its own (`export` from
/// etcd, `import` into files) and goes on from there: the knock it used through etcd is
/// refused, the next opens. The client's profile never changes.
#[test]
fn ledgers_move_from_files_into_etcd_and_back_without_enrolling_the_client_again() {
    require_root();
    let mut lab = HaLab::new(Backend::Etcd, &door(""));
    lab.set_ledger(Node::A, Backend::File);
    let profile = lab.add_client("ssh", "alice");
    lab.start(Node::A);
    knock_opens(&mut lab, &profile, Node::A, 0, "on-files.pcap");
    lab.stop(Node::A);

    // Files → etcd, on A.
    let exported = lab.knockd(Node::A, &["ledger", "export", "--out", "files.jsonl"]);
    assert!(exported.contains("1 ledger(s) exported"), "{exported}");
    lab.set_ledger(Node::A, Backend::Etcd);
    let imported = lab.knockd(Node::A, &["ledger", "import", "files.jsonl"]);
    assert!(imported.contains("1 changed"), "{imported}");
    lab.start(Node::B);
    replay_refused(&mut lab, "on-files.pcap", Node::B);
    knock_opens(&mut lab, &profile, Node::B, 1, "on-etcd.pcap");

    // etcd → files, on B.
    lab.stop(Node::B);
    let exported = lab.knockd(Node::B, &["ledger", "export", "--out", "shared.jsonl"]);
    assert!(exported.contains("1 ledger(s) exported"), "{exported}");
    lab.set_ledger(Node::B, Backend::File);
    let imported = lab.knockd(Node::B, &["ledger", "import", "shared.jsonl"]);
    assert!(imported.contains("1 changed"), "{imported}");
    lab.start(Node::B);
    replay_refused(&mut lab, "on-etcd.pcap", Node::B);
    knock_opens(&mut lab, &profile, Node::B, 2, "on-files-again.pcap");
}
