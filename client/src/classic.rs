//! knockd's classic form, `knock [-v] [-u] [-d ms] [-4|-6] host port[:tcp|udp] ...`: the host
//! resolved, its ports knocked in order, as knockd's own `knock` does.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use knock_core::Knock;

use crate::exit::Failure;
use crate::send;
use crate::KnockArgs;

/// What is wrong with a classic knock's command line or host.
#[derive(Debug, thiserror::Error)]
pub enum ClassicError {
    /// No host was given.
    #[error("usage: knock [options] host port[:tcp|udp] ... (see --help)")]
    NoHost,
    /// A host without ports.
    #[error("no ports to knock: knock [options] host port[:tcp|udp] ...")]
    NoPorts,
    /// A word that is not `port[:tcp|udp]` (the message names it and what is accepted).
    #[error("{0}")]
    BadKnock(String),
    /// The host name does not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The host has no address of the family asked for.
    #[error("{host} has no {family} address{}", fix_for(family))]
    NoAddress {
        /// The host.
        host: String,
        /// `IPv4` (-4), `IPv6` (-6) or `usable`.
        family: &'static str,
    },
}

/// What to do about a host without an address of `family`.
fn fix_for(family: &str) -> &'static str {
    match family {
        "IPv4" => "; knock it without -4, or knock an IPv4 host",
        "IPv6" => "; knock it without -6, or knock an IPv6 host",
        _ => "",
    }
}

/// `knock [options] host port[:tcp|udp] ...`.
pub fn knock(args: &KnockArgs) -> Result<(), Failure> {
    let (host, ports) = args.target.split_first().ok_or(ClassicError::NoHost)?;
    if ports.is_empty() {
        return Err(ClassicError::NoPorts.into());
    }
    let knocks = ports
        .iter()
        .map(|p| {
            let mut k: Knock = p.parse().map_err(ClassicError::BadKnock)?;
            if args.udp && !p.contains(':') {
                k.proto = knock_core::Proto::Udp;
            }
            Ok(k)
        })
        .collect::<Result<Vec<_>, ClassicError>>()?;
    let server = resolve(host, args.ipv4, args.ipv6)?;
    Ok(send::send_sequence(server, &knocks, Duration::from_millis(args.delay.unwrap_or(0)), |_, k| {
        if args.verbose {
            println!("hitting {} {}:{}", k.proto, server, k.port);
        }
    })?)
}

/// The first address of `host`, of the family `-4` or `-6` asks for.
fn resolve(host: &str, v4: bool, v6: bool) -> Result<IpAddr, ClassicError> {
    let addrs =
        (host, 0).to_socket_addrs().map_err(|source| ClassicError::Resolve { host: host.to_string(), source })?;
    addrs.map(|a| a.ip()).find(|ip| (!v4 || ip.is_ipv4()) && (!v6 || ip.is_ipv6())).ok_or_else(|| {
        let family = if v4 {
            "IPv4"
        } else if v6 {
            "IPv6"
        } else {
            "usable"
        };
        ClassicError::NoAddress { host: host.to_string(), family }
    })
}
