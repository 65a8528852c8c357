//! The ways past the door of the nftables backend (docs/THREAT-MODEL.md, "Ways past the door"),
//! each closed, against a real kernel in network namespaces (needs root; fails otherwise).
//!
//! A connection or datagram that reaches a protected port without going through the door:
//! - UDP to a protected port sent to a broadcast, multicast or anycast address (not "local" to
//!   the routing tables, yet delivered to a socket bound to the wildcard address);
//! - TCP to a local address whose local route is in another routing table (as in a VRF);
//! - TCP to an unprotected port that the admin's `redirect` or `dnat` sends on to port 22.
//!
//! Each test builds a server and a peer namespace joined by a veth pair with the shared fixture
//! (addresses only in 198.18.0.0/15 and 2001:db8::/32), then re-executes itself inside the
//! server namespace (`KWAY_ROLE=firewall`), where it installs the firewall and checks, with
//! probes run in the peer namespace: TCP connects and held connections (`backends`), and a UDP
//! sender (`KWAY_ROLE=udp-send`). Every case is first shown open without the firewall, so a
//! closed result is the firewall's doing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use knock_core::Proto;
use knockd::runtime::firewall::{Firewall, Nftables, OpenPort};

use knock_test_support::reexec::Reexec;
use knock_test_support::require_root;

use super::{sock, Lab, Listeners, Outcome};

const SSH: OpenPort = OpenPort { port: 22, proto: Proto::Tcp };
const DNS: OpenPort = OpenPort { port: 53, proto: Proto::Udp };
/// The UDP sender's targets, `,`-separated socket addresses.
const UDP_TARGETS_ENV: &str = "KWAY_UDP_TARGETS";
/// The tag in each datagram, so each round's datagrams are told apart.
const UDP_TAG_ENV: &str = "KWAY_UDP_TAG";
/// How long a datagram that should not arrive is waited for.
const UDP_SILENCE: Duration = Duration::from_millis(800);
/// How long a datagram that should arrive may take.
const UDP_ARRIVAL: Duration = Duration::from_secs(2);

/// A lab whose tests re-execute test `test`, in namespaces `kway<n>-...`.
const fn lab(test: &'static str, prefix: &'static str, net: Nets) -> Lab {
    Lab {
        reexec: Reexec { module: module_path!(), test, role_env: "KWAY_ROLE" },
        peer_ns_env: "KWAY_PEER_NS",
        target_env: "KWAY_TARGET",
        ns_prefix: prefix,
        server4: net.0,
        peer4: net.1,
        server6: net.2,
        peer6: net.3,
    }
}

/// Server and peer addresses: IPv4 (in a /24), IPv6 (in a /64).
struct Nets(&'static str, &'static str, &'static str, &'static str);

static BROADCAST: Lab = lab(
    "udp_to_a_protected_port_by_broadcast_multicast_or_anycast_arrives_only_with_a_grant",
    "kwayb",
    Nets("198.18.68.1", "198.18.68.2", "2001:db8:68::1", "2001:db8:68::2"),
);
static OTHER_TABLE: Lab = lab(
    "a_local_address_routed_from_another_table_as_in_a_vrf_stays_closed_until_granted",
    "kwayt",
    Nets("198.18.69.1", "198.18.69.2", "2001:db8:69::1", "2001:db8:69::2"),
);
static REDIRECT: Lab = lab(
    "an_admin_redirect_or_dnat_to_the_protected_port_stays_closed_until_granted",
    "kwayr",
    Nets("198.18.70.1", "198.18.70.2", "2001:db8:70::1", "2001:db8:70::2"),
);

/// Runs the role this process was started in, or the whole test from outside.
fn run(lab: &'static Lab, firewall_side: fn(&'static Lab)) {
    match lab.reexec.role().as_deref() {
        Some("firewall") => return firewall_side(lab),
        Some("connect") => lab.connect_probe(),
        Some("hold") => lab.hold_probe(),
        Some("udp-send") => udp_send_probe(lab),
        _ => {}
    }
    require_root();
    lab.run_in_namespaces();
}

