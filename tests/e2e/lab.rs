//! The end-to-end fixture: three hosts in network namespaces made for one test, the real
//! `knockd`, `knock` and `knock-lab` binaries, and cleanup that runs even when a test fails.
//!
//! Topology: the server namespace holds bridge `br0` (198.18.0.1/24, 2001:db8::1/64); the
//! client (.2, ::2) and the outsider (.3, ::3) each have `eth0`, a veth into the bridge.
//! Namespace and interface names carry the process id and a counter (knock-test-support's
//! `unique_tag`), so tests run in parallel.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use knock_test_support::netns::{unique_tag, Netns};
use knock_test_support::run::{ok, output as run};

/// A command to run in `netns`, in the work directory `dir`, with the client store of the host
/// named `host` (its `XDG_CONFIG_HOME` and `XDG_STATE_HOME` under `dir/<host, lowercase>/`), so
/// that each host of a fixture keeps its own profiles.
pub fn host_command(
    netns: &Netns,
    dir: &Path,
    host: &str,
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
) -> Command {
    let mut cmd = netns.command(program);
    cmd.args(args).current_dir(dir);
    let home = dir.join(host.to_lowercase());
    cmd.env("XDG_CONFIG_HOME", home.join("config")).env("XDG_STATE_HOME", home.join("state"));
    cmd
}

pub const SERVER: &str = "198.18.0.1";
pub const CLIENT: &str = "198.18.0.2";
pub const OUTSIDER: &str = "198.18.0.3";
pub const SERVER6: &str = "2001:db8::1";

/// Which host runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Server,
    Client,
    Outsider,
    /// A host behind the client, which masquerades it (see [`Lab::nat_behind_client`]).
    Behind,
}

/// Where the workspace's binaries are: next to the test binary's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (the README's test command does)",
        p.display()
    );
    p
}

/// A program of Debian's knockd 0.8 package (`usr/sbin/knockd`, `usr/bin/knock`), the real peer
/// of the compatibility tests. scripts/setup.sh unpacks the package into `target/peers/knockd/`
/// instead of installing it, because the package test replaces Debian's knockd system-wide.
pub fn peer(path_in_package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.ancestors().nth(3).expect("target dir");
    let p = target.join("peers/knockd").join(path_in_package);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (the README's test command does), which unpacks Debian's knockd \
         package there with `apt-get download knockd` and `dpkg-deb -x`",
        p.display()
    );
    p
}

/// Waits until `text()` (`what`: a log, say) holds `n` occurrences of `needle`; panics after
/// `timeout`, showing the text.
pub fn wait_for_count(what: &str, text: impl Fn() -> String, needle: &str, n: usize, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if text().matches(needle).count() >= n {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    panic!("{what} never had {n} x `{needle}` within {timeout:?}:\n{}", text());
}

/// Starts `tcpdump` (a command made to run in some namespace, without arguments yet) writing
/// the packets of `iface` that match `filter` to `path`; returns it once it is listening.
pub fn start_tcpdump(mut tcpdump: Command, iface: &str, path: &Path, filter: &str) -> Child {
    let errors = path.with_extension("stderr");
    let child = tcpdump
        .args(["-i", iface, "--immediate-mode", "-U", "-w"])
        .arg(path)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errors).unwrap())
        .spawn()
        .expect("start tcpdump");
    let start = Instant::now();
    while !fs::read_to_string(&errors).unwrap_or_default().contains("listening on") {
        assert!(start.elapsed() < Duration::from_secs(10), "tcpdump did not start: {:?}", fs::read_to_string(&errors));
        sleep(Duration::from_millis(20));
    }
    child
}

