//! Addresses: the lab's network guard (which IP addresses this tool may ever
//! put on the wire), MAC address parsing, and IP prefix parsing / sampling.
//!
//! The guard is deliberately strict: every packet this tool emits must have
//! both its source and its destination inside one of the ranges reserved for
//! benchmarking and documentation (`198.18.0.0/15`, RFC 2544; `2001:db8::/32`,
//! RFC 3849) or loopback (`127.0.0.0/8`, `::1`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rand::Rng;

/// The address ranges this tool may send to and from, as (network, length).
pub const ALLOWED_RANGES: &str = "198.18.0.0/15, 2001:db8::/32, 127.0.0.0/8, ::1";

const BENCH_V4: Prefix = Prefix { addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)), len: 15 };
const LOOPBACK_V4: Prefix = Prefix { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), len: 8 };
const DOC_V6: Prefix = Prefix { addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0)), len: 32 };
const LOOPBACK_V6: Prefix = Prefix { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), len: 128 };
const ALLOWED: [Prefix; 4] = [BENCH_V4, LOOPBACK_V4, DOC_V6, LOOPBACK_V6];

/// The ranges spoofed flood sources may be drawn from (no loopback: a
/// loopback source on a real interface is a martian).
const SPOOF: [Prefix; 2] = [BENCH_V4, DOC_V6];

/// True when `ip` is one this tool may use as a packet's source or destination.
pub fn is_allowed(ip: IpAddr) -> bool {
    ALLOWED.iter().any(|p| p.contains(ip))
}

