//! Pure core of the one-time port knocker.
//!
//! Everything here works on data only: no packet capture, no firewall, no sockets, no daemon
//! loop. The binaries in `client/` and `server/` own the I/O and call into this crate to derive
//! sequences, parse configs, match knocks and persist what was consumed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auditchain;
pub mod config;
pub mod counters;
pub mod durable;
pub mod entropy;
pub mod exit;
pub mod fuzz_entry;
pub mod keys;
pub mod knock;
pub mod ledger;
pub mod matcher;
pub mod packet;
pub mod profile;
pub mod ratelimit;
pub mod seqfile;
pub mod sequence;
pub mod shared_ledger;
pub mod time;

pub use knock::{Knock, PortRange, Proto};
