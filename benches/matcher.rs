//! Matcher benchmark: what a spoofed-source flood costs the pure matcher.
//!
//! A plain `std::time::Instant` harness (no criterion). Every case is bounded by a packet count
//! and a wall-clock limit. The clock handed to the matcher is real elapsed time, and `tick` runs
//! every 100 ms as in the daemon, so a case behaves like a daemon saturated by the flood.
//!
//! ```text
//! cargo bench --bench matcher              # full run, well under a minute on 2 cores
//! cargo bench --bench matcher -- --smoke   # ~1% of the work, for CI (or BENCH_SMOKE=1)
//! ```
//!
//! Cases:
//! - (a) random sources (198.18.0.0/15) and random ports of the door's range, against a door
//!   with 1, 100 and 1000 clients (window 10, 3 epochs: 30 first knocks per client);
//! - (b) the same, but every packet is some candidate's first knock (a new track on every
//!   packet) until the state cap is reached and held; (b') the same with `bind_source`, where
//!   every new track also derives the rest of its sequence for the source;
//! - (c) the cost of building one client's candidates (30 first knocks, plus 30 rests without
//!   `bind_source`, as the daemon does) and of one full derivation;
//! - (d) a legitimate client's sequence (8 knocks, 20 ms apart as `knock` sends them) while the
//!   flood runs: does it complete?
//!
//! Only 198.18.0.0/15 addresses are used.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knock_core::config::TcpFlagRule;
use knock_core::keys::Secret;
use knock_core::knock::{Knock, PortRange, Proto};
use knock_core::matcher::{Candidate, CandidateId, DoorRules, Event, KnockSet, Limits, Matcher, RestOfSequence};
use knock_core::packet::KnockPacket;
use knock_core::sequence::{derive, first_knock, rest_knocks, Alphabet, Mode, Purpose, SequenceId};

const FIRST_PORT: u16 = 40000;
const LAST_PORT: u16 = 42047;
const LENGTH: usize = 8;
const WINDOW: u64 = 10;
const TODAY: u32 = 20_000;
const SEQ_TIMEOUT_MS: u64 = 10_000;
const MISSES: u8 = 2;
const TICK_MS: u64 = 100;
/// (d): the paced flood's rate, about what the daemon's capture took in bench/flood.sh.
const PACED: u64 = 150_000;
/// `knock`'s default delay between two knocks of a profile.
const CLIENT_DELAY_MS: u64 = 20;
/// TCP flags of every packet: a SYN.
const SYN: Option<u8> = Some(0x02);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The source port the client sends every knock of its attempt from.
const CLIENT_PORT: u16 = 50_505;
/// 198.18.0.0/15.
const FLOOD_BASE: u32 = 0xC612_0000;
const FLOOD_MASK: u32 = 0x0001_FFFF;

/// How much work a case may do.
#[derive(Clone, Copy)]
struct Budget {
    max_packets: u64,
    max_time: Duration,
    /// (d): how long the flood runs before the client's first knock.
    pre_flood: Duration,
    /// (c): iterations of the derivation loops.
    derive_iters: u32,
    /// Pace the flood to at most this many packets per second (None: as fast as it goes).
    rate: Option<u64>,
    /// Rounds of each flood table (the median is shown).
    rounds: usize,
}

impl Budget {
    fn new(smoke: bool) -> Budget {
        let full = Budget {
            max_packets: 2_000_000,
            max_time: Duration::from_millis(2500),
            pre_flood: Duration::from_millis(500),
            derive_iters: 20_000,
            rate: None,
            rounds: 3,
        };
        if !smoke {
            return full;
        }
        Budget {
            max_packets: full.max_packets / 100,
            max_time: full.max_time / 100,
            pre_flood: full.pre_flood / 100,
            derive_iters: full.derive_iters / 100,
            rate: None,
            rounds: 1,
        }
    }
}