/// Refuses an address outside the allowed ranges; `role` names it in the error
/// (for example "source" or "destination of frame 3").
pub fn check_allowed(ip: IpAddr, role: &str) -> Result<(), String> {
    if is_allowed(ip) {
        Ok(())
    } else {
        Err(format!(
            "refusing {role} address {ip}: knock-lab only sends packets whose source and \
             destination are in {ALLOWED_RANGES}"
        ))
    }
}

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-` separators), case-insensitive.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("invalid MAC address {s:?}: expected six hex octets like 02:00:00:00:00:01"));
        }
        let mut mac = [0u8; 6];
        for (octet, part) in mac.iter_mut().zip(&parts) {
            if part.is_empty() || part.len() > 2 {
                return Err(format!("invalid MAC address {s:?}: bad octet {part:?}"));
            }
            *octet =
                u8::from_str_radix(part, 16).map_err(|_| format!("invalid MAC address {s:?}: bad octet {part:?}"))?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// An IP prefix such as `198.18.0.0/15` or `2001:db8:1::/48`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The network address (host bits are zero after parsing).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    fn max_len(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    /// The network mask of a `len`-bit prefix of a `bits`-wide address.
    fn mask(len: u8, bits: u8) -> u128 {
        let all = u128::MAX.checked_shr(128 - u32::from(bits)).unwrap_or(0);
        all & !all.checked_shr(u32::from(len)).unwrap_or(0)
    }

    fn to_bits(ip: IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    }

    fn from_bits(bits: u128, v4: bool) -> IpAddr {
        if v4 {
            // Only the low 32 bits are ever set for IPv4 values.
            IpAddr::V4(Ipv4Addr::from(bits as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }

    /// True when `ip` is of the same family and inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = Self::to_bits(self.addr);
        let (host, host_width) = Self::to_bits(ip);
        if width != host_width {
            return false;
        }
        let mask = Self::mask(self.len, width);
        net & mask == host & mask
    }

    /// True when every address of this prefix lies in 198.18.0.0/15 or
    /// 2001:db8::/32, the ranges flood sources may be drawn from.
    pub fn is_spoofable(&self) -> bool {
        SPOOF.iter().any(|a| a.len <= self.len && a.contains(self.addr))
    }

    /// A uniformly random address of this prefix.
    pub fn random_addr<R: Rng + ?Sized>(&self, rng: &mut R) -> IpAddr {
        let (net, width) = Self::to_bits(self.addr);
        let mask = Self::mask(self.len, width);
        let host_mask = !mask & Self::mask(width, width);
        let host: u128 = rng.random::<u128>() & host_mask;
        Self::from_bits((net & mask) | host, width == 32)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// Parses `ADDR/LEN`; a bare address means a single-host prefix.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr =
            addr_s.parse().map_err(|_| format!("invalid prefix {s:?}: {addr_s:?} is not an IP address"))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let len = match len_s {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("invalid prefix {s:?}: length must be 0..={max}"))?,
        };
        let (bits, width) = Self::to_bits(addr);
        let net = bits & Self::mask(len, width);
        let p = Prefix { addr: Self::from_bits(net, width == 32), len };
        debug_assert!(p.len <= p.max_len());
        Ok(p)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An inclusive port range such as `40000-40999` (or a single port `40001`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| format!("invalid port range {s:?}: ports are 1..=65535"))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if first > last {
            return Err(format!("invalid port range {s:?}: first port is above the last"));
        }
        Ok(PortRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn guard_refuses_outside_addresses() {
        for a in [
            "10.0.0.1",
            "192.168.1.1",
            "8.8.8.8",
            "2001:4860::1",
            "198.17.255.255",
            "198.20.0.0",
            "2001:db9::1",
            "::ffff:198.18.0.1",
            "::2",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            assert!(!is_allowed(ip(a)), "{a} must be refused");
            let err = check_allowed(ip(a), "source").unwrap_err();
            assert!(err.contains(a) && err.contains("198.18.0.0/15"), "{err}");
        }
    }

    #[test]
    fn guard_accepts_lab_addresses() {
        for a in [
            "198.18.0.1",
            "198.19.255.254",
            "198.18.0.0",
            "2001:db8::1",
            "2001:db8:ffff:ffff::1",
            "127.0.0.1",
            "127.255.0.9",
            "::1",
        ] {
            assert!(is_allowed(ip(a)), "{a} must be accepted");
            check_allowed(ip(a), "source").unwrap();
        }
    }

    #[test]
    fn mac_parsing() {
        let m: Mac = "02:0A:ff:00:10:9".parse().unwrap();
        assert_eq!(m.0, [0x02, 0x0a, 0xff, 0x00, 0x10, 0x09]);
        assert_eq!(m.to_string(), "02:0a:ff:00:10:09");
        assert_eq!("02-00-00-00-00-01".parse::<Mac>().unwrap().0[5], 1);
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:00:00", "02:00:00:00:00:zz", "002:0:0:0:0:0"] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_parsing_and_containment() {
        let p: Prefix = "198.18.7.9/15".parse().unwrap();
        assert_eq!(p.to_string(), "198.18.0.0/15");
        assert!(p.contains(ip("198.19.1.1")));
        assert!(!p.contains(ip("198.20.0.1")));
        assert!(!p.contains(ip("2001:db8::1")));
        assert!(p.is_spoofable());
        assert!("198.18.88.0/24".parse::<Prefix>().unwrap().is_spoofable());
        assert!("2001:db8:5::/48".parse::<Prefix>().unwrap().is_spoofable());
        assert!(!"198.18.0.0/14".parse::<Prefix>().unwrap().is_spoofable());
        assert!(!"10.0.0.0/8".parse::<Prefix>().unwrap().is_spoofable());
        assert!(!"2001:db8::/31".parse::<Prefix>().unwrap().is_spoofable());
        assert!(!"::/0".parse::<Prefix>().unwrap().is_spoofable());
        assert!(!"127.0.0.0/8".parse::<Prefix>().unwrap().is_spoofable());
        assert!("198.19.0.0/16".parse::<Prefix>().unwrap().is_spoofable());
        assert!("2001:db8:1::/64".parse::<Prefix>().unwrap().is_spoofable());
        assert_eq!("198.18.0.5".parse::<Prefix>().unwrap().len, 32);
        assert!("198.18.0.0/33".parse::<Prefix>().is_err());
        assert!("nope/8".parse::<Prefix>().is_err());
    }

    #[test]
    fn random_addresses_stay_inside_prefix() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for s in ["198.18.0.0/15", "198.18.88.0/30", "2001:db8::/32", "198.18.0.1/32", "0.0.0.0/0"] {
            let p: Prefix = s.parse().unwrap();
            for _ in 0..1000 {
                assert!(p.contains(p.random_addr(&mut rng)), "{s}");
            }
        }
        let p: Prefix = "198.18.0.0/15".parse().unwrap();
        let distinct: std::collections::HashSet<_> = (0..100).map(|_| p.random_addr(&mut rng)).collect();
        assert!(distinct.len() > 90);
    }

    #[test]
    fn port_ranges() {
        assert_eq!("40000-40999".parse::<PortRange>().unwrap(), PortRange { first: 40000, last: 40999 });
        assert_eq!("22".parse::<PortRange>().unwrap(), PortRange { first: 22, last: 22 });
        for bad in ["0-10", "10-5", "1-70000", "a-b", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
    }
}
