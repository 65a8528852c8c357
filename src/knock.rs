//! The vocabulary shared by every module: a knock (protocol + port), protocols and port ranges.

use std::fmt;
use std::str::FromStr;

/// Transport protocol of one knock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// A TCP SYN.
    Tcp,
    /// A UDP datagram.
    Udp,
}

impl Proto {
    /// The lower-case name used in configs and sequence files.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The IP protocol number (6 or 17).
    pub fn ip_number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(format!("unknown protocol `{other}` (expected tcp or udp)")),
        }
    }
}

/// One knock: a packet of `proto` to `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Knock {
    /// Destination port.
    pub port: u16,
    /// TCP SYN or UDP datagram.
    pub proto: Proto,
}

impl Knock {
    /// A TCP knock on `port`.
    pub fn tcp(port: u16) -> Self {
        Knock { port, proto: Proto::Tcp }
    }
    /// A UDP knock on `port`.
    pub fn udp(port: u16) -> Self {
        Knock { port, proto: Proto::Udp }
    }
}

impl fmt::Display for Knock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.port, self.proto)
    }
}

impl FromStr for Knock {
    type Err = String;
    /// Parses knockd's `port[:tcp|udp]` form; the protocol defaults to TCP.
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, proto) = match s.split_once(':') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (s, Proto::Tcp),
        };
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a port (expected 1-65535, optionally :tcp or :udp)"))?;
        if port == 0 {
            return Err(format!("`{s}`: port 0 cannot be knocked"));
        }
        Ok(Knock { port, proto })
    }
}

/// An inclusive range of ports, `first..=last`, with `first <= last` and `first > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// A range from `first` to `last` inclusive; `None` when empty or starting at port 0.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first > 0 && first <= last).then_some(PortRange { first, last })
    }
    /// First port of the range.
    pub fn first(&self) -> u16 {
        self.first
    }
    /// Last port of the range.
    pub fn last(&self) -> u16 {
        self.last
    }
    /// Number of ports in the range (1..=65535).
    pub fn len(&self) -> u32 {
        u32::from(self.last - self.first) + 1
    }
    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Whether `port` lies inside the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = String;
    /// Parses `first-last` (or a single port).
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| format!("`{s}` is not a port range (expected e.g. 40000-42047)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let p = parse(s)?;
                (p, p)
            }
        };
        PortRange::new(first, last)
            .ok_or_else(|| format!("`{s}`: a range must start above 0 and not end before it starts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knock_parses_knockd_forms() {
        assert_eq!("7000".parse::<Knock>().unwrap(), Knock::tcp(7000));
        assert_eq!("8000:udp".parse::<Knock>().unwrap(), Knock::udp(8000));
        assert_eq!("9000:TCP".parse::<Knock>().unwrap(), Knock::tcp(9000));
        assert!("0".parse::<Knock>().is_err());
        assert!("70000".parse::<Knock>().is_err());
        assert!("22:icmp".parse::<Knock>().is_err());
    }

    #[test]
    fn range_parses_and_rejects() {
        let r: PortRange = "40000-42047".parse().unwrap();
        assert_eq!(r.len(), 2048);
        assert!(r.contains(40000) && r.contains(42047) && !r.contains(42048));
        assert!("5-4".parse::<PortRange>().is_err());
        assert!("0-4".parse::<PortRange>().is_err());
        assert_eq!("22".parse::<PortRange>().unwrap().len(), 1);
    }
}
