//! The etcd ledger store against a real three-member etcd cluster with TLS on loopback: two
//! nodes' stores of one ledger decide each use by a transaction, so what one used (or burned)
//! the other refuses, whatever its own copy says; without quorum nothing is used (fail closed);
//! and what failed is never taken for done; and a write one member answered too late is
//! recognised as this node's own when the next member finds it in place.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
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

/// A TCP relay on loopback in front of one member: what the client sends goes through at once;
/// what the member answers is held `delay` first while `slow` is set. The threads end with the
/// connections (the member's side closes when the cluster is dropped).
fn slow_answers(member: &str, delay: Duration, slow: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let member = member.trim_start_matches("https://").to_string();
    thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let Ok(upstream) = TcpStream::connect(&member) else { return };
            let (mut from_client, mut to_member) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            thread::spawn(move || relay(&mut from_client, &mut to_member, Duration::ZERO, None));
            let (mut from_member, mut to_client) = (upstream, client);
            let slow = slow.clone();
            thread::spawn(move || relay(&mut from_member, &mut to_client, delay, Some(slow)));
        }
    });
    url
}

/// Copies `from` to `to` until either closes, each chunk held `delay` while `slow` is set.
fn relay(from: &mut TcpStream, to: &mut TcpStream, delay: Duration, slow: Option<Arc<AtomicBool>>) {
    let mut buf = [0u8; 16 << 10];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if slow.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            thread::sleep(delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The first member commits the use but answers after the client's timeout; the client asks
/// the next member, whose transaction finds the key changed, by this very write. That is this
/// node's use (fresh, with its revision), not another node's: the knock opens, once.
#[test]
fn a_use_committed_by_a_member_that_answered_too_late_is_this_nodes_own() {
    let cluster = Cluster::start(3);
    let slow = Arc::new(AtomicBool::new(false));
    let mut s = settings(&cluster, "a");
    s.timeout = Duration::from_millis(300);
    s.endpoints[0] = slow_answers(&s.endpoints[0], Duration::from_millis(1500), slow.clone());
    let a = EtcdLedgers::new(&s, true).unwrap();
    a.create("5afe").unwrap();
    let mut on_a = a.open("5afe").unwrap();
    assert_eq!(on_a.consume(0).unwrap(), Consumed::Fresh, "through the relay, in time");
    slow.store(true, Ordering::SeqCst);
    assert_eq!(on_a.consume(1).unwrap(), Consumed::Fresh, "the late member committed this node's own use");
    let revision = on_a.receipt().expect("the revision of the use, for the audit record");
    slow.store(false, Ordering::SeqCst);
    let b = EtcdLedgers::new(&settings(&cluster, "b"), true).unwrap();
    let mut on_b = b.open("5afe").unwrap();
    assert_eq!(on_b.consume(1).unwrap(), Consumed::AlreadyUsed, "used once, for every node");
    assert_eq!(on_b.next(), 2);
    assert!(on_b.receipt().is_none() && revision > 0);
}
