//! knockd 0.8's `knockd.conf`, read into the same [`Config`] model as a knockd.toml.
//!
//! The format, as knockd 0.8 parses it: one directive a line; surrounding spaces and tabs are
//! ignored; a line whose first non-blank character is `#` is a comment (a `#` later in a line is
//! part of the value, so commands may hold one); `[options]` (in lower case: knockd compares it
//! exactly, so `[Options]` is a door) holds daemon-wide settings and every other `[name]` starts
//! a door; `key = value`, split at the first `=`, keys in any case
//! (`Seq_Timeout`, `SEQUENCE`); `UseSyslog` alone on its line.
//!
//! | directive | here |
//! |---|---|
//! | `UseSyslog` | supported: [`LegacyOptions::use_syslog`] (accepted in any section, as knockd does, with a warning outside `[options]`) |
//! | `LogFile`, `PidFile` | supported: [`LegacyOptions`]; relative paths resolved against the config's directory |
//! | `Interface` | supported; also a comma-separated list (`eth0, eth1`); default `eth0` |
//! | `Sequence` | supported: `port[:tcp\|udp]`, comma-separated, 1..=32 knocks |
//! | `One_Time_Sequences` | supported: the file is read by the daemon; used lines invalidated with `#` |
//! | `Seq_Timeout` / `Timeout` | supported: whole seconds, 1..=604800; default 25 |
//! | `TCPFlags` | supported: fin, syn, rst, psh, ack, urg, each optionally `!`; a flag both required and excluded is refused |
//! | `Start_Command` / `Command` | supported (the same directive, as in knockd) |
//! | `Start_Command_6` / `Command_6` | supported; absent: the IPv4 command is used; empty: nothing runs |
//! | `Stop_Command`, `Stop_Command_6` | supported, same fallback and empty-value rules |
//! | `Cmd_Timeout` | supported: whole seconds, 0..=604800; default 10; warned when there is no stop command |
//! | `Target` | supported as an IP address (→ [`Door::addresses`]); a host name is refused (knockd passes it to pcap, which resolves it at start) |
//!
//! Stricter than knockd, each with an error naming line and column: a control character other
//! than tab outside a comment (NUL, a carriage return inside a line, DEL: no value can carry one
//! into a command or a knockd.toml), an unknown key (knockd: "syntax error"), a value knockd's `atoi` would read as 0 or truncate (`seq_timeout = 5s`), a directive
//! given twice in one section (knockd silently keeps the last), a door defined twice (knockd would
//! run both), a door with both or neither of `sequence` / `one_time_sequences`, a door without a
//! start command (knockd would only log the knock), and a door name outside `[A-Za-z0-9_.-]`
//! (the name is substituted into commands as `%DOOR%`) or longer than 64 characters.
//!
//! A door becomes a [`Door`] with knockd's own rules ([`LegacyRules`]): mode `static` or `file`,
//! window 1, no miss budget, `open` empty (its commands do the opening), [`Action::Commands`].
//! Its `alphabet` is a placeholder (the span of a static sequence's ports and protocols; 1-65535
//! TCP and UDP for a one-time file); the daemon computes a legacy door's exact knock set itself.
//! A `one_time_sequences` door has `length` 0, because the file's lines may differ in length
//! and are only read by the daemon: this parser does no I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    Action, CommandAction, Config, ConfigError, ConfigWarning, Door, FirewallKind, LegacyOptions, LegacyRules,
    ServerConfig, TcpFlagRule, DEFAULT_CMD_TIMEOUT,
};
use crate::knock::{Knock, PortRange, Proto};
use crate::sequence::{Alphabet, Mode, MAX_LENGTH};

