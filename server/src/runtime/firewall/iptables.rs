//! The iptables backend: grants in ipsets with per-entry kernel timeouts, rules in a dedicated
//! chain, every rule tagged with the comment `knockd`.
//!
//! Layout, for `iptables` and likewise for `ip6tables` (with set `knockd6`):
//!
//! ```text
//! ipset create knockd4 hash:ip,port family inet timeout 0 -exist
//! -A INPUT -m comment --comment knockd -j KNOCKD                          (inserted first)
//! -A KNOCKD -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment knockd -j RETURN
//! -A KNOCKD -i lo -m comment --comment knockd -j RETURN
//! -A KNOCKD -p tcp --dport 22 -m set --match-set knockd4 src,dst -m comment --comment knockd -j RETURN
//! -A KNOCKD -p tcp --dport 22 -m comment --comment knockd -j DROP
//! ```
//!
//! Like the nftables backend it only ever drops (what it lets through still meets the admin's
//! own rules), keeps established connections, and a grant is a set element with a kernel
//! timeout, so it expires even if the daemon dies. Unlike it, it hooks INPUT only: traffic that
//! is DNATed to a container (FORWARD) is not covered.
//!
//! [`Iptables::install`] finds the tagged rules of an earlier run (`iptables -S`) and replaces
//! them in one `iptables-restore --noflush` transaction: stale tagged rules deleted, the chain
//! flushed and refilled, one jump inserted, so there is never a moment without the drops, and
//! exactly one set of rules afterwards. The ipsets are created only if missing, so live grants
//! survive. The tools are the system's default `iptables` alternative (legacy or nft), with
//! `-w` to wait for the xtables lock. Each grant or revoke runs `ipset -exist restore` once
//! (a few milliseconds: this backend is not the fast path).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use knock_core::config::OpenPort;

use super::backend::Firewall;
use super::error::FirewallError;
pub use super::error::IptablesError;

/// The IPv4 grant set (`hash:ip,port family inet`, with timeouts).
pub const SET4: &str = "knockd4";
/// The IPv6 grant set (`hash:ip,port family inet6`, with timeouts).
pub const SET6: &str = "knockd6";
/// The chain jumped to from INPUT.
pub const CHAIN: &str = "KNOCKD";
/// The comment on every rule of ours.
pub const COMMENT: &str = "knockd";
/// The longest timeout ipset accepts (2^31 / 1000 seconds, about 24.8 days).
pub const MAX_GRANT: Duration = Duration::from_secs(2_147_483);
/// Seconds to wait for the xtables lock (`-w`).
const LOCK_WAIT: &str = "5";

/// An address family: its tools and its set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn tables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    fn set(self) -> &'static str {
        match self {
            Family::V4 => SET4,
            Family::V6 => SET6,
        }
    }

    fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }
}

/// The iptables + ipset firewall of the daemon.
#[derive(Debug, Default)]
pub struct Iptables {
    _private: (),
}

impl Iptables {
    /// The backend, with sets `knockd4`/`knockd6` and chain `KNOCKD`. Touches nothing yet.
    pub fn new() -> Iptables {
        Iptables { _private: () }
    }

    /// Creates the ipsets if missing and replaces our rules in both families.
    pub fn install_rules(&mut self, protected: &[OpenPort]) -> Result<(), IptablesError> {
        for family in Family::BOTH {
            let set = family.set();
            let args = ["create", set, "hash:ip,port", "family", family.ipset_family(), "timeout", "0", "-exist"];
            run("ipset", &args, None, || {
                format!(
                    "if a set {set} of another type exists (an older or hand-made one), remove it with \
                     `ipset destroy {set}` after removing the rules that use it, and start knockd again \
                     (its grants are lost; knock again)"
                )
            })?;
        }
        for family in Family::BOTH {
            install_family(family, protected)?;
        }
        Ok(())
    }

    /// Adds (or refreshes: the clock restarts) the grant elements of `addr` x `ports`.
    pub fn grant_elements(&mut self, addr: IpAddr, ports: &[OpenPort], seconds: u64) -> Result<(), IptablesError> {
        let family = Family::of(addr);
        let script = elements("add", family.set(), addr, ports, Some(seconds));
        let set = family.set();
        run("ipset", &["-exist", "restore"], Some(&script), || {
            format!("if the set {set} is missing, restart knockd (its install recreates it); check `ipset list {set}`")
        })
        .map(drop)
    }

