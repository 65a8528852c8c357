//! Knock → grant latency with the shared etcd ledger beside the file ledger (issue 13, item 6).
//!
//! The fixture of the end-to-end tests (tests/e2e/ha): node A in a network namespace, its
//! ledgers in files or in a three-member etcd cluster with TLS on this machine (each member
//! in a namespace of its own, on a bridge with A), the client knocking with the real `knock`.
//! For each backend, `HA_BENCH_KNOCKS` knocks (default 200, at most 2000), one after another,
//! each measured twice:
//! - **decided**: the daemon's own `decided_us` (its `door opened` log line: from the capture
//!   of the last knock to the firewall grant returning; it includes the ledger's durable write,
//!   here one etcd transaction, and the audit record's fdatasync);
//! - **wire**: from the last knock on A's `eth0` (tcpdump's kernel timestamp) to the grant's
//!   set element as `nft monitor` reports it in A's namespace (stamped when this program reads
//!   the line: it adds the netlink delivery and a wake-up, tens of microseconds).
//!
//! Between two knocks the grant is flushed from the set, so every grant is a new element.
//! `HA_BENCH_LEDGERS=file` (or `etcd`) measures one backend only.
//! Prints p50/p95/max and appends a section to bench/RESULTS.md.
//!
//! ```text
//! cargo build --workspace --release && cargo bench -p knock-e2e --bench ha    # as root
//! ```
//!
//! Only 198.18.0.0/24 in namespaces this program makes; everything it starts is ended by its
//! process id on the way out, and the namespaces are deleted, even when it fails.

// The end-to-end fixture, shared with the tests; not every helper is used here.
#[allow(dead_code)]
#[path = "../tests/e2e/lab.rs"]
mod lab;

#[allow(dead_code)]
#[path = "../tests/e2e/ha/fixture.rs"]
mod fixture;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fixture::{Backend, HaLab, Host, Node, CLIENT};
use knock_test_support::run::{ok, Reaped};

/// The door: hotp on 22/tcp, the default knock range 40000-42047 and length 8.
const DOOR: &str = "[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\n\
                    open_for = \"5s\"\nseq_timeout = \"2s\"\n";
/// What every run's section in bench/RESULTS.md refers to, written there once.
const SETUP_HEADING: &str = "## Setup of `bench/ha.rs` (issue 13: the etcd ledger)";
const SETUP: &str = "\
Command: `cargo build --workspace --release && cargo bench -p knock-e2e --bench ha` (as root; \
`HA_BENCH_KNOCKS` sets the knocks per ledger, 200 by default). The fixture of tests/e2e/ha: node A \
alone in its namespace (its daemon without `--debug`), door hotp 22/tcp, length 8, one client \
knocking with `knock --profile` (10 ms between knocks), one knock at a time, the grant flushed from \
the set after each so that every grant is a new element. The file ledger: A's state directory. The \
etcd ledger: Debian's etcd 3.4.23, three members on this machine, each in its own namespace on the \
bridge, TLS with client certificates, heartbeat 50 ms, election 500 ms, knockd's `timeout = \"500ms\"`; \
one transaction per knock. Both under the temporary directory named in each run (`TMPDIR`).

- **decided**: the daemon's `decided_us` (its `door opened` line): from the capture of the last knock \
  to the nftables grant returning; it includes the ledger's durable write (an fdatasync'd append, or \
  the etcd transaction) and the audit record's fdatasync.
- **wire**: from the last knock's tcpdump timestamp on A's `eth0` to `nft monitor` in A's namespace \
  reporting the grant's set element (stamped when the bench reads the line: it adds the netlink \
  delivery and a wake-up, tens of microseconds).
";
/// The longest one knock may take to be granted before the run is given up.
const KNOCK_LIMIT: Duration = Duration::from_secs(10);

/// What one backend's run measured, in microseconds.
struct Run {
    backend: Backend,
    decided: Vec<u64>,
    wire: Vec<u64>,
    wall: Duration,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// Starts `nft monitor` in A's namespace; its lines arrive stamped with the time they were read.
fn monitor(lab: &HaLab) -> (Reaped, Receiver<(u64, String)>) {
    let mut child = lab
        .spawn(Host::A, "nft", &["monitor", "elements"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nft monitor");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((now_us(), line)).is_err() {
                break;
            }
        }
    });
    // `nft monitor` subscribes before it reads: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    (Reaped(child), rx)
}

