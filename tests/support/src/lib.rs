//! What the tests of this repository share: network namespaces joined by veth pairs and deleted
//! on drop ([`netns`]), running programs (in a namespace or not) with bounded waits ([`run`]), a
//! test binary re-running one of its own tests inside a namespace ([`reexec`]), golden files
//! ([`golden`]), and a real etcd cluster with TLS, on loopback or in a namespace ([`etcd`]).
//!
//! The end-to-end tests (`tests/e2e`, `cargo test --test e2e`) are the only ones that need root;
//! every other package's `cargo test` runs as any user.
//!
//! The network rules every test keeps: packets only inside namespaces the test made itself, with
//! addresses in 198.18.0.0/15 and 2001:db8::/32, or on loopback ([`netns::Netns::addr`] refuses
//! any other address).

pub mod etcd;
pub mod golden;
pub mod netns;
pub mod reexec;
pub mod run;

use std::path::{Path, PathBuf};

/// The repository's root directory (where `tests/golden/`, `etc/` and `docs/` are).
pub fn repo() -> PathBuf {
    let support = Path::new(env!("CARGO_MANIFEST_DIR"));
    support.ancestors().nth(2).expect("tests/support lies two levels below the repository root").to_path_buf()
}

/// Whether this process runs as root (effective user id 0).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Fails the calling test unless it runs as root: a test that needs namespaces says so instead
/// of passing without having checked anything.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (network namespaces, nftables): run `sudo bash scripts/test.sh`, or \
         `cargo test --test e2e` as root after `cargo build --workspace`"
    );
}
