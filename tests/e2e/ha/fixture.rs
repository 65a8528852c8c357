//! The fixture of the shared-ledger tests (issue 13): two knockd nodes sharing one door, a
//! three-member etcd cluster with TLS, a client and an outsider, each in a network namespace
//! this test makes, all on one bridge; a virtual address the test moves from node to node (as
//! keepalived would), so that the client has one profile whichever node serves it.
//!
//! Addresses (198.18.0.0/24, bridge `br0` in a namespace of its own, the switch): node A
//! 198.18.0.1, node B 198.18.0.4, client 198.18.0.2, outsider 198.18.0.3, the etcd members
//! 198.18.0.11, .12 and .13 (a namespace each), the virtual address 198.18.0.100 (on A at
//! first).
//! Each node has `eth0`, a knock-lab service on 22, and its own configuration (`a.toml`,
//! `b.toml`), state directory (`state-a`, `state-b`: each its own audit log) and log (`a.log`,
//! `b.log`). The nodes share the server id (B's is a copy of A's: an HA pair has one identity),
//! the door's key directory, and with the etcd backend their ledgers. B's state directory starts
//! with the server id alone (`knockd init` runs on A only), as on a second node set up by
//! docs/OPERATIONS.md; each node's backend can change between runs ([`HaLab::set_ledger`]).
//! The cluster's CA and knockd's client certificate are made by the test (openssl) and copied
//! to `etcd/`.
//!
//! Everything the fixture starts is ended by its process id on drop, before the namespaces go,
//! even when a test fails; names carry the process id and a counter, so tests run in parallel.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use knock_test_support::etcd::Cluster;
use knock_test_support::netns::{unique_tag, Netns};
use knock_test_support::run::{ok, output as run, wait_bounded};

use crate::lab::{audit_events_in, audit_lines_in, bin, dry_run_ports, start_tcpdump, wait_for_count};

pub const NODE_A: &str = "198.18.0.1";
pub const NODE_B: &str = "198.18.0.4";
pub const CLIENT: &str = "198.18.0.2";
pub const OUTSIDER: &str = "198.18.0.3";
/// The address the client's profile names; on one node at a time.
pub const VIRTUAL: &str = "198.18.0.100";
pub const ETCD: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];

/// Where the nodes keep their ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Each node its own ledger files (the default backend).
    File,
    /// One shared ledger in the etcd cluster.
    Etcd,
}

/// A knockd node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    /// Its name in the configuration (`node = "a"`) and in its file names.
    pub fn name(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }

    /// Its own address.
    pub fn addr(self) -> &'static str {
        match self {
            Node::A => NODE_A,
            Node::B => NODE_B,
        }
    }

    pub fn host(self) -> Host {
        match self {
            Node::A => Host::A,
            Node::B => Host::B,
        }
    }

    pub fn other(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A namespace of the fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Holds the bridge, nothing else.
    Switch,
    A,
    B,
    Client,
    Outsider,
    /// Etcd member 0, 1 or 2 (at `ETCD[i]`).
    Etcd(usize),
}

impl Host {
    /// The host's part of its namespace's and its bridge port's names.
    fn letters(self) -> String {
        match self {
            Host::Switch => "w".into(),
            Host::A => "a".into(),
            Host::B => "b".into(),
            Host::Client => "c".into(),
            Host::Outsider => "o".into(),
            Host::Etcd(i) => format!("e{i}"),
        }
    }
}

/// One test's pair of nodes.
pub struct HaLab {
    tag: String,
    pub dir: PathBuf,
    /// Each node's ledger backend (the lab's at first).
    ledgers: [Backend; 2],
    /// The `[[door]]` tables of both nodes' configurations.
    doors: String,
    /// The daemons of A and B, when running.
    daemons: [Option<Child>; 2],
    /// Services, captures: ended on drop.
    children: Vec<Child>,
    cluster: Option<Cluster>,
    /// The node holding the virtual address.
    virtual_on: Node,
    /// Deleted last, when nothing runs in them any more.
    namespaces: Vec<Netns>,
}