/// splitmix64: a small, fixed-seed generator (the flood is the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: bias is irrelevant for a benchmark load.
        ((self.next() >> 32) * n) >> 32
    }
    /// A random source in 198.18.0.0/15, other than `except` (when given).
    fn flood_source(&mut self, except: Option<IpAddr>) -> IpAddr {
        loop {
            let a = IpAddr::V4(Ipv4Addr::from(FLOOD_BASE | (self.next() as u32 & FLOOD_MASK)));
            if Some(a) != except {
                return a;
            }
        }
    }
}

/// One hotp door with `n` clients, each with its own key: derives what the daemon's `Doors`
/// derives. Without `bind_source` (the default) a candidate carries its whole sequence, derived
/// when the table is built; with it, knocks 2..K are derived for each source that starts one.
struct Door {
    alphabet: Alphabet,
    secrets: Vec<Secret>,
    names: Vec<String>,
    bind_source: bool,
}

impl Door {
    fn new(clients: usize, bind_source: bool) -> Door {
        let alphabet = Alphabet::new(PortRange::new(FIRST_PORT, LAST_PORT).unwrap(), &[Proto::Tcp]).unwrap();
        let secrets = (0..clients)
            .map(|i| {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                b[31] = 0x5a;
                Secret::from_bytes(b)
            })
            .collect();
        let names = (0..clients).map(|i| format!("client{i}")).collect();
        Door { alphabet, secrets, names, bind_source }
    }

    fn seq_id(&self, client: usize, purpose: Purpose, counter: u64, epoch: u32) -> SequenceId {
        SequenceId {
            purpose,
            server_id: [7; 16],
            door: "ssh".into(),
            client: self.names[client].clone(),
            mode: Mode::Hotp,
            counter,
            epoch,
        }
    }

    /// Window W = 10 counters × 3 epochs = 30 candidates: 30 first-knock HMAC streams, plus 30
    /// for the rest of each sequence without `bind_source`.
    fn candidates(&self, client: usize) -> Vec<Candidate> {
        let mut out = Vec::with_capacity(WINDOW as usize * 3);
        let key = &self.secrets[client];
        for counter in 0..WINDOW {
            for epoch in [TODAY - 1, TODAY, TODAY + 1] {
                let sid = self.seq_id(client, Purpose::Open, counter, epoch);
                let first = first_knock(key, &sid, &self.alphabet);
                let rest =
                    (!self.bind_source).then(|| Arc::from(rest_knocks(key, &sid, &self.alphabet, first, LENGTH, None)));
                let id = CandidateId { door: 0, client, purpose: Purpose::Open, counter, epoch };
                out.push(Candidate { id, first, used: false, rest });
            }
        }
        out
    }

    /// The sequence client `client` knocks from 198.18.0.2.
    fn sequence(&self, client: usize, counter: u64) -> Vec<Knock> {
        let id = self.seq_id(client, Purpose::Open, counter, TODAY);
        derive(&self.secrets[client], &id, &self.alphabet, LENGTH, self.bind_source.then_some(IpAddr::V4(CLIENT)))
    }

    fn matcher(&self) -> (Matcher, Vec<Knock>) {
        let mut m = Matcher::new(Limits::default());
        m.set_door(
            0,
            DoorRules {
                knocks: KnockSet::Range(self.alphabet.clone()),
                tcp_flags: TcpFlagRule::SYN_ONLY,
                burn_at: Some(knock_core::matcher::burn_threshold(self.alphabet.size(), LENGTH)),
                addresses: vec![],
                seq_timeout_ms: SEQ_TIMEOUT_MS,
                misses: MISSES,
                strict_order: false,
                per_port: true,
            },
        );
        let mut firsts = HashSet::new();
        for c in 0..self.secrets.len() {
            let cands = self.candidates(c);
            firsts.extend(cands.iter().map(|c| c.first));
            m.set_client_candidates(0, c, &cands);
        }
        let mut firsts: Vec<Knock> = firsts.into_iter().collect();
        firsts.sort();
        (m, firsts)
    }
}