/// knockd's default `seq_timeout`.
pub const KNOCKD_SEQ_TIMEOUT: Duration = Duration::from_secs(25);
/// knockd's default interface.
pub const KNOCKD_INTERFACE: &str = "eth0";
/// Longest door name accepted (it also names ledger entries and log fields).
pub const MAX_DOOR_NAME: usize = 64;
/// Longest timeout accepted, in seconds (7 days).
const MAX_SECS: u64 = 7 * 86_400;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// TCP flag bits, as in the TCP header.
const FLAGS: [(&str, u8); 6] =
    [("fin", 0x01), ("syn", 0x02), ("rst", 0x04), ("psh", 0x08), ("ack", 0x10), ("urg", 0x20)];

/// A directive, aliases folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    UseSyslog,
    LogFile,
    PidFile,
    Interface,
    Target,
    Sequence,
    OneTimeSequences,
    SeqTimeout,
    StartCommand,
    StartCommand6,
    CmdTimeout,
    StopCommand,
    StopCommand6,
    TcpFlags,
}

const OPTION_KEYS: &str = "UseSyslog, LogFile, PidFile, Interface";
const DOOR_KEYS: &str =
    "sequence, one_time_sequences, seq_timeout (or timeout), tcpflags, start_command (or command), \
                         start_command_6 (or command_6), stop_command, stop_command_6, cmd_timeout, target";

impl Key {
    fn parse(key: &str) -> Option<Key> {
        Some(match key.to_ascii_uppercase().as_str() {
            "USESYSLOG" => Key::UseSyslog,
            "LOGFILE" => Key::LogFile,
            "PIDFILE" => Key::PidFile,
            "INTERFACE" => Key::Interface,
            "TARGET" => Key::Target,
            "SEQUENCE" => Key::Sequence,
            "ONE_TIME_SEQUENCES" => Key::OneTimeSequences,
            "SEQ_TIMEOUT" | "TIMEOUT" => Key::SeqTimeout,
            "START_COMMAND" | "COMMAND" => Key::StartCommand,
            "START_COMMAND_6" | "COMMAND_6" => Key::StartCommand6,
            "CMD_TIMEOUT" => Key::CmdTimeout,
            "STOP_COMMAND" => Key::StopCommand,
            "STOP_COMMAND_6" => Key::StopCommand6,
            "TCPFLAGS" => Key::TcpFlags,
            _ => return None,
        })
    }

    fn is_option(self) -> bool {
        matches!(self, Key::UseSyslog | Key::LogFile | Key::PidFile | Key::Interface)
    }
}

/// One `key = value` line.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    key: Key,
    /// The key as written.
    written: &'a str,
    /// The whole line, for columns inside the value.
    raw: &'a str,
    line: usize,
    /// Byte offset of the key in `raw`.
    key_at: usize,
    /// Byte offset of the trimmed value in `raw`.
    value_at: usize,
    /// The trimmed value.
    value: &'a str,
}

/// A `[name]` door section.
struct Section<'a> {
    name: &'a str,
    line: usize,
    column: usize,
    entries: Vec<Entry<'a>>,
}

impl<'a> Section<'a> {
    fn get(&self, key: Key) -> Option<&Entry<'a>> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// 1-based character column of byte offset `at` in `raw` (a char boundary).
fn column(raw: &str, at: usize) -> usize {
    raw.get(..at).map_or(0, |s| s.chars().count()) + 1
}

/// Builds located errors and warnings for one file.
struct Place<'a> {
    path: &'a Path,
}

impl Place<'_> {
    fn err(&self, line: usize, column: usize, message: impl Into<String>) -> ConfigError {
        ConfigError { path: self.path.to_path_buf(), line: Some(line), column: Some(column), message: message.into() }
    }
    fn at(&self, e: &Entry, offset_in_value: usize, message: impl Into<String>) -> ConfigError {
        self.err(e.line, column(e.raw, e.value_at + offset_in_value), message)
    }
    fn at_key(&self, e: &Entry, message: impl Into<String>) -> ConfigError {
        self.err(e.line, column(e.raw, e.key_at), message)
    }
    fn warn(&self, line: usize, column: usize, message: impl Into<String>) -> ConfigWarning {
        ConfigWarning { path: self.path.to_path_buf(), line: Some(line), column: Some(column), message: message.into() }
    }
}

