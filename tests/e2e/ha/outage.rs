//! When the shared ledger is out of reach a node fails closed, and opens again when it is back
//! (issue 13, item 5): etcd members killed, a node cut off from etcd.

use std::time::Duration;

use super::fixture::{HaLab, Host, Node, OUTSIDER};
use super::shared_ledger::{pair, OPEN_FOR};
use crate::require_root;

/// A knock through the virtual address on `node` opens that node's port 22 (closed before),
/// the client sending at most `attempts` sequences, one a second.
fn opens(lab: &mut HaLab, profile: &str, node: Node, attempts: u32) {
    lab.move_virtual(node);
    lab.wait_closed(node, OPEN_FOR * 2);
    let o = lab.knock(profile, "1", attempts);
    assert!(o.status.success(), "a knock through {node:?}: {o:?}");
    assert!(lab.open_for_client(node), "the knock did not open {node:?}");
}

/// Sequences the client may need once etcd answers again: a node whose calls all failed does
/// not call again for `knock_etcd::COOLDOWN` (its knocks fail closed meanwhile); the client's
/// own retries, one a second, cover that and a second more.
fn attempts_after_outage() -> u32 {
    knock_etcd::COOLDOWN.as_secs() as u32 + 2
}

/// A knock through the virtual address on `node` is refused: the node says the shared ledger
/// failed, nothing opens, the refusal is audited and no grant.
fn refused(lab: &mut HaLab, profile: &str, node: Node) {
    lab.move_virtual(node);
    lab.wait_closed(node, OPEN_FOR * 2);
    let (said, grants) = (lab.log(node).matches("shared ledger").count(), lab.audit_events(node, "grant").len());
    let refusals = lab.audit_events(node, "refused").len();
    let o = lab.knock(profile, "2", 1);
    assert!(!o.status.success(), "a knock through {node:?} opened without the shared ledger: {o:?}");
    lab.wait_log(node, "shared ledger", said + 1, Duration::from_secs(5));
    assert!(!lab.open_for_client(node), "{node:?} opened");
    assert_eq!(lab.audit_events(node, "grant").len(), grants, "{node:?} audited a grant");
    let now = lab.audit_events(node, "refused");
    assert!(now.len() > refusals && now.last().unwrap().contains("shared ledger"), "{:?}", lab.audit_lines(node));
}

/// One member down: the cluster keeps its quorum and knocks open. Two down: both nodes refuse
/// every knock, while `always_allow` still lets its address in. Both back: knocks open again.
#[test]
fn knocks_open_with_one_etcd_member_down_fail_closed_with_two_and_open_when_they_are_back() {
    require_root();
    let (mut lab, profile) = pair(&format!("always_allow = [\"{OUTSIDER}\"]\n"));
    assert!(!lab.open_for_client(Node::A) && !lab.open_for_client(Node::B), "22 is closed before knocking");
    lab.cluster().kill(0);
    // A new leader, if it was the leader: until then the cluster answers nobody.
    lab.cluster().wait_ready(Duration::from_secs(10));
    opens(&mut lab, &profile, Node::A, 1);
    opens(&mut lab, &profile, Node::B, 1);

    lab.cluster().kill(1);
    for node in [Node::B, Node::A] {
        refused(&mut lab, &profile, node);
        assert!(lab.can_connect(Host::Outsider, node.addr(), 22, 500), "always_allow no longer passes at {node:?}");
    }

    lab.cluster().restart(0);
    lab.cluster().restart(1);
    lab.cluster().wait_ready(Duration::from_secs(20));
    opens(&mut lab, &profile, Node::A, attempts_after_outage());
    opens(&mut lab, &profile, Node::B, attempts_after_outage());
}

/// Node A loses its way to etcd (a firewall rule), B keeps it: A refuses, B opens, and A opens
/// again once its way is back.
#[test]
fn a_node_cut_off_from_etcd_refuses_while_the_other_opens() {
    require_root();
    let (mut lab, profile) = pair("");
    lab.cut_off_from_etcd(Node::A);
    refused(&mut lab, &profile, Node::A);
    opens(&mut lab, &profile, Node::B, 1);
    assert!(lab.reconnect_to_etcd(Node::A) > 0, "the rule dropped what A sent etcd");
    opens(&mut lab, &profile, Node::A, attempts_after_outage());
}
