//! The firewall's error types: every message names the table (or command), set and address
//! involved and says what to do about it.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::nfnl::Attribute;

/// A change to a grant set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Adding (or refreshing) a grant.
    Grant,
    /// Removing a grant.
    Revoke,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Grant => "grant",
            Op::Revoke => "revoke",
        })
    }
}

/// Why the firewall could not be installed or changed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The iptables backend failed (its message names the command, its output and a fix).
    #[error("iptables backend: {0}")]
    Iptables(#[from] IptablesError),
    /// The table name cannot be used in an nft script or a netlink request.
    #[error(
        "invalid nftables table name {table:?}: {reason}; use 1-64 letters, digits, `_` or `-`, \
         starting with a letter or `_` (e.g. nft_table = \"knockd\")"
    )]
    InvalidTable {
        /// The rejected name.
        table: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A grant of zero (or an absurdly long) duration: a timeout of 0 would never expire.
    #[error(
        "cannot grant {addr} in table inet {table} for {duration:?}: a grant must last from 1 ms \
         to {max_days} days (an element without a timeout would never expire); fix the door's open_for",
        max_days = max.as_secs() / 86_400
    )]
    InvalidDuration {
        /// The table.
        table: String,
        /// The address that was to be granted.
        addr: IpAddr,
        /// The rejected duration.
        duration: Duration,
        /// The backend's longest grant.
        max: Duration,
    },
    /// `nft` could not be started.
    #[error(
        "could not run `nft -f -` to install table inet {table}: {error}; install nftables \
         (e.g. `apt-get install nftables`) and make sure `nft` is in PATH"
    )]
    NftSpawn {
        /// The table.
        table: String,
        /// The spawn or pipe error.
        error: io::Error,
    },
    /// `nft` rejected the ruleset.
    #[error(
        "nft refused the ruleset of table inet {table} ({status}): {stderr}; if an older or \
         hand-made table of that name exists, remove it with `nft delete table inet {table}` \
         and start knockd again (its grants are lost; knock again)"
    )]
    NftRejected {
        /// The table.
        table: String,
        /// nft's exit status.
        status: String,
        /// nft's complaint.
        stderr: String,
    },
    /// The netlink socket failed (open, send, receive).
    #[error(
        "netlink socket for table inet {table}: {context}: {error}; knockd needs root \
         (CAP_NET_ADMIN) and a kernel with nf_tables; the socket is reopened on the next request"
    )]
    Socket {
        /// The table.
        table: String,
        /// What was being done, with the set and address.
        context: String,
        /// The socket error.
        error: io::Error,
    },
    /// The kernel refused the change.
    #[error("kernel refused to {op} {addr} in set {set} of table inet {table}: {reason}; {hint}")]
    Refused {
        /// Grant or revoke.
        op: Op,
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// The address.
        addr: IpAddr,
        /// Positive errno.
        errno: i32,
        /// The errno's text and the kernel's details.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// No answer from the kernel in time.
    #[error(
        "no answer from the kernel within {waited:?} to {op} {addr} in set {set} of table inet \
         {table}; retry (the socket is reopened), and check `dmesg` if it persists"
    )]
    Timeout {
        /// Grant or revoke.
        op: Op,
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// The address.
        addr: IpAddr,
        /// How long we waited.
        waited: Duration,
    },
    /// The kernel's reply made no sense.
    #[error(
        "malformed netlink reply to {op} {addr} in set {set} of table inet {table}: {detail}; \
         retry (the socket is reopened), and report it as a knockd bug with `uname -r` if it persists"
    )]
    Malformed {
        /// Grant or revoke.
        op: Op,
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// The address.
        addr: IpAddr,
        /// What was wrong.
        detail: String,
    },
}

/// Why an iptables, ip6tables or ipset command failed: names the command and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The tool could not be started.
    #[error(
        "could not run `{tool}`: {error}; install iptables and ipset (e.g. `apt-get install iptables \
         ipset`) and make sure they are in PATH"
    )]
    Spawn {
        /// The program.
        tool: &'static str,
        /// The spawn or pipe error.
        error: io::Error,
    },
    /// The tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}; {hint}")]
    Failed {
        /// The command line (and what was piped into it, in brackets).
        command: String,
        /// Its exit status.
        status: String,
        /// Its complaint.
        stderr: String,
        /// What to do about it.
        hint: String,
    },
}

/// What to do about an errno from a set-element request.
pub(crate) fn hint(errno: i32, table: &str, set: &str, culprit: Option<Attribute>) -> String {
    match (errno, culprit) {
        (2, Some(Attribute::Elements)) => "the element does not exist (it expired or was removed)".into(),
        (2, _) => format!(
            "table inet {table} or its set {set} is missing (a `nftables.service` restart or \
             `nft flush ruleset` removes it); restart knockd, or let it reinstall the table"
        ),
        (1 | 13, _) => "knockd needs root or CAP_NET_ADMIN in this network namespace".into(),
        (22 | 95, _) => format!(
            "set {set} does not have the shape knockd expects (an older or hand-made table?); \
             remove it with `nft delete table inet {table}` and restart knockd"
        ),
        (28 | 7, _) => format!("set {set} is full; check `nft list set inet {table} {set}`"),
        (34, _) => "the duration is too long for the kernel; shorten the door's open_for".into(),
        (16, _) => "the ruleset is being changed by someone else; retry".into(),
        _ => format!("check `nft list table inet {table}` and `dmesg`"),
    }
}
