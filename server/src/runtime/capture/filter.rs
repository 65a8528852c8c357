//! The BPF filter compiled from the doors: only knocks into some door's knock range reach
//! user space, everything else is dropped in the kernel.
//!
//! The filter passes TCP segments with SYN set and ACK clear, and UDP datagrams, whose
//! destination port lies anywhere in a door's knock range (the *whole* range: every miss must
//! count, docs/PROTOCOL.md section 7), for the door's protocols, to the door's addresses when
//! it names any. `tcp[tcpflags]` only matches IPv4, so IPv6 is matched by offset into the
//! fixed header (no extension headers): next header at `ip6[6]`, destination port at
//! `ip6[42:2]`, TCP flags at `ip6[53]`.

use std::net::IpAddr;

use knock_core::config::{Door, TcpFlagRule};
use knock_core::matcher::{DoorRules, KnockSet};
use knock_core::sequence::Alphabet;
use knock_core::{Knock, Proto};

/// A filter that passes nothing, for a daemon without doors: only frames of length 0, which
/// do not exist. (libpcap refuses to compile a filter it can prove rejects everything.)
const NOTHING: &str = "less 0";

/// The BPF expression passing the knocks of our `doors` (whole knock ranges, SYN only).
pub fn bpf_filter(doors: &[Door]) -> String {
    let rules: Vec<DoorRules> = doors
        .iter()
        .map(|d| DoorRules {
            knocks: KnockSet::Range(d.alphabet.clone()),
            tcp_flags: TcpFlagRule::SYN_ONLY,
            burn_at: Some(2),
            strict_order: false,
            addresses: d.addresses.clone(),
            seq_timeout_ms: 0,
            misses: 0,
            per_port: true,
        })
        .collect();
    bpf_filter_rules(&rules)
}

/// The BPF expression passing what each door's matching rules can use: its knock range or
/// exact knocks (knockd's doors), TCP with its flags rule, to its addresses.
pub fn bpf_filter_rules(doors: &[DoorRules]) -> String {
    let terms: Vec<String> = doors.iter().flat_map(door_terms).collect();
    if terms.is_empty() {
        NOTHING.to_string()
    } else {
        terms.join(" or ")
    }
}

