//! Parsing captured frames into knock packets. (Being written: see the capture helper's task.)

use std::net::IpAddr;

use crate::knock::Knock;

/// One knock as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnockPacket {
    /// Source address (IPv4-mapped IPv6 addresses are normalised to IPv4).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port and protocol.
    pub knock: Knock,
    /// TCP flags byte (None for UDP).
    pub tcp_flags: Option<u8>,
}
