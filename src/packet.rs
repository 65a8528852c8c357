//! Parsing captured frames into knock packets.
//!
//! [`parse_frame`] takes one captured frame and the capture's link type and returns the
//! [`KnockPacket`] it carries, or a [`PacketError`] saying what was wrong with it. Contract
//! (after smoltcp's `new_checked`): every header's length is checked once, before any field
//! of it is read, and every input of any shape returns `Ok` or `Err`, never a panic.
//!
//! A frame may be cut short by the capture's snap length after the transport header (a UDP
//! knock may carry any payload); headers that are cut short, or whose length fields
//! contradict each other, are errors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::knock::{Knock, Proto};

/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// One knock as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnockPacket {
    /// Source address: a unicast address a reply can go to (see [`PacketError::BadSource`]).
    pub src: IpAddr,
    /// Source port: a client sends every knock of one attempt from one port, so attempts are
    /// told apart by (address, port) and a neighbour behind the same address cannot spoil them.
    pub src_port: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port and protocol.
    pub knock: Knock,
    /// TCP flags byte (None for UDP).
    pub tcp_flags: Option<u8>,
}

impl KnockPacket {
    /// Whether the packet counts as a knock: a TCP segment with SYN set and ACK clear, or any
    /// UDP datagram.
    pub fn is_knock(&self) -> bool {
        match self.knock.proto {
            Proto::Tcp => self.tcp_flags.is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN),
            Proto::Udp => true,
        }
    }
}

/// The link layer a capture delivers frames in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, optionally with one or two 802.1Q/802.1ad tags.
    Ethernet,
    /// Linux cooked capture v1 (the `any` device).
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    Loop,
    /// A bare IPv4 or IPv6 packet.
    Raw,
}

impl LinkType {
    /// The link type of a pcap data link type number (`DLT_*` / `LINKTYPE_*`), or `None` when
    /// it is not one knocks can arrive over.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 => Some(LinkType::Null),
            108 => Some(LinkType::Loop),
            12 | 14 | 101 => Some(LinkType::Raw),
            _ => None,
        }
    }
}

