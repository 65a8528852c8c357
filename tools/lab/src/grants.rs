//! `grants`: times knock → grant from the outside, as a benchmark sees it. One thread captures
//! the watched clients' knocks on the server's interface (libpcap, with the kernel's receive
//! timestamps); another listens to nftables' change notifications (`NFNLGRP_NFTABLES`) and
//! stamps each new set element when it arrives. For every element whose key starts with an
//! address, one line: `grant <unix_ns> <address> <latency_us|->`, the latency measured from the
//! last knock captured from that address (`-` when none was: a grant for a source that was not
//! watched, such as a spoofed one). Bounded by `--max-seconds`; ends on SIGTERM too (the default
//! action).
//!
//! The notification layouts: `struct nlmsghdr` and `struct nlattr` (`<linux/netlink.h>`),
//! `struct nfgenmsg` (`<linux/netfilter/nfnetlink.h>`), `NFT_MSG_NEWSETELEM` and the
//! `NFTA_SET_ELEM_LIST_*`, `NFTA_LIST_ELEM`, `NFTA_SET_ELEM_KEY` and `NFTA_DATA_VALUE`
//! attributes (`<linux/netfilter/nf_tables.h>`). [`new_elements`] bounds-checks every length.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use pcap::Capture;

use crate::cli::GrantsArgs;
use crate::limits::{check_cap, Deadline, MAX_WATCH_SECONDS};

