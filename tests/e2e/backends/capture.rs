//! Live capture in network namespaces (needs root): knocks sent over a veth pair from a peer
//! namespace reach `spawn_live`, on the interface itself (Ethernet) and on `any` (Linux
//! cooked); SYN-ACKs, RSTs, ICMP errors and ports outside the knock range do not.
//!
//! A capture thread must run inside the namespace, so this test binary re-executes itself
//! under `ip netns exec`: with `KCAP_CHILD=capture` it captures and prints what it saw, with
//! `KCAP_CHILD=send` it sends the test's packets. Only 198.18.0.0/15 and 2001:db8::/32 are
//! used.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use knock_core::config::Config;
use knockd::runtime::capture::{bpf_filter, spawn_live};

use knock_test_support::netns::{unique_tag, Netns};
use knock_test_support::reexec::Reexec;
use knock_test_support::require_root;
use knock_test_support::run::{self, Reaped};

/// The children: this binary re-executed as test `child_role`, with its role (`capture` or
/// `send`) in `KCAP_CHILD`.
const CHILD: Reexec = Reexec { module: module_path!(), test: "child_role", role_env: "KCAP_CHILD" };
/// What the sender sends: `;`-separated `tcp ADDR` / `udp ADDR`.
const SEND_ENV: &str = "KCAP_SEND";
/// Prefix of the lines a child reports on.
const REPORT: &str = "KCAP";
/// The interfaces the capture child listens on: `,`-separated.
const IFACES_ENV: &str = "KCAP_IFACES";
/// The interfaces of the first test: the veth itself (Ethernet) and `any` (Linux cooked).
const INTERFACES: [&str; 2] = ["kc0", "any"];
/// A UDP knock that tells the capture child everything has been sent.
const SENTINEL: &str = "198.18.77.1:40999";
const WAIT: Duration = Duration::from_secs(10);

/// A network namespace for `role` (`s` or `p`), deleted on drop (also when the test fails).
fn netns(role: &str) -> Netns {
    Netns::create(format!("kcap-{}-{role}", unique_tag()))
}

/// Runs the sender child, which must succeed having run its test.
fn send(cmd: &mut Command) {
    CHILD.assert_ran(&run::ok(cmd));
}

/// A server namespace and a peer namespace joined by a veth pair (kc0 in the server, kc1 in
/// the peer): 198.18.77.1/24 and 2001:db8:77::1/64 on the server, .2 and ::2 on the peer.
fn topology() -> (Netns, Netns) {
    let server = netns("s");
    let peer = netns("p");
    veth(&server, &peer);
    (server, peer)
}

/// The veth pair of [`topology`], with its addresses.
fn veth(server: &Netns, peer: &Netns) {
    server.veth("kc0", peer, "kc1");
    for (ns, dev, host) in [(&server, "kc0", "1"), (&peer, "kc1", "2")] {
        ns.addr(dev, &format!("198.18.77.{host}/24"));
        ns.addr(dev, &format!("2001:db8:77::{host}/64"));
    }
}

/// The filter of one door knocked over TCP and UDP in 40000-40999.
fn test_filter() -> String {
    let text = "[server]\nstate_dir = \"s\"\n[[door]]\nname = \"ssh\"\nmode = \"hotp\"\n\
                open = [\"22/tcp\"]\nkeys = \"k\"\nknock_ports = \"40000-40999\"\n\
                protocols = [\"tcp\", \"udp\"]\n";
    let config = Config::parse(Path::new("/etc/knockd/knockd.toml"), text);
    bpf_filter(&config.expect("test config parses").doors)
}

/// Child role `capture`: captures until the sentinel was seen on every interface, printing
/// `KCAP READY`, then `KCAP <interface> <source> <port>/<proto>` per knock, then
/// `KCAP STOPPED <ms>` with the time `stop` took.
fn capture_child() {
    // The capture's warnings (failures, reopening) go to the test's stderr.
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).try_init();
    let list = std::env::var(IFACES_ENV).expect("KCAP_IFACES is set");
    let interfaces: Vec<String> = list.split(',').map(str::to_string).collect();
    let (tx, rx) = mpsc::sync_channel(64);
    let handle = spawn_live(&interfaces, &test_filter(), tx).expect("live capture starts");
    println!("{REPORT} READY");
    let sentinel: SocketAddr = SENTINEL.parse().expect("sentinel address");
    let mut done = BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while done.len() < interfaces.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(batch) = rx.recv_timeout(left) else { break };
        for k in &batch {
            let p = &k.packet;
            println!("{REPORT} {} {} {}", k.interface, p.src, p.knock);
            if p.knock.port == sentinel.port() && p.dst == sentinel.ip() {
                done.insert(k.interface.to_string());
            }
        }
    }
    let t = Instant::now();
    handle.stop();
    println!("{REPORT} STOPPED {}", t.elapsed().as_millis());
}

