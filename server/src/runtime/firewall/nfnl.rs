//! Pure encoder of the nfnetlink batches that add and delete elements of an nftables set.
//!
//! No I/O here: (table, set, keys, timeout) in, bytes out, so every byte is unit-tested without
//! root. The layouts are `struct nlmsghdr` and `struct nlattr` from `<linux/netlink.h>` and
//! `struct nfgenmsg` from `<linux/netfilter/nfnetlink.h>`; every constant below names the uapi
//! header it is taken from. Netlink headers and attribute headers are in host byte order;
//! `nfgenmsg.res_id`, the element timeouts and the key's port are big-endian.
//!
//! A batch is three messages: `NFNL_MSG_BATCH_BEGIN` (sequence `seq`), one `NFT_MSG_NEWSETELEM`
//! or `NFT_MSG_DELSETELEM` carrying every element (`seq + 1`, the only one that asks for an ack)
//! and `NFNL_MSG_BATCH_END` (`seq + 2`). The kernel applies the batch as one transaction.

use std::net::IpAddr;

use knock_core::config::OpenPort;

// <linux/netlink.h>
/// `NLM_F_REQUEST`: a request message.
pub const NLM_F_REQUEST: u16 = 0x01;
/// `NLM_F_ACK`: reply with an ack (an `nlmsgerr` with error 0) or an error.
pub const NLM_F_ACK: u16 = 0x04;
/// `NLM_F_CREATE`: create the element if it does not exist (no `NLM_F_EXCL`: an existing one is
/// updated, which is what restarts a re-granted element's clock).
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_CAPPED` (in an ack's flags): the echoed request was cut to its header.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (in an ack's flags): extended-ack attributes follow the echoed request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSG_ERROR`: an error or (with error 0) an ack.
pub const NLMSG_ERROR: u16 = 0x2;
/// `NLA_F_NESTED`: the attribute's payload is a list of attributes.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// `NLMSGERR_ATTR_MSG`: extended ack, error message string.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLMSGERR_ATTR_OFFS`: extended ack, offset of the offending attribute in the request (u32).
pub const NLMSGERR_ATTR_OFFS: u16 = 2;
/// `sizeof(struct nlmsghdr)`: len u32, type u16, flags u16, seq u32, pid u32.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nlattr)`: len u16, type u16.
pub const NLA_HDRLEN: usize = 4;

// <linux/netfilter/nfnetlink.h>
/// `NFNL_MSG_BATCH_BEGIN` (`NLMSG_MIN_TYPE`).
pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END` (`NLMSG_MIN_TYPE + 1`).
pub const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNL_SUBSYS_NFTABLES`: the batch's `res_id`, and the high byte of every nf_tables message type.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNETLINK_V0`: `nfgenmsg.version`.
pub const NFNETLINK_V0: u8 = 0;
/// `sizeof(struct nfgenmsg)`: family u8, version u8, res_id be16.
pub const NFGENMSG_LEN: usize = 4;

// <linux/netfilter.h>
/// `NFPROTO_UNSPEC`: family of the batch begin/end messages.
pub const NFPROTO_UNSPEC: u8 = 0;
/// `NFPROTO_INET`: family of our table (`table inet ...`).
pub const NFPROTO_INET: u8 = 1;

// <linux/netfilter/nf_tables.h>, enum nf_tables_msg_types
/// `NFT_MSG_NEWSETELEM` (12) in subsystem 10.
pub const NFT_MSG_NEWSETELEM: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 12;
/// `NFT_MSG_DELSETELEM` (14) in subsystem 10.
pub const NFT_MSG_DELSETELEM: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 14;
// enum nft_set_elem_list_attributes
/// `NFTA_SET_ELEM_LIST_TABLE` (NLA_STRING).
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
/// `NFTA_SET_ELEM_LIST_SET` (NLA_STRING).
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// `NFTA_SET_ELEM_LIST_ELEMENTS` (NLA_NESTED: list of `NFTA_LIST_ELEM`).
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
// enum nft_list_attributes
/// `NFTA_LIST_ELEM` (NLA_NESTED: nft_set_elem_attributes).
pub const NFTA_LIST_ELEM: u16 = 1;
// enum nft_set_elem_attributes
/// `NFTA_SET_ELEM_KEY` (NLA_NESTED: nft_data_attributes).
pub const NFTA_SET_ELEM_KEY: u16 = 1;
/// `NFTA_SET_ELEM_TIMEOUT` (NLA_U64, big-endian milliseconds).
pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
/// `NFTA_SET_ELEM_EXPIRATION` (NLA_U64, big-endian milliseconds).
pub const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
// enum nft_data_attributes
/// `NFTA_DATA_VALUE` (NLA_BINARY).
pub const NFTA_DATA_VALUE: u16 = 1;

/// What a batch does to the elements it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemOp {
    /// Add (or refresh) the elements; they expire after this many milliseconds (never 0: an
    /// element without a timeout would never expire).
    Add {
        /// `NFTA_SET_ELEM_TIMEOUT` and `NFTA_SET_ELEM_EXPIRATION`, in milliseconds.
        timeout_ms: u64,
    },
    /// Delete the elements.
    Delete,
}

/// An encoded batch, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The datagram: batch begin, the element message, batch end.
    pub bytes: Vec<u8>,
    /// Sequence number of the element message: its ack (or error) is the reply to wait for.
    pub ack_seq: u32,
    /// Offset of the table-name attribute inside the element message (extended acks point at it).
    pub table_attr_offset: u32,
    /// Offset of the set-name attribute inside the element message.
    pub set_attr_offset: u32,
}

