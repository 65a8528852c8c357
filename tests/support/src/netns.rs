//! Network namespaces for tests: names no other test uses (this process's id and a counter, so
//! tests running in parallel, and test processes running side by side, never collide), deleted
//! on drop even when the test panics, joined by veth pairs, with addresses only from the test
//! ranges (198.18.0.0/15, 2001:db8::/32).
//!
//! A process started inside a namespace keeps it alive after `ip netns del`: whoever starts one
//! ends it (by its pid, [`crate::run::Reaped`]) before the namespace is dropped.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::run;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `PID-N`: unique among the fixtures of every test process on this machine, and short enough
/// (11 bytes for the first thousand of a process) that `v2-` and a tag still make an interface
/// name (15 bytes at most).
pub fn unique_tag() -> String {
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A network namespace of this test, with its loopback up; deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes namespace `name` (which the caller made unique with [`unique_tag`]).
    pub fn create(name: impl Into<String>) -> Netns {
        let name = name.into();
        ip(&["netns", "add", &name]);
        // From here on, Drop deletes it.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Makes namespace `{prefix}{unique_tag()}`.
    pub fn unique(prefix: &str) -> Netns {
        Netns::create(format!("{prefix}{}", unique_tag()))
    }

    /// The namespace's name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        ip(&[&["-n", self.name.as_str()], args].concat());
    }

    /// `program` to run inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A veth pair: `here` in this namespace, `there` in `peer`, both up.
    pub fn veth(&self, here: &str, peer: &Netns, there: &str) {
        self.ip(&["link", "add", here, "type", "veth", "peer", "name", there, "netns", peer.name()]);
        self.ip(&["link", "set", here, "up"]);
        peer.ip(&["link", "set", there, "up"]);
    }

    /// Adds `address/prefix` to `dev` (IPv6 without duplicate address detection, so it is usable
    /// at once). Refuses an address outside the test ranges.
    pub fn addr(&self, dev: &str, cidr: &str) {
        let address = test_address(cidr);
        match address {
            IpAddr::V4(_) => self.ip(&["addr", "add", cidr, "dev", dev]),
            IpAddr::V6(_) => self.ip(&["addr", "add", cidr, "dev", dev, "nodad"]),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// `ip ARGS...`, which must succeed.
pub fn ip(args: &[&str]) {
    run::ok(Command::new("ip").args(args));
}

/// The address of `cidr` (`ADDRESS/PREFIX`), when it lies in 198.18.0.0/15 or 2001:db8::/32;
/// panics otherwise, naming the ranges.
pub fn test_address(cidr: &str) -> IpAddr {
    let text = cidr.split_once('/').map_or(cidr, |(a, _)| a);
    let address: IpAddr = text.parse().unwrap_or_else(|e| panic!("`{cidr}` is not ADDRESS/PREFIX: {e}"));
    let allowed = match address {
        IpAddr::V4(a) => a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18,
        IpAddr::V6(a) => a.segments()[..2] == [0x2001, 0x0db8],
    };
    assert!(allowed, "{cidr}: tests use only 198.18.0.0/15 and 2001:db8::/32 (and loopback)");
    address
}

/// The addresses just outside each test range, on either side: what the guards that keep tests
/// inside the ranges ([`test_address`], knock-lab's) are tested with. They are computed from the
/// ranges, handed to a guard and refused; nothing is ever configured with them or sent to them.
pub fn just_outside_the_test_ranges() -> [IpAddr; 4] {
    let v4_first = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let v4_last = v4_first + ((1 << 17) - 1);
    let v6_first = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0));
    let v6_last = v6_first + ((1 << 96) - 1);
    [
        Ipv4Addr::from(v4_first - 1).into(),
        Ipv4Addr::from(v4_last + 1).into(),
        Ipv6Addr::from(v6_first - 1).into(),
        Ipv6Addr::from(v6_last + 1).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_test_ranges_are_accepted() {
        for ok in ["198.18.0.0/24", "198.19.255.255/24", "2001:db8::/64", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/64"] {
            test_address(ok);
        }
        for bad in just_outside_the_test_ranges() {
            let prefix = if bad.is_ipv4() { 24 } else { 64 };
            let bad = format!("{bad}/{prefix}");
            assert!(std::panic::catch_unwind(|| test_address(&bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn tags_are_unique_and_fit_an_interface_name() {
        let (a, b) = (unique_tag(), unique_tag());
        assert_ne!(a, b);
        assert!(format!("v2-{a}").len() <= 15, "{a}");
        assert!(a.starts_with(&format!("{}-", std::process::id())));
    }
}
