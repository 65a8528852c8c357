//! Byte-exact tests of the set-element encoder against the uapi constants.

use super::*;
use knock_core::Proto;

fn tcp(port: u16) -> OpenPort {
    OpenPort { port, proto: Proto::Tcp }
}

fn u16s(v: u16) -> [u8; 2] {
    v.to_ne_bytes()
}

fn u32s(v: u32) -> [u8; 4] {
    v.to_ne_bytes()
}

#[test]
fn constants_match_the_uapi_headers() {
    // <linux/netfilter/nfnetlink.h>: NLMSG_MIN_TYPE (0x10) and +1, NFNL_SUBSYS_NFTABLES 10.
    assert_eq!((NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES), (0x10, 0x11, 10));
    // <linux/netfilter/nf_tables.h>: enum nf_tables_msg_types counts NEWTABLE=0 .. NEWSETELEM=12,
    // GETSETELEM=13, DELSETELEM=14; the subsystem is the high byte.
    assert_eq!((NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM), (0x0a0c, 0x0a0e));
    assert_eq!((NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS), (1, 2, 3));
    assert_eq!((NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE), (1, 1, 1));
    assert_eq!((NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION), (4, 5));
    // <linux/netlink.h> and <linux/netfilter.h>.
    assert_eq!((NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLA_F_NESTED), (1, 4, 0x400, 0x8000));
    assert_eq!((NLMSG_ERROR, NLM_F_CAPPED, NLM_F_ACK_TLVS), (2, 0x100, 0x200));
    assert_eq!((NFPROTO_UNSPEC, NFPROTO_INET), (0, 1));
}

#[test]
fn keys_are_padded_concatenations() {
    let v4 = grant_key("198.18.66.2".parse().unwrap(), tcp(22));
    assert_eq!(v4, [198, 18, 66, 2, 6, 0, 0, 0, 0, 22, 0, 0]);
    let udp = grant_key("198.19.0.1".parse().unwrap(), OpenPort { port: 0x1234, proto: Proto::Udp });
    assert_eq!(udp, [198, 19, 0, 1, 17, 0, 0, 0, 0x12, 0x34, 0, 0]);
    let v6 = grant_key("2001:db8::2".parse().unwrap(), tcp(443));
    let mut want = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    want.extend_from_slice(&[6, 0, 0, 0, 0x01, 0xbb, 0, 0]);
    assert_eq!(v6, want);
}

/// One known grant, written out field by field.
#[test]
fn one_grant_batch_byte_for_byte() {
    let key = grant_key("198.18.66.2".parse().unwrap(), tcp(22));
    let batch = setelem_batch(100, ElemOp::Add { timeout_ms: 2000 }, "knockd", "grants4", &[key]).unwrap();

    let mut want = Vec::new();
    // Batch begin: nlmsghdr { len 20, type 0x10, flags REQUEST, seq 100, pid 0 },
    // nfgenmsg { family UNSPEC, version 0, res_id be16 10 }.
    want.extend(u32s(20));
    want.extend(u16s(0x10));
    want.extend(u16s(0x0001));
    want.extend(u32s(100));
    want.extend(u32s(0));
    want.extend([0, 0, 0, 10]);
    // NEWSETELEM: header (len 96), nfgenmsg { family INET, version 0, res_id 0 }.
    want.extend(u32s(96));
    want.extend(u16s(0x0a0c));
    want.extend(u16s(0x0405)); // REQUEST | ACK | CREATE
    want.extend(u32s(101));
    want.extend(u32s(0));
    want.extend([1, 0, 0, 0]);
    // NFTA_SET_ELEM_LIST_TABLE "knockd\0": len 4 + 7 = 11, padded with one zero.
    want.extend(u16s(11));
    want.extend(u16s(1));
    want.extend(b"knockd\0\0");
    // NFTA_SET_ELEM_LIST_SET "grants4\0": len 12, no padding.
    want.extend(u16s(12));
    want.extend(u16s(2));
    want.extend(b"grants4\0");
    // NFTA_SET_ELEM_LIST_ELEMENTS (nested, len 52)
    want.extend(u16s(52));
    want.extend(u16s(0x8000 | 3));
    //   NFTA_LIST_ELEM (nested, len 48)
    want.extend(u16s(48));
    want.extend(u16s(0x8000 | 1));
    //     NFTA_SET_ELEM_KEY (nested, len 20) { NFTA_DATA_VALUE (len 16): the 12-byte key }
    want.extend(u16s(20));
    want.extend(u16s(0x8000 | 1));
    want.extend(u16s(16));
    want.extend(u16s(1));
    want.extend([198, 18, 66, 2, 6, 0, 0, 0, 0, 22, 0, 0]);
    //     NFTA_SET_ELEM_TIMEOUT and NFTA_SET_ELEM_EXPIRATION: be64 2000 ms
    want.extend(u16s(12));
    want.extend(u16s(4));
    want.extend(2000u64.to_be_bytes());
    want.extend(u16s(12));
    want.extend(u16s(5));
    want.extend([0, 0, 0, 0, 0, 0, 0x07, 0xd0]);
    // Batch end.
    want.extend(u32s(20));
    want.extend(u16s(0x11));
    want.extend(u16s(0x0001));
    want.extend(u32s(102));
    want.extend(u32s(0));
    want.extend([0, 0, 0, 10]);

    assert_eq!(batch.bytes.len(), 136);
    assert_eq!(batch.bytes, want);
    assert_eq!(batch.ack_seq, 101);
    assert_eq!((batch.table_attr_offset, batch.set_attr_offset), (20, 32));
    assert_eq!(batch.attribute_at(20), Attribute::Table);
    assert_eq!(batch.attribute_at(32), Attribute::Set);
    assert_eq!(batch.attribute_at(48), Attribute::Elements);
}

