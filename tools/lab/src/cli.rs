//! Command line: the clap definitions of knock-lab's subcommands and their
//! options. Parsing of addresses, MACs, prefixes and knocks lives with the
//! types (`addr`, `frame`); range checks against the hard caps happen in the
//! commands themselves.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::addr::{Mac, PortRange, Prefix};
use crate::frame::{Knock, Proto};

const GUARD_NOTE: &str = "Network guard: every packet knock-lab emits must have its source AND \
destination in 198.18.0.0/15, 2001:db8::/32, 127.0.0.0/8 or ::1; anything else is refused \
before a single packet is sent. Every command is bounded by a packet count and a time limit.";

/// Lab tool for the port knocker's end-to-end tests: replays captured knocks,
/// sends crafted knock sequences and runs bounded spoofed-source floods inside
/// test network namespaces.
#[derive(Debug, Parser)]
#[command(name = "knock-lab", version, after_help = GUARD_NOTE)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-inject every frame of a pcap file (byte-exact unless rewritten).
    #[command(after_help = "Example:\n  knock-lab replay --pcap knocks.pcap --iface veth0 --src 198.18.88.3")]
    Replay(ReplayArgs),
    /// Send crafted knocks (TCP SYN / UDP) in exactly the given order.
    #[command(after_help = "Example:\n  knock-lab send --iface veth0 --src 198.18.88.1 --dst 198.18.88.2 \
--src-mac 02:00:00:00:00:01 --dst-mac 02:00:00:00:00:02 --knocks 40001:tcp,40002:udp,40003")]
    Send(SendArgs),
    /// Send a bounded flood of TCP SYNs / UDP datagrams from random spoofed sources.
    #[command(after_help = "Example:\n  knock-lab flood --iface veth0 --dst 198.18.88.2 --src-mac 02:00:00:00:00:01 \
--dst-mac 02:00:00:00:00:02 --ports 40000-40999 --count 200000 --max-seconds 10")]
    Flood(FloodArgs),
    /// Serve an SSH-like TCP service: send a banner, echo every line (bounded in time).
    Serve(ServeArgs),
    /// Connect to a TCP port; optionally hold the session, checking echoes. Exit 0 on success.
    Probe(ProbeArgs),
    /// Time knock -> grant from outside: the clients' last knock on the server's interface to
    /// the new nftables set element (one line per grant; sends nothing).
    #[command(after_help = "Example (in the server's namespace):\n  knock-lab grants --iface br0 --clients \
198.18.0.2,2001:db8::2 --knock-filter 'dst portrange 40000-42047' --max-seconds 60")]
    Grants(GrantsArgs),
    /// Write a capture file instead of sending: a random flood with valid sequences woven in
    /// (for `knockd replay`'s tests and benchmark). Sends nothing.
    #[command(after_help = "Example:\n  knock-lab pcap --out flood.pcap --packets 5000000 --ports 40000-42047 \
--knocks 40001,40517,41003,40222,41999,40100,40777,41500")]
    Pcap(PcapArgs),
}

