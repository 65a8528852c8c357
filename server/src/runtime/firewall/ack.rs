//! Parser of the kernel's replies to a batch: finds the ack or error of one request.
//!
//! Replies meet the kernel, so this never trusts a length: every message and attribute is
//! bounds-checked before it is read, and anything malformed is an error, never a panic. A reply
//! is `struct nlmsghdr` + `struct nlmsgerr` (`int error` + the request's header, cut to the header
//! when `NLM_F_CAPPED` is set) + extended-ack attributes when `NLM_F_ACK_TLVS` is set
//! (`<linux/netlink.h>`).

use super::nfnl::{
    align4, NLA_HDRLEN, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_ACK_TLVS, NLM_F_CAPPED,
};

/// What one datagram of replies says about the request numbered `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing about it (other messages, or stale replies to earlier requests): keep waiting.
    Pending,
    /// Acked: the kernel applied it.
    Acked,
    /// Refused with this (positive) errno.
    Refused {
        /// The errno, e.g. 2 for `ENOENT`.
        errno: i32,
        /// The extended ack's message, if the kernel gave one.
        message: Option<String>,
        /// The extended ack's offset of the offending attribute in the request, if given.
        offset: Option<u32>,
    },
}

/// Scans one received datagram for the ack or error of request `seq`.
///
/// Errors say what was malformed; the caller should treat the socket's state as unknown.
pub fn scan(datagram: &[u8], seq: u32) -> Result<Reply, &'static str> {
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = read_u32(rest, 0).ok_or("truncated message header")? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err("message length out of bounds");
        }
        let msg_type = read_u16(rest, 4).ok_or("truncated message header")?;
        let flags = read_u16(rest, 6).ok_or("truncated message header")?;
        let msg_seq = read_u32(rest, 8).ok_or("truncated message header")?;
        if msg_type == NLMSG_ERROR && msg_seq == seq {
            return parse_error(rest.get(NLMSG_HDRLEN..len).ok_or("truncated error message")?, flags);
        }
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(Reply::Pending)
}

/// Parses the payload of an `NLMSG_ERROR` message that answers our request.
fn parse_error(payload: &[u8], flags: u16) -> Result<Reply, &'static str> {
    let error = read_u32(payload, 0).ok_or("error message shorter than its error code")? as i32;
    if error == 0 {
        return Ok(Reply::Acked);
    }
    let errno = i32::try_from(error.unsigned_abs()).unwrap_or(i32::MAX);
    let (mut message, mut offset) = (None, None);
    if flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request follows the error code: its header only, or all of it.
        let echoed_len = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            read_u32(payload, 4).ok_or("truncated echoed request")? as usize
        };
        let tlvs_start = 4usize.checked_add(align4(echoed_len)).ok_or("echoed request too long")?;
        let mut tlvs = payload.get(tlvs_start..).ok_or("echoed request longer than the reply")?;
        while tlvs.len() >= NLA_HDRLEN {
            let attr_len = read_u16(tlvs, 0).ok_or("truncated attribute")? as usize;
            let attr_type = read_u16(tlvs, 2).ok_or("truncated attribute")?;
            if attr_len < NLA_HDRLEN || attr_len > tlvs.len() {
                return Err("attribute length out of bounds");
            }
            let value = tlvs.get(NLA_HDRLEN..attr_len).ok_or("truncated attribute")?;
            match attr_type {
                NLMSGERR_ATTR_MSG => {
                    let text = value.split(|b| *b == 0).next().unwrap_or(&[]);
                    message = Some(String::from_utf8_lossy(text).into_owned());
                }
                NLMSGERR_ATTR_OFFS => offset = read_u32(value, 0),
                _ => {}
            }
            tlvs = tlvs.get(align4(attr_len)..).unwrap_or(&[]);
        }
    }
    Ok(Reply::Refused { errno, message, offset })
}

/// A native-endian u16 at `at`, if the bytes are there.
pub(super) fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

/// A native-endian u32 at `at`, if the bytes are there.
pub(super) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(msg_type: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&msg_type.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    fn nlmsgerr(error: i32, echoed_seq: u32) -> Vec<u8> {
        let mut p = error.to_ne_bytes().to_vec();
        p.extend_from_slice(&nlmsg(0x0a0c, 0x405, echoed_seq, &[1, 0, 0, 0])[..16]);
        p
    }

    #[test]
    fn ack_with_error_zero_is_acked() {
        let d = nlmsg(NLMSG_ERROR, NLM_F_CAPPED, 7, &nlmsgerr(0, 7));
        assert_eq!(scan(&d, 7), Ok(Reply::Acked));
    }

    #[test]
    fn error_carries_errno_message_and_offset() {
        let mut p = nlmsgerr(-2, 7);
        p.extend_from_slice(&[12, 0, 1, 0, b'n', b'o', b'p', b'e', 0, 0, 0, 0]);
        p.extend_from_slice(&[8, 0, 2, 0]);
        p.extend_from_slice(&32u32.to_ne_bytes());
        let d = nlmsg(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 7, &p);
        let want = Reply::Refused { errno: 2, message: Some("nope".into()), offset: Some(32) };
        assert_eq!(scan(&d, 7), Ok(want));
    }

    #[test]
    fn uncapped_echo_is_skipped_before_the_tlvs() {
        let mut p = (-22i32).to_ne_bytes().to_vec();
        p.extend_from_slice(&nlmsg(0x0a0c, 0x405, 7, &[1, 0, 0, 0, 9, 9]));
        p.extend_from_slice(&[0, 0]); // pad the echoed request to 4 bytes
        p.extend_from_slice(&[8, 0, 2, 0]);
        p.extend_from_slice(&20u32.to_ne_bytes());
        let d = nlmsg(NLMSG_ERROR, NLM_F_ACK_TLVS, 7, &p);
        assert_eq!(scan(&d, 7), Ok(Reply::Refused { errno: 22, message: None, offset: Some(20) }));
    }

    #[test]
    fn other_sequences_and_types_are_pending_and_later_messages_are_found() {
        let mut d = nlmsg(NLMSG_ERROR, 0, 6, &nlmsgerr(-17, 6));
        d.extend_from_slice(&nlmsg(0x0a0c, 0, 7, &[0, 0, 0, 0]));
        assert_eq!(scan(&d, 7), Ok(Reply::Pending));
        d.extend_from_slice(&nlmsg(NLMSG_ERROR, 0, 7, &nlmsgerr(0, 7)));
        assert_eq!(scan(&d, 7), Ok(Reply::Acked));
        assert_eq!(scan(&[], 7), Ok(Reply::Pending));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        let good = nlmsg(NLMSG_ERROR, NLM_F_ACK_TLVS, 7, &nlmsgerr(-2, 7));
        // Every truncation and every corrupted byte of a valid reply: never a panic.
        for cut in 0..good.len() {
            let _ = scan(&good[..cut], 7);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 3, 4, 15, 16, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = scan(&bad, 7);
            }
        }
        let mut short_len = good.clone();
        short_len[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(scan(&short_len, 7).is_err());
        let mut long_len = good.clone();
        long_len[..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(scan(&long_len, 7).is_err());
        assert!(scan(&nlmsg(NLMSG_ERROR, 0, 7, &[0, 0]), 7).is_err());
        let min = i32::MIN.to_ne_bytes();
        assert!(matches!(scan(&nlmsg(NLMSG_ERROR, 0, 7, &min), 7), Ok(Reply::Refused { .. })));
    }
}
