//! `knockd replay --pcap FILE`: forensics on a capture. Its frames go through the live
//! capture's parser ([`crate::runtime::capture::frame_knock`]) and the daemon's matcher, with
//! the doors loaded as the daemon loads them but their ledgers opened read-only, and the
//! packets' own timestamps as the clock (seq_timeout, totp steps, the day of hotp sequences).
//! What the daemon would have done is recorded instead of done: nothing is written to a
//! ledger, the audit log or the firewall, so it runs beside a live daemon, as any user who can
//! read the state directory, or on a copy of it (`--state-dir`).
//!
//! Its files: the command, its arguments and the file read in batches (`command.rs`); the
//! daemon's loop with decisions recorded instead of acted on (`engine.rs`); what it finds
//! (`findings.rs`: would have opened, replays of a sequence used per the ledger or earlier in
//! the capture, halves of a resync, burns and second-source alerts); the guessing traffic per
//! source (`sources.rs`); the text or the one JSON document it prints (`render.rs`,
//! docs/OPERATIONS.md, "Forensics: replaying a capture").

mod command;
mod engine;
mod findings;
mod render;
mod sources;

pub use command::{replay, run, ReplayArgs};
pub use findings::{Finding, Outcome, Verdict};
pub use sources::{Folded, Traffic};

#[cfg(test)]
mod tests;