#[test]
fn udp_to_a_protected_port_by_broadcast_multicast_or_anycast_arrives_only_with_a_grant() {
    run(&BROADCAST, broadcast_side);
}

#[test]
fn a_local_address_routed_from_another_table_as_in_a_vrf_stays_closed_until_granted() {
    run(&OTHER_TABLE, other_table_side);
}

#[test]
fn an_admin_redirect_or_dnat_to_the_protected_port_stays_closed_until_granted() {
    run(&REDIRECT, redirect_side);
}

/// (a) Protected 53/udp, reached by unicast, by the subnet broadcast, by an IPv4 group the
/// listener joined, by the IPv6 all-nodes group, by an IPv6 group the listener joined, and by
/// the subnet-router anycast address (this host forwards IPv6).
fn broadcast_side(lab: &'static Lab) {
    let peer_ns = std::env::var(lab.peer_ns_env).expect("peer namespace name");
    let group4 = Ipv4Addr::new(239, 18, 68, 53);
    let group6: Ipv6Addr = "ff05::db8:68".parse().unwrap();
    let inbox = UdpInbox::bind(DNS.port);
    inbox.socket.join_multicast_v4(&group4, &lab.server4.parse().unwrap()).expect("join the IPv4 group");
    inbox.socket.join_multicast_v6(&group6, ifindex("veth0")).expect("join the IPv6 group");
    // The peer has no default route: send the IPv4 group out of its veth.
    sh(&format!("ip -n {peer_ns} route add 239.0.0.0/8 dev veth1"));
    // A router answers on the subnet-router anycast address of each of its IPv6 prefixes.
    sh("sysctl -qw net.ipv6.conf.all.forwarding=1");
    let anycast: Ipv6Addr = "2001:db8:68::".parse().unwrap();
    wait_until("the anycast route", || {
        run_out("ip", &["-6", "route", "show", "table", "local"]).contains("anycast 2001:db8:68:: ")
    });

    let to = |ip: IpAddr| SocketAddr::new(ip, DNS.port);
    let unicast = [to(lab.server4.parse().unwrap()), to(lab.server6.parse().unwrap())];
    let past_the_door = [
        to("198.18.68.255".parse().unwrap()),
        to(group4.into()),
        to("ff02::1".parse().unwrap()),
        to(group6.into()),
        to(anycast.into()),
    ];
    let all: Vec<SocketAddr> = unicast.iter().chain(&past_the_door).copied().collect();

    let round = |tag: &str, targets: &[SocketAddr]| -> Vec<String> {
        let sent = send_udp(lab, &peer_ns, tag, targets);
        let within = if tag.starts_with("closed") { UDP_SILENCE } else { UDP_ARRIVAL };
        inbox.arrived(&sent, within)
    };
    let every = |tag: &str| all.iter().map(|t| format!("{tag} {t}")).collect::<Vec<_>>();

    assert_eq!(round("open", &all), every("open"), "without the firewall every datagram arrives");

    let mut fw = Nftables::new("knockd").expect("open the netlink socket");
    fw.install(&[SSH, DNS]).expect("install");
    println!("{}", run_out("nft", &["list", "table", "inet", "knockd"]));
    assert_eq!(
        round("closed", &all),
        Vec::<String>::new(),
        "no datagram to protected 53/udp may arrive without a grant"
    );

    for peer in [lab.peer4, lab.peer6] {
        fw.grant(peer.parse().unwrap(), &[DNS], Duration::from_secs(30)).expect("grant 53/udp");
    }
    assert_eq!(round("granted", &all), every("granted"), "a grant for 53/udp lets every one of them arrive");
}

