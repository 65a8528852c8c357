//! A ledger kept as one value of a replicated store (etcd's key `<prefix>ledger/<label>`, see
//! docs/OPERATIONS.md, "Two bastions, one door"): its text, read and written whole by a
//! compare-and-swap. The text:
//!
//! ```text
//! one-time-knock-shared-ledger-v1 <label>
//! next <N>
//! used <counter> <counter> ...
//! by <node> <unix ms> <nonce>
//! ```
//!
//! `next` and `used` are the [`Counters`]; `by` names the node that wrote it, when, and a random
//! nonce, so a node that lost the answer to its own write recognises it when it reads it back.
//! Any other text is refused as damage: a ledger that cannot be read keeps its key refused.

use crate::counters::Counters;

/// The first word of every value.
pub const HEADER: &str = "one-time-knock-shared-ledger-v1";

/// Who wrote a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The node's name (`[ledger] node`).
    pub node: String,
    /// When, in unix milliseconds.
    pub unix_ms: u64,
    /// A random number of that write.
    pub nonce: u64,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedValue {
    /// What is used.
    pub counters: Counters,
    /// Who wrote it (`None` for a value written by `knockd client add` before any use).
    pub writer: Option<Writer>,
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedValueError {
    /// It belongs to another key or file.
    #[error("it is the ledger of `{found}`, expected `{expected}`")]
    WrongLabel {
        /// The label in the value.
        found: String,
        /// The label asked for.
        expected: String,
    },
    /// It is not a shared ledger's text.
    #[error("damaged ({0})")]
    Damaged(&'static str),
}

/// The text of a ledger of `label`.
pub fn encode(label: &str, counters: &Counters, writer: Option<&Writer>) -> String {
    let used: Vec<String> = counters.used().map(|c| c.to_string()).collect();
    let mut text = format!("{HEADER} {label}\nnext {}\nused {}\n", counters.next(), used.join(" "));
    if let Some(w) = writer {
        text.push_str(&format!("by {} {} {:016x}\n", w.node, w.unix_ms, w.nonce));
    }
    text
}

/// Reads the text of a ledger of `label`.
pub fn decode(label: &str, bytes: &[u8]) -> Result<SharedValue, SharedValueError> {
    use SharedValueError::Damaged;
    let text = std::str::from_utf8(bytes).map_err(|_| Damaged("not text"))?;
    let mut lines = text.lines();
    let found = lines.next().and_then(|l| l.strip_prefix(HEADER)).and_then(|l| l.strip_prefix(' '));
    let found = found.ok_or(Damaged("no header"))?;
    if found != label {
        return Err(SharedValueError::WrongLabel { found: found.into(), expected: label.into() });
    }
    let next: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("next "))
        .and_then(|n| n.parse().ok())
        .ok_or(Damaged("no next counter"))?;
    let used = lines.next().and_then(|l| l.strip_prefix("used")).ok_or(Damaged("no used line"))?;
    let used: Vec<u64> = used
        .split_whitespace()
        .map(|w| w.parse().map_err(|_| Damaged("a used counter is not a number")))
        .collect::<Result<_, _>>()?;
    if next == u64::MAX || used.contains(&u64::MAX) {
        return Err(Damaged("a counter at the end of the counter range"));
    }
    let writer = match lines.next() {
        None => None,
        Some(l) => {
            let mut w = l.strip_prefix("by ").ok_or(Damaged("an unknown line"))?.split(' ');
            let node = w.next().filter(|n| !n.is_empty()).ok_or(Damaged("no writer"))?.to_string();
            let unix_ms = w.next().and_then(|t| t.parse().ok()).ok_or(Damaged("no write time"))?;
            let nonce = w.next().and_then(|n| u64::from_str_radix(n, 16).ok()).ok_or(Damaged("no nonce"))?;
            if w.next().is_some() {
                return Err(Damaged("an unknown field"));
            }
            Some(Writer { node, unix_ms, nonce })
        }
    };
    if lines.next().is_some() {
        return Err(Damaged("an unknown line"));
    }
    Ok(SharedValue { counters: Counters::new(next, used), writer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_as_written() {
        let counters = Counters::new(12, [15, 17]);
        let w = Writer { node: "a".into(), unix_ms: 1_795_611_600_000, nonce: 0x9f2c };
        let text = encode("abc", &counters, Some(&w));
        assert_eq!(
            text,
            "one-time-knock-shared-ledger-v1 abc\nnext 12\nused 15 17\nby a 1795611600000 0000000000009f2c\n"
        );
        assert_eq!(decode("abc", text.as_bytes()).unwrap(), SharedValue { counters, writer: Some(w) });
        let fresh = encode("abc", &Counters::default(), None);
        assert_eq!(decode("abc", fresh.as_bytes()).unwrap().counters, Counters::default());
    }

    #[test]
    fn anything_else_is_refused_not_taken_for_empty() {
        assert!(matches!(
            decode("xyz", encode("abc", &Counters::default(), None).as_bytes()),
            Err(SharedValueError::WrongLabel { .. })
        ));
        for bad in [
            "",
            "one-time-knock-shared-ledger-v1 abc\n",
            "one-time-knock-shared-ledger-v1 abc\nnext x\nused\n",
            "one-time-knock-shared-ledger-v1 abc\nnext 1\nused 2 y\n",
            "one-time-knock-shared-ledger-v1 abc\nnext 18446744073709551615\nused\n",
            "one-time-knock-shared-ledger-v1 abc\nnext 1\nused\nby a 1 zz\n",
            "one-time-knock-shared-ledger-v1 abc\nnext 1\nused\nby a 1 1\nmore\n",
        ] {
            assert!(decode("abc", bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(decode("abc", &[0xff, 0xfe]).is_err());
    }
}
