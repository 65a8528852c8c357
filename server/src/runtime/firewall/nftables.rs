//! The nftables backend: table `inet <table>` installed with nft, grants and revokes as set
//! elements over a persistent netlink socket.
//!
//! A grant is one element `saddr . l4proto . dport` per port in `grants4` or `grants6` with a
//! kernel timeout, so it expires even if the daemon dies. Each grant or revoke is one batch on
//! the socket, and the call returns once the kernel acked it (tens of microseconds).

use std::net::IpAddr;
use std::time::Duration;

use knock_core::config::OpenPort;

use super::allow::Allowed;
use super::backend::Firewall;
use super::error::{hint, FirewallError, Op};
pub use super::names::*;
use super::netlink::{NfnlSocket, RequestError};
use super::nfnl::{grant_key, setelem_batch, Attribute, ElemOp};
use super::ruleset;
use super::watch::{Removed, Seen, TableWatch};

/// The longest grant accepted: the kernel's own limit is far beyond any sane `open_for`.
pub const MAX_GRANT: Duration = Duration::from_secs(365 * 86_400);

/// How long to wait for the kernel's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Elements per batch: keeps every netlink attribute far below its 64 KiB limit.
const MAX_ELEMENTS_PER_BATCH: usize = 128;
const MAX_TABLE_NAME: usize = 64;

/// The nftables firewall of the daemon.
pub struct Nftables {
    table: String,
    /// `None` after a socket failure: reopened on the next request.
    socket: Option<NfnlSocket>,
    /// The doors' `always_allow` ranges, written by `install`.
    allowed: Vec<Allowed>,
    /// Notifications of the table's deletion; opened by `install`, `None` after a failure.
    watch: Option<TableWatch>,
    /// What was removed under us, until `install` succeeds again.
    lost: Option<String>,
}

impl Nftables {
    /// Prepares the backend for table `inet table` and opens its netlink socket (in the calling
    /// thread's network namespace). Needs CAP_NET_ADMIN; does not touch the ruleset yet.
    pub fn new(table: &str) -> Result<Self, FirewallError> {
        validate_table(table)?;
        let socket = NfnlSocket::open().map_err(|error| FirewallError::Socket {
            table: table.to_owned(),
            context: "opening a NETLINK_NETFILTER socket".into(),
            error,
        })?;
        Ok(Nftables { table: table.to_owned(), socket: Some(socket), allowed: Vec::new(), watch: None, lost: None })
    }

    /// The table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies `elem_op` to the elements of `addr` x `ports` in batches.
    fn change(&mut self, op: Op, addr: IpAddr, ports: &[OpenPort], elem_op: ElemOp) -> Result<(), FirewallError> {
        let set = grant_set(addr);
        let mut ports = ports.to_vec();
        ports.sort_by_key(|p| (p.proto, p.port));
        ports.dedup();
        let keys: Vec<Vec<u8>> = ports.iter().map(|p| grant_key(addr, *p)).collect();
        for chunk in keys.chunks(MAX_ELEMENTS_PER_BATCH) {
            match self.request(set, elem_op, chunk) {
                Err(Failure::Refused { errno: ENOENT, culprit, .. }) if op == Op::Revoke => {
                    if matches!(culprit, Some(Attribute::Table | Attribute::Set)) {
                        return Ok(()); // No table or set: nothing is granted.
                    }
                    // The whole batch was rolled back: delete one by one, skipping the absent.
                    for key in chunk {
                        match self.request(set, elem_op, std::slice::from_ref(key)) {
                            Ok(()) | Err(Failure::Refused { errno: ENOENT, .. }) => {}
                            Err(e) => return Err(self.error(op, addr, set, e)),
                        }
                    }
                }
                Ok(()) => {}
                Err(e) => return Err(self.error(op, addr, set, e)),
            }
        }
        Ok(())
    }

    /// Sends one batch and waits for its ack. Drops the socket after any failure of its own.
    fn request(&mut self, set: &str, elem_op: ElemOp, keys: &[Vec<u8>]) -> Result<(), Failure> {
        let socket = match &mut self.socket {
            Some(socket) => socket,
            None => self.socket.insert(NfnlSocket::open().map_err(|e| Failure::Socket("opening", e))?),
        };
        let batch = setelem_batch(socket.reserve_seq(), elem_op, &self.table, set, keys)
            .ok_or(Failure::Malformed("request too large for one netlink message".into()))?;
        let result = socket.request(&batch, ACK_TIMEOUT);
        if matches!(result, Err(RequestError::Io(_) | RequestError::Timeout(_) | RequestError::Malformed(_))) {
            self.socket = None;
        }
        result.map_err(|e| match e {
            RequestError::Io(e) => Failure::Socket("sending or receiving", e),
            RequestError::Timeout(waited) => Failure::Timeout(waited),
            RequestError::Malformed(detail) => Failure::Malformed(detail.into()),
            RequestError::Refused { errno, message, offset } => {
                Failure::Refused { errno, message, culprit: offset.map(|o| batch.attribute_at(o)) }
            }
        })
    }

    fn error(&self, op: Op, addr: IpAddr, set: &str, failure: Failure) -> FirewallError {
        let (table, set_name) = (self.table.clone(), set.to_owned());
        match failure {
            Failure::Socket(doing, error) => FirewallError::Socket {
                table,
                context: format!("{doing} the request to {op} {addr} in set {set}"),
                error,
            },
            Failure::Timeout(waited) => FirewallError::Timeout { op, table, set: set_name, addr, waited },
            Failure::Malformed(detail) => FirewallError::Malformed { op, table, set: set_name, addr, detail },
            Failure::Refused { errno, message, culprit } => {
                let mut reason = std::io::Error::from_raw_os_error(errno).to_string();
                if let Some(message) = message.filter(|m| !m.is_empty()) {
                    reason.push_str(&format!(" ({message})"));
                }
                if let Some(culprit) = culprit {
                    reason.push_str(&format!(", at the {culprit} attribute"));
                }
                let hint = hint(errno, &self.table, set, culprit);
                FirewallError::Refused { op, table, set: set_name, addr, errno, reason, hint }
            }
        }
    }
}

