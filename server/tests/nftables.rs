//! The nftables backend against a real kernel, in network namespaces (needs root; skipped
//! with a message otherwise).
//!
//! The test creates a server and a peer namespace joined by a veth pair (addresses only in
//! 198.18.0.0/15 and 2001:db8::/32), then re-executes this binary inside the server namespace
//! (`ip netns exec`, `KNFT_ROLE=firewall`), so the firewall's nft runs and netlink socket act
//! there without any setns. That side runs echo listeners and, in the peer namespace, probes that
//! are re-executions of this binary too: a TCP connect with a timeout (`KNFT_ROLE=connect`) or a
//! connection held open and driven over stdin (`KNFT_ROLE=hold`). Guards delete the namespaces
//! even when the test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use knock_core::Proto;
use knockd::firewall::{Firewall, FirewallError, Nftables, OpenPort};

/// This test's name, for re-executing only it.
const TEST: &str = "nftables_backend_in_namespaces";
const ROLE: &str = "KNFT_ROLE";
const PEER_NS: &str = "KNFT_PEER_NS";
const TARGET: &str = "KNFT_TARGET";

const SRV4: &str = "198.18.66.1";
const PEER4: &str = "198.18.66.2";
const SRV6: &str = "2001:db8:66::1";
const PEER6: &str = "2001:db8:66::2";
/// How long a probe waits for a connection before calling it dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Whole test, as seen from the outer process.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

