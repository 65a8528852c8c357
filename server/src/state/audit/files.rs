//! The audit log's files: rotated names, the writer's lock, the torn tail, orphaned chains.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use knock_core::auditchain::parse_line;
use serde_json::{Map, Value};

use super::error::AuditError;

fn dir_of(log: &Path) -> &Path {
    log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn file_name(log: &Path) -> String {
    log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `audit.log.N`.
pub(crate) fn rotated_path(log: &Path, n: u64) -> PathBuf {
    dir_of(log).join(format!("{}.{n}", file_name(log)))
}

/// The numbers of the rotated files, ascending.
fn rotations(log: &Path) -> std::io::Result<Vec<u64>> {
    let prefix = format!("{}.", file_name(log));
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir_of(log)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix(&prefix).filter(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())) {
            if let Ok(n) = n.parse::<u64>() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The number the next rotated file gets.
pub(crate) fn next_rotation(log: &Path) -> std::io::Result<u64> {
    Ok(rotations(log)?.last().map_or(1, |n| n + 1))
}

/// Every file of the chain in order: rotated files oldest first, then the live file (when present).
pub fn chain_files(log: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = rotations(log)?.into_iter().map(|n| rotated_path(log, n)).collect();
    if log.exists() {
        out.push(log.to_path_buf());
    }
    Ok(out)
}

/// Whether any file of the chain holds a byte.
pub(crate) fn has_records(log: &Path) -> std::io::Result<bool> {
    for f in chain_files(log)? {
        if std::fs::metadata(&f)?.len() > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Syncs the directory holding `log` (after a rename).
pub(crate) fn sync_dir(log: &Path) -> std::io::Result<()> {
    File::open(dir_of(log))?.sync_all()
}

/// Opens `audit.lock` next to the log (writers lock it for each operation).
pub(crate) fn lock_file(log: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(log.with_extension("lock"))
}

/// Moves every file of a chain that lost its `audit.key` (and `also`: its export mark) into a
/// new directory `audit.orphaned-<unix ms>`, so a new chain can start; returns that directory.
pub(crate) fn orphan(log: &Path, also: Option<PathBuf>) -> std::io::Result<PathBuf> {
    let to = dir_of(log).join(format!("audit.orphaned-{}", knock_core::time::unix_now_ms()));
    DirBuilder::new().mode(0o700).create(&to)?;
    let mut moving = chain_files(log)?;
    moving.extend(also);
    for f in moving {
        if let Some(name) = f.file_name() {
            std::fs::rename(&f, to.join(name))?;
        }
    }
    sync_dir(log)?;
    Ok(to)
}

/// Splits the live file's bytes into what to keep and a torn last line to cut: a last line
/// without a newline, or one that is not a framed record (a crash during its write).
pub(crate) fn torn_tail(bytes: &[u8]) -> (usize, Option<&[u8]>) {
    if bytes.is_empty() {
        return (0, None);
    }
    let body = bytes.strip_suffix(b"\n");
    let search = body.unwrap_or(bytes);
    let start = search.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    match body {
        Some(b) if parse_line(&b[start..]).is_ok() => (bytes.len(), None),
        _ => (start, Some(&bytes[start..])),
    }
}

fn lines_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
}

/// The chain's last lines: from the live file's bytes (`current`), preceded by as many
/// rotated files (newest first) as it takes to reach a line with seq <= `seq` or the start.
pub(crate) fn tail_from(log: &Path, current: &[u8], seq: u64) -> std::io::Result<Vec<Vec<u8>>> {
    let mut lines = lines_of(current);
    let reached = |lines: &[Vec<u8>]| lines.first().and_then(|l| parse_line(l).ok()).is_some_and(|f| f.seq <= seq);
    for n in rotations(log)?.into_iter().rev() {
        if reached(&lines) {
            break;
        }
        let mut older = lines_of(&std::fs::read(rotated_path(log, n))?);
        older.append(&mut lines);
        lines = older;
    }
    Ok(lines)
}

/// A line as written and its JSON object.
pub type Line = (String, Map<String, Value>);

/// The JSON objects of one file's lines, with each line's text. With `torn_ok`, a last line
/// without a newline or not JSON is left out (a crash during its write); any other line that
/// is not a JSON object is an error naming the file and line.
pub(crate) fn json_lines(name: &str, bytes: &[u8], torn_ok: bool) -> Result<Vec<Line>, AuditError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let (line, terminated, next) = match rest.iter().position(|&c| c == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &[][..]),
        };
        rest = next;
        let last = rest.is_empty();
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(m)) if terminated => out.push((String::from_utf8_lossy(line).into_owned(), m)),
            _ if last && torn_ok => break,
            _ => return Err(AuditError::NotRecord { file: name.to_string(), line: number }),
        }
    }
    Ok(out)
}

/// Reads every record of one audit file (malformed lines are reported, not skipped silently;
/// a torn last line is left out).
pub fn read_records(path: &Path) -> Result<Vec<Map<String, Value>>, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Read { path: path.to_path_buf(), source })?;
    let name = path.display().to_string();
    Ok(json_lines(&name, &bytes, true)?.into_iter().map(|(_, m)| m).collect())
}

/// The records of every file of the chain, oldest first, each with its line as written. Only
/// the very last line of the live file may be torn.
pub fn all_records(log: &Path) -> Result<Vec<Line>, AuditError> {
    let paths = chain_files(log).map_err(|source| AuditError::Read { path: log.to_path_buf(), source })?;
    if paths.is_empty() {
        return Err(AuditError::NoLog(log.to_path_buf()));
    }
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let bytes = std::fs::read(p).map_err(|source| AuditError::Read { path: p.clone(), source })?;
        out.extend(json_lines(&p.display().to_string(), &bytes, i + 1 == paths.len())?);
    }
    Ok(out)
}
