//! Sequence files for `file`-mode doors: one sequence per line, used once each, in order.
//!
//! Format (sequences/README.md): blank lines and lines starting with `#` are ignored; every
//! other line is one sequence of knocks `port[:tcp|udp]` separated by spaces or commas (so
//! knockd's `one_time_sequences` lines read as they are). Sequence *i* (0-based, counting
//! sequence lines only) plays the counter's part. A file is identified by its SHA-256, so the
//! ledger of a rotated-away file is kept and a replaced file starts fresh.

use std::path::{Path, PathBuf};

use rand::{Rng, TryRngCore};
use sha2::{Digest, Sha256};

use crate::keys::hex;
use crate::knock::Knock;
use crate::sequence::Alphabet;

/// One sequence of a file, with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSequence {
    /// 1-based line number in the file.
    pub line: usize,
    /// The knocks.
    pub knocks: Vec<Knock>,
}

/// A parsed sequence file.
#[derive(Debug, Clone)]
pub struct SequenceFile {
    /// Where it came from.
    pub path: PathBuf,
    /// Its sequences, in order.
    pub sequences: Vec<FileSequence>,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// A sequence-file error with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct SeqFileError {
    /// The file (displayed).
    pub path: String,
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl SequenceFile {
    /// Reads and parses a sequence file.
    pub fn load(path: &Path) -> Result<SequenceFile, SeqFileError> {
        let bytes = std::fs::read(path).map_err(|e| SeqFileError {
            path: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses the bytes of a sequence file.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SequenceFile, SeqFileError> {
        let err =
            |line, column, message: String| SeqFileError { path: path.display().to_string(), line, column, message };
        let text = std::str::from_utf8(bytes).map_err(|e| err(0, 0, format!("not UTF-8 text: {e}")))?;
        let mut sequences = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut knocks = Vec::new();
            for word in raw.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
                let column = word.as_ptr() as usize - raw.as_ptr() as usize + 1;
                knocks.push(word.parse::<Knock>().map_err(|e| err(i + 1, column, e))?);
            }
            if knocks.len() < 2 {
                return Err(err(i + 1, 1, "a sequence needs at least 2 knocks".into()));
            }
            sequences.push(FileSequence { line: i + 1, knocks });
        }
        Ok(SequenceFile { path: path.to_path_buf(), sequences, sha256: hex(&Sha256::digest(bytes)) })
    }

    /// The ledger label of this file: `file-` and the first 32 hex digits of its SHA-256.
    pub fn ledger_label(&self) -> String {
        format!("file-{}", &self.sha256[..32])
    }
}

/// Draws `count` random sequences of `length` knocks over `alphabet` from the OS RNG, adjacent
/// knocks distinct, and renders them in the file format with a header comment.
pub fn generate(alphabet: &Alphabet, length: usize, count: usize, header: &str) -> String {
    let mut rng = rand::rngs::OsRng.unwrap_err();
    let mut out = String::new();
    out.push_str("# one-time-knock sequences v1: one sequence per line, each used once, in order\n");
    for line in header.lines() {
        out.push_str(&format!("# {line}\n"));
    }
    for _ in 0..count {
        let mut prev = None;
        let mut words = Vec::with_capacity(length);
        for _ in 0..length {
            let v = loop {
                let v = rng.random_range(0..alphabet.size());
                if Some(v) != prev {
                    break v;
                }
            };
            prev = Some(v);
            words.push(alphabet.knock(v).to_string());
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knock::{PortRange, Proto};

    #[test]
    fn parses_spaces_commas_comments_and_knows_lines() {
        let text = b"# header\n\n40001:tcp 40002:udp\n7000,8000:udp,9000\n";
        let f = SequenceFile::parse(Path::new("s.seq"), text).unwrap();
        assert_eq!(f.sequences.len(), 2);
        assert_eq!(f.sequences[0].line, 3);
        assert_eq!(f.sequences[1].knocks, vec![Knock::tcp(7000), Knock::udp(8000), Knock::tcp(9000)]);
        assert_eq!(f.ledger_label().len(), 5 + 32);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = SequenceFile::parse(Path::new("s.seq"), b"40001 40002\n40001 4x002\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7), "{e}");
        assert!(e.to_string().starts_with("s.seq:2:7:"));
        assert!(SequenceFile::parse(Path::new("s.seq"), b"40001\n").is_err());
    }

    #[test]
    fn generated_files_parse_back_within_the_alphabet() {
        let alpha = Alphabet::new(PortRange::new(40000, 40003).unwrap(), &[Proto::Tcp, Proto::Udp]).unwrap();
        let text = generate(&alpha, 6, 50, "door: ssh");
        let f = SequenceFile::parse(Path::new("g.seq"), text.as_bytes()).unwrap();
        assert_eq!(f.sequences.len(), 50);
        for s in &f.sequences {
            assert_eq!(s.knocks.len(), 6);
            assert!(s.knocks.iter().all(|k| alpha.contains(*k)));
            assert!(s.knocks.windows(2).all(|w| w[0] != w[1]));
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let f = SequenceFile::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sequences/example.seq"))).unwrap();
        assert_eq!(f.sequences.len(), 2);
        assert_eq!(f.sequences[1].line, 4);
    }

    #[test]
    fn protocol_md_counts_the_lines_of_its_file_example_as_the_parser_does() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
        let example =
            doc.split("Example: in\n\n```\n").nth(1).and_then(|r| r.split("```").next()).expect("the example");
        let f = SequenceFile::parse(Path::new("example"), example.as_bytes()).unwrap();
        let lines: Vec<usize> = f.sequences.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 5], "PROTOCOL.md: \"sequence 0 is on line 3 and sequence 1 on line 5\"");
        assert!(doc.contains("sequence 0 is on line 3 and sequence 1 on line 5"));
    }
}
