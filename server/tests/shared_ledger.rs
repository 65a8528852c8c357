//! The etcd ledger store against a real three-member etcd cluster with TLS on loopback: two
//! nodes' stores of one ledger decide each use by a transaction, so what one used (or burned)
//! the other refuses, whatever its own copy says; without quorum nothing is used (fail closed);
//! and what failed is never taken for done.

use std::time::Duration;

use knock_core::config::EtcdSettings;
use knock_core::ledger::{Consumed, LedgerError};
use knock_test_support::etcd::Cluster;
use knockd::state::ledgers::LedgerStores;
use knockd::state::shared_ledgers::EtcdLedgers;

fn settings(cluster: &Cluster, node: &str) -> EtcdSettings {
    let tls = cluster.tls();
    std::fs::set_permissions(&tls.key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    EtcdSettings {
        endpoints: cluster.endpoints(),
        prefix: "/knockd-test/".into(),
        ca_file: tls.ca,
        cert_file: tls.cert,
        key_file: tls.key,
        timeout: Duration::from_millis(700),
        node: node.into(),
    }
}

#[test]
fn two_nodes_never_use_one_counter_twice() {
    let cluster = Cluster::start(3);
    let (a, b) = (
        EtcdLedgers::new(&settings(&cluster, "a"), true).unwrap(),
        EtcdLedgers::new(&settings(&cluster, "b"), true).unwrap(),
    );
    a.create("f00d").unwrap();
    assert!(b.create("f00d").is_err(), "created once");
    let (mut on_a, mut on_b) = (a.open("f00d").unwrap(), b.open("f00d").unwrap());
    // Node A uses 0; node B, whose copy is older, is refused by the transaction.
    assert_eq!(on_a.consume(0).unwrap(), Consumed::Fresh);
    assert!(on_a.receipt().is_some(), "the etcd revision for the audit record");
    assert!(!on_b.is_used(0), "B's copy is stale...");
    assert_eq!(on_b.consume(0).unwrap(), Consumed::AlreadyUsed, "...and the transaction says so");
    assert!(on_b.is_used(0), "B learnt it");
    // A burn on B is seen on A; the next counter works through either node.
    assert!(on_b.burn(1).unwrap());
    assert_eq!(on_a.consume(1).unwrap(), Consumed::AlreadyUsed);
    assert_eq!(on_a.consume(2).unwrap(), Consumed::Fresh);
    assert_eq!(on_b.consume(3).unwrap(), Consumed::Fresh);
    // A refresh brings the other node's uses into the copy (for the candidates' window).
    assert!(on_a.refresh().unwrap());
    assert_eq!(on_a.next(), 4);
    // totp steps are a set, shared the same way.
    assert_eq!(on_a.mark_used(10).unwrap(), Consumed::Fresh);
    assert_eq!(on_b.mark_used(10).unwrap(), Consumed::AlreadyUsed);
    // A read-only store never writes.
    let reader = EtcdLedgers::new(&settings(&cluster, "r"), false).unwrap();
    let mut read = reader.open("f00d").unwrap();
    assert!(matches!(read.consume(20), Err(LedgerError::ReadOnly(_))));
    // Everything under the prefix, for `knockd ledger export`.
    let all = a.all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0.as_str(), all[0].1.next()), ("f00d", 4));
}

#[test]
fn without_quorum_nothing_is_used_and_service_comes_back() {
    let mut cluster = Cluster::start(3);
    let a = EtcdLedgers::new(&settings(&cluster, "a"), true).unwrap();
    a.create("beef").unwrap();
    let mut on_a = a.open("beef").unwrap();
    assert_eq!(on_a.consume(0).unwrap(), Consumed::Fresh);
    cluster.kill(0);
    cluster.wait_ready(Duration::from_secs(10));
    assert_eq!(on_a.consume(1).unwrap(), Consumed::Fresh, "one member down: still served");
    cluster.kill(1);
    let err = on_a.consume(2).unwrap_err();
    assert!(matches!(err, LedgerError::Shared { .. }) && err.to_string().contains("fail closed"), "{err}");
    assert!(!on_a.is_used(2), "a failed use is not taken for done");
    cluster.restart(1);
    cluster.wait_ready(Duration::from_secs(20));
    // The store's client tries again once its cooldown after the failure is over.
    std::thread::sleep(knock_etcd::COOLDOWN);
    // The failed write may have been committed once quorum came back: either way counter 2 is
    // never used twice, and counter 3 works.
    match on_a.consume(2).unwrap() {
        Consumed::Fresh | Consumed::AlreadyUsed => {}
    }
    assert_eq!(on_a.consume(3).unwrap(), Consumed::Fresh);
    assert_eq!(on_a.consume(3).unwrap(), Consumed::AlreadyUsed);
}

#[test]
fn a_key_others_can_read_and_a_missing_ledger_are_refused() {
    let cluster = Cluster::start(1);
    let s = settings(&cluster, "a");
    std::fs::set_permissions(&s.key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = EtcdLedgers::new(&s, true).unwrap_err();
    assert!(err.to_string().contains("knockd.key") && err.to_string().contains("chmod 600"), "{err}");
    let a = EtcdLedgers::new(&settings(&cluster, "a"), true).unwrap();
    assert!(matches!(a.open("cafe"), Err(LedgerError::Missing(_))), "a missing ledger is never a fresh start");
}