/// (b) The server's addresses have their local routes in table 10, reached by a rule for
/// packets coming in on veth0, not in table `local`: what a VRF does (its device's table holds
/// its addresses' local routes). The main tables do not see the addresses as local.
fn other_table_side(lab: &'static Lab) {
    let probes = lab.probes();
    let Listeners { ssh4, open4, ssh6, open6 } = lab.listen();
    // The listeners are bound first: a bind needs the address in table `local`.
    for (family, server) in [("-4", lab.server4), ("-6", lab.server6)] {
        sh(&format!("ip {family} route del local {server} dev veth0 table local"));
        sh(&format!("ip {family} route add local {server} dev veth0 table 10"));
        sh(&format!("ip {family} rule add pref 100 iif veth0 lookup 10"));
    }
    for target in [ssh4, ssh6] {
        assert_eq!(
            probes.connect(target),
            Outcome::Connected,
            "{target} reachable through table 10 without the firewall"
        );
    }

    let mut fw = Nftables::new("knockd").expect("open the netlink socket");
    fw.install(&[SSH]).expect("install");
    println!("{}", run_out("nft", &["list", "table", "inet", "knockd"]));
    assert_eq!(probes.connect(open4), Outcome::Connected, "unprotected port 23 stays reachable");
    assert_eq!(probes.connect(open6), Outcome::Connected, "unprotected port 23 stays reachable over IPv6");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "22 routed from table 10 must be dropped before a grant");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "... over IPv6 too");

    granted_opens_and_sessions_survive(lab, &mut fw, ssh4, ssh4);
    fw.grant(lab.peer6.parse().unwrap(), &[SSH], Duration::from_secs(30)).expect("grant over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::Connected, "a grant opens 22 over IPv6");
}

/// (c) The admin's own table sends 443 on to local port 22 (`redirect`), and 8443 to
/// 198.18.70.1:22 (`dnat`), in prerouting at the NAT priority. Port 22 is protected, 443 and
/// 8443 are not: what is delivered to 22 is judged as 22, so a grant for 22 opens them too.
fn redirect_side(lab: &'static Lab) {
    let probes = lab.probes();
    let Listeners { ssh4, ssh6, .. } = lab.listen();
    let admin = format!(
        "add table inet admin; \
         add chain inet admin pre {{ type nat hook prerouting priority dstnat; }}; \
         add rule inet admin pre tcp dport 443 redirect to :22; \
         add rule inet admin pre meta nfproto ipv4 tcp dport 8443 dnat ip to {}:22",
        lab.server4
    );
    sh_nft(&admin);
    let https4 = sock(lab.server4, 443);
    let https6 = sock(lab.server6, 443);
    let dnat4 = sock(lab.server4, 8443);
    for target in [https4, https6, dnat4] {
        assert_eq!(probes.connect(target), Outcome::Connected, "{target} reaches 22 without the firewall");
    }

    let mut fw = Nftables::new("knockd").expect("open the netlink socket");
    fw.install(&[SSH]).expect("install");
    println!("{}", run_out("nft", &["list", "table", "inet", "knockd"]));
    for target in [https4, https6, dnat4, ssh4, ssh6] {
        assert_eq!(probes.connect(target), Outcome::TimedOut, "{target} must not reach 22 without a knock");
    }

    granted_opens_and_sessions_survive(lab, &mut fw, https4, ssh4);
    assert_eq!(probes.connect(dnat4), Outcome::TimedOut, "revoked: the dnat closes again");
    fw.grant(lab.peer4.parse().unwrap(), &[SSH], Duration::from_secs(30)).expect("grant");
    assert_eq!(probes.connect(dnat4), Outcome::Connected, "a grant for 22 opens the dnat from 8443");
    fw.grant(lab.peer6.parse().unwrap(), &[SSH], Duration::from_secs(30)).expect("grant over IPv6");
    assert_eq!(probes.connect(https6), Outcome::Connected, "a grant for 22 opens the redirect over IPv6");
    let admin = run_out("nft", &["list", "table", "inet", "admin"]);
    assert!(
        admin.contains("redirect to :22") && admin.contains("dnat ip to"),
        "the admin's table is untouched: {admin}"
    );
}