/// What was wrong with a frame that carries no knock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A header ends before its fixed length (or its stated length).
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length field is impossible: shorter than the header, or longer than its container.
    #[error("bad {0}")]
    BadLength(&'static str),
    /// The link layer carries something other than IPv4 or IPv6.
    #[error("not IPv4 or IPv6 (EtherType {0:#06x})")]
    NotIp(u16),
    /// A loopback header names an address family other than IPv4 or IPv6.
    #[error("not IPv4 or IPv6 (loopback address family {0:#x})")]
    UnknownFamily(u32),
    /// The IP version nibble disagrees with the link layer, or is neither 4 nor 6.
    #[error("IP version {0} where {1} was expected")]
    IpVersion(u8, &'static str),
    /// More VLAN tags than the two of 802.1ad.
    #[error("more than two VLAN tags")]
    TooManyVlanTags,
    /// A non-first IPv4 fragment, or an IPv6 fragment header: knocks are never fragmented.
    #[error("IP fragment")]
    Fragment,
    /// The transport protocol is neither TCP nor UDP.
    #[error("not TCP or UDP (IP protocol {0})")]
    NotTcpOrUdp(u8),
    /// The source address cannot be a knocking host: unspecified, multicast, the IPv4 limited
    /// broadcast, or an IPv4-mapped IPv6 address (which no IPv6 packet carries legitimately,
    /// and which would let an IPv6 sender pass for an IPv4 one).
    #[error("source address is {0}")]
    BadSource(&'static str),
}

/// Parses one captured frame of link type `link` into the packet it carries.
pub fn parse_frame(link: LinkType, frame: &[u8]) -> Result<KnockPacket, PacketError> {
    let (net, packet) = strip_link(link, frame)?;
    let ip = match net {
        Net::V4 => parse_ipv4(packet)?,
        Net::V6 => parse_ipv6(packet)?,
        Net::ByVersion => parse_ip_by_version(packet)?,
    };
    check_source(ip.src)?;
    parse_transport(ip)
}

/// Refuses source addresses no knocking host can have; a grant to one would open the door to
/// nobody, or to a whole group, or (v4-mapped) to an IPv4 host the sender is not.
fn check_source(src: IpAddr) -> Result<(), PacketError> {
    let bad = match src {
        IpAddr::V4(a) if a.is_unspecified() => "unspecified (0.0.0.0)",
        IpAddr::V4(a) if a.is_multicast() => "multicast",
        IpAddr::V4(a) if a.is_broadcast() => "the limited broadcast (255.255.255.255)",
        IpAddr::V6(a) if a.is_unspecified() => "unspecified (::)",
        IpAddr::V6(a) if a.is_multicast() => "multicast",
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => "IPv4-mapped (::ffff:a.b.c.d)",
        _ => return Ok(()),
    };
    Err(PacketError::BadSource(bad))
}

/// Which network layer follows the link header.
#[derive(Debug, Clone, Copy)]
enum Net {
    V4,
    V6,
    /// Raw IP: the version nibble says.
    ByVersion,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;

fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Splits off the link header, returning the network layer and what follows it.
fn strip_link(link: LinkType, frame: &[u8]) -> Result<(Net, &[u8]), PacketError> {
    match link {
        LinkType::Ethernet => {
            let (h, rest) = split::<14>(frame, "Ethernet header")?;
            by_ethertype(be16([h[12], h[13]]), rest)
        }
        LinkType::LinuxSll => {
            let (h, rest) = split::<16>(frame, "Linux cooked header")?;
            by_ethertype(be16([h[14], h[15]]), rest)
        }
        LinkType::LinuxSll2 => {
            let (h, rest) = split::<20>(frame, "Linux cooked v2 header")?;
            by_ethertype(be16([h[0], h[1]]), rest)
        }
        LinkType::Null | LinkType::Loop => {
            let (h, rest) = split::<4>(frame, "loopback header")?;
            Ok((by_family(*h)?, rest))
        }
        LinkType::Raw => Ok((Net::ByVersion, frame)),
    }
}

/// Splits `N` header bytes off the front of `b`.
fn split<'a, const N: usize>(b: &'a [u8], what: &'static str) -> Result<(&'a [u8; N], &'a [u8]), PacketError> {
    b.split_first_chunk::<N>().ok_or(PacketError::Truncated(what))
}

/// Follows an EtherType, skipping at most two VLAN tags.
fn by_ethertype(mut ethertype: u16, mut rest: &[u8]) -> Result<(Net, &[u8]), PacketError> {
    for _ in 0..=2 {
        match ethertype {
            ETHERTYPE_IPV4 => return Ok((Net::V4, rest)),
            ETHERTYPE_IPV6 => return Ok((Net::V6, rest)),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                let (tag, after) = split::<4>(rest, "VLAN tag")?;
                ethertype = be16([tag[2], tag[3]]);
                rest = after;
            }
            other => return Err(PacketError::NotIp(other)),
        }
    }
    Err(PacketError::TooManyVlanTags)
}

/// The network layer named by a loopback header's address family, in either byte order.
fn by_family(af: [u8; 4]) -> Result<Net, PacketError> {
    let family = |v: u32| match v {
        2 => Some(Net::V4),
        10 | 24 | 28 | 30 => Some(Net::V6),
        _ => None,
    };
    let be = u32::from_be_bytes(af);
    family(be).or_else(|| family(u32::from_le_bytes(af))).ok_or(PacketError::UnknownFamily(be))
}

/// An IP packet reduced to what the transport layer needs.
struct IpPayload<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// The transport bytes captured (cut to the declared length, perhaps shorter).
    data: &'a [u8],
    /// The transport length the IP header declares.
    declared: usize,
}

fn parse_ip_by_version(packet: &[u8]) -> Result<IpPayload<'_>, PacketError> {
    match packet.first().map(|b| b >> 4) {
        None => Err(PacketError::Truncated("IP header")),
        Some(4) => parse_ipv4(packet),
        Some(6) => parse_ipv6(packet),
        Some(v) => Err(PacketError::IpVersion(v, "4 or 6")),
    }
}

fn parse_ipv4(packet: &[u8]) -> Result<IpPayload<'_>, PacketError> {
    let (h, _) = split::<20>(packet, "IPv4 header")?;
    if h[0] >> 4 != 4 {
        return Err(PacketError::IpVersion(h[0] >> 4, "4"));
    }
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let total_len = usize::from(be16([h[2], h[3]]));
    if header_len < 20 {
        return Err(PacketError::BadLength("IPv4 header length"));
    }
    if total_len < header_len {
        return Err(PacketError::BadLength("IPv4 total length"));
    }
    if be16([h[6], h[7]]) & 0x1fff != 0 {
        return Err(PacketError::Fragment);
    }
    let captured = packet.get(..total_len).unwrap_or(packet);
    let data = captured.get(header_len..).ok_or(PacketError::Truncated("IPv4 header"))?;
    Ok(IpPayload {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        proto: h[9],
        data,
        declared: total_len - header_len,
    })
}

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;