/// `NFNLGRP_NFTABLES`.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFT_MSG_NEWSETELEM` in subsystem `NFNL_SUBSYS_NFTABLES` (10).
const NEWSETELEM: u16 = (10 << 8) | 12;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NFTA_SET_ELEM_LIST_ELEMENTS`, `NFTA_LIST_ELEM`, `NFTA_SET_ELEM_KEY`, `NFTA_DATA_VALUE`.
const LIST_ELEMENTS: u16 = 3;
const LIST_ELEM: u16 = 1;
const ELEM_KEY: u16 = 1;
const DATA_VALUE: u16 = 1;

/// Last knock seen per source, in nanoseconds since the epoch.
type LastKnock = Arc<Mutex<HashMap<IpAddr, u128>>>;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `buf`: (type without flags, payload). Stops at the first malformed one.
fn attributes(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLA_HDRLEN <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || at + len > buf.len() {
            break;
        }
        out.push((kind, &buf[at + NLA_HDRLEN..at + len]));
        at += align4(len);
    }
    out
}

/// The address a set element's key starts with: 16 bytes or more are IPv6 (`ipv6_addr`, alone
/// or first of a concatenation), 4 to 15 IPv4.
fn key_address(key: &[u8]) -> Option<IpAddr> {
    if key.len() >= 16 {
        let b: [u8; 16] = key[..16].try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else if key.len() >= 4 {
        Some(IpAddr::V4(Ipv4Addr::new(key[0], key[1], key[2], key[3])))
    } else {
        None
    }
}

/// The addresses of the elements added in one datagram of notifications, once each.
pub fn new_elements(datagram: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= datagram.len() {
        let h = &datagram[at..];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            break;
        }
        if kind == NEWSETELEM && len >= NLMSG_HDRLEN + NFGENMSG_LEN {
            for (t, list) in attributes(&h[NLMSG_HDRLEN + NFGENMSG_LEN..len]) {
                if t != LIST_ELEMENTS {
                    continue;
                }
                for (t, elem) in attributes(list) {
                    if t != LIST_ELEM {
                        continue;
                    }
                    let keys = attributes(elem).into_iter().filter(|(t, _)| *t == ELEM_KEY);
                    for (_, key) in keys {
                        let values = attributes(key).into_iter().filter(|(t, _)| *t == DATA_VALUE);
                        for addr in values.filter_map(|(_, v)| key_address(v)) {
                            if !out.contains(&addr) {
                                out.push(addr);
                            }
                        }
                    }
                }
            }
        }
        at += align4(len);
    }
    out
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Captures the clients' knocks, noting the kernel's timestamp of the last one per source.
fn capture_knocks(args: &GrantsArgs, last: LastKnock, deadline: Deadline) -> Result<(), String> {
    let hosts: Vec<String> = args.clients.iter().map(|c| format!("src host {c}")).collect();
    let filter = format!("({}) and ({})", hosts.join(" or "), args.knock_filter);
    let mut cap = Capture::from_device(args.iface.as_str())
        .and_then(|c| c.immediate_mode(true).snaplen(128).timeout(100).open())
        .map_err(|e| format!("cannot capture on {}: {e}", args.iface))?;
    cap.filter(&filter, true).map_err(|e| format!("capture filter {filter:?}: {e}"))?;
    let link = cap.get_datalink();
    while !deadline.expired() {
        let packet = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::TimeoutExpired) => continue,
            Err(e) => return Err(format!("capture on {}: {e}", args.iface)),
        };
        let tv = packet.header.ts;
        let ts =
            u128::try_from(tv.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(tv.tv_usec).unwrap_or(0) * 1000;
        if let Some(src) = crate::frame::source_of(link.0, packet.data) {
            last.lock().unwrap_or_else(PoisonError::into_inner).insert(src, ts);
        }
    }
    Ok(())
}

/// Runs `knock-lab grants`.
pub fn run(args: &GrantsArgs) -> Result<(), String> {
    check_cap("--max-seconds", args.max_seconds, MAX_WATCH_SECONDS)?;
    let deadline = Deadline::after_seconds(args.max_seconds);
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("netlink socket: {e}"))?;
    socket.bind(&SocketAddr::new(0, 0)).map_err(|e| format!("netlink bind: {e}"))?;
    socket.add_membership(NFNLGRP_NFTABLES).map_err(|e| format!("joining NFNLGRP_NFTABLES: {e}"))?;
    socket.set_rx_buf_sz(4 << 20).map_err(|e| format!("netlink receive buffer: {e}"))?;
    let last: LastKnock = Arc::default();
    let capture = {
        let (args, last) = (args.clone(), Arc::clone(&last));
        std::thread::spawn(move || capture_knocks(&args, last, deadline))
    };
    // The capture must be open before the first knock: say when both are listening.
    std::thread::sleep(Duration::from_millis(200));
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    // Wake up now and then to check the deadline.
    socket2::SockRef::from(&socket).set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1 << 16);
    while !deadline.expired() && !capture.is_finished() {
        buf.clear();
        let n = match socket.recv_from(&mut buf, 0) {
            Ok((n, _)) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.raw_os_error() == Some(105) => {
                writeln!(out, "overrun").map_err(|e| e.to_string())?;
                continue;
            }
            Err(e) => return Err(format!("netlink receive: {e}")),
        };
        let at = now_ns();
        for addr in new_elements(&buf[..n.min(buf.len())]) {
            let knocked = last.lock().unwrap_or_else(PoisonError::into_inner).remove(&addr);
            let latency = knocked.filter(|k| *k <= at).map_or("-".to_string(), |k| ((at - k) / 1000).to_string());
            writeln!(out, "grant {at} {addr} {latency}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    if capture.is_finished() {
        capture.join().map_err(|_| "the capture thread panicked".to_string())??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend(kind.to_ne_bytes());
        v.extend(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn message(kind: u16, keys: &[&[u8]]) -> Vec<u8> {
        let elems: Vec<u8> = keys.iter().flat_map(|k| attr(LIST_ELEM, &attr(ELEM_KEY, &attr(DATA_VALUE, k)))).collect();
        let mut body = vec![1, 0, 0, 0];
        body.extend(attr(1, b"knockd\0"));
        body.extend(attr(LIST_ELEMENTS | 0x8000, &elems));
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(kind.to_ne_bytes());
        m.extend([0; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn new_elements_name_their_addresses_once() {
        let v4_port = [198, 18, 0, 2, 6, 0, 0, 0, 0, 22, 0, 0];
        let v4_other_port = [198, 18, 0, 2, 6, 0, 0, 0, 0, 80, 0, 0];
        let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8];
        v6.extend([0; 11]);
        v6.push(2);
        let mut dgram = message(NEWSETELEM, &[&v4_port, &v4_other_port]);
        dgram.extend(message(NEWSETELEM, &[&v6]));
        dgram.extend(message((10 << 8) | 14, &[&[198, 18, 0, 9]])); // a deletion: not a grant
        let got = new_elements(&dgram);
        assert_eq!(got, vec!["198.18.0.2".parse::<IpAddr>().unwrap(), "2001:db8::2".parse().unwrap()]);
    }

    #[test]
    fn any_bytes_give_an_answer() {
        let m = message(NEWSETELEM, &[&[198, 18, 0, 2]]);
        for cut in 0..m.len() {
            let _ = new_elements(&m[..cut]);
        }
        let mut bad = m.clone();
        bad[0] = 0xff;
        assert!(new_elements(&bad).is_empty());
    }
}