#[derive(Debug, Args)]
pub struct PcapArgs {
    /// The file to write (classic pcap, Ethernet, microsecond timestamps).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Flood packets (max 50000000); the valid sequences come on top.
    #[arg(long, value_name = "N")]
    pub packets: u64,
    /// Destination of every packet.
    #[arg(long, value_name = "ADDR", default_value = "198.18.0.1")]
    pub dst: IpAddr,
    /// Flood destination ports: random in A-B (inclusive).
    #[arg(long, value_name = "A-B", default_value = "40000-42047")]
    pub ports: PortRange,
    /// Protocol of the flood packets.
    #[arg(long, value_name = "PROTO", default_value = "tcp")]
    pub proto: Proto,
    /// Prefix the flood's random source addresses are drawn from (inside 198.18.0.0/15 or
    /// 2001:db8::/32).
    #[arg(long, value_name = "PREFIX", default_value = "198.18.0.0/15")]
    pub sources: Prefix,
    /// A valid sequence to weave in (PORT[:tcp|:udp], comma- or space-separated, e.g. the
    /// ports of `knock --dry-run`); repeat for more sequences, spread evenly over the file.
    #[arg(long, value_name = "LIST")]
    pub knocks: Vec<String>,
    /// Source address of the valid sequences.
    #[arg(long, value_name = "ADDR", default_value = "198.18.0.2")]
    pub client: IpAddr,
    /// Capture-time rate of the flood: timestamps advance 1/N s per packet.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub rate: u64,
    /// Unix time of the first packet (default: now).
    #[arg(long, value_name = "SECS")]
    pub start: Option<u64>,
    /// Seed for a reproducible file (default: random).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct GrantsArgs {
    /// Interface the knocks arrive on (the server's).
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Sources whose knocks are timed, comma-separated.
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true, num_args = 1..)]
    pub clients: Vec<IpAddr>,
    /// pcap filter expression that selects the knocks among the clients' packets.
    #[arg(long, value_name = "EXPR", default_value = "tcp or udp")]
    pub knock_filter: String,
    /// Stop after T seconds (max 3600).
    #[arg(long, value_name = "T")]
    pub max_seconds: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`::` listens on IPv4 and IPv6).
    #[arg(long, default_value = "::")]
    pub listen: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Exit after this many seconds (max 3600).
    #[arg(long, value_name = "T", default_value_t = 600)]
    pub max_seconds: u64,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Address to connect to (must pass the network guard).
    #[arg(long, value_name = "ADDR")]
    pub addr: IpAddr,
    /// Port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// Give up connecting after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timeout_ms: u64,
    /// After connecting, keep the session this long, exchanging a line every 200 ms; every
    /// line must be echoed back.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub hold_ms: u64,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// pcap file to replay (Ethernet, or Linux cooked SLL/SLL2 as written by
    /// `tcpdump -i any -w`).
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Interface to inject on (must be an Ethernet-type interface).
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Rewrite every packet's IP source to ADDR (same family as the captured
    /// source); the IPv4 header and TCP/UDP checksums are recomputed.
    #[arg(long, value_name = "ADDR")]
    pub src: Option<IpAddr>,
    /// Rewrite the Ethernet source MAC.
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<Mac>,
    /// Rewrite the Ethernet destination MAC (required for cooked captures,
    /// which carry none).
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Option<Mac>,
    /// Recompute the IPv4 header and TCP/UDP checksums even without --src
    /// (for captures taken on a sender with checksum offload).
    #[arg(long)]
    pub fix_checksums: bool,
    /// Skip frames that are not IPv4/IPv6 TCP/UDP (ARP, ICMP, ...) instead of
    /// refusing the whole file.
    #[arg(long)]
    pub skip_unsupported: bool,
    /// Pause between two frames, in milliseconds (original timing is not kept).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub delay_ms: u64,
    /// Stop (with an error) if not done after this many seconds (max 120).
    #[arg(long, value_name = "T", default_value_t = 30)]
    pub max_seconds: u64,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Interface to inject on.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// IP source address (may be spoofed; must pass the network guard).
    #[arg(long, value_name = "ADDR")]
    pub src: IpAddr,
    /// IP destination address (same family as --src).
    #[arg(long, value_name = "ADDR")]
    pub dst: IpAddr,
    /// Ethernet source MAC.
    #[arg(long, value_name = "MAC")]
    pub src_mac: Mac,
    /// Ethernet destination MAC (the receiving interface's, or its gateway's).
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Mac,
    /// Knocks in sending order: PORT[:tcp|:udp], comma-separated (bare port =
    /// tcp); repeat a knock to send it twice.
    #[arg(long, value_name = "LIST", value_delimiter = ',', required = true, num_args = 1..)]
    pub knocks: Vec<Knock>,
    /// Pause between two packets, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub delay_ms: u64,
    /// Send each knock N times in a row. The copies are byte-identical
    /// (like a network duplicate or SYN retransmit) unless --vary-duplicates.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat_each: u64,
    /// Give every copy of a repeated knock its own source port, sequence
    /// number and IP id.
    #[arg(long)]
    pub vary_duplicates: bool,
    /// Fixed TCP/UDP source port (default: random in 32768-60999 per knock).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub src_port: Option<u16>,
    /// UDP payload.
    #[arg(long, value_name = "TEXT", default_value = "knock")]
    pub udp_payload: String,
    /// Stop (with an error) if not done after this many seconds (max 120).
    #[arg(long, value_name = "T", default_value_t = 30)]
    pub max_seconds: u64,
    /// Do not print one line per packet.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct FloodArgs {
    /// Interface to inject on.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// IP destination address (same family as --sources).
    #[arg(long, value_name = "ADDR")]
    pub dst: IpAddr,
    /// Ethernet destination MAC.
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Mac,
    /// Ethernet source MAC (the same for every spoofed source).
    #[arg(long, value_name = "MAC")]
    pub src_mac: Mac,
    /// Destination ports: random in A-B (inclusive).
    #[arg(long, value_name = "A-B", required_unless_present = "knocks", conflicts_with = "knocks")]
    pub ports: Option<PortRange>,
    /// Instead of random ports: send these knocks (PORT[:tcp|:udp], comma-separated) in order,
    /// round after round, each round from one random source address and port of --sources
    /// (a replayed prefix, for instance).
    #[arg(long, value_name = "LIST", value_delimiter = ',', num_args = 1..)]
    pub knocks: Option<Vec<Knock>>,
    /// Protocol of every packet.
    #[arg(long, value_name = "PROTO", default_value = "tcp")]
    pub proto: Proto,
    /// Stop after N packets (max 5000000).
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// Stop after T seconds (max 120), whichever comes first.
    #[arg(long, value_name = "T")]
    pub max_seconds: u64,
    /// Prefix the random source addresses are drawn from; must lie inside
    /// 198.18.0.0/15 or 2001:db8::/32.
    #[arg(long, value_name = "PREFIX", default_value = "198.18.0.0/15")]
    pub sources: Prefix,
    /// Seed for a reproducible flood (default: random).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Pace the flood to about N packets per second (default: as fast as it goes).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pps: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_parses_knock_list() {
        let cli = Cli::try_parse_from([
            "knock-lab",
            "send",
            "--iface",
            "v0",
            "--src",
            "198.18.88.1",
            "--dst",
            "198.18.88.2",
            "--src-mac",
            "02:00:00:00:00:01",
            "--dst-mac",
            "02:00:00:00:00:02",
            "--knocks",
            "40001:tcp,40002:udp,40003",
            "--repeat-each",
            "2",
        ])
        .unwrap();
        let Command::Send(a) = cli.command else { panic!("not send") };
        assert_eq!(a.knocks.len(), 3);
        assert_eq!(a.knocks[1], Knock { port: 40002, proto: Proto::Udp });
        assert_eq!(a.repeat_each, 2);
    }

    #[test]
    fn flood_defaults_and_bad_values() {
        let base = [
            "knock-lab",
            "flood",
            "--iface",
            "v0",
            "--dst",
            "198.18.88.2",
            "--src-mac",
            "02:00:00:00:00:01",
            "--dst-mac",
            "02:00:00:00:00:02",
            "--ports",
            "40000-40999",
            "--count",
            "10",
            "--max-seconds",
            "1",
        ];
        let cli = Cli::try_parse_from(base).unwrap();
        let Command::Flood(a) = cli.command else { panic!("not flood") };
        assert!(a.knocks.is_none());
        // --knocks instead of --ports; not both, and one of them.
        let mut rounds = base.to_vec();
        rounds.splice(10..12, ["--knocks", "40001,40002:udp"]);
        let Command::Flood(r) = Cli::try_parse_from(&rounds).unwrap().command else { panic!("not flood") };
        assert_eq!(r.knocks.map(|k| k.len()), Some(2));
        let mut both = base.to_vec();
        both.extend(["--knocks", "40001"]);
        assert!(Cli::try_parse_from(both).is_err());
        let mut neither = base.to_vec();
        neither.drain(10..12);
        assert!(Cli::try_parse_from(neither).is_err());
        assert_eq!(a.sources.to_string(), "198.18.0.0/15");
        assert_eq!(a.proto, Proto::Tcp);
        let mut bad = base.to_vec();
        bad.extend(["--proto", "icmp"]);
        assert!(Cli::try_parse_from(bad).is_err());
        let mut bad = base.to_vec();
        bad[13] = "9-1";
        assert!(Cli::try_parse_from(bad).is_err());
    }
}
