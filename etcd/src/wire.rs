//! The JSON of etcd's v3 gateway (the protobuf messages of `etcdserverpb` in their proto3 JSON
//! mapping): keys and values base64, 64-bit numbers as strings, fields equal to their default
//! left out (a transaction that failed has no `succeeded`, an empty range no `kvs`). Only the
//! parts a compare-and-swap ledger needs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One key and its value as etcd stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision of the cluster at which this key was last written.
    pub mod_revision: i64,
}

/// The gateway's response header.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "number")]
    pub revision: i64,
}

#[derive(Debug, Deserialize)]
struct RawKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "number")]
    mod_revision: i64,
}

/// `/v3/kv/range`'s response.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseOp {
    #[serde(default)]
    response_range: Option<RangeResponse>,
}

/// `/v3/kv/txn`'s response.
#[derive(Debug, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    responses: Vec<ResponseOp>,
}

/// An error the gateway answered with instead of a response.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct GatewayError {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: i64,
}

/// etcd writes int64 fields as JSON strings; accept numbers too.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        Value::Number(n) => n.as_i64().ok_or_else(|| serde::de::Error::custom("not an int64")),
        Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!("not a number: {other}"))),
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn decode(field: &str, what: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(field).map_err(|e| format!("{what} is not base64: {e}"))
}

impl RawKv {
    fn decode(self) -> Result<KeyValue, String> {
        Ok(KeyValue {
            key: decode(&self.key, "key")?,
            value: decode(&self.value, "value")?,
            mod_revision: self.mod_revision,
        })
    }
}

impl RangeResponse {
    /// The keys and values, decoded.
    pub fn kvs(self) -> Result<Vec<KeyValue>, String> {
        self.kvs.into_iter().map(RawKv::decode).collect()
    }
}

impl TxnResponse {
    /// The key the failure branch read back (the only request it holds), if it exists.
    pub fn read_back(self) -> Result<Option<KeyValue>, String> {
        let range = self.responses.into_iter().find_map(|r| r.response_range);
        Ok(range.map(RangeResponse::kvs).transpose()?.and_then(|mut kvs| kvs.pop()))
    }
}

/// The end of a prefix range: the prefix with its last byte that is below 0xff incremented
/// (etcd's `range_end` for "every key starting with").
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// A range request for one key, or every key under a prefix.
pub(crate) fn range(key: &[u8], prefix: bool) -> Value {
    if prefix {
        json!({ "key": b64(key), "range_end": b64(&prefix_end(key)) })
    } else {
        json!({ "key": b64(key) })
    }
}

/// A transaction that writes `value` to `key` if the key's mod revision is still
/// `expected_mod_revision` (0: the key does not exist), and otherwise reads the key back.
pub(crate) fn put_if(key: &[u8], expected_mod_revision: i64, value: &[u8]) -> Value {
    json!({
        "compare": [{
            "key": b64(key),
            "target": "MOD",
            "result": "EQUAL",
            "mod_revision": expected_mod_revision.to_string(),
        }],
        "success": [{ "request_put": { "key": b64(key), "value": b64(value) } }],
        "failure": [{ "request_range": { "key": b64(key) } }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_transaction_reads_the_key_back() {
        // What etcd 3.4 answers (succeeded left out, being false).
        let text = r#"{"header":{"cluster_id":"3249","member_id":"3319","revision":"2","raft_term":"2"},
            "responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"L2svbGVkZ2VyL2FiYw==",
            "create_revision":"2","mod_revision":"2","version":"1","value":"eyJuZXh0IjoxfQ=="}],"count":"1"}}]}"#;
        let r: TxnResponse = serde_json::from_str(text).unwrap();
        assert!(!r.succeeded);
        assert_eq!(r.header.revision, 2);
        let kv = r.read_back().unwrap().unwrap();
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice(), kv.mod_revision),
            (&b"/k/ledger/abc"[..], &b"{\"next\":1}"[..], 2)
        );
    }

    #[test]
    fn a_committed_transaction_and_an_empty_range() {
        let r: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"7"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"7"}}}]}"#,
        )
        .unwrap();
        assert!(r.succeeded && r.header.revision == 7);
        let empty: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"1"}}"#).unwrap();
        assert!(empty.kvs().unwrap().is_empty());
    }

    #[test]
    fn prefix_ends_as_etcd_counts_them() {
        assert_eq!(prefix_end(b"/knockd/"), b"/knockd0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn the_transaction_compares_the_mod_revision_as_a_string() {
        let t = put_if(b"k", 0, b"v");
        assert_eq!(t["compare"][0]["mod_revision"], "0");
        assert_eq!(t["success"][0]["request_put"]["value"], "dg==");
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for text in [r#"{"header":{"revision":"x"}}"#, r#"{"header":{"revision":1.5}}"#, "nonsense", r#"{"kvs":7}"#] {
            assert!(serde_json::from_str::<RangeResponse>(text).is_err(), "{text}");
        }
        let bad_key: RangeResponse = serde_json::from_str(r#"{"kvs":[{"key":"!!"}]}"#).unwrap();
        assert!(bad_key.kvs().is_err());
        // Whatever else arrives decodes to something or to an error, never a panic.
        for text in ["[]", "{}", r#"{"responses":[{}]}"#] {
            let _ = serde_json::from_str::<TxnResponse>(text).map(|r| r.read_back());
        }
    }
}
