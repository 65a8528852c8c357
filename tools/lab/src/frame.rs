//! Pure frame handling: building Ethernet/IPv4-or-IPv6/TCP-SYN-or-UDP knock
//! frames, parsing the IP layer of a captured frame, rewriting source
//! addresses, converting Linux-cooked (SLL/SLL2) captures to Ethernet, and
//! the Internet checksums (RFC 1071) they all need. Nothing here does I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::addr::Mac;

/// Length of an untagged Ethernet II header.
pub const ETH_HDR_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
/// pcap's link type of Ethernet captures.
const DLT_EN10MB: i32 = 1;
pub const IPPROTO_UDP: u8 = 17;
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const TCP_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;
/// TCP window advertised by built SYNs.
pub const SYN_WINDOW: u16 = 64240;
/// IPv4 TTL / IPv6 hop limit of built frames.
pub const HOP_LIMIT: u8 = 64;

/// Transport protocol of one knock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }
}

impl FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!("unknown protocol {s:?}: expected tcp or udp")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One knock: a destination port and a protocol, written `40001:tcp` (or
/// `40001/udp`; a bare port means TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knock {
    pub port: u16,
    pub proto: Proto,
}

impl FromStr for Knock {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (port_s, proto) = match s.split_once([':', '/']) {
            Some((p, proto)) => (p, proto.parse()?),
            None => (s, Proto::Tcp),
        };
        let port = port_s
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("invalid knock {s:?}: expected PORT[:tcp|:udp], port 1..=65535"))?;
        Ok(Knock { port, proto })
    }
}

/// Everything needed to build one knock frame.
#[derive(Clone, Debug)]
pub struct FrameSpec<'a> {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP initial sequence number (ignored for UDP).
    pub seq: u32,
    /// IPv4 identification (ignored for IPv6).
    pub ip_id: u16,
    /// UDP payload (TCP SYNs carry none).
    pub payload: &'a [u8],
}

// ---------------------------------------------------------------- checksums

/// Adds `data` as big-endian 16-bit words (odd length padded with a zero
/// byte) to a running one's-complement sum.
pub fn sum_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    acc
}

/// Folds a running sum to 16 bits and complements it: the checksum value.
pub fn finish(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    finish(sum_words(0, data))
}

/// Adds the 4 or 16 bytes of an address to a running sum.
fn sum_addr(acc: u64, ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => sum_words(acc, &a.octets()),
        IpAddr::V6(a) => sum_words(acc, &a.octets()),
    }
}

/// Sum of the TCP/UDP pseudo-header (RFC 793 / RFC 8200 section 8.1) for
/// `src`/`dst`, protocol `proto` and transport length `len`.
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    sum_addr(sum_addr(0, src), dst) + u64::from(proto) + len as u64
}

/// The TCP/UDP checksum of `segment` (its checksum field must be zero, or the
/// result is the verification sum: 0 when the stored checksum is right).
pub fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    finish(sum_words(pseudo_header_sum(src, dst, proto, segment.len()), segment))
}

// ----------------------------------------------------------------- building