fn parse_ipv6(packet: &[u8]) -> Result<IpPayload<'_>, PacketError> {
    let (h, rest) = split::<8>(packet, "IPv6 header")?;
    let (src, rest) = split::<16>(rest, "IPv6 header")?;
    let (dst, rest) = split::<16>(rest, "IPv6 header")?;
    if h[0] >> 4 != 6 {
        return Err(PacketError::IpVersion(h[0] >> 4, "6"));
    }
    let payload_len = usize::from(be16([h[4], h[5]]));
    let data = rest.get(..payload_len).unwrap_or(rest);
    let (proto, data, declared) = skip_extensions(h[6], data, payload_len)?;
    Ok(IpPayload {
        src: IpAddr::V6(Ipv6Addr::from(*src)),
        dst: IpAddr::V6(Ipv6Addr::from(*dst)),
        proto,
        data,
        declared,
    })
}

/// Walks hop-by-hop, routing and destination-options headers to the upper-layer protocol.
/// Each extension header is at least 8 bytes, so the walk ends within the payload.
fn skip_extensions(mut next: u8, mut data: &[u8], mut declared: usize) -> Result<(u8, &[u8], usize), PacketError> {
    loop {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS => {
                let (h, _) = split::<2>(data, "IPv6 extension header")?;
                let len = (usize::from(h[1]) + 1) * 8;
                if len > declared {
                    return Err(PacketError::BadLength("IPv6 extension header length"));
                }
                next = h[0];
                data = data.get(len..).ok_or(PacketError::Truncated("IPv6 extension header"))?;
                declared -= len;
            }
            IPV6_FRAGMENT => return Err(PacketError::Fragment),
            proto => return Ok((proto, data, declared)),
        }
    }
}

fn parse_transport(ip: IpPayload<'_>) -> Result<KnockPacket, PacketError> {
    let t = match ip.proto {
        6 => parse_tcp(ip.data, ip.declared)?,
        17 => parse_udp(ip.data, ip.declared)?,
        other => return Err(PacketError::NotTcpOrUdp(other)),
    };
    let knock = Knock { port: t.dst_port, proto: t.proto };
    Ok(KnockPacket { src: ip.src, src_port: t.src_port, dst: ip.dst, knock, tcp_flags: t.tcp_flags })
}

/// What a TCP or UDP header tells a knock.
struct Transport {
    src_port: u16,
    dst_port: u16,
    proto: Proto,
    tcp_flags: Option<u8>,
}

fn parse_tcp(data: &[u8], declared: usize) -> Result<Transport, PacketError> {
    if declared < 20 {
        return Err(PacketError::BadLength("TCP length"));
    }
    let (h, _) = split::<20>(data, "TCP header")?;
    let header_len = usize::from(h[12] >> 4) * 4;
    if header_len < 20 || header_len > declared {
        return Err(PacketError::BadLength("TCP header length"));
    }
    Ok(Transport {
        src_port: be16([h[0], h[1]]),
        dst_port: be16([h[2], h[3]]),
        proto: Proto::Tcp,
        tcp_flags: Some(h[13]),
    })
}