/// Where directives currently go.
#[derive(Clone, Copy)]
enum Current {
    Nowhere,
    Options,
    Door(usize),
}

/// Parses knockd 0.8 config text that came from `path` into a [`Config`]; see the module
/// documentation for what each directive becomes. Relative paths are resolved against `path`'s
/// directory. Any input gives a `Config` or a located [`ConfigError`], never a panic.
pub fn parse_knockd_conf(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let place = Place { path };
    let mut options: Vec<Entry> = Vec::new();
    let mut doors: Vec<Section> = Vec::new();
    // Door name -> its index in `doors`: a set, so many sections stay linear.
    let mut door_index: HashMap<&str, usize> = HashMap::new();
    let mut current = Current::Nowhere;
    let mut warnings = Vec::new();

    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let start = raw.len() - raw.trim_start().len();
        if let Some((at, c)) = raw.char_indices().find(|(_, c)| c.is_control() && *c != '\t') {
            return Err(place.err(
                line,
                column(raw, at),
                format!(
                    "control character U+{:04X} in this line: knockd.conf values are plain text on one line \
                     (a command cannot hold a NUL, a carriage return or DEL either); remove it",
                    u32::from(c)
                ),
            ));
        }
        if trimmed.starts_with('[') {
            current = section_header(&place, raw, trimmed, start, line, &mut doors, &mut door_index)?;
            continue;
        }
        let (key_text, value) = match trimmed.split_once('=') {
            Some((k, v)) => (k.trim_end(), Some(v)),
            None => (trimmed, None),
        };
        let col = column(raw, start);
        if key_text.is_empty() {
            return Err(place.err(line, col, "missing key before `=`; expected `key = value`"));
        }
        let key = Key::parse(key_text);
        let accepted = match current {
            Current::Nowhere => {
                return Err(place.err(
                    line,
                    col,
                    format!(
                        "`{key_text}` is outside any section; directives go under an [options] or a [doorname] \
                         header (knockd: \"all directives must belong to a section\")"
                    ),
                ))
            }
            Current::Options => OPTION_KEYS,
            Current::Door(_) => DOOR_KEYS,
        };
        let Some(value) = value else {
            match key {
                Some(Key::UseSyslog) => {
                    if let Current::Door(d) = current {
                        warnings.push(place.warn(
                            line,
                            col,
                            format!(
                                "UseSyslog in door [{}] applies to the whole daemon; move it to [options]",
                                doors[d].name
                            ),
                        ));
                    }
                    if let Some(first) = options.iter().find(|e| e.key == Key::UseSyslog) {
                        return Err(place.err(
                            line,
                            col,
                            format!("UseSyslog is given twice (first at line {})", first.line),
                        ));
                    }
                    options.push(Entry {
                        key: Key::UseSyslog,
                        written: key_text,
                        raw,
                        line,
                        key_at: start,
                        value_at: start,
                        value: "",
                    });
                    continue;
                }
                _ => {
                    let word = trimmed.split_whitespace().next().unwrap_or(trimmed);
                    let message = match Key::parse(word) {
                        Some(_) => format!("missing `=` after `{word}`: expected `{word} = value`"),
                        None => format!(
                            "expected `key = value` but there is no `=` in `{trimmed}` (only UseSyslog stands alone); \
                             accepted here: {accepted}"
                        ),
                    };
                    return Err(place.err(line, col, message));
                }
            }
        };
        let Some(key) = key else {
            let hint = suggestion(key_text).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
            return Err(place.err(line, col, format!("unknown key `{key_text}`{hint}; accepted here: {accepted}")));
        };
        if key == Key::UseSyslog {
            return Err(place.err(line, col, "UseSyslog takes no value: write `UseSyslog` alone on its line"));
        }
        let value_at = start + key_text.len() + (trimmed[key_text.len()..].len() - value.len());
        let value_at = value_at + (value.len() - value.trim_start().len());
        let entry = Entry { key, written: key_text, raw, line, key_at: start, value_at, value: value.trim() };
        let entries = match current {
            Current::Options if key.is_option() => &mut options,
            Current::Options => {
                return Err(place.err(
                    line,
                    col,
                    format!("`{key_text}` can only be used within a door section, not in [options]; accepted here: {OPTION_KEYS}"),
                ))
            }
            Current::Door(d) if !key.is_option() => &mut doors[d].entries,
            Current::Door(d) => {
                return Err(place.err(
                    line,
                    col,
                    format!(
                        "`{key_text}` is daemon-wide: it belongs in [options], not in door [{}]{}",
                        doors[d].name,
                        options_hint(doors[d].name)
                    ),
                ))
            }
            Current::Nowhere => return Err(place.err(line, col, format!("`{key_text}` is outside any section"))),
        };
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return Err(place.err(
                line,
                col,
                format!(
                    "`{key_text}` is given twice in this section (first as `{}` at line {}); knockd would silently \
                     keep the last one: keep one",
                    first.written, first.line
                ),
            ));
        }
        entries.push(entry);
    }

    let resolve = |p: &str| super::resolve_path(path, p);
    let mut legacy_options = LegacyOptions::default();
    let mut interfaces = vec![KNOCKD_INTERFACE.to_string()];
    for e in &options {
        match e.key {
            Key::UseSyslog => legacy_options.use_syslog = true,
            Key::LogFile => legacy_options.log_file = Some(resolve(nonempty_path(&place, e)?)),
            Key::PidFile => legacy_options.pid_file = Some(resolve(nonempty_path(&place, e)?)),
            Key::Interface => interfaces = parse_interfaces(&place, e)?,
            _ => {}
        }
    }
    let mut built = Vec::with_capacity(doors.len());
    for section in &doors {
        built.push(build_door(&place, section, &resolve, &mut warnings)?);
    }
    if built.is_empty() {
        return Err(ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: "no door section; add one, e.g. [openSSH] with sequence = 7000,8000,9000 and a command".into(),
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        server: ServerConfig {
            state_dir: PathBuf::from("/var/lib/knockd"),
            interfaces,
            firewall: FirewallKind::None,
            nft_table: "knockd".into(),
        },
        doors: built,
        ledger: super::LedgerBackend::File,
        legacy_options: Some(legacy_options),
        warnings,
    })
}