impl HaLab {
    /// [`HaLab::network`], then each node's configuration made of `doors` (`[[door]]` tables,
    /// paths relative to the work directory); A's state directory initialised, B's holding only
    /// a copy of A's server id. The daemons are not started yet.
    pub fn new(backend: Backend, doors: &str) -> HaLab {
        let mut lab = HaLab::network(backend);
        lab.doors = doors.to_string();
        for node in [Node::A, Node::B] {
            fs::write(lab.config_path(node), lab.config(node)).unwrap();
        }
        lab.knockd_here(Node::A, &["init"]);
        // An HA pair shares its identity: B takes A's server id, and nothing else.
        let state_b = lab.dir.join("state-b");
        std::fs::DirBuilder::new().mode(0o700).create(&state_b).unwrap();
        fs::copy(lab.dir.join("state-a/server-id"), state_b.join("server-id")).unwrap();
        lab
    }

    /// Switches `node` to the `backend` ledger (its configuration rewritten; a running daemon
    /// takes it up when started again).
    pub fn set_ledger(&mut self, node: Node, backend: Backend) {
        assert!(backend == Backend::File || self.cluster.is_some(), "this lab has no etcd cluster");
        self.ledgers[node.index()] = backend;
        fs::write(self.config_path(node), self.config(node)).unwrap();
    }

    /// The namespaces and the bridge, a service on 22 in each node, and with [`Backend::Etcd`]
    /// the etcd cluster, whose CA and knockd's certificate and key (mode 0600) are copied to
    /// `etcd/` in the work directory.
    pub fn network(backend: Backend) -> HaLab {
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("knock-ha-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut lab = HaLab {
            tag,
            dir,
            ledgers: [backend; 2],
            doors: String::new(),
            daemons: [None, None],
            children: Vec::new(),
            cluster: None,
            virtual_on: Node::A,
            namespaces: Vec::new(),
        };
        lab.build_network();
        for node in [Node::A, Node::B] {
            let service = lab
                .spawn(node.host(), bin("knock-lab"), &["serve", "--port", "22", "--max-seconds", "300"])
                .stdout(Stdio::null())
                .spawn()
                .expect("start the lab service");
            lab.children.push(service);
        }
        if backend == Backend::Etcd {
            let members: Vec<(&Netns, &str)> = (0..3).map(|i| (lab.netns(Host::Etcd(i)), ETCD[i])).collect();
            let cluster = Cluster::start_in(&members);
            let certs = lab.dir.join("etcd");
            fs::create_dir_all(&certs).unwrap();
            for file in ["ca.pem", "knockd.pem", "knockd.key"] {
                fs::copy(cluster.dir.join(file), certs.join(file)).unwrap();
            }
            fs::set_permissions(certs.join("knockd.key"), fs::Permissions::from_mode(0o600)).unwrap();
            lab.cluster = Some(cluster);
        }
        lab
    }

    /// The configuration of `node`: the issue's `[ledger]` table with the etcd backend, none
    /// (the file backend, the default) otherwise.
    fn config(&self, node: Node) -> String {
        let ledger = match self.ledgers[node.index()] {
            Backend::File => String::new(),
            Backend::Etcd => {
                let endpoints: Vec<String> = ETCD.iter().map(|a| format!("\"https://{a}:2379\"")).collect();
                format!(
                    "[ledger]\nbackend = \"etcd\"\nendpoints = [{}]\nprefix = \"/knockd/\"\nca_file = \"etcd/ca.pem\"\n\
                     cert_file = \"etcd/knockd.pem\"\nkey_file = \"etcd/knockd.key\"\ntimeout = \"500ms\"\nnode = \"{}\"\n\n",
                    endpoints.join(", "),
                    node.name()
                )
            }
        };
        format!("[server]\nstate_dir = \"state-{}\"\ninterfaces = [\"eth0\"]\n\n{ledger}{}", node.name(), self.doors)
    }

    pub fn config_path(&self, node: Node) -> PathBuf {
        self.dir.join(format!("{}.toml", node.name()))
    }

    /// The name of `host`'s namespace.
    pub fn ns(&self, host: Host) -> String {
        format!("kh-{}{}", host.letters(), self.tag)
    }

    pub fn netns(&self, host: Host) -> &Netns {
        let name = self.ns(host);
        self.namespaces.iter().find(|ns| ns.name() == name).unwrap_or_else(|| panic!("{host:?} has no namespace"))
    }