/// `ENOENT`.
const ENOENT: i32 = 2;

/// A request's failure before the table, set and address are attached.
enum Failure {
    Socket(&'static str, std::io::Error),
    Timeout(Duration),
    Malformed(String),
    Refused { errno: i32, message: Option<String>, culprit: Option<Attribute> },
}

impl Firewall for Nftables {
    fn install(&mut self, protected: &[OpenPort]) -> Result<(), FirewallError> {
        // Watch before installing, so a deletion right after the installation is seen.
        if self.watch.is_none() {
            match TableWatch::open() {
                Ok(w) => self.watch = Some(w),
                Err(e) => tracing::warn!(
                    table = %self.table,
                    "cannot watch nftables for the deletion of table inet {}: {e}; if it is deleted \
                     (nft flush ruleset), restart knockd",
                    self.table
                ),
            }
        }
        ruleset::install(&self.table, protected, &self.allowed)?;
        self.lost = None;
        Ok(())
    }

    fn ruleset_lost(&mut self) -> Option<String> {
        if self.lost.is_some() {
            return self.lost.clone();
        }
        let table = self.table.clone();
        let seen = match &mut self.watch {
            Some(w) => w.poll(&table, &CHAINS),
            // A watch that failed: reopened, and the gap treated as an overrun.
            None => match TableWatch::open() {
                Ok(w) => {
                    self.watch = Some(w);
                    Ok(Seen::Overrun)
                }
                Err(_) => Ok(Seen::Nothing),
            },
        };
        self.lost = match seen {
            Ok(Seen::Nothing) => None,
            Ok(Seen::Removed(Removed::Table)) => Some(format!(
                "table inet {table} was deleted under knockd (`nft flush ruleset`, or a nftables.service restart?)"
            )),
            Ok(Seen::Removed(Removed::Chain(c))) => Some(format!("chain {c} of table inet {table} was deleted")),
            Ok(Seen::Removed(Removed::Set(s))) => Some(format!("set {s} of table inet {table} was deleted")),
            Ok(Seen::Overrun) => Some(format!(
                "nftables change notifications were lost, so table inet {table} may have been changed unseen"
            )),
            Err(e) => {
                self.watch = None;
                Some(format!("the watch on table inet {table} failed ({e})"))
            }
        };
        self.lost.clone()
    }

    fn set_always_allow(&mut self, allowed: &[Allowed]) -> bool {
        self.allowed = allowed.to_vec();
        true
    }

    fn grant(&mut self, addr: IpAddr, ports: &[OpenPort], duration: Duration) -> Result<(), FirewallError> {
        let addr = addr.to_canonical();
        let invalid = || FirewallError::InvalidDuration { table: self.table.clone(), addr, duration, max: MAX_GRANT };
        if duration.is_zero() || duration > MAX_GRANT {
            return Err(invalid());
        }
        // Round up, so a sub-millisecond duration never becomes 0 (= never expires).
        let timeout_ms = u64::try_from(duration.as_nanos().div_ceil(1_000_000)).map_err(|_| invalid())?;
        self.change(Op::Grant, addr, ports, ElemOp::Add { timeout_ms })
    }

    fn revoke(&mut self, addr: IpAddr, ports: &[OpenPort]) -> Result<(), FirewallError> {
        self.change(Op::Revoke, addr.to_canonical(), ports, ElemOp::Delete)
    }
}

/// The grant set of `addr`'s family.
pub fn grant_set(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => GRANTS4_SET,
        IpAddr::V6(_) => GRANTS6_SET,
    }
}

/// Checks that `table` is a name both nft's parser and the kernel accept.
fn validate_table(table: &str) -> Result<(), FirewallError> {
    let reason = if table.is_empty() {
        Some("it is empty")
    } else if table.len() > MAX_TABLE_NAME {
        Some("it is longer than 64 characters")
    } else if !table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Some("it contains a character other than a letter, digit, `_` or `-`")
    } else if !table.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        Some("nft cannot parse a table name that starts with a digit or `-`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FirewallError::InvalidTable { table: table.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["knockd", "k", "knock-1", "_x", "Knock_d"] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "-x", "knock d", "knöck", "a;b", "a\0b", &"a".repeat(65)] {
            let err = validate_table(bad).unwrap_err().to_string();
            assert!(err.contains("invalid nftables table name") && err.contains("nft_table"), "{err}");
        }
    }

    #[test]
    fn family_picks_the_set() {
        assert_eq!(grant_set("198.18.0.1".parse().unwrap()), GRANTS4_SET);
        assert_eq!(grant_set("2001:db8::1".parse().unwrap()), GRANTS6_SET);
    }

    #[test]
    fn refusal_messages_name_table_set_address_and_a_fix() {
        let e = FirewallError::Refused {
            op: Op::Grant,
            table: "knockd".into(),
            set: GRANTS4_SET.into(),
            addr: "198.18.0.1".parse().unwrap(),
            errno: 2,
            reason: "No such file or directory (os error 2)".into(),
            hint: hint(2, "knockd", GRANTS4_SET, Some(Attribute::Table)),
        };
        let s = e.to_string();
        assert!(s.contains("grant 198.18.0.1 in set grants4 of table inet knockd"), "{s}");
        assert!(s.contains("restart knockd"), "{s}");
    }
}