/// One term per address family the door listens on.
fn door_terms(door: &DoorRules) -> Vec<String> {
    let v4: Vec<IpAddr> = door.addresses.iter().copied().filter(IpAddr::is_ipv4).collect();
    let v6: Vec<IpAddr> = door.addresses.iter().copied().filter(IpAddr::is_ipv6).collect();
    let any = door.addresses.is_empty();
    let mut terms = Vec::new();
    for (family, addrs) in [(Family::V4, v4), (Family::V6, v6)] {
        if any || !addrs.is_empty() {
            let knocks = knock_terms(family, &door.knocks, door.tcp_flags);
            if !knocks.is_empty() {
                terms.push(family_term(family, &addrs, &knocks));
            }
        }
    }
    terms
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// `(FAMILY and (dst host A or ...) and (KNOCK or ...))`; no address test when `addrs` is empty.
fn family_term(family: Family, addrs: &[IpAddr], knocks: &[String]) -> String {
    let mut parts = vec![match family {
        Family::V4 => "ip".to_string(),
        Family::V6 => "ip6".to_string(),
    }];
    if !addrs.is_empty() {
        let hosts: Vec<String> = addrs.iter().map(|a| format!("dst host {a}")).collect();
        parts.push(format!("({})", hosts.join(" or ")));
    }
    parts.push(format!("({})", knocks.join(" or ")));
    format!("({})", parts.join(" and "))
}

/// The per-protocol knock tests of a knock set.
fn knock_terms(family: Family, knocks: &KnockSet, flags: TcpFlagRule) -> Vec<String> {
    match knocks {
        KnockSet::Range(alphabet) => range_terms(family, alphabet, flags),
        KnockSet::Exact(list) => [Proto::Tcp, Proto::Udp]
            .into_iter()
            .filter_map(|proto| {
                let ports: Vec<u16> = list.iter().filter(|k| k.proto == proto).map(|k: &Knock| k.port).collect();
                (!ports.is_empty()).then(|| {
                    let dport = |p: &u16| match family {
                        Family::V4 => format!("dst port {p}"),
                        Family::V6 => format!("ip6[42:2] == {p}"),
                    };
                    let alternatives: Vec<String> = ports.iter().map(dport).collect();
                    transport(family, proto, &format!("({})", alternatives.join(" or ")), flags)
                })
            })
            .collect(),
    }
}

fn range_terms(family: Family, alphabet: &Alphabet, flags: TcpFlagRule) -> Vec<String> {
    let range = alphabet.range();
    let ports = match family {
        Family::V4 => format!("dst portrange {}-{}", range.first(), range.last()),
        Family::V6 => format!("ip6[42:2] >= {} and ip6[42:2] <= {}", range.first(), range.last()),
    };
    alphabet.protos().iter().map(|&p| transport(family, p, &ports, flags)).collect()
}

/// One protocol's test: the protocol, the port test, and for TCP the flags rule.
/// `tcp[tcpflags]` matches IPv4 only, so IPv6 reads the fixed header by offset.
fn transport(family: Family, proto: Proto, ports: &str, flags: TcpFlagRule) -> String {
    let mask = flags.set | flags.clear;
    match (family, proto) {
        (Family::V4, Proto::Tcp) if mask != 0 => {
            format!("(tcp and {ports} and tcp[tcpflags] & {mask:#04x} == {:#04x})", flags.set)
        }
        (Family::V4, Proto::Tcp) => format!("(tcp and {ports})"),
        (Family::V4, Proto::Udp) => format!("(udp and {ports})"),
        (Family::V6, Proto::Tcp) if mask != 0 => {
            format!("(ip6[6] == 6 and {ports} and ip6[53] & {mask:#04x} == {:#04x})", flags.set)
        }
        (Family::V6, Proto::Tcp) => format!("(ip6[6] == 6 and {ports})"),
        (Family::V6, Proto::Udp) => format!("(ip6[6] == 17 and {ports})"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    use knock_core::config::Config;
    use pcap::{BpfProgram, Capture, Linktype};

    use super::*;
    use crate::runtime::capture::testframes::{self as tf, Link, V4_DST, V4_SRC, V6_DST, V6_SRC};

    const LINKS: [Link; 3] = [Link::Ethernet, Link::LinuxSll, Link::LinuxSll2];

    /// Doors parsed from config text, so the tests follow the config's own rules.
    fn doors(door_tables: &str) -> Vec<Door> {
        let text = format!("[server]\nstate_dir = \"state\"\n{door_tables}");
        match Config::parse(Path::new("/etc/knockd/knockd.toml"), &text) {
            Ok(config) => config.doors,
            Err(e) => panic!("test config does not parse: {e}"),
        }
    }

    fn door(name: &str, extra: &str) -> String {
        format!("[[door]]\nname = \"{name}\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n{extra}\n")
    }

    fn compile(link: Link, expr: &str) -> BpfProgram {
        let dead = Capture::dead(Linktype(link.dlt()));
        let compiled = dead.and_then(|cap| cap.compile(expr, true));
        match compiled {
            Ok(program) => program,
            Err(e) => panic!("`{expr}` does not compile for {link:?}: {e}"),
        }
    }

    /// Checks `cases` (frame network layer, expected verdict) on every link type.
    fn check(expr: &str, cases: &[(&str, Vec<u8>, bool)]) {
        for link in LINKS {
            let program = compile(link, expr);
            for (what, l3, want) in cases {
                let frame = tf::frame(link, l3);
                assert_eq!(program.filter(&frame), *want, "{what} on {link:?}: {expr}");
            }
        }
    }

    fn v4_tcp(dport: u16, flags: u8) -> Vec<u8> {
        tf::ipv4(V4_SRC, V4_DST, 6, &tf::tcp(dport, flags))
    }
    fn v6_tcp(dport: u16, flags: u8) -> Vec<u8> {
        tf::ipv6(V6_SRC, V6_DST, 6, &tf::tcp(dport, flags))
    }
    fn v4_udp(dport: u16) -> Vec<u8> {
        tf::ipv4(V4_SRC, V4_DST, 17, &tf::udp(dport, b"knock"))
    }
    fn v6_udp(dport: u16) -> Vec<u8> {
        tf::ipv6(V6_SRC, V6_DST, 17, &tf::udp(dport, b"knock"))
    }

    const SYN: u8 = tf::SYN;
    const SYN_ACK: u8 = tf::SYN | tf::ACK;
    const ACK: u8 = tf::ACK;

    #[test]
    fn tcp_door_passes_only_syns_in_its_whole_range() {
        let expr = bpf_filter(&doors(&door("ssh", "knock_ports = \"40000-40999\"")));
        check(
            &expr,
            &[
                ("v4 SYN first port", v4_tcp(40000, SYN), true),
                ("v4 SYN last port", v4_tcp(40999, SYN), true),
                ("v4 SYN mid range", v4_tcp(40517, SYN), true),
                ("v4 SYN+ECE+CWR", v4_tcp(40517, SYN | 0xc0), true),
                ("v6 SYN first port", v6_tcp(40000, SYN), true),
                ("v6 SYN last port", v6_tcp(40999, SYN), true),
                ("v6 SYN+ECE+CWR", v6_tcp(40517, SYN | 0xc0), true),
                ("v4 SYN-ACK", v4_tcp(40500, SYN_ACK), false),
                ("v6 SYN-ACK", v6_tcp(40500, SYN_ACK), false),
                ("v4 ACK", v4_tcp(40500, ACK), false),
                ("v6 ACK", v6_tcp(40500, ACK), false),
                ("v4 below range", v4_tcp(39999, SYN), false),
                ("v4 above range", v4_tcp(41000, SYN), false),
                ("v6 below range", v6_tcp(39999, SYN), false),
                ("v6 above range", v6_tcp(41000, SYN), false),
                ("v4 UDP to a tcp-only door", v4_udp(40500), false),
                ("v6 UDP to a tcp-only door", v6_udp(40500), false),
                ("v4 ICMP", tf::ipv4(V4_SRC, V4_DST, 1, &[8, 0, 0, 0, 0x9c, 0x40, 0, 0]), false),
                ("v6 ICMPv6", tf::ipv6(V6_SRC, V6_DST, 58, &tf::tcp(40500, SYN)), false),
            ],
        );
    }

    #[test]
    fn udp_door_passes_datagrams_in_range() {
        let extra = "knock_ports = \"41000-41099\"\nprotocols = [\"udp\", \"tcp\"]";
        let expr = bpf_filter(&doors(&door("vpn", extra)));
        check(
            &expr,
            &[
                ("v4 UDP", v4_udp(41000), true),
                ("v6 UDP", v6_udp(41099), true),
                ("v4 SYN", v4_tcp(41050, SYN), true),
                ("v6 SYN", v6_tcp(41050, SYN), true),
                ("v4 UDP out of range", v4_udp(41100), false),
                ("v6 UDP out of range", v6_udp(40999), false),
            ],
        );
    }

    #[test]
    fn addresses_restrict_the_destination() {
        let other4 = Ipv4Addr::new(198, 18, 78, 1);
        let other6 = Ipv6Addr::new(0x2001, 0xdb8, 0x78, 0, 0, 0, 0, 1);
        let extra = format!("knock_ports = \"40000-40099\"\naddresses = [\"{V4_DST}\", \"{V6_DST}\"]");
        let expr = bpf_filter(&doors(&door("ssh", &extra)));
        check(
            &expr,
            &[
                ("v4 to the door", v4_tcp(40001, SYN), true),
                ("v6 to the door", v6_tcp(40001, SYN), true),
                ("v4 elsewhere", tf::ipv4(V4_SRC, other4, 6, &tf::tcp(40001, SYN)), false),
                ("v6 elsewhere", tf::ipv6(V6_SRC, other6, 6, &tf::tcp(40001, SYN)), false),
            ],
        );
    }

    #[test]
    fn an_ipv4_only_door_passes_no_ipv6() {
        let extra = format!("knock_ports = \"40000-40099\"\naddresses = [\"{V4_DST}\"]");
        let expr = bpf_filter(&doors(&door("ssh", &extra)));
        assert!(!expr.contains("ip6"), "{expr}");
        check(&expr, &[("v4", v4_tcp(40001, SYN), true), ("v6", v6_tcp(40001, SYN), false)]);
    }

    #[test]
    fn several_doors_pass_each_range() {
        let text = door("a", "knock_ports = \"40000-40009\"")
            + &door("b", "knock_ports = \"50000-50009\"\nprotocols = [\"udp\"]");
        let expr = bpf_filter(&doors(&text));
        check(
            &expr,
            &[
                ("a v4", v4_tcp(40009, SYN), true),
                ("b v6", v6_udp(50000), true),
                ("a udp", v4_udp(40005), false),
                ("b tcp", v6_tcp(50005, SYN), false),
                ("between", v4_tcp(45000, SYN), false),
            ],
        );
    }

    #[test]
    fn knockd_doors_pass_only_their_ports_with_their_flags() {
        let rules = DoorRules {
            knocks: KnockSet::Exact(vec![Knock::tcp(7000), Knock::udp(8000), Knock::tcp(9000)]),
            tcp_flags: TcpFlagRule { set: 0x01, clear: 0x10 }, // knockd's `tcpflags = fin,!ack`
            burn_at: None,
            strict_order: true,
            addresses: vec![],
            seq_timeout_ms: 0,
            misses: 0,
            per_port: false,
        };
        let expr = bpf_filter_rules(&[rules]);
        check(
            &expr,
            &[
                ("v4 FIN to 7000", v4_tcp(7000, 0x01), true),
                ("v6 FIN to 9000", v6_tcp(9000, 0x01), true),
                ("v4 SYN to 7000", v4_tcp(7000, 0x02), false),
                ("v4 FIN-ACK to 7000", v4_tcp(7000, 0x11), false),
                ("v6 FIN to 7001", v6_tcp(7001, 0x01), false),
                ("v4 UDP to 8000", v4_udp(8000), true),
                ("v6 UDP to 8000", v6_udp(8000), true),
                ("v4 UDP to 7000", v4_udp(7000), false),
                ("v4 FIN to udp-only 8000", v4_tcp(8000, 0x01), false),
            ],
        );
        let any = DoorRules {
            knocks: KnockSet::Exact(vec![Knock::tcp(7000)]),
            tcp_flags: TcpFlagRule::ANY,
            burn_at: None,
            strict_order: true,
            addresses: vec![],
            seq_timeout_ms: 0,
            misses: 0,
            per_port: false,
        };
        check(&bpf_filter_rules(&[any]), &[("v4 ACK to 7000", v4_tcp(7000, 0x10), true)]);
    }

    #[test]
    fn no_doors_pass_nothing() {
        let expr = bpf_filter(&[]);
        check(&expr, &[("v4", v4_tcp(40001, SYN), false), ("v6", v6_udp(40001), false)]);
    }
}