    fn build_network(&mut self) {
        self.namespaces.push(Netns::create(self.ns(Host::Switch)));
        let switch = self.netns(Host::Switch);
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let hosts: [(Host, &[&str]); 7] = [
            (Host::A, &[NODE_A, VIRTUAL]),
            (Host::B, &[NODE_B]),
            (Host::Client, &[CLIENT]),
            (Host::Outsider, &[OUTSIDER]),
            (Host::Etcd(0), &[ETCD[0]]),
            (Host::Etcd(1), &[ETCD[1]]),
            (Host::Etcd(2), &[ETCD[2]]),
        ];
        for (host, addresses) in hosts {
            self.namespaces.push(Netns::create(self.ns(host)));
            let (switch, ns) = (self.netns(Host::Switch), self.netns(host));
            let port = format!("h{}-{}", host.letters(), self.tag);
            switch.veth(&port, ns, "eth0");
            switch.ip(&["link", "set", &port, "master", "br0"]);
            for a in addresses {
                ns.addr("eth0", &format!("{a}/24"));
            }
        }
    }

    /// A command to run in `host`'s namespace, in the work directory, with that host's own
    /// client store.
    pub fn spawn(&self, host: Host, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        crate::lab::host_command(self.netns(host), &self.dir, &format!("{host:?}"), program, args)
    }

    /// Runs in a namespace and returns the output, success or not.
    pub fn exec(&self, host: Host, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        run(&mut self.spawn(host, program, args))
    }

    /// `knockd -c NODE.toml ARGS` in the node's namespace (where it reaches etcd); must succeed.
    pub fn knockd(&self, node: Node, args: &[&str]) -> String {
        let config = self.config_path(node);
        let mut full = vec!["-c", config.to_str().unwrap()];
        full.extend_from_slice(args);
        ok(&mut self.spawn(node.host(), bin("knockd"), &full))
    }

    /// `knockd -c NODE.toml ARGS` outside the namespaces (commands that touch files only).
    fn knockd_here(&self, node: Node, args: &[&str]) -> String {
        ok(Command::new(bin("knockd")).arg("-c").arg(self.config_path(node)).args(args).current_dir(&self.dir))
    }