/// `decided_us` of a `door opened` line.
fn decided_us(line: &str) -> Option<u64> {
    line.split("decided_us=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The knock packets of a capture: (kernel timestamp in µs, destination port), in order.
fn knocks_seen(lab: &HaLab, file: &str) -> Vec<(u64, u16)> {
    let pcap = lab.dir.join(file);
    let text = ok(Command::new("tcpdump").args(["-r", pcap.to_str().unwrap(), "-n", "-tt", "-q"]));
    text.lines()
        .filter_map(|l| {
            // 1796076390.263123 IP 198.18.0.2.47001 > 198.18.0.1.40090: tcp 0
            let mut words = l.split_whitespace();
            let (secs, micros) = words.next()?.split_once('.')?;
            let to = words.nth(3)?.trim_end_matches(':');
            let port = to.rsplit('.').next()?.parse().ok()?;
            Some((secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?, port))
        })
        .collect()
}

fn run(backend: Backend, knocks: usize) -> Run {
    let mut lab = HaLab::new(backend, DOOR);
    let profile = lab.add_client("ssh", "alice");
    lab.start(Node::A);
    let filter = format!("tcp dst portrange 40000-42047 and src host {CLIENT}");
    let capture = lab.capture(Host::A, "knocks.pcap", &filter);
    let (monitor, events) = monitor(&lab);
    let started = Instant::now();
    let mut decided = Vec::with_capacity(knocks);
    let mut grants = Vec::with_capacity(knocks);
    let mut last_ports = Vec::with_capacity(knocks);
    for i in 0..knocks {
        let ports = lab.dry_run(&profile);
        last_ports.push(ports.last().and_then(|p| p.split(':').next()?.parse::<u16>().ok()).expect("a last knock"));
        let knocked = now_us();
        let o = lab.exec(Host::Client, lab::bin("knock"), &["--profile", &profile]);
        assert!(o.status.success(), "knock {i}: {o:?}");
        // The grant as the kernel's set reports it...
        let deadline = Instant::now() + KNOCK_LIMIT;
        let granted = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok((at, line)) if at >= knocked && line.starts_with("add element") => break at,
                Ok(_) => continue,
                Err(e) => {
                    panic!("knock {i} ({backend:?}) was not granted within {KNOCK_LIMIT:?}: {e}\n{}", lab.log(Node::A))
                }
            }
        };
        grants.push(granted);
        // ...and as the daemon logs it.
        lab.wait_log(Node::A, "door opened", i + 1, KNOCK_LIMIT);
        let log = lab.log(Node::A);
        let line = log.lines().filter(|l| l.contains("door opened")).nth(i).expect("counted");
        decided.push(decided_us(line).unwrap_or_else(|| panic!("no decided_us in {line}")));
        ok(&mut lab.spawn(Host::A, "nft", &["flush", "set", "inet", "knockd", "grants4"]));
    }
    let wall = started.elapsed();
    drop(monitor);
    lab.stop_capture(capture);
    let seen = knocks_seen(&lab, "knocks.pcap");
    let wire = grants
        .iter()
        .zip(&last_ports)
        .enumerate()
        .map(|(i, (&granted, &port))| {
            let last = seen.iter().filter(|(at, p)| *p == port && *at <= granted).map(|(at, _)| *at).max();
            granted - last.unwrap_or_else(|| panic!("knock {i}: its last knock (port {port}) is not in the capture"))
        })
        .collect();
    Run { backend, decided, wire, wall }
}

/// The value below which `p` percent of `sorted` lie (nearest rank).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn row(name: &str, backend: Backend, values: &[u64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    format!(
        "| {:<7} | {:<33} | {:>6} | {:>7} | {:>7} | {:>7} | {:>7} |",
        format!("{backend:?}").to_lowercase(),
        name,
        values.len(),
        ms(sorted[0]),
        ms(percentile(&sorted, 50)),
        ms(percentile(&sorted, 95)),
        ms(*sorted.last().unwrap())
    )
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    let commit = commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let storage =
        Command::new("findmnt").args(["-n", "-f", "-o", "SOURCE,FSTYPE", "-T"]).arg(std::env::temp_dir()).output();
    let storage = storage.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "Machine: {cpus} CPUs ({cpu}), kernel {}, shared with other work (load average {} at the end); state \
         directories and etcd's data in {} ({storage}). Build: {commit} plus the working tree at the time, release \
         profile.",
        kernel.trim(),
        load.join(" "),
        std::env::temp_dir().display()
    )
}

fn main() {
    knock_test_support::require_root();
    let knocks: usize = std::env::var("HA_BENCH_KNOCKS").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    assert!((1..=2000).contains(&knocks), "HA_BENCH_KNOCKS: 1 to 2000");
    // `HA_BENCH_LEDGERS=file` (or `etcd`) runs one backend only (quick before/after pairs).
    let only = std::env::var("HA_BENCH_LEDGERS").unwrap_or_default().to_lowercase();
    assert!(["", "file", "etcd"].contains(&only.as_str()), "HA_BENCH_LEDGERS: file or etcd");
    let runs: Vec<Run> = [Backend::File, Backend::Etcd]
        .into_iter()
        .filter(|b| only.is_empty() || format!("{b:?}").to_lowercase() == only)
        .map(|backend| {
            eprintln!("== {backend:?} ledger: {knocks} knocks");
            run(backend, knocks)
        })
        .collect();
    let mut table = vec![
        "| ledger  | measured                          | knocks | min ms  | p50 ms  | p95 ms  | max ms  |".to_string(),
        "|---------|-----------------------------------|-------:|--------:|--------:|--------:|--------:|".to_string(),
    ];
    for r in &runs {
        table.push(row("decided (capture → grant, daemon)", r.backend, &r.decided));
        table.push(row("wire (last knock → set element)", r.backend, &r.wire));
    }
    let table = table.join("\n");
    println!("{table}");
    let walls: Vec<String> =
        runs.iter().map(|r| format!("{:?} {:.0} s", r.backend, r.wall.as_secs_f64()).to_lowercase()).collect();
    let date = Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
    let date = date.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let results = knock_test_support::repo().join("bench/RESULTS.md");
    let mut text = std::fs::read_to_string(&results).unwrap_or_default();
    if !text.contains(SETUP_HEADING) {
        text.push_str(&format!("\n{SETUP_HEADING}\n\n{SETUP}"));
    }
    text.push_str(&format!(
        "\n## bench/ha.rs, {date}: knock → grant, etcd ledger beside file ledger\n\n\
         `cargo bench -p knock-e2e --bench ha`, HA_BENCH_KNOCKS={knocks}, run time {}.\n{}\n\n{table}\n",
        walls.join(", "),
        machine(),
    ));
    std::fs::write(&results, text).unwrap_or_else(|e| panic!("{}: {e}", results.display()));
    eprintln!("appended to {}", results.display());
}