fn parse_udp(data: &[u8], declared: usize) -> Result<Transport, PacketError> {
    if declared < 8 {
        return Err(PacketError::BadLength("UDP length"));
    }
    let (h, _) = split::<8>(data, "UDP header")?;
    let udp_len = usize::from(be16([h[4], h[5]]));
    if udp_len < 8 || udp_len > declared {
        return Err(PacketError::BadLength("UDP length"));
    }
    Ok(Transport { src_port: be16([h[0], h[1]]), dst_port: be16([h[2], h[3]]), proto: Proto::Udp, tcp_flags: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 2);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 18, 77, 1);
    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 2);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
    const PORT: u16 = 40005;
    const ALL_LINKS: [LinkType; 6] =
        [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Null, LinkType::Loop, LinkType::Raw];

    fn tcp(dport: u16, flags: u8) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&54321u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = flags;
        h
    }

    fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 8];
        h[0..2].copy_from_slice(&54321u16.to_be_bytes());
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..6].copy_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
        h[6] = 0x40; // don't fragment
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&V4_SRC.octets());
        h[16..20].copy_from_slice(&V4_DST.octets());
        h.extend_from_slice(l4);
        h
    }

    fn ipv6_from(src: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        h[6] = next;
        h[7] = 64;
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&V6_DST.octets());
        h.extend_from_slice(l4);
        h
    }

    fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
        ipv6_from(V6_SRC, next, l4)
    }

    fn ethertype_of(l3: &[u8]) -> u16 {
        match l3.first().map(|b| b >> 4) {
            Some(4) => ETHERTYPE_IPV4,
            _ => ETHERTYPE_IPV6,
        }
    }

    fn ethernet(tags: &[u16], l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for tag in tags {
            f.extend_from_slice(&tag.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x07]); // TCI: VLAN 7
        }
        f.extend_from_slice(&ethertype_of(l3).to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn frame(link: LinkType, l3: &[u8]) -> Vec<u8> {
        let ethertype = ethertype_of(l3).to_be_bytes();
        let v4 = ethertype_of(l3) == ETHERTYPE_IPV4;
        let mut f = match link {
            LinkType::Ethernet => return ethernet(&[], l3),
            // packet type, ARPHRD_ETHER, address length, address (8 bytes), protocol
            LinkType::LinuxSll => {
                let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0];
                f.extend_from_slice(&ethertype);
                f
            }
            // protocol, reserved, interface index, ARPHRD_ETHER, packet type, address length, address
            LinkType::LinuxSll2 => {
                let mut f = ethertype.to_vec();
                f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0]);
                f
            }
            LinkType::Null => (if v4 { 2u32 } else { 10 }).to_le_bytes().to_vec(),
            LinkType::Loop => (if v4 { 2u32 } else { 24 }).to_be_bytes().to_vec(),
            LinkType::Raw => Vec::new(),
        };
        f.extend_from_slice(l3);
        f
    }

    fn expected(v4: bool, knock: Knock, tcp_flags: Option<u8>) -> KnockPacket {
        let (src, dst) =
            if v4 { (IpAddr::V4(V4_SRC), IpAddr::V4(V4_DST)) } else { (IpAddr::V6(V6_SRC), IpAddr::V6(V6_DST)) };
        KnockPacket { src, src_port: 54321, dst, knock, tcp_flags }
    }

    /// Every link type × {IPv4, IPv6} × {TCP SYN, UDP}, with the packet each must parse to.
    fn valid_frames() -> Vec<(LinkType, Vec<u8>, KnockPacket)> {
        let syn = tcp(PORT, TCP_SYN);
        let dgram = udp(PORT + 1, &[]);
        let l3s = [
            (ipv4(6, &syn), expected(true, Knock::tcp(PORT), Some(TCP_SYN))),
            (ipv6(6, &syn), expected(false, Knock::tcp(PORT), Some(TCP_SYN))),
            (ipv4(17, &dgram), expected(true, Knock::udp(PORT + 1), None)),
            (ipv6(17, &dgram), expected(false, Knock::udp(PORT + 1), None)),
        ];
        ALL_LINKS.iter().flat_map(|&link| l3s.iter().map(move |(l3, want)| (link, frame(link, l3), *want))).collect()
    }

    #[test]
    fn every_link_type_carries_tcp_and_udp_over_ipv4_and_ipv6() {
        for (link, f, want) in valid_frames() {
            assert_eq!(parse_frame(link, &f), Ok(want), "{link:?} {f:02x?}");
            assert!(want.is_knock());
        }
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_an_error() {
        for (link, f, _) in valid_frames() {
            for n in 0..f.len() {
                assert!(parse_frame(link, &f[..n]).is_err(), "{link:?} prefix {n}");
            }
        }
    }

    #[test]
    fn from_dlt_maps_the_known_link_types() {
        let cases = [
            (1, LinkType::Ethernet),
            (113, LinkType::LinuxSll),
            (276, LinkType::LinuxSll2),
            (0, LinkType::Null),
            (108, LinkType::Loop),
            (12, LinkType::Raw),
            (14, LinkType::Raw),
            (101, LinkType::Raw),
        ];
        for (dlt, link) in cases {
            assert_eq!(LinkType::from_dlt(dlt), Some(link));
        }
        assert_eq!(LinkType::from_dlt(105), None); // 802.11
        assert_eq!(LinkType::from_dlt(-1), None);
    }

    #[test]
    fn one_and_two_vlan_tags_are_skipped_three_are_refused() {
        let l3 = ipv6(6, &tcp(PORT, TCP_SYN));
        let want = Ok(expected(false, Knock::tcp(PORT), Some(TCP_SYN)));
        for tags in [&[0x8100][..], &[0x88a8, 0x8100], &[0x9100, 0x8100]] {
            assert_eq!(parse_frame(LinkType::Ethernet, &ethernet(tags, &l3)), want);
        }
        let three = ethernet(&[0x88a8, 0x8100, 0x8100], &l3);
        assert_eq!(parse_frame(LinkType::Ethernet, &three), Err(PacketError::TooManyVlanTags));
        let tagged = ethernet(&[0x88a8, 0x8100], &l3);
        for n in 0..tagged.len() {
            assert!(parse_frame(LinkType::Ethernet, &tagged[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn vlan_tag_reinserted_in_a_linux_cooked_header_is_skipped() {
        let l3 = ipv4(17, &udp(PORT, b"x"));
        let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 2, 0, 0, 0x81, 0x00, 0, 7, 0x08, 0x00];
        f.extend_from_slice(&l3);
        let want = Ok(expected(true, Knock::udp(PORT), None));
        assert_eq!(parse_frame(LinkType::LinuxSll, &f), want);
    }

    #[test]
    fn ethernet_padding_is_ignored() {
        let mut f = frame(LinkType::Ethernet, &ipv4(17, &udp(PORT, &[])));
        f.resize(60, 0xee);
        let want = Ok(expected(true, Knock::udp(PORT), None));
        assert_eq!(parse_frame(LinkType::Ethernet, &f), want);
    }

    #[test]
    fn a_payload_cut_by_the_snap_length_still_parses() {
        let f = frame(LinkType::Ethernet, &ipv4(17, &udp(PORT, &[0xab; 1000])));
        let want = Ok(expected(true, Knock::udp(PORT), None));
        assert_eq!(parse_frame(LinkType::Ethernet, &f[..256]), want);
    }

    #[test]
    fn non_ip_link_payloads_are_refused() {
        let mut arp = ethernet(&[], &[]);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(parse_frame(LinkType::Ethernet, &arp), Err(PacketError::NotIp(0x0806)));
        let mut null = 99u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ipv4(6, &tcp(PORT, TCP_SYN)));
        let got = parse_frame(LinkType::Null, &null);
        assert!(matches!(got, Err(PacketError::UnknownFamily(_))), "{got:?}");
    }

    #[test]
    fn loopback_families_are_read_in_either_byte_order() {
        let v4 = ipv4(6, &tcp(PORT, TCP_SYN));
        let v6 = ipv6(6, &tcp(PORT, TCP_SYN));
        for (af, l3) in [(2u32, &v4), (10, &v6), (24, &v6), (28, &v6), (30, &v6)] {
            for header in [af.to_le_bytes(), af.to_be_bytes()] {
                let mut f = header.to_vec();
                f.extend_from_slice(l3);
                for link in [LinkType::Null, LinkType::Loop] {
                    let got = parse_frame(link, &f);
                    assert!(got.is_ok_and(|p| p.knock == Knock::tcp(PORT)), "af {af}");
                }
            }
        }
    }

    #[test]
    fn the_ip_version_must_match_the_link_layer() {
        let v6 = ipv6(6, &tcp(PORT, TCP_SYN));
        let mut f = ethernet(&[], &v6);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(parse_frame(LinkType::Ethernet, &f), Err(PacketError::IpVersion(6, "4")));
        let mut raw = v6;
        raw[0] = 0x50;
        assert_eq!(parse_frame(LinkType::Raw, &raw), Err(PacketError::IpVersion(5, "4 or 6")));
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let syn = tcp(PORT, TCP_SYN);
        let mut l3 = ipv4(6, &[]);
        l3[0] = 0x46;
        l3[2..4].copy_from_slice(&(24 + syn.len() as u16).to_be_bytes());
        l3.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        l3.extend_from_slice(&syn);
        let want = Ok(expected(true, Knock::tcp(PORT), Some(TCP_SYN)));
        assert_eq!(parse_frame(LinkType::Raw, &l3), want);
    }

    #[test]
    fn ipv4_fragments_after_the_first_are_refused() {
        let mut l3 = ipv4(6, &tcp(PORT, TCP_SYN));
        l3[6..8].copy_from_slice(&0x2000u16.to_be_bytes()); // more fragments, offset 0
        assert!(parse_frame(LinkType::Raw, &l3).is_ok());
        l3[6..8].copy_from_slice(&0x0001u16.to_be_bytes()); // offset 8
        assert_eq!(parse_frame(LinkType::Raw, &l3), Err(PacketError::Fragment));
    }

    #[test]
    fn impossible_ipv4_and_tcp_lengths_are_refused() {
        let good = ipv4(6, &tcp(PORT, TCP_SYN));
        let with = |at: usize, bytes: &[u8]| {
            let mut l3 = good.clone();
            l3[at..at + bytes.len()].copy_from_slice(bytes);
            parse_frame(LinkType::Raw, &l3)
        };
        let bad = |what| Err(PacketError::BadLength(what));
        assert_eq!(with(0, &[0x44]), bad("IPv4 header length"));
        assert_eq!(with(2, &19u16.to_be_bytes()), bad("IPv4 total length"));
        assert_eq!(with(2, &39u16.to_be_bytes()), bad("TCP length"));
        assert_eq!(with(0, &[0x4f]), bad("IPv4 total length"));
        let options_cut = with(0, &[0x4f, 0, 0, 100]);
        assert_eq!(options_cut, Err(PacketError::Truncated("IPv4 header")));
        assert_eq!(with(32, &[0x40]), bad("TCP header length")); // data offset 4
        assert_eq!(with(32, &[0x60]), bad("TCP header length")); // options beyond the packet
    }

    #[test]
    fn impossible_udp_lengths_are_refused() {
        let good = ipv6(17, &udp(PORT, b"abc"));
        for udp_len in [0u16, 7, 12] {
            let mut l3 = good.clone();
            l3[44..46].copy_from_slice(&udp_len.to_be_bytes());
            let got = parse_frame(LinkType::Raw, &l3);
            assert_eq!(got, Err(PacketError::BadLength("UDP length")), "{udp_len}");
        }
    }

    /// An IPv6 extension header of `len8` extra 8-byte units, followed by `next`.
    fn extension(next: u8, len8: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(len8) + 1) * 8];
        h[0] = next;
        h[1] = len8;
        h
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let mut l4 = extension(IPV6_ROUTING, 0);
        l4.extend(extension(IPV6_DEST_OPTIONS, 1));
        l4.extend(extension(6, 0));
        l4.extend(tcp(PORT, TCP_SYN));
        let l3 = ipv6(IPV6_HOP_BY_HOP, &l4);
        let want = Ok(expected(false, Knock::tcp(PORT), Some(TCP_SYN)));
        assert_eq!(parse_frame(LinkType::Raw, &l3), want);
        for n in 0..l3.len() {
            assert!(parse_frame(LinkType::Raw, &l3[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn ipv6_fragments_and_overlong_extensions_are_refused() {
        let mut frag = extension(6, 0);
        frag.extend(tcp(PORT, TCP_SYN));
        let l3 = ipv6(IPV6_FRAGMENT, &frag);
        assert_eq!(parse_frame(LinkType::Raw, &l3), Err(PacketError::Fragment));
        let mut hop = extension(IPV6_FRAGMENT, 0);
        hop.extend(frag);
        assert_eq!(parse_frame(LinkType::Raw, &ipv6(0, &hop)), Err(PacketError::Fragment));
        let mut long = ipv6(IPV6_DEST_OPTIONS, &extension(6, 9));
        long[4..6].copy_from_slice(&16u16.to_be_bytes());
        let want = Err(PacketError::BadLength("IPv6 extension header length"));
        assert_eq!(parse_frame(LinkType::Raw, &long), want);
    }

    /// IPv4 `l3` with its source address replaced.
    fn ipv4_from(src: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut l3 = ipv4(proto, l4);
        l3[12..16].copy_from_slice(&src.octets());
        l3
    }

    #[test]
    fn sources_no_host_can_have_are_refused() {
        let syn = tcp(PORT, TCP_SYN);
        let dgram = udp(PORT, &[]);
        let v6_cases = [
            (V4_SRC.to_ipv6_mapped(), "IPv4-mapped (::ffff:a.b.c.d)"),
            (Ipv6Addr::UNSPECIFIED, "unspecified (::)"),
            (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), "multicast"),
            (Ipv6Addr::new(0xff0e, 0x2001, 0xdb8, 0, 0, 0, 0, 7), "multicast"),
        ];
        let v4_cases = [
            (Ipv4Addr::UNSPECIFIED, "unspecified (0.0.0.0)"),
            (Ipv4Addr::new(224, 0, 0, 1), "multicast"),
            (Ipv4Addr::new(239, 255, 255, 250), "multicast"),
            (Ipv4Addr::BROADCAST, "the limited broadcast (255.255.255.255)"),
        ];
        for l4 in [(6, &syn), (17, &dgram)] {
            for (src, why) in v6_cases {
                let l3 = ipv6_from(src, l4.0, l4.1);
                for link in ALL_LINKS {
                    assert_eq!(parse_frame(link, &frame(link, &l3)), Err(PacketError::BadSource(why)), "{src}");
                }
            }
            for (src, why) in v4_cases {
                let l3 = ipv4_from(src, l4.0, l4.1);
                for link in ALL_LINKS {
                    assert_eq!(parse_frame(link, &frame(link, &l3)), Err(PacketError::BadSource(why)), "{src}");
                }
            }
        }
        // Neighbours of the refused ranges still parse: a subnet's directed broadcast is a
        // unicast-looking source here (only the kernel knows the subnet).
        for src in [Ipv4Addr::new(198, 18, 77, 255), Ipv4Addr::new(223, 255, 255, 254), Ipv4Addr::new(0, 0, 0, 1)] {
            assert!(parse_frame(LinkType::Raw, &ipv4_from(src, 6, &syn)).is_ok(), "{src}");
        }
        let text = PacketError::BadSource("multicast").to_string();
        assert_eq!(text, "source address is multicast");
    }

    #[test]
    fn other_transports_are_refused() {
        let icmp = ipv4(1, &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_frame(LinkType::Raw, &icmp), Err(PacketError::NotTcpOrUdp(1)));
        let icmp6 = ipv6(58, &[128, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_frame(LinkType::Raw, &icmp6), Err(PacketError::NotTcpOrUdp(58)));
        let none = ipv6(59, &[]);
        assert_eq!(parse_frame(LinkType::Raw, &none), Err(PacketError::NotTcpOrUdp(59)));
    }

    #[test]
    fn only_syn_without_ack_and_udp_are_knocks() {
        let knock_with = |flags| {
            let l3 = ipv4(6, &tcp(PORT, flags));
            parse_frame(LinkType::Raw, &l3).map(|p| p.is_knock())
        };
        assert_eq!(knock_with(TCP_SYN), Ok(true));
        assert_eq!(knock_with(TCP_SYN | 0xc0), Ok(true)); // ECN setup: SYN + ECE + CWR
        assert_eq!(knock_with(TCP_SYN | TCP_ACK), Ok(false));
        assert_eq!(knock_with(TCP_ACK), Ok(false));
        assert_eq!(knock_with(0x04), Ok(false)); // RST
        assert_eq!(knock_with(0), Ok(false));
        let udp = parse_frame(LinkType::Raw, &ipv6(17, &udp(PORT, b"hi")));
        assert_eq!(udp.map(|p| p.is_knock()), Ok(true));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let short = parse_frame(LinkType::Raw, &ipv4(6, &[])[..10]);
        assert_eq!(short.map_err(|e| e.to_string()), Err("truncated IPv4 header".into()));
        assert_eq!(PacketError::NotTcpOrUdp(1).to_string(), "not TCP or UDP (IP protocol 1)");
        let not_ip = PacketError::NotIp(0x0806).to_string();
        assert_eq!(not_ip, "not IPv4 or IPv6 (EtherType 0x0806)");
    }

    fn link_type() -> impl Strategy<Value = LinkType> {
        proptest::sample::select(ALL_LINKS.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            link in link_type(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let _ = parse_frame(link, &bytes);
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            pick in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            relink in link_type(),
        ) {
            let frames = valid_frames();
            let (link, mut f, _) = frames[pick.index(frames.len())].clone();
            for (at, byte) in edits {
                let i = at.index(f.len());
                f[i] = byte;
            }
            let _ = parse_frame(link, &f[..cut.index(f.len() + 1)]);
            let _ = parse_frame(link, &f);
            let _ = parse_frame(relink, &f);
        }
    }
}
