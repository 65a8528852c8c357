//! The client against a real three-member etcd cluster with TLS (Debian's etcd-server).

use std::time::{Duration, Instant};

use knock_etcd::{Client, EtcdError, Settings, Swap};
use knock_test_support::etcd::Cluster;

#[test]
fn compare_and_swap_reads_lists_and_conflicts() {
    let cluster = Cluster::start(3);
    let c = cluster.client(Duration::from_secs(2));
    let key = b"/knockd/test/ledger/abc";
    assert_eq!(c.get(key).unwrap().0, None);
    let Swap::Written { revision } = c.put_if(key, 0, b"v1").unwrap() else { panic!("first write") };
    let (kv, _) = c.get(key).unwrap();
    let kv = kv.expect("written");
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v1"[..], revision));
    // A second writer who last saw "absent" loses, and learns what is there.
    match c.put_if(key, 0, b"v2").unwrap() {
        Swap::Conflict { current: Some(now) } => assert_eq!(now.value, b"v1"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.put_if(key, revision, b"v3").unwrap(), Swap::Written { .. }));
    c.put_if(b"/knockd/test/ledger/abd", 0, b"x").unwrap();
    c.put_if(b"/knockd/other", 0, b"y").unwrap();
    let (all, _) = c.list(b"/knockd/test/").unwrap();
    let keys: Vec<&[u8]> = all.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"/knockd/test/ledger/abc"[..], b"/knockd/test/ledger/abd"]);
}

#[test]
fn one_member_down_is_survived_two_are_not_and_service_comes_back() {
    let mut cluster = Cluster::start(3);
    let c = cluster.client(Duration::from_millis(800));
    c.put_if(b"k", 0, b"1").unwrap();
    cluster.kill(0); // the first endpoint: the client moves on to the next
    cluster.wait_ready(Duration::from_secs(10)); // a new leader, if it was the leader
    let (kv, _) = c.get(b"k").unwrap();
    assert!(kv.is_some());
    cluster.kill(1);
    let started = Instant::now();
    let err = c.get(b"k").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, EtcdError::Unavailable(_)), "{err}");
    assert!(took < Duration::from_secs(4), "bounded by the timeout per endpoint: {took:?}");
    // Within the cooldown the next call fails at once, without waiting for every endpoint.
    let started = Instant::now();
    assert!(matches!(c.put_if(b"k2", 0, b"x"), Err(EtcdError::Unavailable(_))), "no quorum, no write");
    assert!(started.elapsed() < Duration::from_millis(100), "no endpoint tried: {:?}", started.elapsed());
    std::thread::sleep(knock_etcd::COOLDOWN);
    assert!(matches!(c.put_if(b"k2", 0, b"x"), Err(EtcdError::Unavailable(_))), "no quorum, no write");
    cluster.restart(1);
    cluster.wait_ready(Duration::from_secs(20));
    // `c`'s last call found no endpoint: it calls again only after its cooldown, which the
    // cluster's readiness (another client) may come well within.
    std::thread::sleep(knock_etcd::COOLDOWN);
    // The write that failed may still have been committed once quorum came back (its proposal
    // was queued): an error is "unknown", never "not written". The ledger treats it as not
    // granted, and finds it consumed next time.
    match c.put_if(b"k2", 0, b"x").unwrap() {
        Swap::Written { .. } => {}
        Swap::Conflict { current: Some(kv) } => assert_eq!(kv.value, b"x"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(c.put_if(b"k3", 0, b"y").unwrap(), Swap::Written { .. }), "service is back");
}

#[test]
fn a_client_without_the_clusters_certificate_is_refused() {
    let cluster = Cluster::start(1);
    let mut tls = cluster.tls();
    tls.cert = cluster.dir.join("ca.pem"); // a certificate the key does not belong to
    let err =
        Client::new(&Settings { endpoints: cluster.endpoints(), tls: Some(tls), timeout: Duration::from_secs(1) })
            .unwrap_err();
    assert!(err.to_string().contains("knockd.key") && err.to_string().contains("not the key of"), "{err}");
    // A certificate another CA signed: the members refuse the connection.
    let c = Client::new(&Settings {
        endpoints: cluster.endpoints(),
        tls: Some(cluster.foreign_client_tls()),
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    assert!(matches!(c.get(b"k"), Err(EtcdError::Unavailable(_))));
    let missing = cluster.dir.join("nope.pem");
    let mut tls = cluster.tls();
    tls.ca = missing.clone();
    let err =
        Client::new(&Settings { endpoints: cluster.endpoints(), tls: Some(tls), timeout: Duration::from_secs(1) })
            .unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let plain = Client::new(&Settings {
        endpoints: vec!["https://127.0.0.1:1".into()],
        tls: None,
        timeout: Duration::from_secs(1),
    });
    assert!(matches!(plain, Err(EtcdError::Endpoint(_))), "https needs TLS settings");
}
