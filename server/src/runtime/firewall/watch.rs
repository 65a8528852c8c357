//! Watching nftables for our table being deleted under the daemon (`nft flush ruleset`, which a
//! `nftables.service` restart runs): a netlink socket subscribed to the `NFNLGRP_NFTABLES`
//! multicast group, read without blocking from the daemon's tick.
//!
//! The kernel announces every committed change to that group. We look only for the deletion of
//! what our ruleset needs: table `inet <table>`, one of its base chains, or one of its sets (our own
//! installation never deletes those: it flushes the chain's rules and some sets' elements, which
//! announce rule and element deletions only). A receive-buffer overrun (`ENOBUFS`: notifications
//! were lost) counts as a possible deletion, since an idempotent reinstallation is cheap.
//!
//! [`scan`] is pure and bounds-checks every length, so any datagram gives an answer, never a
//! panic. Layouts: `struct nlmsghdr` and `struct nlattr` (`<linux/netlink.h>`), `struct
//! nfgenmsg` (`<linux/netfilter/nfnetlink.h>`), `enum nf_tables_msg_types` and the table, chain
//! and set attributes (`<linux/netfilter/nf_tables.h>`).

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::ack::{read_u16, read_u32};
use super::nfnl::{align4, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NLA_HDRLEN, NLMSG_HDRLEN};

/// `NFNLGRP_NFTABLES` (`enum nfnetlink_groups`): nf_tables change notifications.
pub const NFNLGRP_NFTABLES: u32 = 7;
/// `NFT_MSG_DELTABLE`.
const DELTABLE: u16 = 2;
/// `NFT_MSG_DELCHAIN`.
const DELCHAIN: u16 = 5;
/// `NFT_MSG_DELSET`.
const DELSET: u16 = 11;
/// `NFT_MSG_DESTROYTABLE` (Linux 6.3+).
const DESTROYTABLE: u16 = 26;
/// `NFT_MSG_DESTROYCHAIN` (Linux 6.3+).
const DESTROYCHAIN: u16 = 27;
/// `NFT_MSG_DESTROYSET` (Linux 6.3+).
const DESTROYSET: u16 = 29;
/// `NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE` and `NFTA_SET_TABLE` are all attribute 1.
const ATTR_TABLE: u16 = 1;
/// `NFTA_CHAIN_NAME`.
const NFTA_CHAIN_NAME: u16 = 3;
/// `NFTA_SET_NAME`.
const NFTA_SET_NAME: u16 = 2;
/// The flag bits of `nla_type` (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `sizeof(struct nfgenmsg)`.
const NFGENMSG_LEN: usize = 4;
/// Room for one datagram of notifications (the kernel packs them up to a page or so).
const RECV_BUFFER: usize = 64 * 1024;
/// `ENOBUFS`.
const ENOBUFS: i32 = 105;

/// What was removed from our ruleset. Ordered: a table deletion (which announces the deletion
/// of its sets and chains first) is the one to report.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Removed {
    /// A set of the table.
    Set(String),
    /// A base chain of the table.
    Chain(String),
    /// The table.
    Table,
}

/// Scans one datagram of nf_tables notifications for the deletion of table `inet table`, of one
/// of its chains `chains` or of any of its sets, and returns the greatest. Malformed input ends
/// the scan (nothing after it is trusted).
pub fn scan(datagram: &[u8], table: &str, chains: &[&str]) -> Option<Removed> {
    let mut found = None;
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = read_u32(rest, 0).map_or(0, |l| l as usize);
        let (Some(msg_type), Some(body)) = (read_u16(rest, 4), rest.get(NLMSG_HDRLEN..len)) else {
            break; // a length shorter than the header or past the datagram
        };
        if msg_type >> 8 == NFNL_SUBSYS_NFTABLES && body.first() == Some(&NFPROTO_INET) {
            let removed = body.get(NFGENMSG_LEN..).and_then(|attrs| removal(msg_type & 0xff, attrs, table, chains));
            found = found.max(removed);
        }
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    found
}

/// Whether one deletion message of type `kind` (attributes `attrs`) concerns our ruleset.
fn removal(kind: u16, attrs: &[u8], table: &str, chains: &[&str]) -> Option<Removed> {
    if ![DELTABLE, DESTROYTABLE, DELCHAIN, DESTROYCHAIN, DELSET, DESTROYSET].contains(&kind) {
        return None;
    }
    let (mut in_table, mut name) = (None, None);
    let mut rest = attrs;
    while rest.len() >= NLA_HDRLEN {
        let len = read_u16(rest, 0)? as usize;
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let attr = read_u16(rest, 2)? & NLA_TYPE_MASK;
        let text = rest.get(NLA_HDRLEN..len)?.split(|b| *b == 0).next().unwrap_or(&[]);
        match (kind, attr) {
            (_, ATTR_TABLE) => in_table = Some(text),
            (DELCHAIN | DESTROYCHAIN, NFTA_CHAIN_NAME) | (DELSET | DESTROYSET, NFTA_SET_NAME) => name = Some(text),
            _ => {}
        }
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    if in_table != Some(table.as_bytes()) {
        return None;
    }
    let name = String::from_utf8_lossy(name.unwrap_or(&[])).into_owned();
    match kind {
        DELTABLE | DESTROYTABLE => Some(Removed::Table),
        DELCHAIN | DESTROYCHAIN if chains.contains(&name.as_str()) => Some(Removed::Chain(name)),
        DELSET | DESTROYSET => Some(Removed::Set(name)),
        _ => None,
    }
}

/// A non-blocking socket subscribed to `NFNLGRP_NFTABLES` in the calling thread's namespace.
pub struct TableWatch {
    socket: Socket,
    buf: Vec<u8>,
}

/// What a [`TableWatch::poll`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Nothing that concerns our ruleset.
    Nothing,
    /// Part of our ruleset was deleted.
    Removed(Removed),
    /// Notifications were lost (`ENOBUFS`): a deletion may have gone unseen.
    Overrun,
}

