//! The doors' `always_allow` ranges as firewall elements: `prefix . l4proto . port`, one per
//! range and port of the door, so an always-allowed source passes only to the ports of the
//! doors that list it.
//!
//! The elements live in interval sets of the table (`allow4`, `allow6`) that the kernel keeps
//! when the daemon dies: they work while the daemon is down or failing closed. The kernel
//! refuses overlapping intervals in one set, so a range inside another one for the same port is
//! left out (prefixes either nest or are disjoint, so what remains never overlaps).

use knock_core::config::{Config, Door, OpenPort, Prefix};

/// Sources in `prefixes` pass to `ports` whatever is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// The source prefixes.
    pub prefixes: Vec<Prefix>,
    /// The ports they reach.
    pub ports: Vec<OpenPort>,
}

impl Allowed {
    /// A door's `always_allow` (None when it has none or opens no port through the firewall).
    pub fn of_door(door: &Door) -> Option<Allowed> {
        let firewall = door.action == knock_core::config::Action::Firewall;
        (firewall && !door.always_allow.is_empty() && !door.open.is_empty())
            .then(|| Allowed { prefixes: door.always_allow.clone(), ports: door.open.clone() })
    }

    /// Every door's `always_allow`.
    pub fn of_config(config: &Config) -> Vec<Allowed> {
        config.doors.iter().filter_map(Allowed::of_door).collect()
    }
}

/// One element of an allow set: `prefix . proto . port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowElement {
    /// Source prefix.
    pub prefix: Prefix,
    /// Destination port and protocol.
    pub port: OpenPort,
}

/// The elements of `allowed`, sorted, without duplicates and without a prefix covered by
/// another one for the same port. Returns (IPv4, IPv6).
pub fn elements(allowed: &[Allowed]) -> (Vec<AllowElement>, Vec<AllowElement>) {
    let mut all: Vec<AllowElement> = allowed
        .iter()
        .flat_map(|a| {
            a.prefixes.iter().flat_map(|&prefix| a.ports.iter().map(move |&port| AllowElement { prefix, port }))
        })
        .collect();
    all.sort_by_key(|e| (e.port.proto, e.port.port, e.prefix.addr().is_ipv6(), e.prefix.len(), e.prefix));
    all.dedup();
    // Sorted by length within a port, so any covering prefix comes before what it covers.
    let mut kept: Vec<AllowElement> = Vec::with_capacity(all.len());
    for e in all {
        if !kept.iter().any(|k| k.port == e.port && k.prefix.covers(&e.prefix)) {
            kept.push(e);
        }
    }
    kept.sort_by_key(|e| (e.prefix, e.port.proto, e.port.port));
    kept.into_iter().partition(|e| e.prefix.addr().is_ipv4())
}

/// An element in nft's syntax: `198.18.0.0/24 . tcp . 22`.
pub fn nft_element(e: &AllowElement) -> String {
    format!("{} . {} . {}", e.prefix, e.port.proto, e.port.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(prefixes: &[&str], ports: &[&str]) -> Allowed {
        Allowed {
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn per_port_elements_split_by_family_without_overlaps() {
        let a = [
            allowed(&["198.18.0.0/24", "2001:db8::/64", "198.18.0.7"], &["22/tcp"]),
            allowed(&["198.18.0.0/16", "198.18.5.0/24"], &["8080/tcp", "22/tcp"]),
            allowed(&["198.19.0.0/24"], &["53/udp"]),
        ];
        let (v4, v6) = elements(&a);
        let v4: Vec<String> = v4.iter().map(nft_element).collect();
        let v6: Vec<String> = v6.iter().map(nft_element).collect();
        // 198.18.0.0/24, 198.18.0.7 and 198.18.5.0/24 lie inside 198.18.0.0/16 for 22/tcp.
        assert_eq!(v4, ["198.18.0.0/16 . tcp . 22", "198.18.0.0/16 . tcp . 8080", "198.19.0.0/24 . udp . 53"]);
        assert_eq!(v6, ["2001:db8::/64 . tcp . 22"]);
        assert_eq!(elements(&[]), (vec![], vec![]));
    }
}
