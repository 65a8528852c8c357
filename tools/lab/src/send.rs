//! `send`: builds crafted knock frames (TCP SYN or UDP) from one chosen
//! source and injects them in exactly the order given, optionally repeating
//! each knock, for ordering, duplication and spoofed-source tests.

use rand::Rng;

use crate::addr::check_allowed;
use crate::cli::SendArgs;
use crate::frame::{build_frame, FrameSpec, Proto};
use crate::inject::Injector;
use crate::limits::{check_cap, Deadline, MAX_DELAY_MS, MAX_SECONDS, MAX_SEND_PACKETS};

/// Ephemeral port range Linux uses by default.
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Runs `knock-lab send`.
pub fn run(args: &SendArgs) -> Result<(), String> {
    check_allowed(args.src, "source")?;
    check_allowed(args.dst, "destination")?;
    if args.src.is_ipv4() != args.dst.is_ipv4() {
        return Err(format!("--src {} and --dst {} are not of the same address family", args.src, args.dst));
    }
    check_cap("--max-seconds", args.max_seconds, MAX_SECONDS)?;
    check_cap("--repeat-each", args.repeat_each, MAX_SEND_PACKETS as u64)?;
    let total = args.knocks.len() as u64 * args.repeat_each;
    check_cap("number of packets (knocks × --repeat-each)", total, MAX_SEND_PACKETS as u64)?;
    if args.delay_ms > MAX_DELAY_MS {
        return Err(format!("--delay-ms is above the hard cap of {MAX_DELAY_MS}"));
    }
    if args.udp_payload.len() > 1400 {
        return Err("--udp-payload is longer than 1400 bytes".into());
    }

    let mut rng = rand::rng();
    let deadline = Deadline::after_seconds(args.max_seconds);
    let mut inj = Injector::open(&args.iface)?;
    let mut buf = Vec::with_capacity(128);
    let mut sent = 0u64;
    for knock in &args.knocks {
        for copy in 0..args.repeat_each {
            if copy == 0 || args.vary_duplicates {
                let spec = FrameSpec {
                    src_mac: args.src_mac,
                    dst_mac: args.dst_mac,
                    src: args.src,
                    dst: args.dst,
                    proto: knock.proto,
                    src_port: args.src_port.unwrap_or_else(|| rng.random_range(EPHEMERAL)),
                    dst_port: knock.port,
                    seq: rng.random(),
                    ip_id: rng.random(),
                    payload: match knock.proto {
                        Proto::Tcp => b"",
                        Proto::Udp => args.udp_payload.as_bytes(),
                    },
                };
                build_frame(&spec, &mut buf)?;
                if !args.quiet {
                    println!(
                        "{} {} port {} -> {} port {}",
                        knock.proto, spec.src, spec.src_port, spec.dst, spec.dst_port
                    );
                }
            } else if !args.quiet {
                println!("  (duplicate {})", copy + 1);
            }
            let on_time = if sent > 0 { deadline.sleep_ms(args.delay_ms) } else { !deadline.expired() };
            if !on_time || deadline.expired() {
                return Err(format!(
                    "time limit of {} s reached after sending {sent} of {total} packets",
                    args.max_seconds
                ));
            }
            inj.send(&buf).map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    println!("sent {sent} packets on {}", inj.iface());
    Ok(())
}
