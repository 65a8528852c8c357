//! A test that needs code of its own inside a network namespace (a capture thread, a firewall
//! acting on the namespace's netlink, a probe connecting from a peer) re-runs its own test
//! binary there: `ip netns exec NS TEST-BINARY --exact TEST`, with its role in an environment
//! variable. The test function looks at the role first and, in a child, does that part only.

use std::process::Command;

/// How a test re-executes itself: only test `test` of module `module`, with its role in
/// environment variable `role_env`.
#[derive(Debug, Clone, Copy)]
pub struct Reexec {
    /// `module_path!()` where the test function is.
    pub module: &'static str,
    /// The test function's name.
    pub test: &'static str,
    /// The variable that carries the role.
    pub role_env: &'static str,
}

impl Reexec {
    /// The role of this process; `None` in the outer test.
    pub fn role(&self) -> Option<String> {
        std::env::var(self.role_env).ok()
    }

    /// The test's name as the test harness knows it: its module path without the crate's name.
    pub fn test_name(&self) -> String {
        match self.module.split_once("::") {
            Some((_crate, module)) => format!("{module}::{}", self.test),
            None => self.test.to_string(),
        }
    }

    /// This test binary in role `role`: inside namespace `ns` (`ip netns exec`), or in the
    /// current one. Its output shows the harness's `running 1 test` ([`Reexec::assert_ran`]).
    pub fn command(&self, ns: Option<&str>, role: &str) -> Command {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = match ns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(exe);
                cmd
            }
            None => Command::new(exe),
        };
        cmd.args(["--exact", &self.test_name(), "--nocapture", "--test-threads=1"]).env(self.role_env, role);
        cmd
    }

    /// Panics unless a child's standard output shows that it ran this one test: a name that
    /// matched nothing would make the child succeed without having checked anything.
    pub fn assert_ran(&self, stdout: &str) {
        assert!(
            stdout.contains("running 1 test"),
            "the re-executed test binary ran no test named `{}` (renamed or moved?): {stdout}",
            self.test_name()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_module_path_without_the_crate() {
        let nested = Reexec { module: "e2e::backends::nftables", test: "t", role_env: "R" };
        assert_eq!(nested.test_name(), "backends::nftables::t");
        let top = Reexec { module: "capture", test: "t", role_env: "R" };
        assert_eq!(top.test_name(), "t");
        assert_eq!(Reexec { module: module_path!(), test: "t", role_env: "R" }.test_name(), "reexec::tests::t");
    }
}
