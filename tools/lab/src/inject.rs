//! Injection: the only path by which knock-lab puts bytes on the wire. Opens
//! a live pcap handle on an interface and sends Ethernet frames with
//! `sendpacket`, after checking every single frame against the network guard.

use std::fmt;

use pcap::{Active, Capture, Linktype};

use crate::addr::check_allowed;
use crate::frame::{frame_ethertype, parse_ip, IpInfo, IPPROTO_TCP, IPPROTO_UDP};

/// Why a frame was not sent.
#[derive(Debug)]
pub enum SendError {
    /// The guard refused the frame; nothing was sent.
    Refused(String),
    /// libpcap failed to send it.
    Io(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Refused(m) => write!(f, "{m}"),
            SendError::Io(m) => write!(f, "send failed: {m}"),
        }
    }
}

/// Checks that an Ethernet frame is one this tool may emit: an IPv4/IPv6
/// packet carrying TCP or UDP, without source routing, whose source and
/// destination are both allowed addresses (see [`crate::addr`]).
pub fn guard_frame(frame: &[u8]) -> Result<IpInfo, String> {
    let info = match parse_ip(frame)? {
        Some(info) => info,
        None => {
            return Err(format!(
                "refusing a non-IP frame (ethertype {:#06x}): knock-lab only sends IPv4/IPv6 TCP/UDP",
                frame_ethertype(frame)?
            ))
        }
    };
    check_allowed(info.src, "source")?;
    check_allowed(info.dst, "destination")?;
    if let Some(what) = info.routing {
        return Err(format!(
            "refusing a packet {} -> {} with an {what}: its real path cannot be checked",
            info.src, info.dst
        ));
    }
    if info.proto != IPPROTO_TCP && info.proto != IPPROTO_UDP {
        return Err(format!(
            "refusing IP protocol {} ({} -> {}): knock-lab only sends TCP and UDP",
            info.proto, info.src, info.dst
        ));
    }
    Ok(info)
}

/// A live handle that sends frames on one Ethernet interface.
pub struct Injector {
    cap: Capture<Active>,
    iface: String,
}

impl Injector {
    /// Opens `iface` for sending (never for reading: a filter that matches
    /// nothing keeps received traffic out of the buffer).
    pub fn open(iface: &str) -> Result<Self, String> {
        let cap = Capture::from_device(iface)
            .and_then(|c| c.snaplen(128).immediate_mode(true).buffer_size(1 << 20).open())
            .map_err(|e| format!("cannot open interface {iface:?} with libpcap: {e}"))?;
        let mut inj = Injector { cap, iface: iface.to_string() };
        let link = inj.cap.get_datalink();
        if link != Linktype::ETHERNET {
            return Err(format!(
                "interface {iface} has link type {} ({}), not Ethernet",
                link.0,
                link.get_name().unwrap_or_else(|_| "?".into())
            ));
        }
        // We only send; matching nothing is an optimisation, so a failure
        // here is harmless.
        let _ = inj.cap.filter("less 1", true);
        Ok(inj)
    }

    /// The interface this injector sends on.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Guards and sends one frame.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        guard_frame(frame).map_err(SendError::Refused)?;
        self.cap.sendpacket(frame).map_err(|e| SendError::Io(format!("on {}: {e}", self.iface)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Mac;
    use crate::frame::{build_frame, FrameSpec, Proto};

    fn frame(src: &str, dst: &str) -> Vec<u8> {
        let mut v = Vec::new();
        build_frame(
            &FrameSpec {
                src_mac: Mac([2, 0, 0, 0, 0, 1]),
                dst_mac: Mac([2, 0, 0, 0, 0, 2]),
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                proto: Proto::Udp,
                src_port: 40000,
                dst_port: 40001,
                seq: 1,
                ip_id: 1,
                payload: b"x",
            },
            &mut v,
        )
        .unwrap();
        v
    }

    #[test]
    fn guard_checks_both_addresses() {
        guard_frame(&frame("198.18.88.1", "198.18.88.2")).unwrap();
        guard_frame(&frame("2001:db8::1", "2001:db8::2")).unwrap();
        guard_frame(&frame("127.0.0.1", "127.0.0.1")).unwrap();
        for (s, d) in [
            ("10.0.0.1", "198.18.88.2"),
            ("198.18.88.1", "192.168.1.1"),
            ("198.18.88.1", "8.8.8.8"),
            ("2001:db8::1", "2001:4860::1"),
        ] {
            let err = guard_frame(&frame(s, d)).unwrap_err();
            assert!(err.starts_with("refusing"), "{err}");
        }
    }

    #[test]
    fn guard_refuses_non_ip_and_other_protocols() {
        let mut arp = frame("198.18.88.1", "198.18.88.2");
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(guard_frame(&arp).unwrap_err().contains("non-IP"));
        let mut icmp = frame("198.18.88.1", "198.18.88.2");
        icmp[23] = 1;
        assert!(guard_frame(&icmp).unwrap_err().contains("protocol 1"));
        assert!(guard_frame(&icmp[..20]).is_err());
    }
}
