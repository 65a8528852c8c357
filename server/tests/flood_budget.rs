//! Issue 9, lockout 1, from a key holder's side: someone with a client's key burns fresh
//! candidates as fast as he can send packets (three knocks, then wrong ones), and shows every
//! prefix from a second address too. The daemon, fed those packets through its own decision
//! path, lets the ledger and the audit log grow only within their budgets: burns past the
//! client's budget stay in memory, and burn and alert records fold past the audit's.

use std::fs;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use knock_core::config::Config;
use knock_core::keys::read_key_file;
use knock_core::packet::KnockPacket;
use knock_core::sequence::{derive, Mode, Purpose, SequenceId};
use knock_core::time::{unix_now, utc_day};
use knock_core::Knock;
use knockd::runtime::capture::CapturedKnock;
use knockd::runtime::daemon::Daemon;
use knockd::state::StateDir;

const SERVER: &str = "198.18.0.1";
const ROUNDS: u64 = 2_000;

fn fixture() -> (PathBuf, Config) {
    let dir = std::env::temp_dir().join(format!("knockd-flood-budget-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let text = "[server]\nstate_dir = \"state\"\ninterfaces = [\"lo\"]\nfirewall = \"none\"\n\n[[door]]\n\
                name = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n";
    let path = dir.join("knockd.toml");
    fs::write(&path, text).unwrap();
    let config = Config::parse(&path, text).unwrap();
    knockd::cli::admin::init(&config).unwrap();
    let bundle = knockd::cli::admin::BundleDest::File(dir.join("alice.knock"));
    knockd::cli::admin::client_add(&config, "ssh", "alice", SERVER.parse().unwrap(), &bundle).unwrap();
    (dir, config)
}

fn knock(daemon: &mut Daemon, src: &str, src_port: u16, k: Knock) {
    let packet =
        KnockPacket { src: src.parse().unwrap(), src_port, dst: SERVER.parse().unwrap(), knock: k, tcp_flags: Some(2) };
    daemon.on_knock(&CapturedKnock { packet, at: Instant::now(), interface: "lo".into() });
}

fn size(path: &std::path::Path) -> u64 {
    fs::read_dir(path).unwrap().filter_map(Result::ok).map(|e| e.metadata().unwrap().len()).sum()
}

#[test]
fn regression_9_a_key_holder_burning_fast_cannot_grow_the_ledger_or_the_audit_log() {
    let (dir, config) = fixture();
    let state = StateDir::new(&config.server.state_dir);
    let key = read_key_file(&dir.join("keys/alice.key")).unwrap();
    let server_id = state.server_id().unwrap();
    let door = config.door("ssh").unwrap().clone();
    let mut daemon = Daemon::new(config).unwrap();
    let (ledger_before, audit_before) = (size(&state.ledger_dir()), fs::metadata(state.audit_log()).unwrap().len());
    let started = Instant::now();
    for counter in 0..ROUNDS {
        let id = SequenceId {
            purpose: Purpose::Open,
            server_id,
            door: "ssh".into(),
            client: "alice".into(),
            mode: Mode::Hotp,
            counter,
            epoch: utc_day(unix_now()),
        };
        let seq = derive(&key, &id, &door.alphabet, door.length, None::<IpAddr>);
        let strays: Vec<Knock> = (40000..42048).map(Knock::tcp).filter(|k| !seq.contains(k)).take(3).collect();
        // Three knocks from a second address first (an alert when the first address follows),
        // then three from the first and three wrong ones: the candidate burns.
        let port = 20_000 + (counter % 40_000) as u16;
        for k in &seq[..3] {
            knock(&mut daemon, "198.18.0.9", port, *k);
        }
        for k in seq[..3].iter().chain(&strays) {
            knock(&mut daemon, "198.18.0.8", port, *k);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let ledger_grew = size(&state.ledger_dir()) - ledger_before;
    let audit_grew = fs::metadata(state.audit_log()).unwrap().len() - audit_before;
    eprintln!("{ROUNDS} burns in {secs:.1} s: the ledger grew {ledger_grew} bytes, the audit log {audit_grew}");
    // A burn record is under 64 bytes; the client's budget is 16 and one per 4 s.
    let ledger_bound = (16 + (secs / 4.0).ceil() as u64 + 1) * 64;
    assert!(ledger_grew <= ledger_bound, "ledger grew {ledger_grew} > {ledger_bound} bytes in {secs:.1} s");
    // The audit budget: 60 records at once, 5 a second, each maybe with a summary, and one
    // summary per kind and second; records are under 400 bytes.
    let records = 2 * (60 + (secs * 5.0).ceil() as u64) + 5 * (secs.ceil() as u64 + 1);
    assert!(audit_grew <= records * 400, "audit log grew {audit_grew} bytes in {secs:.1} s");
    assert!(ledger_grew > 0 && audit_grew > 0, "the burns within the budgets were written");
    let _ = fs::remove_dir_all(&dir);
}
