//! `flood`: a bounded benchmark load — TCP SYNs or UDP datagrams to random
//! ports of a range from random source addresses (and ports) of an allowed
//! prefix, optionally paced, stopping at a packet count or a time limit,
//! whichever comes first.

use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::addr::{check_allowed, Prefix};
use crate::cli::FloodArgs;
use crate::frame::{build_frame, FrameSpec, Proto};
use crate::inject::{Injector, SendError};
use crate::limits::{check_cap, Deadline, MAX_FLOOD_COUNT, MAX_SECONDS};
use crate::send::EPHEMERAL;

/// Check the clock once per this many packets.
const CLOCK_EVERY: u64 = 64;
/// Give up after this many send failures in a row.
const MAX_CONSECUTIVE_FAILURES: u32 = 10_000;

/// Checks that a flood's source prefix may be used towards `dst`.
pub fn check_sources(sources: &Prefix, dst: IpAddr) -> Result<(), String> {
    if !sources.is_spoofable() {
        return Err(format!(
            "refusing --sources {sources}: the source prefix must lie entirely inside \
             198.18.0.0/15 or 2001:db8::/32"
        ));
    }
    if sources.addr.is_ipv4() != dst.is_ipv4() {
        return Err(format!("--sources {sources} and --dst {dst} are not of the same address family"));
    }
    Ok(())
}

/// Runs `knock-lab flood`.
pub fn run(args: &FloodArgs) -> Result<(), String> {
    check_allowed(args.dst, "destination")?;
    check_sources(&args.sources, args.dst)?;
    check_cap("--count", args.count, MAX_FLOOD_COUNT)?;
    check_cap("--max-seconds", args.max_seconds, MAX_SECONDS)?;

    let mut rng = match args.seed {
        Some(s) => SmallRng::seed_from_u64(s),
        None => SmallRng::from_os_rng(),
    };
    let mut round = (args.dst, 0u16);
    let knocks = args.knocks.as_deref().unwrap_or_default();
    let mut inj = Injector::open(&args.iface)?;
    let mut buf = Vec::with_capacity(128);
    let mut sent = 0u64;
    let mut failed = 0u64;
    let mut consecutive = 0u32;
    let mut last_error = None;
    let deadline = Deadline::after_seconds(args.max_seconds);
    for i in 0..args.count {
        if i % CLOCK_EVERY == 0 {
            if deadline.expired() {
                break;
            }
            if let Some(pps) = args.pps {
                // Ahead of the pace: sleep until the clock catches up with the packets sent.
                let due = Duration::from_secs_f64(i as f64 / pps as f64);
                if let Some(ahead) = due.checked_sub(deadline.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
        }
        // Random ports, or the next knock of the round (a round keeps one source and port).
        let (proto, dst_port) = match (knocks.is_empty(), &args.ports) {
            (false, _) => {
                let k = knocks[(i % knocks.len() as u64) as usize];
                if i % knocks.len() as u64 == 0 {
                    round = (args.sources.random_addr(&mut rng), rng.random_range(EPHEMERAL));
                }
                (k.proto, k.port)
            }
            (true, Some(ports)) => {
                round = (args.sources.random_addr(&mut rng), rng.random_range(EPHEMERAL));
                (args.proto, rng.random_range(ports.first..=ports.last))
            }
            (true, None) => return Err("give --ports or --knocks".into()),
        };
        let payload = match proto {
            Proto::Tcp => b"".as_slice(),
            Proto::Udp => b"flood".as_slice(),
        };
        let spec = FrameSpec {
            src_mac: args.src_mac,
            dst_mac: args.dst_mac,
            src: round.0,
            dst: args.dst,
            proto,
            src_port: round.1,
            dst_port,
            seq: rng.random(),
            ip_id: rng.random(),
            payload,
        };
        build_frame(&spec, &mut buf)?;
        match inj.send(&buf) {
            Ok(()) => {
                sent += 1;
                consecutive = 0;
            }
            Err(SendError::Refused(m)) => return Err(m),
            Err(SendError::Io(m)) => {
                failed += 1;
                consecutive += 1;
                last_error = Some(m);
                if consecutive >= MAX_CONSECUTIVE_FAILURES {
                    break;
                }
            }
        }
    }
    let secs = deadline.elapsed().as_secs_f64();
    if let Some(e) = last_error {
        eprintln!("knock-lab: {failed} sends failed, last: {e}");
    }
    if consecutive >= MAX_CONSECUTIVE_FAILURES {
        return Err(format!("giving up after {consecutive} failed sends in a row"));
    }
    let rate = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    println!("sent {sent} packets in {secs:.3} s ({rate:.0} pps)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_prefix_must_be_inside_allowed_ranges() {
        let dst4: IpAddr = "198.18.88.2".parse().unwrap();
        let dst6: IpAddr = "2001:db8::2".parse().unwrap();
        check_sources(&"198.18.0.0/15".parse().unwrap(), dst4).unwrap();
        check_sources(&"198.19.4.0/24".parse().unwrap(), dst4).unwrap();
        check_sources(&"2001:db8::/32".parse().unwrap(), dst6).unwrap();
        for bad in ["198.16.0.0/13", "10.0.0.0/8", "0.0.0.0/0", "2001::/16", "127.0.0.0/8"] {
            let p: Prefix = bad.parse().unwrap();
            let dst = if p.addr.is_ipv4() { dst4 } else { dst6 };
            assert!(check_sources(&p, dst).unwrap_err().starts_with("refusing"), "{bad}");
        }
        assert!(check_sources(&"2001:db8::/32".parse().unwrap(), dst4).is_err());
    }
}
