//! `flood`: a bounded benchmark load — TCP SYNs or UDP datagrams to random
//! ports of a range from random source addresses (and ports) of an allowed
//! prefix, optionally paced, stopping at a packet count or a time limit,
//! whichever comes first. Frames are patched from a pre-built template and
//! sent in batches of [`BATCH`] with one system call; the clock and the pace
//! are checked once per batch.

use std::net::IpAddr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::addr::{check_allowed, Prefix};
use crate::batch::{BatchSender, BATCH};
use crate::cli::FloodArgs;
use crate::frame::{FrameSpec, Proto};
use crate::limits::{check_cap, Deadline, MAX_FLOOD_COUNT, MAX_SECONDS};
use crate::send::EPHEMERAL;
use crate::template::Template;

/// Give up after this many send failures in a row.
const MAX_CONSECUTIVE_FAILURES: u64 = 10_000;

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
    let knocks = args.knocks.as_deref().unwrap_or_default();
    if knocks.is_empty() && args.ports.is_none() {
        return Err("give --ports or --knocks".into());
    }

    let mut rng = match args.seed {
        Some(s) => SmallRng::seed_from_u64(s),
        None => SmallRng::from_os_rng(),
    };
    let mut tcp = template(args, Proto::Tcp)?;
    let mut udp = template(args, Proto::Udp)?;
    let mut out = BatchSender::open(&args.iface)?;
    let mut round = (args.dst, 0u16);
    let (mut sent, mut failed, mut consecutive) = (0u64, 0u64, 0u64);
    let mut last_error = None;
    let deadline = Deadline::after_seconds(args.max_seconds);
    let mut i = 0u64;
    // One batch per turn: check the clock and the pace, fill, send with one system call.
    while i < args.count && consecutive < MAX_CONSECUTIVE_FAILURES {
        if deadline.expired() {
            break;
        }
        if let Some(pps) = args.pps {
            // Ahead of the pace: sleep until the clock catches up with the packets sent, but
            // never past the time limit (a slow pace would otherwise oversleep it).
            let due = Duration::from_secs_f64(i as f64 / pps as f64);
            if let Some(ahead) = due.checked_sub(deadline.elapsed()) {
                std::thread::sleep(ahead.min(deadline.remaining()));
                if deadline.expired() {
                    break;
                }
            }
        }
        let batch_end = (i + BATCH as u64).min(args.count);
        for j in i..batch_end {
            // Random ports, or the next knock of the round (a round keeps one source and port).
            let (proto, dst_port) = match &args.ports {
                Some(ports) if knocks.is_empty() => {
                    round = (args.sources.random_addr(&mut rng), rng.random_range(EPHEMERAL));
                    (args.proto, rng.random_range(ports.first..=ports.last))
                }
                _ => {
                    let k = knocks[(j % knocks.len() as u64) as usize];
                    if j % knocks.len() as u64 == 0 {
                        round = (args.sources.random_addr(&mut rng), rng.random_range(EPHEMERAL));
                    }
                    (k.proto, k.port)
                }
            };
            let t = match proto {
                Proto::Tcp => &mut tcp,
                Proto::Udp => &mut udp,
            };
            out.push(t.fill(round.0, round.1, dst_port, rng.random(), rng.random()))?;
        }
        i = batch_end;
        let done = out.flush();
        sent += done.sent as u64;
        failed += done.failed as u64;
        consecutive = if done.sent > 0 { done.failed as u64 } else { consecutive + done.failed as u64 };
        if done.error.is_some() {
            last_error = done.error;
        }
    }
    let secs = deadline.elapsed().as_secs_f64();
    if let Some(e) = last_error {
        eprintln!("knock-lab: {failed} sends failed, last: {e}");
    }
    if consecutive >= MAX_CONSECUTIVE_FAILURES {
        return Err(format!("giving up after {consecutive} failed sends in a row on {}", out.iface()));
    }
    let rate = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    println!("sent {sent} packets in {secs:.3} s ({rate:.0} pps)");
    Ok(())
}

/// The pre-built frame of `proto` for this flood (source and ports are patched per packet).
fn template(args: &FloodArgs, proto: Proto) -> Result<Template, String> {
    Template::new(&FrameSpec {
        src_mac: args.src_mac,
        dst_mac: args.dst_mac,
        src: args.sources.addr,
        dst: args.dst,
        proto,
        src_port: 0,
        dst_port: 0,
        seq: 0,
        ip_id: 0,
        payload: match proto {
            Proto::Tcp => b"",
            Proto::Udp => b"flood",
        },
    })
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
