//! Address prefixes (`198.18.0.0/24`, `2001:db8::/64`, a bare address) for a door's
//! `always_allow`: sources the firewall never drops for that door's ports, even while the daemon
//! is down or failing closed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix: the network address (host bits zero) and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len`, or `None` when `len` is too long for the family or `addr` has
    /// host bits set.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let p = Prefix { addr, len };
        (len <= max_len(addr) && p.network() == addr).then_some(p)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a /0 (it matches every address of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `addr` with every bit past `len` cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `addr` lies in this prefix (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.addr.is_ipv4() && Prefix { addr, len: self.len }.network() == self.addr
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    /// `ADDR/LEN` or a bare address (a /32 or /128). The error says what would be accepted.
    fn from_str(s: &str) -> Result<Prefix, String> {
        let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let addr: IpAddr = addr.trim().parse().map_err(|_| {
            format!(
                "`{s}` is not an address prefix (expected e.g. \"198.18.0.0/24\", \"2001:db8::/64\" or one address)"
            )
        })?;
        let len = match len {
            None => max_len(addr),
            Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max_len(addr)).ok_or_else(|| {
                format!("`{s}`: the prefix length must be 0..={} for this address family", max_len(addr))
            })?,
        };
        Prefix::new(addr, len).ok_or_else(|| {
            let network = Prefix { addr, len }.network();
            format!("`{s}` has host bits set; did you mean \"{network}/{len}\"?")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        let p: Prefix = "198.18.0.0/24".parse().unwrap();
        assert_eq!((p.to_string(), p.len()), ("198.18.0.0/24".into(), 24));
        assert_eq!("198.18.0.7".parse::<Prefix>().unwrap().to_string(), "198.18.0.7/32");
        assert_eq!("2001:db8::/64".parse::<Prefix>().unwrap().to_string(), "2001:db8::/64");
        assert_eq!("2001:db8::1".parse::<Prefix>().unwrap().len(), 128);
        assert!("0.0.0.0/0".parse::<Prefix>().unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_prefixes_with_a_hint() {
        let e = "198.18.0.5/24".parse::<Prefix>().unwrap_err();
        assert!(e.contains("did you mean \"198.18.0.0/24\""), "{e}");
        for bad in ["198.18.0.0/33", "2001:db8::/129", "198.18.0.0/x", "host.example", "", "198.18.0.0/-1"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn always_allow_in_a_door_and_its_errors_name_line_and_column() {
        use crate::config::Config;
        let door = "[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n";
        let parse = |extra: &str| Config::parse(std::path::Path::new("/k.toml"), &format!("{door}{extra}"));
        let c = parse("always_allow = [\"198.18.0.0/24\", \"2001:db8::/64\"]\n").unwrap();
        let allowed: Vec<String> = c.doors[0].always_allow.iter().map(Prefix::to_string).collect();
        assert_eq!(allowed, ["198.18.0.0/24", "2001:db8::/64"]);
        assert!(parse("").unwrap().doors[0].always_allow.is_empty());
        let e = parse("always_allow = [\"198.18.0.0/24\",\n  \"198.18.0.9/24\"]\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(7), Some(3)), "{e}");
        assert!(e.message.starts_with("always_allow: `198.18.0.9/24` has host bits set"), "{e}");
        assert!(parse("always_allow = \"198.18.0.0/24\"\n").is_err(), "a list is required");
    }

    #[test]
    fn containment() {
        let p: Prefix = "198.18.0.0/24".parse().unwrap();
        assert!(p.contains("198.18.0.200".parse().unwrap()));
        assert!(p.contains("::ffff:198.18.0.3".parse().unwrap()));
        assert!(!p.contains("198.18.1.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.covers(&p) && !p.covers(&all) && p.covers(&p));
        let six: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(six.covers(&"2001:db8::/64".parse().unwrap()) && !six.covers(&p));
    }
}
