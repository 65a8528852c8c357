//! What `knockd replay` finds: the daemon's decisions about a capture ([`Verdict`], with who
//! and when in a [`Finding`]) and everything about the replay of one file ([`Outcome`]), which
//! `render.rs` prints.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use knock_core::packet::LinkType;
use knock_core::sequence::Purpose;

use super::sources::Folded;

/// What the daemon would have decided about one completed or ended attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A fresh sequence: the door would have opened (or closed, for a closing sequence).
    Opened,
    /// A sequence beyond the client's window: the first half of a resync, which opens only
    /// with the next consecutive sequence from the same source.
    Resync,
    /// A sequence the ledger records as used (consumed or burned) before the capture.
    ReplayOfLedger,
    /// A sequence used (or burned) earlier in this capture.
    ReplayInCapture {
        /// When it was used first (unix ms).
        first_ms: u64,
        /// From where.
        first_source: IpAddr,
    },
    /// An attempt that ended incomplete: the sequence would have been burned.
    Burned {
        /// Knocks it had matched.
        progress: usize,
        /// Why it ended.
        reason: &'static str,
    },
    /// The same prefix from a second source: burned for both.
    Alert {
        /// The second source.
        second: IpAddr,
    },
}

/// One decision, with who and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// When (unix ms, the capture's clock).
    pub at_ms: u64,
    /// The door.
    pub door: String,
    /// The client (`-` for file and static doors).
    pub client: String,
    /// The source that knocked (for an alert: the first of the two).
    pub source: IpAddr,
    /// The sequence as the admin counts it (`counter 5`, `line 12`).
    pub sequence: String,
    /// Its counter, time step or line index.
    pub counter: u64,
    /// Open or close.
    pub purpose: Purpose,
    /// What the daemon would have done.
    pub verdict: Verdict,
}

/// Everything `knockd replay` found in a capture.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The capture file.
    pub file: PathBuf,
    /// Its link type.
    pub link: LinkType,
    /// Whether its timestamps count nanoseconds.
    pub nanosecond: bool,
    /// Frames in the file.
    pub frames: u64,
    /// Frames that held a TCP or UDP packet (the others carry no knock).
    pub packets: u64,
    /// The capture's first and last timestamp (unix ms), when it holds frames.
    pub span_ms: Option<(u64, u64)>,
    /// The doors replayed.
    pub doors: Vec<String>,
    /// Doors or clients that could not be loaded, with the reason.
    pub refused: Vec<String>,
    /// The state directory whose ledgers were read.
    pub state_dir: PathBuf,
    /// The decisions, in capture order.
    pub findings: Vec<Finding>,
    /// The guessing traffic, folded.
    pub sources: Folded,
    /// How long the replay took.
    pub elapsed: Duration,
}