impl RestOfSequence for Door {
    fn rest(&self, id: &CandidateId, first: Knock, source: IpAddr) -> Vec<Knock> {
        let sid = self.seq_id(id.client, id.purpose, id.counter, id.epoch);
        let src = self.bind_source.then_some(source);
        rest_knocks(&self.secrets[id.client], &sid, &self.alphabet, first, LENGTH, src)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ports {
    /// Uniform over the door's range.
    Random,
    /// Uniform over the distinct first knocks of the table.
    FirstKnocks,
}

#[derive(Default)]
struct Outcome {
    packets: u64,
    secs: f64,
    /// Time the benchmark's thread was on a CPU (what other work on a shared machine does not
    /// inflate, unlike `secs`).
    cpu_secs: f64,
    hits: u64,
    max_tracks: usize,
    end_tracks: usize,
    burned: u64,
    alerts: u64,
    /// (d) only: whether the client's sequence completed (and how long from its first knock).
    client: Option<(bool, f64)>,
    /// (d) only: what ended the client's candidate, when something did.
    client_fate: Option<String>,
}

/// The candidate the legitimate client knocks in (d).
fn client_id() -> CandidateId {
    CandidateId { door: 0, client: 0, purpose: Purpose::Open, counter: 0, epoch: TODAY }
}

impl Outcome {
    fn tally(&mut self, events: &[Event], client_done: &mut bool) {
        for e in events {
            match e {
                Event::Burned { id, progress, reason, source } => {
                    self.burned += 1;
                    if *id == client_id() {
                        let who = if *source == IpAddr::V4(CLIENT) { "client's" } else { "a flood" };
                        self.client_fate = Some(format!("{who} attempt burned at {progress}: {reason:?}"));
                    }
                }
                Event::PrefixFromSecondSource { id, .. } => {
                    self.alerts += 1;
                    if *id == client_id() {
                        self.client_fate = Some("second-source alert".into());
                    }
                }
                Event::Completed { id, source, used: false } if *source == IpAddr::V4(CLIENT) && id.client == 0 => {
                    *client_done = true
                }
                Event::Completed { .. } => {}
            }
        }
    }
}

/// Who knocks besides the flood.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// Nobody.
    None,
    /// Client 0 knocks its sequence 0 from 198.18.0.2; the flood never uses that address.
    Knocks,
    /// The same, but the flood's random sources may be 198.18.0.2 too (1 in 131072).
    SpoofedAtRandom,
    /// The flood never uses 198.18.0.2, except for exactly one packet this many milliseconds
    /// after the client's first knock (an attacker who knows the client's address; 0: the very
    /// next packet, as an on-path attacker could).
    SpoofedOnce(u64),
}

/// Runs a flood against `door`; with a client, client 0 knocks its sequence 0 during it.
fn flood(door: &Door, ports: Ports, budget: Budget, who: Client) -> Outcome {
    let client = who != Client::None;
    let (mut m, firsts) = door.matcher();
    let mut is_first = vec![false; usize::from(LAST_PORT - FIRST_PORT) + 1];
    for k in &firsts {
        is_first[usize::from(k.port - FIRST_PORT)] = true;
    }
    let span = u64::from(LAST_PORT - FIRST_PORT) + 1;
    let seq = door.sequence(0, 0);
    let (server, me) = (IpAddr::V4(SERVER), IpAddr::V4(CLIENT));
    let mut rng = Rng(0x6b6e_6f63_6b21);
    let mut out = Outcome::default();
    let mut done = false;
    let mut sent = 0usize;
    let mut spoofed = false;
    let mut next_knock_ms = budget.pre_flood.as_millis() as u64;
    let mut first_knock_at = None;
    let mut first_knock_ms = 0;
    let mut next_tick = TICK_MS;
    let mut now_ms = 0u64;
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut i = 0u64;
    loop {
        if i.is_multiple_of(64) {
            let el = start.elapsed();
            now_ms = el.as_millis() as u64;
            if el > budget.max_time || (client && (done || sent == seq.len())) {
                break;
            }
            if now_ms >= next_tick {
                let ev = m.tick(now_ms);
                out.tally(&ev, &mut done);
                next_tick = now_ms + TICK_MS;
            }
            if client && now_ms >= next_knock_ms && sent < seq.len() {
                if first_knock_at.is_none() {
                    first_knock_at = Some(el);
                    first_knock_ms = now_ms;
                }
                let p = KnockPacket { src: me, src_port: CLIENT_PORT, dst: server, knock: seq[sent], tcp_flags: SYN };
                let ev = m.on_packet(&p, now_ms, door);
                out.tally(&ev, &mut done);
                sent += 1;
                next_knock_ms = now_ms + CLIENT_DELAY_MS;
                if done {
                    let secs = (start.elapsed() - first_knock_at.unwrap_or_default()).as_secs_f64();
                    out.client = Some((true, secs));
                }
            }
        }
        if let Some(rate) = budget.rate {
            if i.is_multiple_of(64) && i as f64 >= rate as f64 * start.elapsed().as_secs_f64() {
                std::hint::spin_loop();
                continue;
            }
        }
        if !client && i >= budget.max_packets {
            break;
        }
        let knock = match ports {
            Ports::Random => Knock::tcp(FIRST_PORT + rng.below(span) as u16),
            Ports::FirstKnocks => firsts[rng.below(firsts.len() as u64) as usize],
        };
        out.hits += u64::from(is_first[usize::from(knock.port - FIRST_PORT)]);
        let spoof_now = match who {
            Client::SpoofedOnce(after) => sent == 1 && !spoofed && now_ms >= first_knock_ms + after,
            _ => false,
        };
        let src = if spoof_now {
            spoofed = true;
            me
        } else {
            rng.flood_source((who != Client::SpoofedAtRandom).then_some(me))
        };
        // A flood packet comes from a random port; the one spoofed from the client hits its port.
        let src_port = if spoof_now { CLIENT_PORT } else { 1024 + (i % 60_000) as u16 };
        let p = KnockPacket { src, src_port, dst: server, knock, tcp_flags: SYN };
        let ev = m.on_packet(&p, now_ms, door);
        out.tally(&ev, &mut done);
        out.max_tracks = out.max_tracks.max(m.track_count());
        i += 1;
    }
    out.secs = start.elapsed().as_secs_f64();
    out.cpu_secs = thread_cpu_ns().saturating_sub(cpu_start) as f64 / 1e9;
    out.packets = i;
    out.end_tracks = m.track_count();
    if client && out.client.is_none() {
        out.client = Some((done, 0.0));
    }
    black_box(&m);
    out
}

/// Nanoseconds this thread has spent on a CPU (the first field of /proc/thread-self/schedstat;
/// 0 where the kernel does not keep it).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn ns_per(secs: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        secs * 1e9 / n as f64
    }
}