#[test]
fn delete_has_no_timeouts_and_no_create_flag() {
    let key = grant_key("2001:db8::2".parse().unwrap(), tcp(22));
    let batch = setelem_batch(7, ElemOp::Delete, "knockd", "grants6", &[key]).unwrap();
    let msg = &batch.bytes[20..];
    assert_eq!(&msg[4..6], &u16s(NFT_MSG_DELSETELEM));
    assert_eq!(&msg[6..8], &u16s(NLM_F_REQUEST | NLM_F_ACK));
    // header 20 + table 12 + set 12 + elements (4 + list elem (4 + key (4 + 4 + 24)))
    assert_eq!(&msg[..4], &u32s(20 + 12 + 12 + 40));
    assert_eq!(batch.bytes.len(), 20 + 84 + 20);
}

/// Walks attributes recursively and checks every length, alignment and nesting bound.
fn check_attrs(mut attrs: &[u8]) -> usize {
    let mut count = 0;
    while !attrs.is_empty() {
        assert!(attrs.len() >= 4, "attribute header cut");
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        assert!(len >= 4 && len <= attrs.len(), "attribute length {len} out of bounds");
        let padded = align4(len);
        assert!(attrs[len..padded.min(attrs.len())].iter().all(|b| *b == 0), "padding not zero");
        if ty & NLA_F_NESTED != 0 {
            count += check_attrs(&attrs[4..len]);
        }
        count += 1;
        attrs = &attrs[padded.min(attrs.len())..];
    }
    count
}

#[test]
fn every_name_length_and_key_count_is_padded_and_bounded() {
    for name_len in 1..=64 {
        let table = "t".repeat(name_len);
        let set = "s".repeat(65 - name_len);
        for n in [0usize, 1, 2, 5, 128] {
            let keys: Vec<Vec<u8>> =
                (0..n).map(|i| grant_key("2001:db8::1".parse().unwrap(), tcp(i as u16 + 1))).collect();
            let b = setelem_batch(u32::MAX - 1, ElemOp::Add { timeout_ms: 1 }, &table, &set, &keys).unwrap();
            assert_eq!(b.bytes.len() % 4, 0);
            let mut rest = &b.bytes[..];
            let mut seqs = Vec::new();
            while !rest.is_empty() {
                let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
                assert_eq!(len % 4, 0, "messages end aligned");
                seqs.push(u32::from_ne_bytes(rest[8..12].try_into().unwrap()));
                if len > 20 {
                    // table + set + elements + per element (list, key, value, timeout, expiration)
                    assert_eq!(check_attrs(&rest[20..len]), 3 + 5 * n);
                }
                rest = &rest[len..];
            }
            assert_eq!(seqs, [u32::MAX - 1, u32::MAX, 0], "sequence numbers wrap");
            assert_eq!(b.ack_seq, u32::MAX);
        }
    }
}

#[test]
fn oversized_requests_are_refused_not_truncated() {
    let keys: Vec<Vec<u8>> = (0..4000).map(|_| vec![0u8; 24]).collect();
    assert!(setelem_batch(1, ElemOp::Add { timeout_ms: 1 }, "knockd", "grants6", &keys).is_none());
}