/// The known directive closest to a misspelt one (at most 2 edits away).
fn suggestion(key: &str) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "UseSyslog",
        "LogFile",
        "PidFile",
        "Interface",
        "target",
        "sequence",
        "one_time_sequences",
        "seq_timeout",
        "timeout",
        "start_command",
        "command",
        "start_command_6",
        "command_6",
        "cmd_timeout",
        "stop_command",
        "stop_command_6",
        "tcpflags",
    ];
    let key = key.to_ascii_lowercase();
    if key.len() > 40 {
        return None;
    }
    NAMES
        .iter()
        .map(|n| (edit_distance(&key, &n.to_ascii_lowercase()), *n))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes (short ASCII keys only).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A `[name]` line: `[options]` or a new door.
fn section_header<'a>(
    place: &Place,
    raw: &'a str,
    trimmed: &'a str,
    start: usize,
    line: usize,
    doors: &mut Vec<Section<'a>>,
    door_index: &mut HashMap<&'a str, usize>,
) -> Result<Current, ConfigError> {
    let col = column(raw, start);
    if trimmed.starts_with("[[") {
        return Err(place.err(
            line,
            col,
            format!(
                "`{trimmed}` is knockd.toml syntax, but a file whose name does not end in .toml is read as a \
                 knockd 0.8 knockd.conf: rename the file to *.toml"
            ),
        ));
    }
    let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return Err(place.err(
            line,
            col,
            "a section header is `[name]` alone on its line (knockd.conf has no comments after a value)",
        ));
    };
    let name_col = col + 1;
    if name.is_empty() {
        return Err(place.err(line, name_col, "empty section name; expected [options] or [doorname]"));
    }
    // knockd compares with "options" exactly: `[Options]` is a door there, and so it is here.
    if name == "options" {
        return Ok(Current::Options);
    }
    if let Some((at, c)) =
        name.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(place.err(
            line,
            column(raw, start + 1 + at),
            format!(
                "door name `{name}` has {c:?}: a door name may hold only A-Z, a-z, 0-9, `_`, `.` and `-`, \
                 because it is substituted into commands as %DOOR%; rename the section"
            ),
        ));
    }
    if name.len() > MAX_DOOR_NAME {
        return Err(place.err(
            line,
            name_col,
            format!("door name `{name}` is {} characters long; at most {MAX_DOOR_NAME} are accepted", name.len()),
        ));
    }
    if let Some(first) = door_index.get(name).map(|&i| &doors[i]) {
        return Err(place.err(
            line,
            name_col,
            format!(
                "door [{name}] is defined twice (first at line {}); knockd would run both: merge them or rename one",
                first.line
            ),
        ));
    }
    door_index.insert(name, doors.len());
    doors.push(Section { name, line, column: name_col, entries: Vec::new() });
    Ok(Current::Door(doors.len() - 1))
}