fn flood_table(title: &str, doors: &[(usize, Door)], ports: Ports, budget: Budget) {
    let cap = Limits::default().max_tracks;
    println!("\n{title}");
    println!(
        "{:>7} {:>6} {:>7} {:>9} {:>6} {:>9} {:>6} {:>9} {:>6} {:>9} {:>9} {:>7} {:>6} {:>8} {:>6}",
        "clients",
        "table",
        "ports%",
        "packets",
        "secs",
        "ns/pkt",
        "x1",
        "pkt/s",
        "hit%",
        "trk max",
        "trk end",
        "burned",
        "alerts",
        "cpu ns",
        "x1 cpu"
    );
    // Rounds over every door size in turn, so that a busy moment of a shared machine hits all
    // sizes alike; each row shows its median round.
    let mut rounds: Vec<Vec<Outcome>> = doors.iter().map(|_| Vec::new()).collect();
    for _ in 0..budget.rounds {
        for ((_, door), runs) in doors.iter().zip(&mut rounds) {
            let o = flood(door, ports, budget, Client::None);
            assert!(o.max_tracks <= cap, "track_count {} exceeded the cap {cap}", o.max_tracks);
            runs.push(o);
        }
    }
    let median = |runs: &mut Vec<Outcome>| {
        runs.sort_by(|a, b| ns_per(a.secs, a.packets).total_cmp(&ns_per(b.secs, b.packets)));
        runs.swap_remove(runs.len() / 2)
    };
    // On-CPU time per packet, each size's median round by that measure.
    let cpu: Vec<f64> = rounds
        .iter()
        .map(|runs| {
            let mut v: Vec<f64> = runs.iter().map(|o| ns_per(o.cpu_secs, o.packets)).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    let medians: Vec<Outcome> = rounds.iter_mut().map(median).collect();
    let base = medians.first().map_or(1.0, |o| ns_per(o.secs, o.packets));
    let cpu_base = cpu.first().copied().unwrap_or(1.0);
    for (((n, door), o), cpu) in doors.iter().zip(&medians).zip(&cpu) {
        let (m, firsts) = door.matcher();
        println!(
            "{:>7} {:>6} {:>6.1}% {:>9} {:>6.2} {:>9.0} {:>6.2} {:>9.0} {:>5.1}% {:>9} {:>9} {:>7} {:>6} {:>8.0} {:>6.2}",
            n,
            m.table_len(0),
            100.0 * firsts.len() as f64 / f64::from(LAST_PORT - FIRST_PORT + 1),
            o.packets,
            o.secs,
            ns_per(o.secs, o.packets),
            ns_per(o.secs, o.packets) / base,
            o.packets as f64 / o.secs,
            100.0 * o.hits as f64 / o.packets.max(1) as f64,
            o.max_tracks,
            o.end_tracks,
            o.burned,
            o.alerts,
            cpu,
            cpu / cpu_base
        );
    }
    println!(
        "(median of {} rounds; x1: ns/pkt over the first row's; cpu ns: on-CPU time per packet (schedstat), median \
         round; x1 cpu: over the first row's; state cap: {cap} attempts, 'trk max' never exceeds it)",
        budget.rounds
    );
}

fn time_loop(iters: u32, mut f: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    ns_per(start.elapsed().as_secs_f64(), u64::from(iters))
}

fn derivation_costs(doors: &[(usize, Door)], bound: &[(usize, Door)], budget: Budget) {
    println!("\n(c) derivation costs (one client; window {WINDOW}, 3 epochs, length {LENGTH})");
    let n = budget.derive_iters;
    let (door, bound) = (&doors[doors.len() - 1].1, &bound[bound.len() - 1].1);
    let clients = door.secrets.len();
    let cands = time_loop(n / 10, |i| {
        black_box(door.candidates(i as usize % clients));
    });
    let cands_bound = time_loop(n / 10, |i| {
        black_box(bound.candidates(i as usize % clients));
    });
    let full = time_loop(n, |i| {
        black_box(door.sequence(0, u64::from(i)));
    });
    let id = CandidateId { door: 0, client: 0, purpose: Purpose::Open, counter: 0, epoch: TODAY };
    let first = bound.sequence(0, 0)[0];
    let rest = time_loop(n, |_| {
        black_box(bound.rest(black_box(&id), first, IpAddr::V4(CLIENT)));
    });
    let (mut m, _) = door.matcher();
    let fresh: Vec<Vec<Candidate>> = (0..4).map(|c| door.candidates(c % clients)).collect();
    let replace = time_loop(n / 10, |i| {
        m.set_client_candidates(0, i as usize % clients, &fresh[i as usize % 4]);
    });
    println!("{:<66} {:>10}", "operation", "ns");
    println!("{:<66} {:>10.0}", "one client's candidates, whole sequences (30 first + 30 rest)", cands);
    println!("{:<66} {:>10.0}", "one client's candidates, bind_source (30 first-knock HMACs)", cands_bound);
    println!("{:<66} {:>10.0}", "derive(): one full sequence of 8 knocks", full);
    println!("{:<66} {:>10.0}", "rest of a sequence for a source (each new track, bind_source)", rest);
    println!("{:<66} {:>10.0}", format!("set_client_candidates into a {clients}-client table"), replace);
}

fn client_table(doors: &[(usize, Door)], budget: Budget) {
    println!(
        "\n(d) a legitimate client (198.18.0.2, sequence 0, {LENGTH} knocks {CLIENT_DELAY_MS} ms apart, \
         starting {} ms into the flood)",
        budget.pre_flood.as_millis()
    );
    println!(
        "{:>7} {:>12} {:<24} {:>9} {:>9} {:>9} {:>7} {:>9} {:>6}",
        "clients", "flood ports", "flood sources", "packets", "pkt/s", "trk max", "burned", "completed", "secs"
    );
    let b = Budget { max_time: budget.pre_flood + Duration::from_millis(CLIENT_DELAY_MS * 20), ..budget };
    let variants = [
        (Ports::Random, None, Client::Knocks, "all but the client"),
        (Ports::FirstKnocks, None, Client::Knocks, "all but the client"),
        (Ports::Random, Some(PACED), Client::SpoofedAtRandom, "all (client's too)"),
        (Ports::Random, None, Client::SpoofedAtRandom, "all (client's too)"),
        (Ports::Random, None, Client::SpoofedOnce(0), "+1 as client, 0 ms"),
        (Ports::Random, None, Client::SpoofedOnce(5), "+1 as client, 5 ms"),
    ];
    for (n, door) in doors {
        for (ports, rate, who, label) in variants {
            let o = flood(door, ports, Budget { rate, ..b }, who);
            let (ok, secs) = o.client.unwrap_or((false, 0.0));
            println!(
                "{:>7} {:>12} {:<24} {:>9} {:>9.0} {:>9} {:>7} {:>9} {:>6.3}",
                n,
                match (ports, rate) {
                    (Ports::FirstKnocks, _) => "first-knock".to_string(),
                    (Ports::Random, None) => "random".to_string(),
                    (Ports::Random, Some(r)) => format!("random {}k/s", r / 1000),
                },
                label,
                o.packets,
                o.packets as f64 / o.secs,
                o.max_tracks,
                o.burned,
                if ok { "yes" } else { "NO" },
                secs
            );
            if let Some(f) = o.client_fate {
                println!("{:>20} client's candidate: {f}", "");
            }
        }
    }
    println!(
        "('random': as fast as the matcher goes; 'random {}k/s': paced; 'secs': from the client's first knock to \
         completion; 'burned': flood attempts that matched 2+ knocks of some candidate)",
        PACED / 1000
    );
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke")
        || std::env::var("BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0");
    let budget = Budget::new(smoke);
    let started = Instant::now();
    println!(
        "matcher benchmark{}: door 40000-42047/tcp, length {LENGTH}, window {WINDOW} x 3 epochs, misses {MISSES}, \
         seq_timeout {} s, default limits; per case at most {} packets / {:.2} s",
        if smoke { " (smoke: ~1% of the work)" } else { "" },
        SEQ_TIMEOUT_MS / 1000,
        budget.max_packets,
        budget.max_time.as_secs_f64()
    );
    // Sections to run (a, b, b', c, d; all by default): `cargo bench --bench matcher -- a d`.
    let picked: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |section: &str| picked.is_empty() || picked.iter().any(|p| p == section);
    // Door sizes (BENCH_CLIENTS=1,10000 picks some).
    let sizes: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 100, 1000, 10_000]);
    let doors: Vec<(usize, Door)> = sizes.iter().map(|&n| (n, Door::new(n, false))).collect();
    let bound: Vec<(usize, Door)> = sizes.iter().map(|&n| (n, Door::new(n, true))).collect();
    if run("a") {
        let title = "(a) flood: random sources in 198.18.0.0/15, random ports in the range";
        flood_table(title, &doors, Ports::Random, budget);
    }
    if run("b") {
        let title = "(b) worst case: every packet is a first knock (a new track each), state cap reached";
        flood_table(title, &doors, Ports::FirstKnocks, budget);
    }
    if run("b'") {
        let title =
            "(b') the same with bind_source (each new track also derives the rest of its sequence: one HMAC stream)";
        flood_table(title, &bound, Ports::FirstKnocks, budget);
    }
    if run("c") {
        derivation_costs(&doors, &bound, budget);
    }
    if run("d") {
        client_table(&doors, budget);
    }
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}
