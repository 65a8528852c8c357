//! The names inside table `inet <table>` of the nftables backend: its sets and chains, which
//! the ruleset creates, grants and revokes change, and the watch recognises when they are
//! deleted.

/// The default table name (`table inet knockd`).
pub const DEFAULT_TABLE: &str = "knockd";
/// The set of protected `l4proto . port` pairs.
pub const PROTECTED_SET: &str = "protected";
/// The IPv4 grants: `ipv4_addr . inet_proto . inet_service`, with timeouts.
pub const GRANTS4_SET: &str = "grants4";
/// The IPv6 grants: `ipv6_addr . inet_proto . inet_service`, with timeouts.
pub const GRANTS6_SET: &str = "grants6";
/// The IPv4 `always_allow` ranges: `ipv4_addr . inet_proto . inet_service`, intervals.
pub const ALLOW4_SET: &str = "allow4";
/// The IPv6 `always_allow` ranges: `ipv6_addr . inet_proto . inet_service`, intervals.
pub const ALLOW6_SET: &str = "allow6";
/// The base chain that judges connections before DNAT (hook prerouting, priority -150).
pub const PREROUTING_CHAIN: &str = "prerouting";
/// The base chain that judges what is delivered to this host, after NAT (hook input).
pub const INPUT_CHAIN: &str = "input";
/// The base chains of the table.
pub const CHAINS: [&str; 2] = [PREROUTING_CHAIN, INPUT_CHAIN];
