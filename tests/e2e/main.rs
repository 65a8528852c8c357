//! End-to-end tests: the real `knockd` and `knock` binaries, real packets through libpcap and
//! a real nftables ruleset, in network namespaces each test makes for itself; the daemon's
//! firewall backends and live capture against a real kernel (`backends`); knock-lab's own test
//! (`lab_tool`); `knockd replay` on a real capture (`replay`); the command lines' words pinned in golden files (`cli`, `generate`).
//!
//! The tests that need root (namespaces, nftables, iptables) are here, in this one binary:
//! `cargo test --test e2e`, as root, after `cargo build --workspace` (the tests run the binaries
//! it builds next to this one). The README's test command does both. The namespaces come from
//! knock-test-support.

mod attacks;
mod backends;
mod cli;
mod file_mode;
mod generate;
mod ha;
mod handover;
mod keys;
mod knockd_compat;
mod lab;
mod lab_tool;
mod lockout;
mod lossy;
mod one_time;
mod recovery;
mod replay;
mod service;

/// Every test that makes namespaces starts here: without root it fails, saying why, instead of
/// passing.
pub use knock_test_support::require_root;

/// A hotp door with short times for tests.
pub fn hotp_door(name: &str, open: &str, extra: &str) -> String {
    format!(
        "[[door]]\nname = \"{name}\"\nmode = \"hotp\"\nopen = [\"{open}\"]\nkeys = \"keys/{name}\"\nopen_for = \"4s\"\nseq_timeout = \"2s\"\n{extra}\n"
    )
}

/// Makes the client fall behind the server's window: `n` knocks of `profile` are sent and lost
/// on the client's way out (an nftables drop rule in its namespace, removed afterwards).
pub fn lose_knocks(lab: &lab::Lab, profile: &str, n: usize) {
    use lab::Host;
    let drop_all = "add table inet lost; add chain inet lost out { type filter hook output priority 0; }; \
                    add rule inet lost out tcp dport 40000-42047 counter drop";
    assert!(lab.exec(Host::Client, "nft", &[drop_all]).status.success());
    for _ in 0..n {
        assert!(lab.knock(Host::Client, &["--profile", profile, "-d", "0"]).status.success());
    }
    assert!(lab.nft_counter(Host::Client, "inet", "lost") >= n as u64 * 8, "the knocks were lost");
    assert!(lab.exec(Host::Client, "nft", &["delete", "table", "inet", "lost"]).status.success());
}

/// The seconds figure of knock's "answered X s after the first knock (sequence N)".
pub fn answered(stdout: &str) -> Option<(f64, u64)> {
    let line = stdout.lines().find(|l| l.contains("answered"))?;
    let secs = line.split(" answered ").nth(1)?.split(' ').next()?.parse().ok()?;
    let seq = line.rsplit("(sequence ").next()?.trim_end_matches(')').parse().ok()?;
    Some((secs, seq))
}
