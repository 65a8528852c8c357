//! `replay`: reads every frame of a pcap file, turns it into an Ethernet
//! frame (rebuilding the header of Linux-cooked captures), applies the
//! requested rewrites, checks the whole file against the network guard and
//! only then injects the frames, in file order.

use pcap::{Capture, Linktype};

use crate::cli::ReplayArgs;
use crate::frame::{cooked_to_ethernet, parse_ip, rewrite, Cooked, Rewrite, IPPROTO_TCP, IPPROTO_UDP};
use crate::inject::{guard_frame, Injector};
use crate::limits::{check_cap, Deadline, MAX_DELAY_MS, MAX_REPLAY_FRAMES, MAX_SECONDS};

/// The link layer of a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    Cooked(Cooked),
}

impl Link {
    fn from_linktype(lt: Linktype) -> Result<Self, String> {
        match lt {
            Linktype::ETHERNET => Ok(Link::Ethernet),
            Linktype::LINUX_SLL => Ok(Link::Cooked(Cooked::Sll)),
            Linktype::LINUX_SLL2 => Ok(Link::Cooked(Cooked::Sll2)),
            other => Err(format!(
                "unsupported capture link type {} ({}): expected Ethernet or Linux cooked (SLL/SLL2)",
                other.0,
                other.get_name().unwrap_or_else(|_| "?".into())
            )),
        }
    }
}

/// What to do with one captured frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Inject these bytes.
    Send(Vec<u8>),
    /// Skipped (with --skip-unsupported), for this reason.
    Skip(String),
}

/// Turns one captured frame into the bytes to inject, or refuses it.
/// `orig_len` is the frame's length on the wire (a capture cut by the
/// snaplen cannot be replayed).
pub fn prepare(
    link: Link,
    data: &[u8],
    orig_len: u32,
    rw: &Rewrite,
    skip_unsupported: bool,
) -> Result<Prepared, String> {
    if (data.len() as u64) < u64::from(orig_len) {
        return Err(format!(
            "frame was cut by the capture's snaplen ({} of {orig_len} bytes); recapture with -s 0",
            data.len()
        ));
    }
    let mut frame = match link {
        Link::Ethernet => data.to_vec(),
        Link::Cooked(kind) => {
            let dst = rw.dst_mac.ok_or("a Linux-cooked capture has no destination MAC: give --dst-mac")?;
            cooked_to_ethernet(kind, data, rw.src_mac, dst)?
        }
    };
    let unsupported = match parse_ip(&frame)? {
        None => Some("not an IPv4/IPv6 frame".to_string()),
        Some(info) if info.proto != IPPROTO_TCP && info.proto != IPPROTO_UDP => {
            Some(format!("IP protocol {} is neither TCP nor UDP", info.proto))
        }
        Some(_) => None,
    };
    if let Some(why) = unsupported {
        if skip_unsupported {
            return Ok(Prepared::Skip(why));
        }
        return Err(format!("{why} (use --skip-unsupported to skip such frames)"));
    }
    rewrite(&mut frame, rw)?;
    guard_frame(&frame)?;
    Ok(Prepared::Send(frame))
}

