//! `knockd replay`'s command: its arguments, the doors loaded read-only as `knockd status`
//! loads them, and the capture file read in batches of frames, each parsed by the live
//! capture's parser, prepared and read ahead (`engine.rs`), then fed in order.

use std::path::PathBuf;
use std::time::Instant;

use knock_core::config::Config;
use knock_core::packet::KnockPacket;
use knock_core::sequence::Mode;

use super::engine::{Replay, BATCH};
use super::findings::Outcome;
use super::render;
use crate::cli::error::CliError;
use crate::cli::report::Report;
use crate::runtime::capture::frame_knock;
use crate::runtime::capture::pcapfile::PcapReader;
use crate::runtime::doors::Doors;
use crate::state::ledger_backend;
use crate::state::StateDir;

/// `knockd replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The capture file: classic pcap as `tcpdump -w` writes it (microsecond or nanosecond
    /// timestamps; Ethernet, Linux cooked, loopback or raw IP).
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Print one JSON document (keys in docs/OPERATIONS.md) instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Rows of each table of the text report (sources by packets, openings, replays, burns);
    /// the rest are summed up in one line. --json lists every finding and this many sources.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
}

/// `knockd replay`: runs the capture through the matcher and reports what would have happened.
pub fn replay(config: &Config, args: &ReplayArgs) -> Result<Report, CliError> {
    let outcome = run(config, args)?;
    let text = if args.json { render::json(&outcome, args.top) } else { render::text(&outcome, args.top) };
    Ok(Report::clean(text))
}

/// Loads the doors read-only and replays the capture through them.
pub fn run(config: &Config, args: &ReplayArgs) -> Result<Outcome, CliError> {
    let state = StateDir::new(&config.server.state_dir);
    let derives = config.doors.iter().any(|d| matches!(d.mode, Mode::Hotp | Mode::Totp));
    let server_id = if derives { state.server_id()? } else { [0; 16] };
    // Read-only: a daemon may be appending to these very ledgers.
    let stores = ledger_backend::configured(config, &state.ledger_dir(), None)?;
    let doors = Doors::load(config, server_id, stores.as_ref());
    drop(stores);
    let mut reader = PcapReader::open(&args.pcap)?;
    let (link, on) = (reader.link(), args.pcap.display().to_string());
    let started = Instant::now();
    let mut replay = Replay::new(doors);
    let (mut frames, mut packets) = (0u64, 0u64);
    // Frames go in batches: parsed first, then the table slots each will update are read
    // (their cache misses overlap), then they are fed in order.
    let mut batch: Vec<(u64, Option<KnockPacket>)> = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        while batch.len() < BATCH {
            let Some(frame) = reader.next_frame()? else { break };
            batch.push((frame.ts_ns, frame_knock(link, frame.data, &on)));
        }
        if batch.is_empty() {
            break;
        }
        frames += batch.len() as u64;
        replay.warm(&batch);
        let mut packets_in_batch = 0;
        for (ts_ns, packet) in &batch {
            replay.advance(*ts_ns);
            if let Some(p) = packet {
                replay.packet(p, packets_in_batch);
                packets_in_batch += 1;
            }
        }
        packets += packets_in_batch as u64;
    }
    replay.finish();
    Ok(Outcome {
        file: args.pcap.clone(),
        link,
        nanosecond: reader.nanosecond(),
        frames,
        packets,
        span_ms: replay.clock.map(|c| (c.first_ns / 1_000_000, c.now_ns / 1_000_000)),
        doors: replay.doors.doors.iter().map(|d| d.config.name.clone()).collect(),
        refused: replay.doors.refused.iter().map(ToString::to_string).collect(),
        state_dir: config.server.state_dir.clone(),
        sources: replay.sources.fold(args.top),
        findings: replay.findings,
        elapsed: started.elapsed(),
    })
}