/// Grants the IPv4 peer 22: `via` and `direct` open; a connection held through `via` keeps
/// passing data after the revoke, while new connections are dropped again.
fn granted_opens_and_sessions_survive(lab: &'static Lab, fw: &mut Nftables, via: SocketAddr, direct: SocketAddr) {
    let probes = lab.probes();
    let peer4: IpAddr = lab.peer4.parse().unwrap();
    fw.grant(peer4, &[SSH], Duration::from_secs(30)).expect("grant");
    assert_eq!(probes.connect(via), Outcome::Connected, "a grant for 22 opens {via}");
    assert_eq!(probes.connect(direct), Outcome::Connected, "a grant for 22 opens {direct}");
    let mut held = probes.hold(via);
    assert_eq!(held.echo("during the grant"), Some("during the grant".into()));
    fw.revoke(peer4, &[SSH]).expect("revoke");
    assert_eq!(probes.connect(via), Outcome::TimedOut, "revoked: {via} closes for new connections");
    assert_eq!(held.echo("after the revoke"), Some("after the revoke".into()), "the established session was cut");
    held.close();
}

/// Received datagrams on `[::]:port` (IPv4 too), each kept as its text.
struct UdpInbox {
    socket: UdpSocket,
    got: Arc<Mutex<Vec<String>>>,
}

impl UdpInbox {
    fn bind(port: u16) -> UdpInbox {
        let socket = UdpSocket::bind(("::", port)).unwrap_or_else(|e| panic!("bind [::]:{port}: {e}"));
        let reader = socket.try_clone().expect("clone the UDP socket");
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, _)) = reader.recv_from(&mut buf) {
                sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        UdpInbox { socket, got }
    }

    /// Which of `expected` arrived: waits until all did or `within` passed.
    fn arrived(&self, expected: &[String], within: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let got = self.got.lock().unwrap().clone();
            let arrived: Vec<String> = expected.iter().filter(|e| got.contains(e)).cloned().collect();
            if arrived.len() == expected.len() || start.elapsed() > within {
                return arrived;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends one datagram `"{tag} {target}"` to each target from the peer namespace; returns the
/// texts sent.
fn send_udp(lab: &'static Lab, peer_ns: &str, tag: &str, targets: &[SocketAddr]) -> Vec<String> {
    let list: Vec<String> = targets.iter().map(SocketAddr::to_string).collect();
    let out = lab
        .reexec
        .command(Some(peer_ns), "udp-send")
        .env(UDP_TARGETS_ENV, list.join(","))
        .env(UDP_TAG_ENV, tag)
        .output()
        .expect("run the UDP sender");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "UDP sender failed: {text}");
    targets.iter().map(|t| format!("{tag} {t}")).collect()
}

/// Probe role: one datagram to each target from the peer's addresses (so a grant for them
/// applies whatever the scope of the target), out of veth1 for IPv6 link-local groups.
fn udp_send_probe(lab: &Lab) -> ! {
    let tag = std::env::var(UDP_TAG_ENV).expect(UDP_TAG_ENV);
    let targets = std::env::var(UDP_TARGETS_ENV).expect(UDP_TARGETS_ENV);
    let v4 = UdpSocket::bind((lab.peer4, 0)).expect("IPv4 UDP socket");
    v4.set_broadcast(true).expect("SO_BROADCAST");
    let v6 = UdpSocket::bind((lab.peer6, 0)).expect("IPv6 UDP socket");
    for target in targets.split(',') {
        let addr: SocketAddr = target.parse().expect("a target address");
        let text = format!("{tag} {addr}");
        let sent = match addr {
            SocketAddr::V4(_) => v4.send_to(text.as_bytes(), addr),
            SocketAddr::V6(a) => {
                let scope = if a.ip().segments()[0] == 0xff02 { ifindex("veth1") } else { 0 };
                v6.send_to(text.as_bytes(), SocketAddrV6::new(*a.ip(), a.port(), 0, scope))
            }
        };
        if let Err(e) = sent {
            println!("FAILED send to {addr}: {e}");
            std::process::exit(1);
        }
    }
    std::process::exit(0)
}

/// The index of interface `name` in this namespace (`ip netns exec` mounts its own /sys).
fn ifindex(name: &str) -> u32 {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.trim().parse().unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Polls `done` every 20 ms for up to 2 s.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(2), "{what} did not appear within 2 s");
        thread::sleep(Duration::from_millis(20));
    }
}

fn run_out(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{program} {}: {text}", args.join(" "));
    text
}

fn sh(script: &str) {
    run_out("sh", &["-ec", script]);
}

fn sh_nft(script: &str) {
    run_out("nft", &[script]);
}