/// The lines of the audit log at `path` (none when it does not exist).
pub fn audit_lines_in(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

/// The lines of the audit log at `path` whose event is `event`.
pub fn audit_events_in(path: &Path, event: &str) -> Vec<String> {
    let needle = format!("\"event\":\"{event}\"");
    audit_lines_in(path).into_iter().filter(|l| l.contains(&needle)).collect()
}

/// The ports in the output of `knock --profile P --dry-run`.
pub fn dry_run_ports(stdout: &str) -> Vec<String> {
    stdout.split_whitespace().skip(1).take_while(|w| !w.starts_with('(')).map(String::from).collect()
}

/// One test's lab.
pub struct Lab {
    tag: String,
    pub dir: PathBuf,
    daemon: Option<Child>,
    children: Vec<Child>,
    /// The daemon's command line after the binary.
    daemon_args: Vec<String>,
    /// The hosts' namespaces, deleted when the lab is dropped (after its processes ended).
    namespaces: Vec<Netns>,
}

impl Lab {
    /// Namespaces, bridge, veths, an SSH-like service on 22 (and 8080), and a work directory
    /// with `knockd.toml` made of `doors` (TOML `[[door]]` tables; paths relative to the dir).
    pub fn new(doors: &str) -> Lab {
        Lab::capturing_on("br0", doors)
    }

    /// As [`Lab::new`], with the daemon capturing on `interface` (`any` for Linux cooked capture).
    pub fn capturing_on(interface: &str, doors: &str) -> Lab {
        let lab = Lab::bare(&["-c", "knockd.toml", "--debug"]);
        let config = format!("[server]\nstate_dir = \"state\"\ninterfaces = [\"{interface}\"]\n\n{doors}");
        fs::write(lab.dir.join("knockd.toml"), config).unwrap();
        lab.knockd(&["init"]);
        lab
    }

    /// A lab whose daemon reads a knockd 0.8 `knockd.conf` (capturing on br0, state in `state/`).
    pub fn legacy(conf: &str) -> Lab {
        let lab = Lab::bare(&["-c", "knockd.conf", "-i", "br0", "--state-dir", "state", "--debug"]);
        fs::write(lab.dir.join("knockd.conf"), conf).unwrap();
        lab
    }

    /// Namespaces, the services on 22 and 8080, and an empty work directory.
    fn bare(daemon_args: &[&str]) -> Lab {
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("knock-e2e-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let daemon_args = daemon_args.iter().map(|a| a.to_string()).collect();
        let mut lab = Lab { tag, dir, daemon: None, children: Vec::new(), daemon_args, namespaces: Vec::new() };
        lab.build_network();
        for port in ["22", "8080"] {
            let child = lab
                .spawn(Host::Server, bin("knock-lab"), &["serve", "--port", port, "--max-seconds", "300"])
                .stdout(Stdio::null())
                .spawn()
                .expect("start the lab service");
            lab.children.push(child);
        }
        lab
    }

    /// The name of `host`'s namespace.
    pub fn ns(&self, host: Host) -> String {
        match host {
            Host::Server => format!("ke-s{}", self.tag),
            Host::Client => format!("ke-c{}", self.tag),
            Host::Outsider => format!("ke-o{}", self.tag),
            Host::Behind => format!("ke-b{}", self.tag),
        }
    }

    /// The namespace of `host`, once made.
    pub fn netns(&self, host: Host) -> &Netns {
        let name = self.ns(host);
        self.namespaces.iter().find(|ns| ns.name() == name).unwrap_or_else(|| panic!("{host:?} has no namespace yet"))
    }

    /// Makes the namespace of `host`.
    fn add_host(&mut self, host: Host) -> &Netns {
        self.namespaces.push(Netns::create(self.ns(host)));
        self.namespaces.last().expect("just pushed")
    }

    fn build_network(&mut self) {
        let s = self.add_host(Host::Server);
        s.ip(&["link", "add", "br0", "type", "bridge"]);
        s.ip(&["link", "set", "br0", "up"]);
        s.addr("br0", "198.18.0.1/24");
        s.addr("br0", "2001:db8::1/64");
        for (i, host) in [(2, Host::Client), (3, Host::Outsider)] {
            self.add_host(host);
            let (s, ns) = (self.netns(Host::Server), self.netns(host));
            let port = format!("v{i}-{}", self.tag);
            s.veth(&port, ns, "eth0");
            s.ip(&["link", "set", &port, "master", "br0"]);
            ns.addr("eth0", &format!("198.18.0.{i}/24"));
            ns.addr("eth0", &format!("2001:db8::{i}/64"));
        }
    }

    /// Puts a fourth host, [`Host::Behind`] (198.19.9.2), behind the client, which forwards and
    /// masquerades it, so the server sees its knocks from the client's 198.18.0.2. Linux's
    /// masquerade keeps a connection's source port when it is free (endpoint-independent
    /// mapping); with `every_port_new` it draws a new port for every connection, as symmetric
    /// NATs do.
    pub fn nat_behind_client(&mut self, every_port_new: bool) {
        self.add_host(Host::Behind);
        let (c, b) = (self.netns(Host::Client), self.netns(Host::Behind));
        let port = format!("vb-{}", self.tag);
        c.veth(&port, b, "eth0");
        c.addr(&port, "198.19.9.1/24");
        b.addr("eth0", "198.19.9.2/24");
        b.ip(&["route", "add", "default", "via", "198.19.9.1"]);
        ok(c.command("sysctl").args(["-q", "-w", "net.ipv4.ip_forward=1"]));
        let how = if every_port_new { " random,fully-random" } else { "" };
        let rules = format!(
            "table ip lab_nat {{\n chain post {{\n type nat hook postrouting priority srcnat;\n \
             oifname \"eth0\" ip saddr 198.19.9.0/24 masquerade{how}\n }}\n}}\n"
        );
        let mut nft = c.command("nft");
        nft.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().expect("nft");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "the NAT ruleset did not load: {rules}");
    }

    /// A command to run inside `host`'s namespace, with that host's own client store.
    pub fn spawn(&self, host: Host, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        host_command(self.netns(host), &self.dir, &format!("{host:?}"), program, args)
    }

    /// Runs in a namespace and returns the output, success or not.
    pub fn exec(&self, host: Host, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        run(&mut self.spawn(host, program, args))
    }

    /// `knockd -c knockd.toml ARGS` on the host (outside the namespaces: admin commands touch files only).
    pub fn knockd(&self, args: &[&str]) -> String {
        ok(Command::new(bin("knockd")).arg("-c").arg(self.dir.join("knockd.toml")).args(args).current_dir(&self.dir))
    }

    /// Adds a client to a hotp door and imports its profile on `host`. Returns the profile name.
    pub fn add_client(&self, door: &str, name: &str, server_addr: &str, host: Host) -> String {
        let bundle = self.dir.join(format!("{door}-{name}.knock"));
        self.knockd(&[
            "client",
            "add",
            "--door",
            door,
            "--name",
            name,
            "--server-addr",
            server_addr,
            "--out",
            bundle.to_str().unwrap(),
        ]);
        ok(&mut self.spawn(host, bin("knock"), &["profile", "import", bundle.to_str().unwrap()]));
        format!("{door}-{name}")
    }

    /// Starts Debian's knockd 0.8 (unpacked by scripts/setup.sh, see [`peer`]) on the lab's
    /// `knockd.conf` instead of ours.
    pub fn start_real_knockd(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).unwrap();
        let child = self
            .spawn(Host::Server, peer("usr/sbin/knockd"), &["-c", "knockd.conf", "-i", "br0", "-v"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start Debian's knockd");
        self.daemon = Some(child);
        self.wait_log("listening on br0", Duration::from_secs(10));
        sleep(Duration::from_millis(300));
    }

    /// Starts the daemon in the server namespace and waits until it captures.
    pub fn start_daemon(&mut self) {
        self.spawn_daemon(&[]);
        self.wait_log("knockd started", Duration::from_secs(10));
        // The capture threads open right before this line; give them a moment to be attached.
        sleep(Duration::from_millis(200));
    }

    /// Starts the daemon in the server namespace with extra environment variables (systemd's
    /// `NOTIFY_SOCKET`, `JOURNAL_STREAM`), its standard error appended to `daemon.log`, and
    /// returns at once.
    pub fn spawn_daemon(&mut self, env: &[(&str, &str)]) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("daemon.log")).unwrap();
        let args: Vec<&str> = self.daemon_args.iter().map(String::as_str).collect();
        let child = self
            .spawn(Host::Server, bin("knockd"), &args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start knockd");
        self.daemon = Some(child);
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Waits until the daemon log holds `n` lines containing `needle`.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        wait_for_count("daemon log", || self.log(), needle, n, timeout);
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout);
    }

    /// Stops the daemon with a signal and waits for it.
    pub fn stop_daemon(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.daemon.take().expect("daemon running");
        ok(Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]));
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "knockd did not exit on SIG{signal}");
            sleep(Duration::from_millis(20));
        }
    }

    /// `knock ARGS` on a host.
    pub fn knock(&self, host: Host, args: &[&str]) -> Output {
        self.exec(host, bin("knock"), args)
    }

    /// Whether `host` can open a TCP connection to addr:port within `ms`.
    pub fn can_connect(&self, host: Host, addr: &str, port: u16, ms: u64) -> bool {
        self.exec(
            host,
            bin("knock-lab"),
            &["probe", "--addr", addr, "--port", &port.to_string(), "--timeout-ms", &ms.to_string()],
        )
        .status
        .success()
    }

    /// Whether `host` can connect to the server's `port` within `timeout`, trying every 200 ms:
    /// for doors whose grant is a shell command (knockd's), which may wait for the xtables
    /// lock while other tests run iptables.
    pub fn opens_within(&self, host: Host, port: u16, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.can_connect(host, SERVER, port, 300) {
                return true;
            }
            sleep(Duration::from_millis(200));
        }
        false
    }

    /// Waits until `host` can no longer connect to the server's port 22 (a grant expired).
    pub fn wait_closed(&self, host: Host, timeout: Duration) {
        let start = Instant::now();
        while self.can_connect(host, SERVER, 22, 300) {
            assert!(start.elapsed() < timeout, "port 22 stayed open for {host:?} longer than {timeout:?}");
            sleep(Duration::from_millis(200));
        }
    }

    /// Starts `knock-lab` (or anything) in the background on a host; it is killed on drop.
    pub fn background(&mut self, host: Host, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> usize {
        let child = self.spawn(host, program, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits for a background process and returns its output.
    pub fn wait_background(&mut self, idx: usize, timeout: Duration) -> Output {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.children[idx].try_wait().unwrap().is_some() {
                break;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.children[idx].kill();
        let child = std::mem::replace(&mut self.children[idx], Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }

    /// Sends SIGINT to a background process (tcpdump flushes and exits on it).
    pub fn interrupt(&self, idx: usize) {
        let _ = Command::new("kill").args(["-INT", &self.children[idx].id().to_string()]).status();
    }

    /// The MAC address of `eth0` in a host (or of `br0` in the server).
    pub fn mac(&self, host: Host) -> String {
        let dev = if host == Host::Server { "br0" } else { "eth0" };
        let out = ok(&mut self.spawn(host, "cat", &[&format!("/sys/class/net/{dev}/address")]));
        out.trim().to_string()
    }

    /// Starts tcpdump in the server namespace writing knocks to `file`; returns its handle once
    /// tcpdump says it is listening.
    pub fn capture_knocks(&mut self, file: &str, filter: &str) -> usize {
        let child = start_tcpdump(self.spawn(Host::Server, "tcpdump", &[]), "br0", &self.dir.join(file), filter);
        self.children.push(child);
        self.children.len() - 1
    }

    /// Replays a capture from `host` with `knock-lab replay ARGS`; returns the frames sent.
    pub fn replay(&self, host: Host, file: &str, extra: &[&str]) -> usize {
        let pcap = self.dir.join(file);
        let mut args = vec!["replay", "--pcap", pcap.to_str().unwrap(), "--iface", "eth0"];
        args.extend_from_slice(extra);
        let out = ok(&mut self.spawn(host, bin("knock-lab"), &args));
        out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// The audit log's lines.
    pub fn audit_lines(&self) -> Vec<String> {
        audit_lines_in(&self.dir.join("state/audit.log"))
    }

    /// Audit lines whose event is `event`.
    pub fn audit_events(&self, event: &str) -> Vec<String> {
        audit_events_in(&self.dir.join("state/audit.log"), event)
    }

    /// The ports of the next sequence of a profile on a host, without consuming it.
    pub fn dry_run(&self, host: Host, profile: &str) -> Vec<String> {
        dry_run_ports(&ok(&mut self.spawn(host, bin("knock"), &["--profile", profile, "--dry-run"])))
    }

    /// Counts, in the server, TCP packets to `ports` before anything else sees them.
    pub fn count_knocks_seen(&self, ports: &str) {
        let script = format!(
            "add table inet seen; add chain inet seen pre {{ type filter hook prerouting priority -300; }}; \
             add rule inet seen pre tcp dport {ports} counter"
        );
        ok(&mut self.spawn(Host::Server, "nft", &[&script]));
    }

    /// What `count_knocks_seen` has counted.
    pub fn knocks_seen(&self) -> u64 {
        self.nft_counter(Host::Server, "inet", "seen")
    }

    /// The packet count of the first counter in nftables table `family table` on `host`.
    pub fn nft_counter(&self, host: Host, family: &str, table: &str) -> u64 {
        let text = ok(&mut self.spawn(host, "nft", &["list", "table", family, table]));
        text.split("packets ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Sends crafted knocks from `host` with `knock-lab send` (source may be spoofed).
    pub fn send_crafted(&self, host: Host, src: &str, knocks: &[String], extra: &[&str]) {
        let (src_mac, dst_mac) = (self.mac(host), self.mac(Host::Server));
        let list = knocks.join(",");
        let mut args = vec![
            "send",
            "--iface",
            "eth0",
            "--src",
            src,
            "--dst",
            SERVER,
            "--src-mac",
            &src_mac,
            "--dst-mac",
            &dst_mac,
            "--knocks",
            &list,
            "-q",
        ];
        args.extend_from_slice(extra);
        ok(&mut self.spawn(host, bin("knock-lab"), &args));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The namespaces go with the field `namespaces`, now that nothing runs in them.
        if std::thread::panicking() {
            eprintln!("--- daemon log of lab {} ---\n{}", self.tag, self.log());
        }
        if std::env::var_os("KNOCK_E2E_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Lab {
    /// Starts a bounded flood from `host`'s wire in the background (`knock-lab flood`): sources
    /// drawn from `sources`, random source ports, `what` either `--ports A-B` or `--knocks LIST`
    /// (rounds of a fixed list), at about `pps` for at most `seconds`. Returns its index.
    pub fn flood(&mut self, host: Host, sources: &str, what: &[&str], pps: u64, seconds: u64) -> usize {
        let (src_mac, dst_mac) = (self.mac(host), self.mac(Host::Server));
        let (count, pps, seconds) = ((pps * seconds).to_string(), pps.to_string(), seconds.to_string());
        let mut args = vec!["flood", "--iface", "eth0", "--dst", SERVER, "--src-mac", &src_mac, "--dst-mac", &dst_mac];
        args.extend(what);
        args.extend(["--sources", sources, "--pps", &pps, "--count", &count, "--max-seconds", &seconds]);
        self.background(host, bin("knock-lab"), &args)
    }

    /// Sends a signal to the running daemon without waiting for it.
    pub fn signal_daemon(&self, signal: &str) {
        let pid = self.daemon.as_ref().expect("daemon running").id().to_string();
        ok(Command::new("kill").args([&format!("-{signal}"), &pid]));
    }

    /// Rewrites the daemon's configuration file.
    pub fn write_config(&self, text: &str) {
        fs::write(self.dir.join("knockd.toml"), text).unwrap();
    }

    /// The daemon's configuration file as it is.
    pub fn config(&self) -> String {
        fs::read_to_string(self.dir.join("knockd.toml")).unwrap()
    }
}