/// Child role `send`: sends each packet of `KCAP_SEND` in order.
fn send_child() {
    let list = std::env::var(SEND_ENV).expect("KCAP_SEND is set");
    for item in list.split(';') {
        let (proto, addr) = item.split_once(' ').expect("`tcp ADDR` or `udp ADDR`");
        let addr: SocketAddr = addr.parse().expect("a socket address");
        match proto {
            // Nothing listens: the SYN is answered with a RST, which is fine.
            "tcp" => drop(TcpStream::connect_timeout(&addr, Duration::from_secs(2))),
            "udp" => {
                let bind = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let socket = UdpSocket::bind(bind).expect("bind a UDP socket");
                socket.send_to(b"knock", addr).expect("send a datagram");
            }
            other => panic!("unknown protocol {other}"),
        }
    }
}

/// Not a test of its own: the entry point of the re-executed children (a no-op otherwise).
#[test]
fn child_role() {
    match CHILD.role().as_deref() {
        Some("capture") => capture_child(),
        Some("send") => send_child(),
        _ => {}
    }
}

/// Forwards the child's report lines (prefix stripped) to a channel.
fn reports(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test NAME ... " before the first report, on the same line.
            if let Some((_, report)) = line.split_once(REPORT) {
                if tx.send(report.trim().to_string()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Every report up to `STOPPED` (or the deadline), in order.
fn collect(rx: &Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + WAIT + WAIT;
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let stopped = line.starts_with("STOPPED");
        lines.push(line);
        if stopped {
            break;
        }
    }
    lines
}

#[test]
fn live_capture_in_a_namespace_sees_only_knocks() {
    require_root();
    let (server, peer) = topology();
    let mut capture = CHILD.command(Some(server.name()), "capture");
    capture.env(IFACES_ENV, INTERFACES.join(",")).stdout(Stdio::piped());
    let mut capture = Reaped(capture.spawn().expect("start the capture child"));
    let rx = reports(&mut capture.0);
    assert_eq!(rx.recv_timeout(WAIT).as_deref(), Ok("READY"), "capture child did not start");

    let sends = [
        "tcp 198.18.77.1:40005",
        "tcp [2001:db8:77::1]:40006",
        "udp 198.18.77.1:40007",
        "udp [2001:db8:77::1]:40008",
        "tcp 198.18.77.1:39999",
        "tcp [2001:db8:77::1]:41000",
        "udp 198.18.77.1:41001",
        "udp [2001:db8:77::1]:39998",
        "tcp 198.18.77.1:22",
    ];
    let list = format!("{};udp {SENTINEL}", sends.join(";"));
    send(CHILD.command(Some(peer.name()), "send").env(SEND_ENV, list));

    let lines = collect(&rx);
    let stopped = lines.iter().find_map(|l| l.strip_prefix("STOPPED "));
    let stop_ms: u64 = stopped.and_then(|ms| ms.parse().ok()).unwrap_or(u64::MAX);
    assert!(stop_ms < 1000, "stop took {stop_ms} ms or never happened: {lines:#?}");
    let seen: BTreeSet<&str> = lines.iter().map(String::as_str).filter(|l| *l != "READY").collect();
    let mut want = BTreeSet::new();
    for iface in INTERFACES {
        for knock in [
            "198.18.77.2 40005:tcp",
            "2001:db8:77::2 40006:tcp",
            "198.18.77.2 40007:udp",
            "2001:db8:77::2 40008:udp",
            "198.18.77.2 40999:udp",
        ] {
            want.insert(format!("{iface} {knock}"));
        }
    }
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    let knocks: BTreeSet<&str> = seen.iter().copied().filter(|l| !l.starts_with("STOPPED")).collect();
    assert_eq!(knocks, want, "all reports: {lines:#?}");
}

#[test]
fn live_capture_reopens_an_interface_that_went_away() {
    require_root();
    let (server, peer) = topology();
    let mut capture = CHILD.command(Some(server.name()), "capture");
    capture.env(IFACES_ENV, "kc0").stdout(Stdio::piped());
    let mut capture = Reaped(capture.spawn().expect("start the capture child"));
    let rx = reports(&mut capture.0);
    assert_eq!(rx.recv_timeout(WAIT).as_deref(), Ok("READY"), "capture child did not start");

    server.ip(&["link", "del", "kc0"]);
    std::thread::sleep(Duration::from_millis(300));
    veth(&server, &peer);
    // The capture comes back after its backoff: knock until it has seen the sentinel.
    let mut lines = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.starts_with("STOPPED")) {
        send(CHILD.command(Some(peer.name()), "send").env(SEND_ENV, format!("udp {SENTINEL}")));
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    assert!(
        lines.iter().any(|l| l == "kc0 198.18.77.2 40999:udp"),
        "no knock after the interface came back: {lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("STOPPED")), "{lines:#?}");
}
