//! Entry points for fuzzing the daemon's parsers of netlink input: the kernel's replies to a
//! set-element batch ([`netlink_ack`]) and nf_tables change notifications ([`nft_watch`]).
//! Each takes arbitrary bytes and panics only when an invariant breaks. The cargo-fuzz targets
//! in `fuzz/` call these, and so does a short mutating smoke test here (`cargo test`).

use crate::runtime::firewall::ack::{self, Reply};
use crate::runtime::firewall::watch::{self, Removed};

/// The table and chains [`nft_watch`] looks for (the defaults).
pub const TABLE: &str = "knockd";
/// See [`TABLE`].
pub const CHAINS: [&str; 2] = ["prerouting", "input"];

/// A datagram of replies: the first four bytes are the request's sequence number. A refusal
/// carries a positive errno.
pub fn netlink_ack(data: &[u8]) {
    let Some((seq, datagram)) = data.split_first_chunk::<4>() else { return };
    if let Ok(Reply::Refused { errno, .. }) = ack::scan(datagram, u32::from_ne_bytes(*seq)) {
        assert!(errno > 0, "errno {errno}");
    }
}

/// A datagram of nf_tables notifications: a chain found removed is one of ours.
pub fn nft_watch(data: &[u8]) {
    if let Some(Removed::Chain(name)) = watch::scan(data, TABLE, &CHAINS) {
        assert!(CHAINS.contains(&name.as_str()), "{name}");
    }
}

/// Valid inputs to start from (also the corpus seeds of `fuzz/`).
pub mod seeds;

#[cfg(test)]
mod tests;
