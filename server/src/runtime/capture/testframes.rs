//! Hand-built frames for the capture tests: TCP and UDP over IPv4 and IPv6, wrapped in
//! Ethernet or Linux cooked (v1, v2) headers. Addresses are from 198.18.0.0/15 and
//! 2001:db8::/32 only.

use std::net::{Ipv4Addr, Ipv6Addr};

/// TCP flag SYN.
pub const SYN: u8 = 0x02;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;
/// The knocking client.
pub const V4_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 2);
/// The server.
pub const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 1);
/// The knocking client.
pub const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 2);
/// The server.
pub const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);

/// Link layers the frames can be wrapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    LinuxSll,
    LinuxSll2,
}

impl Link {
    /// The pcap data link type number.
    pub fn dlt(self) -> i32 {
        match self {
            Link::Ethernet => 1,
            Link::LinuxSll => 113,
            Link::LinuxSll2 => 276,
        }
    }
}

/// A 20-byte TCP header from port 54321 to `dport` with `flags`.
pub fn tcp(dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&54321u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

/// A UDP datagram from port 54321 to `dport`.
pub fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&54321u16.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An IPv4 packet (no options, don't-fragment) carrying `l4` as protocol `proto`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    h
}

/// An IPv6 packet (no extension headers) carrying `l4` as next header `next`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    h
}

/// `l3` (an IPv4 or IPv6 packet) wrapped in a `link` header.
pub fn frame(link: Link, l3: &[u8]) -> Vec<u8> {
    let ethertype: [u8; 2] = match l3.first().map(|b| b >> 4) {
        Some(4) => [0x08, 0x00],
        _ => [0x86, 0xdd],
    };
    let mut f = match link {
        Link::Ethernet => vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2],
        // packet type, ARPHRD_ETHER, address length, address (8 bytes)
        Link::LinuxSll => vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0],
        Link::LinuxSll2 => Vec::new(),
    };
    f.extend_from_slice(&ethertype);
    if link == Link::LinuxSll2 {
        // reserved, interface index, ARPHRD_ETHER, packet type, address length, address
        f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0]);
    }
    f.extend_from_slice(l3);
    f
}

/// A classic pcap file (microsecond timestamps) of link type `link` holding `frames`, each
/// stamped `ms` milliseconds after a fixed moment.
pub fn pcap_file(link: Link, frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // time zone, accuracy
    out.extend_from_slice(&65535u32.to_le_bytes()); // snap length
    out.extend_from_slice(&link.dlt().to_le_bytes());
    for (ms, data) in frames {
        let len = data.len() as u32;
        out.extend_from_slice(&(1_700_000_000 + ms / 1000).to_le_bytes());
        out.extend_from_slice(&(ms % 1000 * 1000).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}
