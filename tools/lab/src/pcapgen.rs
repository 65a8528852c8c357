//! `pcap`: writes a capture file instead of sending anything, for `knockd replay`'s tests and
//! benchmark: a flood of TCP SYNs (or UDP) from random sources of an allowed prefix to random
//! ports of a range, with whole knock sequences of a known client woven in at even intervals
//! (each from one source port, its knocks 20 ms apart). Timestamps follow a virtual rate, so a
//! multi-million-packet file spans seconds or minutes of capture time, starting now (a hotp
//! client's sequences depend on the day). Bounded by a packet cap; nothing touches a network.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::addr::{check_allowed, Mac};
use crate::cli::PcapArgs;
use crate::flood::check_sources;
use crate::frame::{build_frame, FrameSpec, Knock, Proto};
use crate::limits::check_cap;
use crate::send::EPHEMERAL;

/// Most packets one generated file may hold.
pub const MAX_PCAP_PACKETS: u64 = 50_000_000;
/// Capture time between two knocks of a valid sequence.
const KNOCK_GAP_NS: u64 = 20_000_000;
const SRC_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x02]);
const DST_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);

/// Parses one `--knocks` value: a whole sequence, `PORT[:tcp|:udp]` comma- or space-separated.
pub fn parse_sequence(s: &str) -> Result<Vec<Knock>, String> {
    let knocks: Vec<Knock> = s.split([',', ' ']).filter(|w| !w.is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    if knocks.is_empty() {
        return Err("a --knocks sequence holds at least one knock".into());
    }
    Ok(knocks)
}

/// Runs `knock-lab pcap`.
pub fn run(args: &PcapArgs) -> Result<(), String> {
    check_allowed(args.dst, "destination")?;
    check_allowed(args.client, "client")?;
    check_sources(&args.sources, args.dst)?;
    check_cap("--packets", args.packets, MAX_PCAP_PACKETS)?;
    check_cap("--rate", args.rate, u64::from(u32::MAX))?;
    if args.client.is_ipv4() != args.dst.is_ipv4() {
        return Err(format!("--client {} and --dst {} are not of the same address family", args.client, args.dst));
    }
    let sequences: Vec<Vec<Knock>> = args.knocks.iter().map(|s| parse_sequence(s)).collect::<Result<_, _>>()?;
    let mut rng = match args.seed {
        Some(s) => SmallRng::seed_from_u64(s),
        None => SmallRng::from_os_rng(),
    };
    let start_ns = match args.start {
        Some(secs) => secs.saturating_mul(1_000_000_000),
        None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    };
    let file = File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let io = |e: std::io::Error| format!("{}: {e}", args.out.display());
    write_header(&mut out).map_err(io)?;
    let gap_ns = 1_000_000_000 / args.rate;
    // Sequence i starts after flood packet (i + 1) * packets / (n + 1).
    let every = args.packets / (sequences.len() as u64 + 1);
    let mut next_seq = 0usize;
    let mut buf = Vec::with_capacity(128);
    let mut written = 0u64;
    let mut ts = start_ns;
    for i in 0..args.packets {
        if next_seq < sequences.len() && i == every * (next_seq as u64 + 1) {
            let src_port = rng.random_range(EPHEMERAL);
            for k in &sequences[next_seq] {
                let spec = spec(args.client, args.dst, k.proto, src_port, k.port, &mut rng);
                build_frame(&spec, &mut buf)?;
                write_record(&mut out, ts, &buf).map_err(io)?;
                ts += KNOCK_GAP_NS;
                written += 1;
            }
            next_seq += 1;
        }
        let src = args.sources.random_addr(&mut rng);
        let port = rng.random_range(args.ports.first..=args.ports.last);
        let spec = spec(src, args.dst, args.proto, rng.random_range(EPHEMERAL), port, &mut rng);
        build_frame(&spec, &mut buf)?;
        write_record(&mut out, ts, &buf).map_err(io)?;
        ts += gap_ns;
        written += 1;
    }
    out.flush().map_err(io)?;
    println!("wrote {written} packets to {} ({} valid sequences)", args.out.display(), sequences.len());
    Ok(())
}

fn spec(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    proto: Proto,
    src_port: u16,
    dst_port: u16,
    rng: &mut SmallRng,
) -> FrameSpec<'static> {
    FrameSpec {
        src_mac: SRC_MAC,
        dst_mac: DST_MAC,
        src,
        dst,
        proto,
        src_port,
        dst_port,
        seq: rng.random(),
        ip_id: rng.random(),
        payload: match proto {
            Proto::Tcp => b"",
            Proto::Udp => b"knock",
        },
    }
}

/// The 24-byte header of a classic pcap file: microsecond timestamps, Ethernet.
fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&[0; 8])?;
    out.write_all(&65_535u32.to_le_bytes())?;
    out.write_all(&1u32.to_le_bytes())
}

fn write_record(out: &mut impl Write, ts_ns: u64, frame: &[u8]) -> std::io::Result<()> {
    let secs = u32::try_from(ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
    let micros = ((ts_ns % 1_000_000_000) / 1_000) as u32;
    let len = frame.len() as u32;
    for field in [secs, micros, len, len] {
        out.write_all(&field.to_le_bytes())?;
    }
    out.write_all(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_parse_from_commas_or_spaces() {
        let k = parse_sequence("40001, 40002:udp 40003/tcp").unwrap();
        assert_eq!(k.len(), 3);
        assert_eq!(k[1], Knock { port: 40002, proto: Proto::Udp });
        assert!(parse_sequence(" , ").is_err());
        assert!(parse_sequence("40001,0").is_err());
    }
}