/// Builds one Ethernet frame for `spec` into `out` (cleared first).
pub fn build_frame(spec: &FrameSpec<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let l4_len = match spec.proto {
        Proto::Tcp => TCP_HDR_LEN,
        Proto::Udp => UDP_HDR_LEN + spec.payload.len(),
    };
    out.clear();
    out.extend_from_slice(&spec.dst_mac.0);
    out.extend_from_slice(&spec.src_mac.0);
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(IPV4_HDR_LEN + l4_len)
                .map_err(|_| "payload too large for one IPv4 packet".to_string())?;
            out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&spec.ip_id.to_be_bytes());
            out.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
            out.extend_from_slice(&[HOP_LIMIT, spec.proto.number(), 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let csum = internet_checksum(&out[start..start + IPV4_HDR_LEN]);
            out[start + 10..start + 12].copy_from_slice(&csum.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(l4_len).map_err(|_| "payload too large for one IPv6 packet".to_string())?;
            out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            out.extend_from_slice(&0x6000_0000u32.to_be_bytes());
            out.extend_from_slice(&plen.to_be_bytes());
            out.extend_from_slice(&[spec.proto.number(), HOP_LIMIT]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => return Err(format!("source {s} and destination {d} are not of the same address family")),
    }
    let l4 = out.len();
    out.extend_from_slice(&spec.src_port.to_be_bytes());
    out.extend_from_slice(&spec.dst_port.to_be_bytes());
    match spec.proto {
        Proto::Tcp => {
            out.extend_from_slice(&spec.seq.to_be_bytes());
            out.extend_from_slice(&0u32.to_be_bytes()); // ack
            out.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
            out.extend_from_slice(&SYN_WINDOW.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        }
        Proto::Udp => {
            out.extend_from_slice(&(l4_len as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(spec.payload);
        }
    }
    let mut csum = transport_checksum(spec.src, spec.dst, spec.proto.number(), &out[l4..]);
    if spec.proto == Proto::Udp && csum == 0 {
        csum = 0xffff;
    }
    let at = l4 + checksum_offset(spec.proto.number()).unwrap_or(0);
    out[at..at + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

fn checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(16),
        IPPROTO_UDP => Some(6),
        _ => None,
    }
}

// ------------------------------------------------------------------ parsing

/// The IP layer of a parsed Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// Offset of the IP header in the frame.
    pub l3: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The transport protocol (after any IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header in the frame.
    pub l4: usize,
    /// Length of the transport header and payload, from the IP length field
    /// (so Ethernet padding is excluded).
    pub l4_len: usize,
    /// True when the packet is a fragment (the transport checksum then cannot
    /// be computed from this frame alone).
    pub fragment: bool,
    /// Why this packet's addresses may not tell the whole story (IPv4 source
    /// routing option, IPv6 routing header), if so.
    pub routing: Option<&'static str>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn truncated(what: &str) -> String {
    format!("truncated frame: {what} is cut short")
}

/// The ethertype and offset of the payload after any VLAN tags.
fn ethertype(frame: &[u8]) -> Result<(u16, usize), String> {
    if frame.len() < ETH_HDR_LEN {
        return Err(truncated("Ethernet header"));
    }
    let mut at = 12;
    let mut et = be16(frame, at);
    for _ in 0..2 {
        if et != ETHERTYPE_VLAN && et != ETHERTYPE_QINQ {
            break;
        }
        at += 4;
        if frame.len() < at + 2 {
            return Err(truncated("VLAN tag"));
        }
        et = be16(frame, at);
    }
    Ok((et, at + 2))
}

/// Parses the IP layer of an Ethernet frame; `Ok(None)` when the frame does
/// not carry IPv4 or IPv6 (see [`frame_ethertype`] for what it carries).
pub fn parse_ip(frame: &[u8]) -> Result<Option<IpInfo>, String> {
    let (et, l3) = ethertype(frame)?;
    match et {
        ETHERTYPE_IPV4 => parse_ipv4(frame, l3).map(Some),
        ETHERTYPE_IPV6 => parse_ipv6(frame, l3).map(Some),
        _ => Ok(None),
    }
}

/// The IP source of a captured frame of pcap link type `dlt` (Ethernet or raw IP), if any.
pub fn source_of(dlt: i32, frame: &[u8]) -> Option<IpAddr> {
    match dlt {
        DLT_EN10MB => parse_ip(frame).ok().flatten().map(|i| i.src),
        _ => None,
    }
}

/// The ethertype of an Ethernet frame (after VLAN tags).
pub fn frame_ethertype(frame: &[u8]) -> Result<u16, String> {
    ethertype(frame).map(|(et, _)| et)
}

fn parse_ipv4(frame: &[u8], l3: usize) -> Result<IpInfo, String> {
    let h = frame.get(l3..).unwrap_or_default();
    if h.len() < IPV4_HDR_LEN {
        return Err(truncated("IPv4 header"));
    }
    if h[0] >> 4 != 4 {
        return Err(format!("ethertype says IPv4 but IP version is {}", h[0] >> 4));
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16(h, 2));
    if ihl < IPV4_HDR_LEN || total < ihl || h.len() < total {
        return Err(truncated("IPv4 packet (or its length fields are inconsistent)"));
    }
    let frag = be16(h, 6);
    let mut routing = None;
    let mut opts = &h[IPV4_HDR_LEN..ihl];
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                if matches!(kind, 131 | 137) {
                    routing = Some("IPv4 source-route option");
                }
                let len = usize::from(*opts.get(1).unwrap_or(&0));
                if len < 2 || len > opts.len() {
                    return Err("malformed IPv4 options".into());
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(IpInfo {
        l3,
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        proto: h[9],
        l4: l3 + ihl,
        l4_len: total - ihl,
        fragment: frag & 0x3fff != 0,
        routing,
    })
}

fn parse_ipv6(frame: &[u8], l3: usize) -> Result<IpInfo, String> {
    let h = frame.get(l3..).unwrap_or_default();
    if h.len() < IPV6_HDR_LEN {
        return Err(truncated("IPv6 header"));
    }
    if h[0] >> 4 != 6 {
        return Err(format!("ethertype says IPv6 but IP version is {}", h[0] >> 4));
    }
    let plen = usize::from(be16(h, 4));
    if plen == 0 {
        return Err("IPv6 jumbograms (payload length 0) are not supported".into());
    }
    if h.len() < IPV6_HDR_LEN + plen {
        return Err(truncated("IPv6 packet"));
    }
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&h[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    let mut next = h[6];
    let mut at = IPV6_HDR_LEN;
    let mut fragment = false;
    let mut routing = None;
    // Walk a bounded number of extension headers.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                if h.len() < at + 8 {
                    return Err(truncated("IPv6 extension header"));
                }
                if next == 43 {
                    routing = Some("IPv6 routing header");
                }
                let len = (usize::from(h[at + 1]) + 1) * 8;
                next = h[at];
                at += len;
            }
            44 => {
                if h.len() < at + 8 {
                    return Err(truncated("IPv6 fragment header"));
                }
                fragment = true;
                next = h[at];
                at += 8;
            }
            _ => break,
        }
    }
    if at > IPV6_HDR_LEN + plen {
        return Err("IPv6 extension headers exceed the payload length".into());
    }
    Ok(IpInfo {
        l3,
        src: addr(8),
        dst: addr(24),
        proto: next,
        l4: l3 + at,
        l4_len: IPV6_HDR_LEN + plen - at,
        fragment,
        routing,
    })
}

// ---------------------------------------------------------------- rewriting

/// Recomputes the IPv4 header checksum (if IPv4) and the TCP/UDP checksum of
/// an Ethernet frame in place.
pub fn fix_checksums(frame: &mut [u8]) -> Result<(), String> {
    let info = parse_ip(frame)?.ok_or("not an IPv4/IPv6 frame")?;
    if info.src.is_ipv4() {
        let l3 = info.l3;
        frame[l3 + 10..l3 + 12].fill(0);
        let csum = internet_checksum(&frame[l3..info.l4]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&csum.to_be_bytes());
    }
    let Some(off) = checksum_offset(info.proto) else {
        return Ok(());
    };
    if info.fragment {
        return Err("cannot recompute the transport checksum of a fragmented packet".into());
    }
    if info.l4_len < off + 2 {
        return Err(truncated("transport header"));
    }
    let seg = info.l4..info.l4 + info.l4_len;
    frame[info.l4 + off..info.l4 + off + 2].fill(0);
    let mut csum = transport_checksum(info.src, info.dst, info.proto, &frame[seg]);
    if info.proto == IPPROTO_UDP && csum == 0 {
        csum = 0xffff;
    }
    frame[info.l4 + off..info.l4 + off + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// What to change in a replayed frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rewrite {
    pub src: Option<IpAddr>,
    pub src_mac: Option<Mac>,
    pub dst_mac: Option<Mac>,
    /// Recompute checksums even when no address changed.
    pub fix_checksums: bool,
}

/// Applies `rw` to an Ethernet frame in place. MAC changes alone leave the
/// rest byte-exact; a new source address (same family required) or
/// `fix_checksums` recomputes the IPv4 header and TCP/UDP checksums.
pub fn rewrite(frame: &mut [u8], rw: &Rewrite) -> Result<(), String> {
    if frame.len() < ETH_HDR_LEN {
        return Err(truncated("Ethernet header"));
    }
    if let Some(mac) = rw.dst_mac {
        frame[0..6].copy_from_slice(&mac.0);
    }
    if let Some(mac) = rw.src_mac {
        frame[6..12].copy_from_slice(&mac.0);
    }
    if let Some(new_src) = rw.src {
        let info = parse_ip(frame)?
            .ok_or_else(|| "cannot rewrite the source address of a frame that is not IPv4/IPv6".to_string())?;
        match (info.src, new_src) {
            (IpAddr::V4(_), IpAddr::V4(n)) => {
                frame[info.l3 + 12..info.l3 + 16].copy_from_slice(&n.octets());
            }
            (IpAddr::V6(_), IpAddr::V6(n)) => {
                frame[info.l3 + 8..info.l3 + 24].copy_from_slice(&n.octets());
            }
            (old, new) => {
                return Err(format!("--src {new} is not of the same address family as the captured source {old}"))
            }
        }
    }
    if rw.src.is_some() || rw.fix_checksums {
        fix_checksums(frame)?;
    }
    Ok(())
}

// ------------------------------------------------------------ Linux cooked

/// Which Linux "cooked" capture header a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cooked {
    /// `LINKTYPE_LINUX_SLL` (113), 16-byte header.
    Sll,
    /// `LINKTYPE_LINUX_SLL2` (276), 20-byte header.
    Sll2,
}

/// Rebuilds an Ethernet frame from a Linux-cooked one. The source MAC is
/// `src_mac` if given, else the 6-byte link address stored in the cooked
/// header; the destination MAC must be given.
pub fn cooked_to_ethernet(kind: Cooked, data: &[u8], src_mac: Option<Mac>, dst_mac: Mac) -> Result<Vec<u8>, String> {
    let (hdr, proto, halen, addr_at) = match kind {
        Cooked::Sll => {
            if data.len() < 16 {
                return Err(truncated("SLL header"));
            }
            (16, be16(data, 14), usize::from(be16(data, 4)), 6)
        }
        Cooked::Sll2 => {
            if data.len() < 20 {
                return Err(truncated("SLL2 header"));
            }
            (20, be16(data, 0), usize::from(data[11]), 12)
        }
    };
    let src = match src_mac {
        Some(m) => m,
        None if halen == 6 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(&data[addr_at..addr_at + 6]);
            Mac(m)
        }
        None => return Err(format!("cooked capture holds a {halen}-byte link address, not a MAC: give --src-mac")),
    };
    let mut out = Vec::with_capacity(data.len() - hdr + ETH_HDR_LEN);
    out.extend_from_slice(&dst_mac.0);
    out.extend_from_slice(&src.0);
    out.extend_from_slice(&proto.to_be_bytes());
    out.extend_from_slice(&data[hdr..]);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SRC_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 1]);
    const DST_MAC: Mac = Mac([0x02, 0, 0, 0, 0, 2]);

    /// Verifies every checksum of a frame: IPv4 header and TCP/UDP.
    pub(crate) fn checksums_valid(frame: &[u8]) -> bool {
        let info = parse_ip(frame).unwrap().unwrap();
        if info.src.is_ipv4() && internet_checksum(&frame[info.l3..info.l4]) != 0 {
            return false;
        }
        let seg = &frame[info.l4..info.l4 + info.l4_len];
        transport_checksum(info.src, info.dst, info.proto, seg) == 0
    }

    fn spec(src: &str, dst: &str, proto: Proto) -> FrameSpec<'static> {
        FrameSpec {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            src_port: 40_123,
            dst_port: 40_001,
            seq: 0xdead_beef,
            ip_id: 0x1234,
            payload: b"knock",
        }
    }

    fn built(s: &FrameSpec<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        build_frame(s, &mut v).unwrap();
        v
    }

    #[test]
    fn rfc1071_example_sum() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        // Odd length: the last byte is padded with zero.
        assert_eq!(internet_checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (checksum b861 zeroed out).
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(internet_checksum(&h), 0);
    }

    #[test]
    fn built_ipv4_tcp_syn_layout_and_checksums() {
        let f = built(&spec("198.18.88.1", "198.18.88.2", Proto::Tcp));
        assert_eq!(f.len(), 14 + 20 + 20);
        assert_eq!(&f[0..6], &DST_MAC.0);
        assert_eq!(&f[6..12], &SRC_MAC.0);
        assert_eq!(be16(&f, 12), ETHERTYPE_IPV4);
        assert_eq!(f[14], 0x45);
        assert_eq!(be16(&f, 16), 40); // total length
        assert_eq!(be16(&f, 18), 0x1234); // id
        assert_eq!(be16(&f, 20), 0x4000); // DF
        assert_eq!(f[22], 64);
        assert_eq!(f[23], IPPROTO_TCP);
        assert_eq!(be16(&f, 34), 40_123);
        assert_eq!(be16(&f, 36), 40_001);
        assert_eq!(f[47], 0x02); // SYN only
        assert_eq!(be16(&f, 48), SYN_WINDOW);
        // Recomputing over the filled-in checksum gives zero.
        assert_eq!(internet_checksum(&f[14..34]), 0);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(transport_checksum(ip("198.18.88.1"), ip("198.18.88.2"), IPPROTO_TCP, &f[34..]), 0);
        assert!(checksums_valid(&f));
    }

    #[test]
    fn built_frames_all_families_and_protocols_are_valid() {
        for (s, d) in [("198.18.0.1", "198.19.0.2"), ("2001:db8::1", "2001:db8::2")] {
            for p in [Proto::Tcp, Proto::Udp] {
                let f = built(&spec(s, d, p));
                assert!(checksums_valid(&f), "{s} {p}");
                let info = parse_ip(&f).unwrap().unwrap();
                assert_eq!(info.src, s.parse::<IpAddr>().unwrap());
                assert_eq!(info.dst, d.parse::<IpAddr>().unwrap());
                assert_eq!(info.proto, p.number());
                assert!(!info.fragment && info.routing.is_none());
            }
        }
        let f6 = built(&spec("2001:db8::1", "2001:db8::2", Proto::Udp));
        assert_eq!(f6.len(), 14 + 40 + 8 + 5);
        assert_eq!(f6[14 + 7], 64); // hop limit
        assert_eq!(&f6[f6.len() - 5..], b"knock");
    }

    #[test]
    fn mixed_families_are_refused() {
        let mut v = Vec::new();
        assert!(build_frame(&spec("198.18.0.1", "2001:db8::2", Proto::Tcp), &mut v).is_err());
    }

    #[test]
    fn rewrite_keeps_checksums_valid() {
        for (s, d, new) in
            [("198.18.88.1", "198.18.88.2", "198.18.88.3"), ("2001:db8::1", "2001:db8::2", "2001:db8::99")]
        {
            for p in [Proto::Tcp, Proto::Udp] {
                let orig = built(&spec(s, d, p));
                let mut f = orig.clone();
                let rw = Rewrite {
                    src: Some(new.parse().unwrap()),
                    src_mac: Some(Mac([0x02, 9, 9, 9, 9, 9])),
                    ..Rewrite::default()
                };
                rewrite(&mut f, &rw).unwrap();
                assert!(checksums_valid(&f), "{s} {p}");
                let info = parse_ip(&f).unwrap().unwrap();
                assert_eq!(info.src, new.parse::<IpAddr>().unwrap());
                assert_eq!(info.dst, d.parse::<IpAddr>().unwrap());
                assert_eq!(&f[6..12], &[0x02, 9, 9, 9, 9, 9]);
                assert_eq!(f.len(), orig.len());
                // Rewriting back restores the original bytes exactly.
                let back = Rewrite { src: Some(s.parse().unwrap()), src_mac: Some(SRC_MAC), ..Rewrite::default() };
                rewrite(&mut f, &back).unwrap();
                assert_eq!(f, orig);
            }
        }
    }

    #[test]
    fn rewrite_with_ethernet_padding_uses_ip_length() {
        let mut f = built(&spec("198.18.88.1", "198.18.88.2", Proto::Tcp));
        f.resize(60, 0); // minimum Ethernet frame, padded on the wire
        let rw = Rewrite { src: Some("198.18.1.1".parse().unwrap()), ..Rewrite::default() };
        rewrite(&mut f, &rw).unwrap();
        assert_eq!(f.len(), 60);
        assert!(checksums_valid(&f));
    }

    #[test]
    fn mac_only_rewrite_is_otherwise_byte_exact() {
        let orig = built(&spec("198.18.88.1", "198.18.88.2", Proto::Udp));
        let mut f = orig.clone();
        f[40] ^= 0xff; // break a checksum on purpose: must stay broken
        let broken = f.clone();
        rewrite(&mut f, &Rewrite { dst_mac: Some(Mac([0x02, 7, 7, 7, 7, 7])), ..Rewrite::default() }).unwrap();
        assert_eq!(&f[6..], &broken[6..]);
        assert_eq!(&f[0..6], &[0x02, 7, 7, 7, 7, 7]);
        // ...unless asked to fix checksums.
        rewrite(&mut f, &Rewrite { fix_checksums: true, ..Rewrite::default() }).unwrap();
        assert!(checksums_valid(&f));
    }

    #[test]
    fn rewrite_refuses_family_change() {
        let mut f = built(&spec("198.18.88.1", "198.18.88.2", Proto::Tcp));
        let rw = Rewrite { src: Some("2001:db8::1".parse().unwrap()), ..Rewrite::default() };
        let err = rewrite(&mut f, &rw).unwrap_err();
        assert!(err.contains("address family"), "{err}");
    }

    #[test]
    fn cooked_captures_become_ethernet() {
        let eth = built(&spec("198.18.88.1", "198.18.88.2", Proto::Tcp));
        let ip_part = &eth[14..];
        // SLL: pkttype 4 (outgoing), ARPHRD_ETHER, halen 6, address, protocol.
        let mut sll = vec![0, 4, 0, 1, 0, 6];
        sll.extend_from_slice(&SRC_MAC.0);
        sll.extend_from_slice(&[0, 0]);
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(ip_part);
        assert_eq!(cooked_to_ethernet(Cooked::Sll, &sll, None, DST_MAC).unwrap(), eth);
        // SLL2: protocol, reserved, ifindex, hatype, pkttype, halen, address.
        let mut sll2 = ETHERTYPE_IPV4.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6]);
        sll2.extend_from_slice(&[9, 9, 9, 9, 9, 9, 0, 0]);
        sll2.extend_from_slice(ip_part);
        assert_eq!(cooked_to_ethernet(Cooked::Sll2, &sll2, Some(SRC_MAC), DST_MAC).unwrap(), eth);
        let from_header = cooked_to_ethernet(Cooked::Sll2, &sll2, None, DST_MAC).unwrap();
        assert_eq!(&from_header[6..12], &[9; 6]);
        // No usable link address and no --src-mac.
        sll[5] = 0;
        assert!(cooked_to_ethernet(Cooked::Sll, &sll, None, DST_MAC).is_err());
    }

    #[test]
    fn parsing_rejects_truncation_and_flags_fragments_and_routing() {
        let f = built(&spec("198.18.88.1", "198.18.88.2", Proto::Tcp));
        assert!(parse_ip(&f[..30]).is_err());
        assert!(parse_ip(&f[..10]).is_err());
        let mut frag = f.clone();
        frag[20] |= 0x20; // more fragments
        assert!(parse_ip(&frag).unwrap().unwrap().fragment);
        assert!(fix_checksums(&mut frag).is_err());
        // ARP is not IP.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_ip(&arp).unwrap(), None);
        assert_eq!(frame_ethertype(&arp).unwrap(), 0x0806);
        // IPv6 with a routing header in front of TCP.
        let f6 = built(&spec("2001:db8::1", "2001:db8::2", Proto::Tcp));
        let mut r6 = f6[..54].to_vec();
        r6[14 + 6] = 43;
        r6[14 + 5] += 8; // payload length
        r6.extend_from_slice(&[IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0]);
        r6.extend_from_slice(&f6[54..]);
        let info = parse_ip(&r6).unwrap().unwrap();
        assert_eq!(info.routing, Some("IPv6 routing header"));
        assert_eq!(info.proto, IPPROTO_TCP);
        assert_eq!(info.l4, 14 + 48);
    }

    #[test]
    fn knock_specs() {
        assert_eq!("40001:tcp".parse::<Knock>().unwrap(), Knock { port: 40001, proto: Proto::Tcp });
        assert_eq!("40002/UDP".parse::<Knock>().unwrap(), Knock { port: 40002, proto: Proto::Udp });
        assert_eq!("7000".parse::<Knock>().unwrap().proto, Proto::Tcp);
        for bad in ["0:tcp", "70000", "40001:icmp", ":tcp", ""] {
            assert!(bad.parse::<Knock>().is_err(), "{bad:?}");
        }
    }
}