impl Batch {
    /// Which attribute of the element message starts at `offset` (an extended ack's
    /// `NLMSGERR_ATTR_OFFS`): the table name, the set name or (anything else) the elements.
    pub fn attribute_at(&self, offset: u32) -> Attribute {
        if offset == self.table_attr_offset {
            Attribute::Table
        } else if offset == self.set_attr_offset {
            Attribute::Set
        } else {
            Attribute::Elements
        }
    }
}

/// The part of an element message the kernel blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `NFTA_SET_ELEM_LIST_TABLE`: the table does not exist (or is not ours to change).
    Table,
    /// `NFTA_SET_ELEM_LIST_SET`: the set does not exist in the table.
    Set,
    /// `NFTA_SET_ELEM_LIST_ELEMENTS`: one of the elements.
    Elements,
}

impl std::fmt::Display for Attribute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attribute::Table => "table",
            Attribute::Set => "set",
            Attribute::Elements => "element",
        })
    }
}

/// The key of one grant element: the concatenation `saddr . l4proto . dport`, each component
/// padded with zeros to a multiple of 4 bytes as nftables stores concatenations in registers:
/// the address (4 or 16 bytes), the IP protocol number (1 byte + 3 zero bytes), the port
/// (2 bytes big-endian + 2 zero bytes). 12 bytes for IPv4, 24 for IPv6.
pub fn grant_key(addr: IpAddr, port: OpenPort) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    match addr {
        IpAddr::V4(a) => key.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => key.extend_from_slice(&a.octets()),
    }
    key.extend_from_slice(&[port.proto.ip_number(), 0, 0, 0]);
    key.extend_from_slice(&port.port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// Encodes one batch that applies `op` to the elements with `keys` in set `set` of table
/// `inet table`. `seq`, `seq + 1` and `seq + 2` (wrapping) number its three messages.
///
/// Returns `None` if the message would not fit netlink's 16-bit attribute lengths (some
/// thousand elements): send fewer elements per batch. Names must not contain NUL bytes (the
/// caller validates them); they are sent NUL-terminated like libnftnl does.
pub fn setelem_batch(seq: u32, op: ElemOp, table: &str, set: &str, keys: &[Vec<u8>]) -> Option<Batch> {
    let mut w = Writer::default();

    let begin = w.msg_start(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES);
    w.msg_end(begin)?;

    let ack_seq = seq.wrapping_add(1);
    let (msg_type, flags) = match op {
        ElemOp::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK),
        ElemOp::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let msg = w.msg_start(msg_type, flags, ack_seq, NFPROTO_INET, 0);
    let table_attr_offset = u32::try_from(w.0.len() - msg).ok()?;
    w.attr(NFTA_SET_ELEM_LIST_TABLE, &nul_terminated(table))?;
    let set_attr_offset = u32::try_from(w.0.len() - msg).ok()?;
    w.attr(NFTA_SET_ELEM_LIST_SET, &nul_terminated(set))?;
    let elements = w.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
    for key in keys {
        let elem = w.nest_start(NFTA_LIST_ELEM);
        let key_nest = w.nest_start(NFTA_SET_ELEM_KEY);
        w.attr(NFTA_DATA_VALUE, key)?;
        w.nest_end(key_nest)?;
        if let ElemOp::Add { timeout_ms } = op {
            w.attr(NFTA_SET_ELEM_TIMEOUT, &timeout_ms.to_be_bytes())?;
            w.attr(NFTA_SET_ELEM_EXPIRATION, &timeout_ms.to_be_bytes())?;
        }
        w.nest_end(elem)?;
    }
    w.nest_end(elements)?;
    w.msg_end(msg)?;

    let end = w.msg_start(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq.wrapping_add(2), NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES);
    w.msg_end(end)?;

    Some(Batch { bytes: w.0, ack_seq, table_attr_offset, set_attr_offset })
}

/// Rounds a length up to netlink's 4-byte alignment.
pub const fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn nul_terminated(name: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes
}

/// Appends netlink messages and attributes, patching lengths when each one is closed.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    /// Starts a message with its `nlmsghdr` (length patched by `msg_end`, port id 0) and
    /// `nfgenmsg`; returns its offset.
    fn msg_start(&mut self, msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let start = self.0.len();
        self.0.extend_from_slice(&0u32.to_ne_bytes());
        self.0.extend_from_slice(&msg_type.to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&seq.to_ne_bytes());
        self.0.extend_from_slice(&0u32.to_ne_bytes());
        self.0.push(family);
        self.0.push(NFNETLINK_V0);
        self.0.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn msg_end(&mut self, start: usize) -> Option<()> {
        let len = u32::try_from(self.0.len() - start).ok()?;
        self.0.get_mut(start..start + 4)?.copy_from_slice(&len.to_ne_bytes());
        Some(())
    }

    /// Appends one attribute and pads it to 4 bytes (the length excludes the padding).
    fn attr(&mut self, attr_type: u16, payload: &[u8]) -> Option<()> {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).ok()?;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&attr_type.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
        Some(())
    }

    fn nest_start(&mut self, attr_type: u16) -> usize {
        let start = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0.extend_from_slice(&(attr_type | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn nest_end(&mut self, start: usize) -> Option<()> {
        let len = u16::try_from(self.0.len() - start).ok()?;
        self.0.get_mut(start..start + 2)?.copy_from_slice(&len.to_ne_bytes());
        Some(())
    }

    fn pad(&mut self) {
        let padded = align4(self.0.len());
        self.0.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests;