    /// Adds a client to a door through node A (with the etcd backend its ledger goes to etcd;
    /// with the file backend on both nodes B gets a copy of A's new ledger file) and imports its profile,
    /// which knocks at the virtual address, on the client.
    pub fn add_client(&self, door: &str, name: &str) -> String {
        let bundle = self.dir.join(format!("{door}-{name}.knock"));
        let out = bundle.to_str().unwrap();
        self.knockd(
            Node::A,
            &["client", "add", "--door", door, "--name", name, "--server-addr", VIRTUAL, "--out", out],
        );
        ok(&mut self.spawn(Host::Client, bin("knock"), &["profile", "import", out]));
        if self.ledgers == [Backend::File; 2] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(self.dir.join("state-b/ledger")).unwrap();
            for ledger in fs::read_dir(self.dir.join("state-a/ledger")).unwrap().map(|e| e.unwrap().path()) {
                let copy = self.dir.join("state-b/ledger").join(ledger.file_name().unwrap());
                if !copy.exists() {
                    fs::copy(&ledger, copy).unwrap();
                }
            }
        }
        format!("{door}-{name}")
    }

    /// Starts `node`'s daemon and waits until it captures.
    pub fn start(&mut self, node: Node) {
        assert!(self.daemons[node.index()].is_none(), "node {node:?} already runs");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path(node)).unwrap();
        let config = self.config_path(node);
        let child = self
            .spawn(node.host(), bin("knockd"), &["-c", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start knockd");
        self.daemons[node.index()] = Some(child);
        self.wait_log(node, "knockd started", 1, Duration::from_secs(10));
        // The capture threads open right before this line; give them a moment to be attached.
        sleep(Duration::from_millis(200));
    }

    /// Stops `node`'s daemon (SIGTERM by its process id) and waits until it has exited.
    pub fn stop(&mut self, node: Node) {
        let mut child = self.daemons[node.index()].take().unwrap_or_else(|| panic!("node {node:?} does not run"));
        ok(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        assert!(wait_bounded(&mut child, Duration::from_secs(10)).is_some(), "node {node:?} did not stop on SIGTERM");
    }

    fn log_path(&self, node: Node) -> PathBuf {
        self.dir.join(format!("{}.log", node.name()))
    }

    /// `node`'s daemon log so far.
    pub fn log(&self, node: Node) -> String {
        fs::read_to_string(self.log_path(node)).unwrap_or_default()
    }

    /// Waits until `node`'s log holds `n` lines containing `needle`.
    pub fn wait_log(&self, node: Node, needle: &str, n: usize, timeout: Duration) {
        wait_for_count(&format!("node {node:?}'s log"), || self.log(node), needle, n, timeout);
    }

    /// `node`'s audit log lines whose event is `event`.
    pub fn audit_events(&self, node: Node, event: &str) -> Vec<String> {
        audit_events_in(&self.dir.join(format!("state-{}/audit.log", node.name())), event)
    }

    /// Every line of `node`'s audit log.
    pub fn audit_lines(&self, node: Node) -> Vec<String> {
        audit_lines_in(&self.dir.join(format!("state-{}/audit.log", node.name())))
    }

    /// Moves the virtual address to `to`, as keepalived does: off the other node, onto this one,
    /// announced with a gratuitous ARP; returns once the client's neighbour table agrees.
    pub fn move_virtual(&mut self, to: Node) {
        if self.virtual_on == to {
            return;
        }
        let cidr = format!("{VIRTUAL}/24");
        self.netns(self.virtual_on.host()).ip(&["addr", "del", &cidr, "dev", "eth0"]);
        self.netns(to.host()).addr("eth0", &cidr);
        self.virtual_on = to;
        let garp = self.exec(to.host(), "arping", &["-U", "-c", "1", "-w", "1", "-I", "eth0", VIRTUAL]);
        assert!(garp.status.success() || garp.status.code() == Some(1), "arping: {garp:?}");
        // The client either had an entry, which the announcement replaced, or will ask anew.
        let (mac, start) = (self.mac(to.host()), Instant::now());
        loop {
            let entry = ok(&mut self.spawn(Host::Client, "ip", &["neigh", "show", VIRTUAL]));
            if !entry.contains("lladdr") || entry.contains(&mac) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(3), "the client still sends {VIRTUAL} elsewhere: {entry}");
            sleep(Duration::from_millis(20));
        }
    }

    /// The MAC address of `host`'s `eth0`.
    pub fn mac(&self, host: Host) -> String {
        ok(&mut self.spawn(host, "cat", &["/sys/class/net/eth0/address"])).trim().to_string()
    }

    /// Whether `host` can open a TCP connection to addr:port within `ms`.
    pub fn can_connect(&self, host: Host, addr: &str, port: u16, ms: u64) -> bool {
        let (port, ms) = (port.to_string(), ms.to_string());
        let args = ["probe", "--addr", addr, "--port", &port, "--timeout-ms", &ms];
        self.exec(host, bin("knock-lab"), &args).status.success()
    }

    /// Whether the client reaches port 22 of `node`, by the node's own address.
    pub fn open_for_client(&self, node: Node) -> bool {
        self.can_connect(Host::Client, node.addr(), 22, 500)
    }

    /// Waits until the client no longer reaches port 22 of `node` (its last grant expired).
    pub fn wait_closed(&self, node: Node, timeout: Duration) {
        let start = Instant::now();
        while self.open_for_client(node) {
            assert!(start.elapsed() < timeout, "port 22 of {node:?} stayed open longer than {timeout:?}");
            sleep(Duration::from_millis(100));
        }
    }

    /// `knock --profile PROFILE --wait` on the client: up to `attempts` sequences, waiting up to
    /// `wait_s` after each for port 22 of the virtual address.
    pub fn knock(&self, profile: &str, wait_s: &str, attempts: u32) -> Output {
        let attempts = attempts.to_string();
        let args = ["--profile", profile, "--wait", "--wait-timeout", wait_s, "--attempts", &attempts];
        self.exec(Host::Client, bin("knock"), &args)
    }

    /// The ports of the client's next sequence, without consuming it.
    pub fn dry_run(&self, profile: &str) -> Vec<String> {
        dry_run_ports(&ok(&mut self.spawn(Host::Client, bin("knock"), &["--profile", profile, "--dry-run"])))
    }

    /// Starts tcpdump on `host`'s `eth0`, writing the packets that match `filter` to `file` in
    /// the work directory; returns its handle for [`HaLab::stop_capture`].
    pub fn capture(&mut self, host: Host, file: &str, filter: &str) -> usize {
        let child = start_tcpdump(self.spawn(host, "tcpdump", &[]), "eth0", &self.dir.join(file), filter);
        self.children.push(child);
        self.children.len() - 1
    }

    /// Ends a capture (tcpdump flushes its file on SIGINT).
    pub fn stop_capture(&mut self, capture: usize) {
        let child = &mut self.children[capture];
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        assert!(wait_bounded(child, Duration::from_secs(5)).is_some(), "tcpdump did not stop");
    }

    /// Replays the frames of capture `file` from `from` to `to`'s link address: the IP packets
    /// byte for byte, the Ethernet header `from`'s (so that the bridge delivers them to `to`).
    /// Returns the frames sent.
    pub fn replay(&self, from: Host, file: &str, to: Node) -> usize {
        let pcap = self.dir.join(file);
        let (src_mac, dst_mac) = (self.mac(from), self.mac(to.host()));
        let args = [
            "replay",
            "--pcap",
            pcap.to_str().unwrap(),
            "--iface",
            "eth0",
            "--src-mac",
            &src_mac,
            "--dst-mac",
            &dst_mac,
        ];
        let out = ok(&mut self.spawn(from, bin("knock-lab"), &args));
        out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Sends `knocks` (ports) from `from`, as source `src` and from one source port, to address
    /// `dst` on `to`'s link (`knock-lab send`).
    pub fn send(&self, from: Host, src: &str, dst: &str, to: Node, knocks: &[String]) {
        let (src_mac, dst_mac, list) = (self.mac(from), self.mac(to.host()), knocks.join(","));
        let args = [
            "send",
            "--iface",
            "eth0",
            "--src",
            src,
            "--dst",
            dst,
            "--src-mac",
            &src_mac,
            "--dst-mac",
            &dst_mac,
            "--knocks",
            &list,
            "--src-port",
            "47001",
            "--delay-ms",
            "10",
            "-q",
        ];
        ok(&mut self.spawn(from, bin("knock-lab"), &args));
    }

    /// The etcd cluster (etcd backend only).
    pub fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("this lab has no etcd cluster (Backend::File)")
    }

    /// Whether `host` reads from the etcd cluster with knockd's certificate (etcd backend only).
    pub fn reads_etcd(&self, host: Host) -> Result<(), String> {
        let cluster = self.cluster.as_ref().expect("this lab has no etcd cluster (Backend::File)");
        cluster.read_from(&self.ns(host))
    }

    /// Cuts `node` off from the etcd members: an nftables rule in its namespace drops what it
    /// sends them.
    pub fn cut_off_from_etcd(&self, node: Node) {
        let rules = format!(
            "add table inet cut; add chain inet cut out {{ type filter hook output priority 0; }}; \
             add rule inet cut out ip daddr {}-{} counter drop",
            ETCD[0], ETCD[2]
        );
        ok(&mut self.spawn(node.host(), "nft", &[&rules]));
    }

    /// Undoes [`HaLab::cut_off_from_etcd`]; returns the packets the rule dropped meanwhile.
    pub fn reconnect_to_etcd(&self, node: Node) -> u64 {
        let table = ok(&mut self.spawn(node.host(), "nft", &["list", "table", "inet", "cut"]));
        ok(&mut self.spawn(node.host(), "nft", &["delete", "table", "inet", "cut"]));
        table.split("packets ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut().filter_map(Option::take) {
            let mut daemon = daemon;
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for node in [Node::A, Node::B] {
                eprintln!("--- log of node {node:?} (lab {}) ---\n{}", self.tag, self.log(node));
            }
            if let Some(cluster) = &self.cluster {
                let logs = cluster.logs();
                let tail: Vec<&str> = logs.lines().rev().take(30).collect();
                eprintln!(
                    "--- last lines of the etcd members' logs ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        // The members end before their namespace goes; the namespaces go with their field.
        self.cluster = None;
        if std::env::var_os("KNOCK_E2E_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