#[test]
fn nftables_backend_in_namespaces() {
    match std::env::var(ROLE).as_deref() {
        Ok("firewall") => return firewall_side(),
        Ok("connect") => connect_probe(),
        Ok("hold") => hold_probe(),
        _ => {}
    }
    assert!(is_root(), "{TEST} needs root (network namespaces, nftables): run the README's test command as root");
    let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
    let server = Netns::create(format!("knft-{}-{n}", std::process::id()));
    let peer = Netns::create(format!("knft-{}-{n}p", std::process::id()));
    for ns in [&server.0, &peer.0] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&["-n", &server.0, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", &peer.0]);
    for (ns, dev, v4, v6) in [(&server.0, "veth0", SRV4, SRV6), (&peer.0, "veth1", PEER4, PEER6)] {
        ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
        ip(&["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }

    let exe = std::env::current_exe().expect("path of the test binary");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &server.0])
        .arg(&exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(ROLE, "firewall")
        .env(PEER_NS, &peer.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the firewall side under `ip netns exec`");
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the firewall side") {
            break Some(status);
        }
        if started.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    println!("{}", out.join().unwrap_or_default());
    eprintln!("{}", err.join().unwrap_or_default());
    match status {
        Some(status) => assert!(status.success(), "firewall side failed: {status}"),
        None => panic!("firewall side did not finish within {CHILD_DEADLINE:?}"),
    }
}

/// Runs inside the server namespace: the firewall, the listeners, and the checks.
fn firewall_side() {
    let peer_ns = std::env::var(PEER_NS).expect("peer namespace name");
    let probes = Probes { exe: std::env::current_exe().expect("test binary"), peer_ns };
    let ssh = [OpenPort { port: 22, proto: Proto::Tcp }];
    let peer4: IpAddr = PEER4.parse().unwrap();
    let peer6: IpAddr = PEER6.parse().unwrap();
    let (ssh4, open4) = (sock(SRV4, 22), sock(SRV4, 23));
    let (ssh6, open6) = (sock(SRV6, 22), sock(SRV6, 23));
    for addr in [ssh4, open4, ssh6, open6] {
        echo_listener(addr);
    }

    let mut fw = Nftables::new("knockd").expect("open the netlink socket");

    // Before install: the error names the table, the set and the address, and a fix.
    let err = fw.grant(peer4, &ssh, Duration::from_secs(2)).expect_err("no table yet");
    let msg = err.to_string();
    assert!(matches!(err, FirewallError::Refused { errno: 2, .. }), "{msg}");
    for part in ["grants4", "inet knockd", PEER4, "restart knockd"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    println!("error before install: {msg}");
    assert!(matches!(fw.grant(peer4, &ssh, Duration::ZERO), Err(FirewallError::InvalidDuration { .. })));

    fw.install(&ssh).expect("install");
    println!("{}", nft(&["list", "table", "inet", "knockd"]));
    assert_eq!(probes.connect(open4), Outcome::Connected, "unprotected port 23 must stay reachable");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "port 22 must be dropped before a grant");

    // Grant: connects pass, the element is in the set with a timeout.
    let granted_at = Instant::now();
    fw.grant(peer4, &ssh, Duration::from_secs(3)).expect("grant");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "port 22 must open after the grant");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(set.contains("198.18.66.2 . tcp . 22 timeout 3s expires"), "{set}");
    let mut held = probes.hold(ssh4);
    assert_eq!(held.echo("during the grant"), Some("during the grant".into()));

    // A second install keeps the grant.
    fw.install(&ssh).expect("second install");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(set.contains("198.18.66.2 . tcp . 22 timeout 3s"), "second install lost the grant: {set}");
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "still granted after the second install");
    assert!(granted_at.elapsed() < Duration::from_millis(2500), "too slow to test expiry: {:?}", granted_at.elapsed());

    // Expiry: new connects are dropped, the established connection still passes data.
    thread::sleep(Duration::from_millis(3500).saturating_sub(granted_at.elapsed()));
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "new connects must be dropped after expiry");
    assert_eq!(held.echo("after expiry"), Some("after expiry".into()), "established connection cut");
    held.close();

    // Revoke removes at once, and revoking again is no error.
    fw.grant(peer4, &ssh, Duration::from_secs(30)).expect("grant for revoke");
    assert_eq!(probes.connect(ssh4), Outcome::Connected);
    fw.revoke(peer4, &ssh).expect("revoke");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(!set.contains("198.18.66.2 . tcp . 22"), "revoke left the element: {set}");
    assert_eq!(probes.connect(ssh4), Outcome::TimedOut, "port 22 must close at once on revoke");
    fw.revoke(peer4, &ssh).expect("revoking what is not granted");
    let two = [ssh[0], OpenPort { port: 2222, proto: Proto::Tcp }];
    fw.grant(peer4, &two[1..], Duration::from_secs(30)).expect("grant 2222");
    fw.revoke(peer4, &two).expect("revoke with one of two elements absent");
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(!set.contains("198.18.66.2 . tcp . 2222"), "partial revoke left the element: {set}");

    // Re-granting restarts the clock.
    let first = Instant::now();
    fw.grant(peer4, &ssh, Duration::from_secs(3)).expect("grant");
    thread::sleep(Duration::from_millis(1500));
    fw.grant(peer4, &ssh, Duration::from_secs(3)).expect("re-grant with the same timeout");
    thread::sleep(Duration::from_millis(3500).saturating_sub(first.elapsed()));
    assert_eq!(probes.connect(ssh4), Outcome::Connected, "a re-grant must restart the clock");
    fw.revoke(peer4, &ssh).expect("revoke");

    // IPv6.
    assert_eq!(probes.connect(open6), Outcome::Connected, "unprotected port 23 over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "port 22 over IPv6 must be dropped before a grant");
    fw.grant(peer6, &ssh, Duration::from_secs(3)).expect("grant over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::Connected, "port 22 over IPv6 must open after the grant");
    let set = nft(&["list", "set", "inet", "knockd", "grants6"]);
    assert!(set.contains("2001:db8:66::2 . tcp . 22 timeout 3s"), "{set}");
    fw.revoke(peer6, &ssh).expect("revoke over IPv6");
    assert_eq!(probes.connect(ssh6), Outcome::TimedOut, "port 22 over IPv6 must close on revoke");

    // Grant latency: 50 grants to distinct addresses, each one batch + ack.
    let mut took: Vec<Duration> = (0..50u8)
        .map(|i| {
            let addr = IpAddr::from([198, 19, 7, i + 1]);
            let t = Instant::now();
            fw.grant(addr, &ssh, Duration::from_secs(60)).expect("latency grant");
            t.elapsed()
        })
        .collect();
    took.sort();
    let set = nft(&["list", "set", "inet", "knockd", "grants4"]);
    assert!(set.contains("198.19.7.1 . tcp . 22") && set.contains("198.19.7.50 . tcp . 22"), "{set}");
    println!(
        "nftables grant latency over 50 grants (netlink batch + ack): median {:?}, min {:?}, p90 {:?}, max {:?}",
        took[25], took[0], took[45], took[49]
    );
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Accepts connections on `addr` and echoes each line back.
fn echo_listener(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut writer) = stream.try_clone() else { return };
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if writeln!(writer, "{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Connected,
    TimedOut,
    Refused,
    Other(i32),
}

/// Runs probes in the peer namespace.
struct Probes {
    exe: std::path::PathBuf,
    peer_ns: String,
}

impl Probes {
    fn command(&self, role: &str, target: SocketAddr) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.peer_ns])
            .arg(&self.exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(TARGET, target.to_string());
        cmd
    }

    /// One TCP connect from the peer namespace to `target`.
    fn connect(&self, target: SocketAddr) -> Outcome {
        let out = self.command("connect", target).output().expect("run the connect probe");
        match out.status.code() {
            Some(0) => Outcome::Connected,
            Some(3) => Outcome::TimedOut,
            Some(4) => Outcome::Refused,
            code => {
                eprintln!("probe: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                Outcome::Other(code.unwrap_or(-1))
            }
        }
    }

    /// A connection from the peer namespace to `target`, held open.
    fn hold(&self, target: SocketAddr) -> Held {
        let mut child = self
            .command("hold", target)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the hold probe");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("probe stdout"));
        let mut held = Held { child, stdin, stdout };
        assert_eq!(held.line_with("CONNECTED").as_deref(), Some(""), "hold probe could not connect");
        held
    }
}

/// A held connection in the peer namespace.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    /// Sends `text` over the held connection; returns what came back.
    fn echo(&mut self, text: &str) -> Option<String> {
        writeln!(self.stdin.as_mut()?, "{text}").ok()?;
        self.line_with("ECHO ")
    }

    /// The rest of the probe's next line after `prefix` (None if it failed or exited).
    fn line_with(&mut self, prefix: &str) -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).ok()? == 0 {
                return None;
            }
            // libtest's "test ... " header may precede the probe's first line.
            if let Some((_, rest)) = line.trim_end().split_once(prefix) {
                return Some(rest.to_owned());
            }
            if line.contains("FAILED") {
                eprintln!("hold probe: {line}");
                return None;
            }
        }
    }

    fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn target() -> SocketAddr {
    std::env::var(TARGET).ok().and_then(|t| t.parse().ok()).expect("KNFT_TARGET")
}

/// Probe role: connect once; the exit code says how it went.
fn connect_probe() -> ! {
    let code = match TcpStream::connect_timeout(&target(), CONNECT_TIMEOUT) {
        Ok(_) => 0,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => 3,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => 4,
        Err(e) => {
            println!("connect failed: {e}");
            5
        }
    };
    std::process::exit(code)
}

/// Probe role: connect, then echo each stdin line over the connection.
fn hold_probe() -> ! {
    let mut stream = match TcpStream::connect_timeout(&target(), CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            println!("FAILED connect: {e}");
            std::process::exit(1)
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    println!("CONNECTED");
    let mut replies = BufReader::new(stream.try_clone().expect("clone stream"));
    for line in std::io::stdin().lines().map_while(Result::ok) {
        let mut reply = String::new();
        match writeln!(stream, "{line}").and_then(|_| replies.read_line(&mut reply)) {
            Ok(n) if n > 0 => println!("ECHO {}", reply.trim_end()),
            other => println!("FAILED echo: {other:?}"),
        }
    }
    std::process::exit(0)
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (install iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("run nft (install nftables)");
    assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