/// Runs `knock-lab replay`.
pub fn run(args: &ReplayArgs) -> Result<(), String> {
    check_cap("--max-seconds", args.max_seconds, MAX_SECONDS)?;
    if args.delay_ms > MAX_DELAY_MS {
        return Err(format!("--delay-ms is above the hard cap of {MAX_DELAY_MS}"));
    }
    if let Some(src) = args.src {
        crate::addr::check_allowed(src, "--src")?;
    }
    let path = args.pcap.display();
    let mut cap = Capture::from_file(&args.pcap).map_err(|e| format!("cannot read {path}: {e}"))?;
    let link = Link::from_linktype(cap.get_datalink())?;
    if matches!(link, Link::Cooked(_)) && args.dst_mac.is_none() {
        return Err(format!("{path} is a Linux-cooked capture: --dst-mac is required"));
    }
    let rw = Rewrite { src: args.src, src_mac: args.src_mac, dst_mac: args.dst_mac, fix_checksums: args.fix_checksums };

    // Read and check the whole file before sending anything.
    let mut frames = Vec::new();
    let mut skipped = 0usize;
    let mut index = 0usize;
    loop {
        let packet = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(format!("{path}: error reading frame {}: {e}", index + 1)),
        };
        index += 1;
        if index > MAX_REPLAY_FRAMES {
            return Err(format!("{path} holds more than {MAX_REPLAY_FRAMES} frames"));
        }
        match prepare(link, packet.data, packet.header.len, &rw, args.skip_unsupported)
            .map_err(|e| format!("{path}: frame {index}: {e}"))?
        {
            Prepared::Send(f) => frames.push(f),
            Prepared::Skip(why) => {
                skipped += 1;
                eprintln!("knock-lab: skipping frame {index}: {why}");
            }
        }
    }

    let deadline = Deadline::after_seconds(args.max_seconds);
    let mut inj = Injector::open(&args.iface)?;
    for (i, frame) in frames.iter().enumerate() {
        let on_time = if i > 0 { deadline.sleep_ms(args.delay_ms) } else { !deadline.expired() };
        if !on_time || deadline.expired() {
            return Err(format!(
                "time limit of {} s reached after sending {i} of {} frames",
                args.max_seconds,
                frames.len()
            ));
        }
        inj.send(frame).map_err(|e| format!("frame {} of {path}: {e}", i + 1))?;
    }
    let skipped_note = if skipped > 0 { format!(" ({skipped} skipped)") } else { String::new() };
    println!("sent {} frames from {path} on {}{skipped_note}", frames.len(), inj.iface());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Mac;
    use crate::frame::tests::checksums_valid;
    use crate::frame::{build_frame, FrameSpec, Proto};

    fn frame(src: &str, dst: &str) -> Vec<u8> {
        let mut v = Vec::new();
        build_frame(
            &FrameSpec {
                src_mac: Mac([2, 0, 0, 0, 0, 1]),
                dst_mac: Mac([2, 0, 0, 0, 0, 2]),
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                proto: Proto::Tcp,
                src_port: 40000,
                dst_port: 40001,
                seq: 7,
                ip_id: 9,
                payload: b"",
            },
            &mut v,
        )
        .unwrap();
        v
    }

    #[test]
    fn plain_replay_is_byte_exact() {
        let f = frame("198.18.88.1", "198.18.88.2");
        let p = prepare(Link::Ethernet, &f, f.len() as u32, &Rewrite::default(), false).unwrap();
        assert_eq!(p, Prepared::Send(f));
    }

    #[test]
    fn rewritten_replay_has_new_source_and_valid_checksums() {
        let f = frame("198.18.88.1", "198.18.88.2");
        let rw = Rewrite { src: Some("198.18.88.3".parse().unwrap()), ..Rewrite::default() };
        let Prepared::Send(out) = prepare(Link::Ethernet, &f, f.len() as u32, &rw, false).unwrap() else {
            panic!("skipped")
        };
        assert_eq!(&out[26..30], &[198, 18, 88, 3]);
        assert!(checksums_valid(&out));
    }

    #[test]
    fn forbidden_addresses_in_a_capture_are_refused() {
        for (s, d) in [("10.0.0.1", "198.18.88.2"), ("198.18.88.1", "8.8.8.8")] {
            let f = frame(s, d);
            let err = prepare(Link::Ethernet, &f, f.len() as u32, &Rewrite::default(), true).unwrap_err();
            assert!(err.starts_with("refusing"), "{err}");
        }
        // Rewriting a forbidden source into an allowed one is fine...
        let f = frame("10.0.0.1", "198.18.88.2");
        let rw = Rewrite { src: Some("198.18.88.3".parse().unwrap()), ..Rewrite::default() };
        assert!(prepare(Link::Ethernet, &f, f.len() as u32, &rw, false).is_ok());
        // ...but not the other way round.
        let f = frame("198.18.88.1", "198.18.88.2");
        let rw = Rewrite { src: Some("192.168.1.1".parse().unwrap()), ..Rewrite::default() };
        assert!(prepare(Link::Ethernet, &f, f.len() as u32, &rw, false).is_err());
    }

    #[test]
    fn truncated_and_unsupported_frames() {
        let f = frame("198.18.88.1", "198.18.88.2");
        assert!(prepare(Link::Ethernet, &f[..40], f.len() as u32, &Rewrite::default(), false)
            .unwrap_err()
            .contains("snaplen"));
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let n = arp.len() as u32;
        assert!(prepare(Link::Ethernet, &arp, n, &Rewrite::default(), false).is_err());
        assert!(matches!(prepare(Link::Ethernet, &arp, n, &Rewrite::default(), true).unwrap(), Prepared::Skip(_)));
    }

    #[test]
    fn cooked_needs_destination_mac() {
        let f = frame("198.18.88.1", "198.18.88.2");
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&f[14..]);
        let n = sll.len() as u32;
        let link = Link::Cooked(Cooked::Sll);
        assert!(prepare(link, &sll, n, &Rewrite::default(), false).is_err());
        let rw = Rewrite { dst_mac: Some(Mac([2, 0, 0, 0, 0, 2])), ..Rewrite::default() };
        assert_eq!(prepare(link, &sll, n, &rw, false).unwrap(), Prepared::Send(f));
    }
}
