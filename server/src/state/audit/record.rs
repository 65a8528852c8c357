//! One audit record being built: an event name, a time stamp and fields, written by
//! [`super::AuditLog::write`] in the order `docs/AUDIT.md` gives.

use serde_json::{Map, Value};

/// Field names the chain itself uses; a record's own field of that name is stored as `<name>_field`.
const RESERVED: [&str; 3] = ["seq", "prev", "mac"];

/// One record being built: an event name and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record(pub(super) Map<String, Value>);

impl Record {
    /// A record of `event` stamped with the current time.
    pub fn new(event: &str) -> Self {
        let mut m = Map::new();
        m.insert("ts_ms".into(), Value::from(knock_core::time::unix_now_ms()));
        m.insert("event".into(), Value::from(event));
        Record(m)
    }

    /// Adds a field (`ts_ms` replaces the time stamp; `seq`, `prev` and `mac` belong to the
    /// chain, so such a field is stored as `seq_field` and so on).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let key = if RESERVED.contains(&key) { format!("{key}_field") } else { key.to_string() };
        self.0.insert(key, value.into());
        self
    }

    /// The record's time stamp in unix milliseconds.
    pub fn ts_ms(&self) -> u64 {
        self.0.get("ts_ms").and_then(Value::as_u64).unwrap_or(0)
    }

    /// A numeric field.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.0.get(key).and_then(Value::as_u64)
    }

    /// A boolean field (false when absent).
    pub fn get_bool(&self, key: &str) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// The record's event name.
    pub fn event(&self) -> &str {
        self.0.get("event").and_then(Value::as_str).unwrap_or("")
    }

    /// The record's JSON members as written between `prev` and `mac`: `ts_ms`, `event`, then
    /// the other fields sorted by name.
    pub(super) fn members(&self) -> String {
        let mut out = String::new();
        let mut push = |k: &str, v: &Value| {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&Value::from(k).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        };
        for first in ["ts_ms", "event"] {
            if let Some(v) = self.0.get(first) {
                push(first, v);
            }
        }
        for (k, v) in self.0.iter().filter(|(k, _)| k.as_str() != "ts_ms" && k.as_str() != "event") {
            push(k, v);
        }
        out
    }
}