/// A hint for `[Options]` and the like, which knockd (and we) read as a door.
fn options_hint(name: &str) -> &'static str {
    if name.eq_ignore_ascii_case("options") {
        " (section names are case-sensitive: the global section is spelt [options])"
    } else {
        ""
    }
}

fn nonempty_path<'a>(place: &Place, e: &Entry<'a>) -> Result<&'a str, ConfigError> {
    if e.value.is_empty() {
        return Err(
            place.at_key(e, format!("`{}` needs a path, e.g. `{} = /var/log/knockd.log`", e.written, e.written))
        );
    }
    Ok(e.value)
}

/// `Interface = eth0` or, unlike knockd, `Interface = eth0, eth1`.
fn parse_interfaces(place: &Place, e: &Entry) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    let mut offset = 0;
    for part in e.value.split(',') {
        let lead = part.len() - part.trim_start().len();
        let name = part.trim();
        let at = offset + lead;
        offset += part.len() + 1;
        if name.is_empty() {
            return Err(place.at(e, at, "empty interface name; expected e.g. `Interface = eth0` or `eth0, eth1`"));
        }
        if name.len() > MAX_IFNAME
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'\\')
        {
            return Err(place.at(
                e,
                at,
                format!(
                    "`{name}` is not an interface name (at most {MAX_IFNAME} characters, no `/`, spaces or `:`; \
                     give the name only, e.g. eth0, not /dev/eth0)"
                ),
            ));
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Whole seconds in `range`, e.g. `seq_timeout = 15`.
fn parse_secs(place: &Place, e: &Entry, range: std::ops::RangeInclusive<u64>) -> Result<Duration, ConfigError> {
    let n = (!e.value.is_empty() && e.value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| e.value.parse::<u64>().ok())
        .flatten()
        .filter(|n| range.contains(n));
    n.map(Duration::from_secs).ok_or_else(|| {
        place.at(
            e,
            0,
            format!(
                "`{} = {}`: expected whole seconds from {} to {}, e.g. `{} = 15`",
                e.written,
                e.value,
                range.start(),
                range.end(),
                e.written
            ),
        )
    })
}

/// One knock of a sequence: `port[:tcp|udp]`, spaces allowed around each part.
fn parse_knock(place: &Place, e: &Entry, token: &str, at: usize) -> Result<Knock, ConfigError> {
    let lead = token.len() - token.trim_start().len();
    let t = token.trim();
    if t.is_empty() {
        return Err(place.at(
            e,
            at,
            "empty knock (two commas in a row, or one at the end); expected `port[:tcp|udp]` separated by commas",
        ));
    }
    let (port_text, proto) = match t.split_once(':') {
        Some((p, proto)) => {
            let proto_at = at + lead + p.len() + 1;
            let proto_at = proto_at + (proto.len() - proto.trim_start().len());
            let proto = proto.trim().parse::<Proto>().map_err(|m| place.at(e, proto_at, m))?;
            (p.trim_end(), proto)
        }
        None => (t, Proto::Tcp),
    };
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0 && port_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            place.at(e, at + lead, format!("`{t}` is not a knock: expected a port 1-65535, optionally :tcp or :udp"))
        })?;
    Ok(Knock { port, proto })
}

