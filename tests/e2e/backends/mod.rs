//! The daemon's parts against a real kernel, through knockd's library: the nftables and the
//! iptables backends, the ways past the door, and live capture. Each test makes its namespaces
//! (knock-test-support's `Netns`) and re-executes itself inside them (`Reexec`).
//!
//! This module holds the firewall tests' fixture: a server and a peer namespace joined by a veth
//! pair, the test re-run in the server namespace as the firewall side, with echo listeners, and
//! probes run from the peer. Only 198.18.0.0/15 and 2001:db8::/32 are used.

mod capture;
mod iptables;
mod nftables;
mod nftables_ways_past;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use knock_test_support::netns::{unique_tag, Netns};
use knock_test_support::reexec::Reexec;

/// How long a probe waits for a connection before calling it dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Whole test, as seen from the outer process.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// A firewall test: the outer process creates a server and a peer namespace joined by a veth pair
/// (veth0 in the server, veth1 in the peer), then re-executes the test in the server namespace in
/// role `firewall`; that side runs probes in the peer namespace in roles `connect` and `hold`.
pub struct Lab {
    pub reexec: Reexec,
    /// Env var with the peer namespace's name, for the firewall side.
    pub peer_ns_env: &'static str,
    /// Env var with a probe's target address.
    pub target_env: &'static str,
    /// Start of the namespaces' names.
    pub ns_prefix: &'static str,
    /// Addresses on the veth pair: a /24 and a /64.
    pub server4: &'static str,
    pub peer4: &'static str,
    pub server6: &'static str,
    pub peer6: &'static str,
}

impl Lab {
    /// The outer test: sets up the namespaces, runs the firewall side in the server namespace,
    /// and fails if it fails or does not finish within [`CHILD_DEADLINE`]. The namespaces are
    /// deleted even when it fails.
    pub fn run_in_namespaces(&self) {
        let tag = unique_tag();
        let server = Netns::create(format!("{}-{tag}", self.ns_prefix));
        let peer = Netns::create(format!("{}-{tag}p", self.ns_prefix));
        server.veth("veth0", &peer, "veth1");
        for (ns, dev, v4, v6) in
            [(&server, "veth0", self.server4, self.server6), (&peer, "veth1", self.peer4, self.peer6)]
        {
            ns.addr(dev, &format!("{v4}/24"));
            ns.addr(dev, &format!("{v6}/64"));
        }

        let mut child = self
            .reexec
            .command(Some(server.name()), "firewall")
            .env(self.peer_ns_env, peer.name())
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
        let out = out.join().unwrap_or_default();
        println!("{out}");
        eprintln!("{}", err.join().unwrap_or_default());
        match status {
            Some(status) => assert!(status.success(), "firewall side failed: {status}"),
            None => panic!("firewall side did not finish within {CHILD_DEADLINE:?}"),
        }
        self.reexec.assert_ran(&out);
    }

    /// On the firewall side: probes run in the peer namespace.
    pub fn probes(&'static self) -> Probes {
        let peer_ns = std::env::var(self.peer_ns_env).expect("peer namespace name");
        Probes { lab: self, peer_ns }
    }

    /// On the firewall side: echo listeners on ports 22 and 23 of both server addresses.
    pub fn listen(&self) -> Listeners {
        let (ssh4, open4) = (sock(self.server4, 22), sock(self.server4, 23));
        let (ssh6, open6) = (sock(self.server6, 22), sock(self.server6, 23));
        for addr in [ssh4, open4, ssh6, open6] {
            echo_listener(addr);
        }
        Listeners { ssh4, open4, ssh6, open6 }
    }

    /// A probe's target.
    pub fn target(&self) -> SocketAddr {
        std::env::var(self.target_env).ok().and_then(|t| t.parse().ok()).expect(self.target_env)
    }

    /// Probe role: connect once; the exit code says how it went.
    pub fn connect_probe(&self) -> ! {
        let code = match TcpStream::connect_timeout(&self.target(), CONNECT_TIMEOUT) {
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
    pub fn hold_probe(&self) -> ! {
        let mut stream = match TcpStream::connect_timeout(&self.target(), CONNECT_TIMEOUT) {
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
}

/// The echo listeners of [`Lab::listen`]: port 22 is protected, port 23 is not.
pub struct Listeners {
    pub ssh4: SocketAddr,
    pub open4: SocketAddr,
    pub ssh6: SocketAddr,
    pub open6: SocketAddr,
}

pub fn sock(ip: &str, port: u16) -> SocketAddr {
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
pub enum Outcome {
    Connected,
    TimedOut,
    Refused,
    Other(i32),
}

/// Runs probes in the peer namespace.
pub struct Probes {
    lab: &'static Lab,
    peer_ns: String,
}

impl Probes {
    fn command(&self, role: &str, target: SocketAddr) -> Command {
        let mut cmd = self.lab.reexec.command(Some(&self.peer_ns), role);
        cmd.env(self.lab.target_env, target.to_string());
        cmd
    }

    /// One TCP connect from the peer namespace to `target`.
    pub fn connect(&self, target: SocketAddr) -> Outcome {
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
    pub fn hold(&self, target: SocketAddr) -> Held {
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
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Held {
    /// Sends `text` over the held connection; returns what came back.
    pub fn echo(&mut self, text: &str) -> Option<String> {
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

    pub fn close(mut self) {
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

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}
