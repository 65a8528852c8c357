//! Two bastions, one door (issue 13): two knockd nodes share their ledgers through a
//! three-member etcd cluster with TLS, so no sequence opens twice anywhere; the fixture
//! (`fixture.rs`) builds the nodes, the cluster, a client with one profile at a virtual address
//! the test moves between the nodes, and an outsider, in network namespaces of its own.
//! `shared_ledger`: a knock used or burned at one node opens nothing at the other; `outage`: a
//! node without the shared ledger fails closed.

mod fixture;
mod outage;
mod shared_ledger;

use std::time::Duration;

use fixture::{Backend, HaLab, Host, Node, NODE_A, NODE_B, VIRTUAL};

use crate::require_root;

/// The fixture itself: the cluster answers both nodes, the client reaches each node by its own
/// address and the virtual address wherever it is, and a node cut off from etcd is cut off.
#[test]
fn the_fixture_reaches_both_nodes_and_moves_the_virtual_address() {
    require_root();
    let mut lab = HaLab::network(Backend::Etcd);
    for host in [Host::A, Host::B] {
        lab.reads_etcd(host).unwrap_or_else(|e| panic!("{host:?} cannot read from etcd: {e}"));
    }
    for addr in [NODE_A, NODE_B, VIRTUAL] {
        assert!(lab.can_connect(Host::Client, addr, 22, 1000), "the client cannot reach {addr}:22 (no daemon runs)");
    }
    for to in [Node::B, Node::A, Node::B] {
        lab.move_virtual(to);
        assert!(lab.can_connect(Host::Client, VIRTUAL, 22, 1000), "{VIRTUAL} on {to:?}");
        let entry =
            String::from_utf8_lossy(&lab.exec(Host::Client, "ip", &["neigh", "show", VIRTUAL]).stdout).into_owned();
        assert!(entry.contains(&lab.mac(to.host())), "the client reaches {VIRTUAL} at {to:?}'s address: {entry}");
        let other =
            String::from_utf8_lossy(&lab.exec(to.other().host(), "ip", &["-brief", "addr"]).stdout).into_owned();
        assert!(!other.contains(VIRTUAL), "{:?} still holds {VIRTUAL}: {other}", to.other());
    }
    lab.cut_off_from_etcd(Node::A);
    assert!(lab.reads_etcd(Host::A).is_err(), "A is cut off");
    lab.reads_etcd(Host::B).expect("B still reads");
    assert!(lab.reconnect_to_etcd(Node::A) > 0, "the rule dropped A's packets");
    lab.reads_etcd(Host::A).expect("A reads again");
    lab.cluster().kill(0);
    lab.cluster().kill(1);
    assert!(lab.reads_etcd(Host::B).is_err(), "no quorum, no read");
    lab.cluster().restart(0);
    lab.cluster().wait_ready(Duration::from_secs(20));
    lab.reads_etcd(Host::A).expect("quorum again");
}