/// `sequence = 7000,8000:udp,9000`.
fn parse_sequence(place: &Place, e: &Entry) -> Result<Vec<Knock>, ConfigError> {
    let mut knocks = Vec::new();
    let mut offset = 0;
    for token in e.value.split(',') {
        if knocks.len() == MAX_LENGTH {
            return Err(place.at(e, offset, format!("too many knocks: a sequence has at most {MAX_LENGTH}")));
        }
        knocks.push(parse_knock(place, e, token, offset)?);
        offset += token.len() + 1;
    }
    Ok(knocks)
}

/// `tcpflags = syn,!ack`.
fn parse_flags(place: &Place, e: &Entry) -> Result<TcpFlagRule, ConfigError> {
    let mut rule = TcpFlagRule::ANY;
    let mut offset = 0;
    for token in e.value.split(',') {
        let at = offset + (token.len() - token.trim_start().len());
        offset += token.len() + 1;
        let t = token.trim();
        let (negated, name) = match t.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, t),
        };
        let Some(&(canon, bit)) = FLAGS.iter().find(|(f, _)| f.eq_ignore_ascii_case(name)) else {
            return Err(place.at(
                e,
                at,
                format!("unknown TCP flag `{t}`; expected fin, syn, rst, psh, ack or urg, each optionally `!`-negated, separated by commas"),
            ));
        };
        let (this, other) = if negated { (&mut rule.clear, rule.set) } else { (&mut rule.set, rule.clear) };
        if other & bit != 0 {
            return Err(place.at(
                e,
                at,
                format!("TCP flag {canon} is both required and excluded (`{canon}` and `!{canon}`); keep one"),
            ));
        }
        *this |= bit;
    }
    Ok(rule)
}

/// The text of `tcpflags` for a rule, in knockd's form (`syn,!ack`).
pub fn tcp_flags_text(rule: TcpFlagRule) -> String {
    let mut parts = Vec::new();
    for (name, bit) in FLAGS {
        if rule.set & bit != 0 {
            parts.push(name.to_string());
        }
        if rule.clear & bit != 0 {
            parts.push(format!("!{name}"));
        }
    }
    parts.join(",")
}