impl TableWatch {
    /// Opens the socket and joins the group (needs CAP_NET_ADMIN in the namespace).
    pub fn open() -> io::Result<TableWatch> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.add_membership(NFNLGRP_NFTABLES)?;
        socket.set_non_blocking(true)?;
        Ok(TableWatch { socket, buf: Vec::with_capacity(RECV_BUFFER) })
    }

    /// Reads every pending notification without blocking. An error other than an overrun means
    /// the socket is broken: the caller reopens it and treats the gap as an overrun.
    pub fn poll(&mut self, table: &str, chains: &[&str]) -> io::Result<Seen> {
        let mut seen = Seen::Nothing;
        loop {
            self.buf.clear();
            match self.socket.recv_from(&mut self.buf, 0) {
                Ok((len, from)) => {
                    // Notifications come from the kernel (port id 0) only.
                    if from.port_number() == 0 {
                        if let Some(r) = scan(self.buf.get(..len).unwrap_or(&self.buf), table, chains) {
                            seen = match seen {
                                Seen::Removed(before) => Seen::Removed(before.max(r)),
                                _ => Seen::Removed(r),
                            };
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(seen),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    if seen == Seen::Nothing {
                        seen = Seen::Overrun;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, text: &str) -> Vec<u8> {
        let mut a = ((NLA_HDRLEN + text.len() + 1) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(text.as_bytes());
        a.push(0);
        a.resize(align4(a.len()), 0);
        a
    }

    fn msg(kind: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for a in attrs {
            body.extend_from_slice(a);
        }
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn finds_the_deletion_of_our_table_chain_or_sets_only() {
        let scan = |d: &[u8]| scan(d, "knockd", &["prerouting", "input"]);
        assert_eq!(scan(&msg(DELTABLE, 1, &[attr(1, "knockd")])), Some(Removed::Table));
        assert_eq!(scan(&msg(DESTROYTABLE, 1, &[attr(1, "knockd")])), Some(Removed::Table));
        let chain = msg(DELCHAIN, 1, &[attr(1, "knockd"), attr(3, "prerouting")]);
        assert_eq!(scan(&chain), Some(Removed::Chain("prerouting".into())));
        let input = msg(DESTROYCHAIN, 1, &[attr(1, "knockd"), attr(3, "input")]);
        assert_eq!(scan(&input), Some(Removed::Chain("input".into())));
        let set = msg(DELSET, 1, &[attr(1, "knockd"), attr(2, "grants4")]);
        assert_eq!(scan(&set), Some(Removed::Set("grants4".into())));
        // Other tables, families, chains and kinds of change.
        assert_eq!(scan(&msg(DELTABLE, 1, &[attr(1, "filter")])), None);
        assert_eq!(scan(&msg(DELTABLE, 2, &[attr(1, "knockd")])), None, "ip, not inet");
        assert_eq!(scan(&msg(DELCHAIN, 1, &[attr(1, "knockd"), attr(3, "other")])), None);
        assert_eq!(scan(&msg(8, 1, &[attr(1, "knockd")])), None, "a rule deletion (our own flush)");
        assert_eq!(scan(&msg(14, 1, &[attr(1, "knockd")])), None, "an element deletion");
        assert_eq!(scan(&msg(0, 1, &[attr(1, "knockd")])), None, "a new table");
        // Several messages in one datagram: the table's deletion is what is reported.
        let mut d = msg(DELRULE_FOR_TEST, 1, &[attr(1, "knockd")]);
        d.extend_from_slice(&set);
        d.extend_from_slice(&msg(DELTABLE, 1, &[attr(1, "knockd")]));
        d.extend_from_slice(&chain);
        assert_eq!(scan(&d), Some(Removed::Table));
    }

    const DELRULE_FOR_TEST: u16 = 8;

    #[test]
    fn malformed_datagrams_never_panic() {
        let good = msg(DELSET, 1, &[attr(1, "knockd"), attr(2, "grants4")]);
        for cut in 0..good.len() {
            let _ = scan(&good[..cut], "knockd", &["prerouting"]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = scan(&bad, "knockd", &["prerouting"]);
            }
        }
        assert_eq!(scan(&[], "knockd", &["prerouting"]), None);
    }
}