    /// Deletes the grant elements of `addr` x `ports`; absent elements or sets are no error.
    pub fn revoke_elements(&mut self, addr: IpAddr, ports: &[OpenPort]) -> Result<(), IptablesError> {
        let family = Family::of(addr);
        let set = family.set();
        let script = elements("del", set, addr, ports, None);
        match run("ipset", &["-exist", "restore"], Some(&script), || format!("check `ipset list {set}`")) {
            Ok(_) => Ok(()),
            // No set, nothing granted.
            Err(e @ IptablesError::Failed { .. }) if set_exists(set) => Err(e),
            Err(IptablesError::Failed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Firewall for Iptables {
    fn install(&mut self, protected: &[OpenPort]) -> Result<(), FirewallError> {
        self.install_rules(protected).map_err(FirewallError::from)
    }

    fn grant(&mut self, addr: IpAddr, ports: &[OpenPort], duration: Duration) -> Result<(), FirewallError> {
        let addr = addr.to_canonical();
        if duration.is_zero() || duration > MAX_GRANT {
            return Err(FirewallError::InvalidDuration {
                table: format!("{CHAIN} (iptables)"),
                addr,
                duration,
                max: MAX_GRANT,
            });
        }
        // Round up, so a sub-second duration never becomes 0 (= never expires).
        let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        self.grant_elements(addr, ports, seconds).map_err(FirewallError::from)
    }

    fn revoke(&mut self, addr: IpAddr, ports: &[OpenPort]) -> Result<(), FirewallError> {
        self.revoke_elements(addr.to_canonical(), ports).map_err(FirewallError::from)
    }
}

/// Replaces our rules for one family in one `iptables-restore --noflush` transaction; retried
/// once if the ruleset changed between listing and restoring.
fn install_family(family: Family, protected: &[OpenPort]) -> Result<(), IptablesError> {
    let mut attempt = 0;
    loop {
        let listing = run(family.tables(), &["-w", LOCK_WAIT, "-t", "filter", "-S"], None, || {
            "knockd needs root (CAP_NET_ADMIN) and a kernel with iptables support".into()
        })?;
        let script = restore_script(family, protected, &stale_rules(&String::from_utf8_lossy(&listing.stdout)));
        let tool = family.restore();
        match run(tool, &["-w", LOCK_WAIT, "--noflush"], Some(&script), || {
            format!(
                "knockd needs root (CAP_NET_ADMIN), the xt_set, xt_conntrack and xt_comment matches, \
                 and ipset {}; check `{} -S`",
                family.set(),
                family.tables()
            )
        }) {
            Err(IptablesError::Failed { .. }) if attempt == 0 => attempt += 1,
            other => return other.map(drop),
        }
    }
}

/// Whether `-S` line's tokens carry our comment (`--comment knockd`, quoted or not).
fn tagged(line: &str) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let quoted = format!("\"{COMMENT}\"");
    tokens.windows(2).any(|w| w[0] == "--comment" && (w[1] == COMMENT || w[1] == quoted))
}

/// From `iptables -S` output: the `-D` lines that delete our tagged rules outside our own chain
/// (which is flushed whole), e.g. the jump of an earlier run.
fn stale_rules(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.strip_prefix("-A "))
        .filter(|rest| rest.split_whitespace().next() != Some(CHAIN) && tagged(rest))
        .map(|rest| format!("-D {rest}"))
        .collect()
}

/// The `iptables-restore --noflush` script: deletes `stale`, declares (creates or flushes) our
/// chain, fills it, and inserts the one jump from INPUT.
fn restore_script(family: Family, protected: &[OpenPort], stale: &[String]) -> String {
    let tag = format!("-m comment --comment {COMMENT}");
    let mut s = format!("*filter\n:{CHAIN} - [0:0]\n");
    for line in stale {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED {tag} -j RETURN");
    let _ = writeln!(s, "-A {CHAIN} -i lo {tag} -j RETURN");
    let mut ports = protected.to_vec();
    ports.sort_by_key(|p| (p.proto, p.port));
    ports.dedup();
    for p in &ports {
        let (proto, port, set) = (p.proto, p.port, family.set());
        let _ = writeln!(s, "-A {CHAIN} -p {proto} --dport {port} -m set --match-set {set} src,dst {tag} -j RETURN");
        let _ = writeln!(s, "-A {CHAIN} -p {proto} --dport {port} {tag} -j DROP");
    }
    let _ = writeln!(s, "-I INPUT 1 {tag} -j {CHAIN}\nCOMMIT");
    s
}

/// An `ipset restore` script adding or deleting the elements of `addr` x `ports`.
fn elements(verb: &str, set: &str, addr: IpAddr, ports: &[OpenPort], timeout: Option<u64>) -> String {
    let mut s = String::new();
    for p in ports {
        let _ = write!(s, "{verb} {set} {addr},{}:{}", p.proto, p.port);
        if let Some(t) = timeout {
            let _ = write!(s, " timeout {t}");
        }
        s.push('\n');
    }
    s
}

/// Whether ipset `set` exists.
fn set_exists(set: &str) -> bool {
    Command::new("ipset")
        .args(["-q", "list", "-n", set])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `tool args` (with `input` on stdin); an error unless it succeeds.
fn run(
    tool: &'static str,
    args: &[&str],
    input: Option<&str>,
    hint: impl FnOnce() -> String,
) -> Result<Output, IptablesError> {
    let spawn_err = |error| IptablesError::Spawn { tool, error };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // A write error (the tool exited early) shows in its status and stderr below.
    let written = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(text)) => stdin.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let output = child.wait_with_output().map_err(spawn_err)?;
    if !output.status.success() {
        let mut command = format!("{tool} {}", args.join(" "));
        if let Some(text) = input {
            let _ = write!(command, " [{}]", text.trim_end().replace('\n', "; "));
        }
        return Err(IptablesError::Failed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            hint: hint(),
        });
    }
    written.map_err(spawn_err)?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use knock_core::Proto;

    fn p(port: u16, proto: Proto) -> OpenPort {
        OpenPort { port, proto }
    }

    #[test]
    fn script_declares_the_chain_only_drops_and_jumps_once() {
        let s = restore_script(Family::V4, &[p(22, Proto::Tcp), p(53, Proto::Udp), p(22, Proto::Tcp)], &[]);
        assert!(s.starts_with("*filter\n:KNOCKD - [0:0]\n") && s.ends_with("COMMIT\n"), "{s}");
        let rules: Vec<&str> = s.lines().filter(|l| l.starts_with("-A ") || l.starts_with("-I ")).collect();
        assert_eq!(rules.len(), 7, "{s}");
        assert!(rules.iter().all(|r| r.contains(" -m comment --comment knockd ")), "{s}");
        assert!(rules.iter().all(|r| r.ends_with("-j RETURN") || r.ends_with("-j DROP") || r.ends_with("-j KNOCKD")));
        assert!(s.contains("-A KNOCKD -p tcp --dport 22 -m set --match-set knockd4 src,dst"), "{s}");
        assert!(s.contains("-A KNOCKD -p udp --dport 53 -m comment --comment knockd -j DROP\n"), "{s}");
        assert_eq!(s.matches("-I INPUT 1 ").count(), 1);
        assert!(!s.contains("ACCEPT"));
        let s6 = restore_script(Family::V6, &[p(22, Proto::Tcp)], &["-D INPUT -x".into()]);
        assert!(s6.contains("--match-set knockd6 src,dst") && s6.contains("\n-D INPUT -x\n"), "{s6}");
    }

    #[test]
    fn stale_rules_are_ours_outside_our_chain() {
        let listing = "-P INPUT ACCEPT\n-N KNOCKD\n-N ADMIN\n\
            -A INPUT -m comment --comment knockd -j KNOCKD\n\
            -A INPUT -p tcp -m tcp --dport 7777 -j ACCEPT\n\
            -A INPUT -p tcp -m tcp --dport 9999 -m comment --comment \"knockd\" -j DROP\n\
            -A INPUT -m comment --comment \"knockd was here\" -j ACCEPT\n\
            -A INPUT -m comment --comment knockd-other -j ACCEPT\n\
            -A ADMIN -m comment --comment knockd -j KNOCKD\n\
            -A KNOCKD -i lo -m comment --comment knockd -j RETURN\n";
        assert_eq!(
            stale_rules(listing),
            [
                "-D INPUT -m comment --comment knockd -j KNOCKD",
                "-D INPUT -p tcp -m tcp --dport 9999 -m comment --comment \"knockd\" -j DROP",
                "-D ADMIN -m comment --comment knockd -j KNOCKD",
            ]
        );
    }

    #[test]
    fn element_scripts() {
        let ports = [p(22, Proto::Tcp), p(53, Proto::Udp)];
        assert_eq!(
            elements("add", SET4, "198.18.0.2".parse().unwrap(), &ports, Some(30)),
            "add knockd4 198.18.0.2,tcp:22 timeout 30\nadd knockd4 198.18.0.2,udp:53 timeout 30\n"
        );
        assert_eq!(
            elements("del", SET6, "2001:db8::2".parse().unwrap(), &ports[..1], None),
            "del knockd6 2001:db8::2,tcp:22\n"
        );
    }

    #[test]
    fn bad_durations_are_refused_before_any_command() {
        let mut fw = Iptables::new();
        let ssh = [p(22, Proto::Tcp)];
        for d in [Duration::ZERO, MAX_GRANT + Duration::from_secs(1)] {
            let e = fw.grant("198.18.0.2".parse().unwrap(), &ssh, d).unwrap_err();
            assert!(matches!(e, FirewallError::InvalidDuration { .. }), "{e}");
        }
    }

    #[test]
    fn failures_name_the_command_and_a_fix() {
        let e = IptablesError::Failed {
            command: "ipset -exist restore [add knockd4 198.18.0.2,tcp:22 timeout 2]".into(),
            status: "exit status: 1".into(),
            stderr: "The set with the given name does not exist".into(),
            hint: "restart knockd".into(),
        };
        let s = FirewallError::from(e).to_string();
        assert!(
            s.contains("ipset -exist restore [add knockd4 198.18.0.2,tcp:22") && s.contains("restart knockd"),
            "{s}"
        );
    }
}