fn build_door(
    place: &Place,
    s: &Section,
    resolve: &dyn Fn(&str) -> PathBuf,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Door, ConfigError> {
    let name = s.name;
    let (mode, static_sequence, sequence_file) = match (s.get(Key::Sequence), s.get(Key::OneTimeSequences)) {
        (Some(a), Some(b)) => {
            let later = if a.line > b.line { a } else { b };
            return Err(place.at_key(
                later,
                format!(
                    "door [{name}] has both sequence (line {}) and one_time_sequences (line {}); give exactly one",
                    a.line, b.line
                ),
            ));
        }
        (None, None) => {
            return Err(place.err(
                s.line,
                s.column,
                format!(
                    "door [{name}] has no sequence: add `sequence = 7000,8000,9000` \
                     (or `one_time_sequences = /path/to/file`){}",
                    options_hint(name)
                ),
            ))
        }
        (Some(seq), None) => (Mode::Static, parse_sequence(place, seq)?, None),
        (None, Some(file)) => (Mode::File, Vec::new(), Some(resolve(nonempty_path(place, file)?))),
    };
    let seq_timeout = match s.get(Key::SeqTimeout) {
        Some(e) => parse_secs(place, e, 1..=MAX_SECS)?,
        None => KNOCKD_SEQ_TIMEOUT,
    };
    let cmd_timeout = match s.get(Key::CmdTimeout) {
        Some(e) => parse_secs(place, e, 0..=MAX_SECS)?,
        None => DEFAULT_CMD_TIMEOUT,
    };
    let (tcp_flags, tcp_flags_given) = match s.get(Key::TcpFlags) {
        Some(e) => (parse_flags(place, e)?, true),
        None => (TcpFlagRule::ANY, false),
    };
    let addresses = match s.get(Key::Target) {
        None => Vec::new(),
        Some(e) => vec![e.value.parse::<IpAddr>().map_err(|_| {
            place.at(
                e,
                0,
                format!(
                    "target `{}` is not an IP address; give the address (knockd matches it as the knock's \
                     destination), not a host name",
                    e.value
                ),
            )
        })?],
    };
    let command = |k: Key| s.get(k).map(|e| e.value.to_string());
    let action = CommandAction {
        start: command(Key::StartCommand),
        start6: command(Key::StartCommand6),
        stop: command(Key::StopCommand),
        stop6: command(Key::StopCommand6),
        cmd_timeout,
    };
    let nonempty = |c: &Option<String>| c.as_deref().is_some_and(|c| !c.is_empty());
    if !nonempty(&action.start) && !nonempty(&action.start6) {
        return Err(place.err(
            s.line,
            s.column,
            format!(
                "door [{name}] has no command: a knock would open nothing; add `start_command = ...` \
                 (or `command = ...`), with %IP% for the knocker's address"
            ),
        ));
    }
    if let Some(e) = s.get(Key::CmdTimeout) {
        if !nonempty(&action.stop) && !nonempty(&action.stop6) {
            warnings.push(place.warn(
                e.line,
                column(e.raw, e.key_at),
                format!("door [{name}]: cmd_timeout has no effect without stop_command"),
            ));
        }
    }
    if let Some(e) = s.get(Key::TcpFlags) {
        if mode == Mode::Static && static_sequence.iter().all(|k| k.proto == Proto::Udp) {
            warnings.push(place.warn(
                e.line,
                column(e.raw, e.key_at),
                format!("door [{name}]: tcpflags has no effect on a sequence of UDP knocks only"),
            ));
        }
    }
    let alphabet = match mode {
        Mode::Static => placeholder_alphabet(&static_sequence),
        _ => None,
    }
    .or_else(|| Alphabet::new(PortRange::new(1, u16::MAX)?, &[Proto::Tcp, Proto::Udp]))
    .ok_or_else(|| place.err(s.line, s.column, "internal: no alphabet"))?;
    Ok(Door {
        name: name.to_string(),
        mode,
        open: Vec::new(),
        open_for: cmd_timeout,
        alphabet,
        length: static_sequence.len(),
        seq_timeout,
        window: 1,
        step: super::DEFAULT_STEP,
        skew: super::DEFAULT_SKEW,
        misses: 0,
        bind_source: false,
        close: false,
        keys_dir: None,
        sequence_file: sequence_file.clone(),
        static_sequence,
        addresses,
        always_allow: Vec::new(),
        action: Action::Commands(action),
        legacy: Some(LegacyRules { tcp_flags, tcp_flags_given, one_time_sequences: sequence_file }),
    })
}

/// The span of a static sequence's ports, with the protocols it uses.
fn placeholder_alphabet(knocks: &[Knock]) -> Option<Alphabet> {
    let min = knocks.iter().map(|k| k.port).min()?;
    let max = knocks.iter().map(|k| k.port).max()?;
    let protos: Vec<Proto> = knocks.iter().map(|k| k.proto).collect();
    Alphabet::new(PortRange::new(min, max)?, &protos)
}
