//! The daemon's configuration: the `knockd.toml` model, its defaults and its validation, and
//! knockd 0.8's `knockd.conf` ([`legacy`]), read into the same model.
//!
//! [`Config::load`] picks the format by the file's name: `*.toml` is a knockd.toml, anything else
//! (`/etc/knockd.conf`) is read as a knockd 0.8 config. [`migrate()`] writes the knockd.toml that
//! moves each door of a knockd.conf to a one-time mode.
//!
//! Every error names the file, the line and the column of the offending value, and says what
//! would be accepted. Relative paths in the file are resolved against the file's directory.

mod duration;
mod ledger;
pub mod legacy;
pub mod migrate;
mod prefix;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::knock::{Knock, PortRange, Proto};
use crate::sequence::{Alphabet, Mode, MAX_LENGTH};

pub use duration::parse_duration;
pub use ledger::{EtcdSettings, LedgerBackend, DEFAULT_ETCD_PREFIX, DEFAULT_ETCD_TIMEOUT, ETCD_TIMEOUT_BOUNDS};
pub use legacy::parse_knockd_conf;
pub use migrate::migrate;
pub use prefix::Prefix;

/// Default knock port range: 2048 ports.
pub const DEFAULT_KNOCK_PORTS: &str = "40000-42047";
/// Default number of knocks in a sequence.
pub const DEFAULT_LENGTH: usize = 8;
/// Default look-ahead window of counters.
pub const DEFAULT_WINDOW: u32 = 10;
/// Default miss budget within one attempt.
pub const DEFAULT_MISSES: u8 = 2;
/// Default time a sequence has to complete.
pub const DEFAULT_SEQ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default length of a `totp` time step.
pub const DEFAULT_STEP: Duration = Duration::from_secs(30);
/// Default `totp` skew in steps on either side.
pub const DEFAULT_SKEW: u32 = 1;
/// Largest `totp` skew accepted.
pub const MAX_SKEW: u32 = 10;
/// Default time a grant stays open.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Daemon-wide settings.
    pub server: ServerConfig,
    /// The doors, in file order.
    pub doors: Vec<Door>,
    /// Where consumption is recorded (`[ledger]`).
    pub ledger: LedgerBackend,
    /// knockd.conf's `[options]` (None for a knockd.toml).
    pub legacy_options: Option<LegacyOptions>,
    /// Things that are accepted but deserve the admin's attention (e.g. a knockd.conf
    /// `cmd_timeout` without a `stop_command`). The daemon and `knockd check` print them.
    pub warnings: Vec<ConfigWarning>,
}

/// knockd.conf's daemon-wide `[options]` that have no knockd.toml key; the daemon's flags
/// (`-g`, `-p`) override them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyOptions {
    /// `UseSyslog`: log actions through syslog (we log to standard error, which journald takes).
    pub use_syslog: bool,
    /// `LogFile`: append the log to this file.
    pub log_file: Option<PathBuf>,
    /// `PidFile`: write the daemon's pid here when it runs as a daemon.
    pub pid_file: Option<PathBuf>,
}

/// Which firewall backend grants go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallKind {
    /// Table `inet knockd` over netlink (default).
    Nftables,
    /// iptables rules matching an ipset whose entries time out (`firewall = "iptables"`).
    Iptables,
    /// No firewall: decisions are logged and audited only (tests of the matcher, dry runs).
    None,
}

/// Daemon-wide settings from `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the server id, ledger and audit log live.
    pub state_dir: PathBuf,
    /// Interfaces to capture on (`any` for all).
    pub interfaces: Vec<String>,
    /// The firewall backend.
    pub firewall: FirewallKind,
    /// Name of the nftables table (in family `inet`).
    pub nft_table: String,
}

/// A port the door opens, e.g. `22/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpenPort {
    /// The port.
    pub port: u16,
    /// Its protocol.
    pub proto: Proto,
}

impl fmt::Display for OpenPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

impl std::str::FromStr for OpenPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{s}` is not a port to open (expected e.g. 22/tcp)"))?;
        Ok(OpenPort { port, proto: proto.parse()? })
    }
}

/// One protected service and how it is knocked open.
#[derive(Debug, Clone)]
pub struct Door {
    /// Door name, 1..=64 characters: `[a-z0-9_-]` in a knockd.toml; a knockd.conf section name
    /// as written, `[A-Za-z0-9_.-]` (knockd names may have capitals).
    pub name: String,
    /// How sequences are made.
    pub mode: Mode,
    /// What a grant opens (may be empty when the door's action is commands: they do the opening).
    pub open: Vec<OpenPort>,
    /// How long a grant lasts (legacy doors: their `cmd_timeout`, informational).
    pub open_for: Duration,
    /// The knocks sequences are drawn from.
    pub alphabet: Alphabet,
    /// Knocks per sequence (K). A knockd.conf `one_time_sequences` door has 0: its lines may
    /// differ in length, and the daemon reads them from the file.
    pub length: usize,
    /// Time from the first knock to the last.
    pub seq_timeout: Duration,
    /// Look-ahead window W of counters or file lines.
    pub window: u32,
    /// `totp`: the length of a time step.
    pub step: Duration,
    /// `totp`: steps accepted on either side of the server's current one.
    pub skew: u32,
    /// Misses allowed within one attempt (m).
    pub misses: u8,
    /// Whether knocks 2..K include the source address.
    pub bind_source: bool,
    /// Whether closing sequences are accepted.
    pub close: bool,
    /// Directory of per-client key files (`<client>.key`), for hotp/totp.
    pub keys_dir: Option<PathBuf>,
    /// The sequence file, for `file` mode.
    pub sequence_file: Option<PathBuf>,
    /// The fixed sequence, for `static` mode.
    pub static_sequence: Vec<Knock>,
    /// Addresses the door listens on (empty: every local address).
    pub addresses: Vec<IpAddr>,
    /// Source prefixes the firewall never drops for this door's `open` ports (a bastion, the
    /// backup host), even while the daemon is down or failing closed.
    pub always_allow: Vec<Prefix>,
    /// What a completed open (or close) sequence does.
    pub action: Action,
    /// knockd 0.8's matching rules, for doors that came from a knockd.conf (None: ours).
    pub legacy: Option<LegacyRules>,
}

/// What a door does when a sequence completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A grant through the server's firewall backend, per source, with a kernel timeout.
    Firewall,
    /// knockd's commands (`start_command`, `stop_command`, `cmd_timeout`, `command`).
    Commands(CommandAction),
}

/// knockd's command templates. `%IP%`, `%PORT%` and `%DOOR%` are substituted from parsed
/// values only (an address, a number, a validated name), then run with `/bin/sh -c` as knockd does.
///
/// `Some("")` is an explicit "do nothing" (knockd: "You can use empty value to force doing
/// nothing"); `None` for an IPv6 variant means "use the IPv4 one".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandAction {
    /// Run when the sequence completes (`start_command`, or knockd's one-shot `command`).
    pub start: Option<String>,
    /// The IPv6 variant (`start_command_6` / `command_6`); falls back to `start` when absent.
    pub start6: Option<String>,
    /// Run `cmd_timeout` after `start` (`stop_command`).
    pub stop: Option<String>,
    /// The IPv6 variant (`stop_command_6`); falls back to `stop` when absent.
    pub stop6: Option<String>,
    /// Delay before `stop` (knockd's default: 10 s).
    pub cmd_timeout: Duration,
}

/// knockd's default `cmd_timeout`.
pub const DEFAULT_CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Which TCP packets count as knocks: every flag in `set` present, every flag in `clear` absent.
/// UDP knocks are not affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlagRule {
    /// Flags that must be set.
    pub set: u8,
    /// Flags that must be clear.
    pub clear: u8,
}

impl TcpFlagRule {
    /// Our doors' rule: a SYN without ACK.
    pub const SYN_ONLY: TcpFlagRule = TcpFlagRule { set: 0x02, clear: 0x10 };
    /// knockd's rule without `tcpflags`: any TCP packet.
    pub const ANY: TcpFlagRule = TcpFlagRule { set: 0, clear: 0 };

    /// Whether a TCP flags byte passes.
    pub fn matches(&self, flags: u8) -> bool {
        flags & self.set == self.set && flags & self.clear == 0
    }
}

/// knockd 0.8's rules for a door from a knockd.conf: only the door's own sequence ports are
/// watched, a wrong knock on one of them ends the attempt (no miss budget), no burn on sight,
/// and `one_time_sequences` files are invalidated in place with a `#` as knockd does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRules {
    /// The door's `tcpflags` (knockd ignores TCP packets that do not match them).
    pub tcp_flags: TcpFlagRule,
    /// Whether `tcpflags` was given (knockd then ignores non-matching packets instead of resetting).
    pub tcp_flags_given: bool,
    /// `one_time_sequences`: the file whose next valid line is the sequence.
    pub one_time_sequences: Option<PathBuf>,
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// A path from a config file: absolute as written, or relative to the file's directory.
pub(crate) fn resolve_path(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// `file[:line[:column]]`, the place an error or warning points at.
fn write_place(f: &mut fmt::Formatter<'_>, path: &Path, line: Option<usize>, column: Option<usize>) -> fmt::Result {
    write!(f, "{}", path.display())?;
    if let Some(line) = line {
        write!(f, ":{line}")?;
        if let Some(col) = column {
            write!(f, ":{col}")?;
        }
    }
    Ok(())
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_place(f, &self.path, self.line, self.column)?;
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A warning about an accepted config, located like a [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What deserves attention.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_place(f, &self.path, self.line, self.column)?;
        write!(f, ": warning: {}", self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    ledger: Option<Spanned<ledger::RawLedger>>,
    #[serde(default)]
    door: Vec<Spanned<RawDoor>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    state_dir: Option<Spanned<String>>,
    interfaces: Option<Vec<String>>,
    firewall: Option<Spanned<String>>,
    nft_table: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoor {
    name: Spanned<String>,
    mode: Spanned<String>,
    open: Option<Spanned<Vec<String>>>,
    open_for: Option<Spanned<toml::Value>>,
    knock_ports: Option<Spanned<String>>,
    protocols: Option<Spanned<Vec<String>>>,
    length: Option<Spanned<i64>>,
    seq_timeout: Option<Spanned<toml::Value>>,
    window: Option<Spanned<i64>>,
    step: Option<Spanned<toml::Value>>,
    skew: Option<Spanned<i64>>,
    misses: Option<Spanned<i64>>,
    #[serde(default)]
    bind_source: bool,
    #[serde(default)]
    close: bool,
    keys: Option<Spanned<String>>,
    sequence_file: Option<Spanned<String>>,
    sequence: Option<Spanned<Vec<String>>>,
    addresses: Option<Spanned<Vec<String>>>,
    always_allow: Option<Vec<Spanned<String>>>,
    start_command: Option<Spanned<String>>,
    start_command_6: Option<Spanned<String>>,
    stop_command: Option<Spanned<String>>,
    stop_command_6: Option<Spanned<String>>,
    cmd_timeout: Option<Spanned<toml::Value>>,
}

/// Turns byte offsets into 1-based line and column.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError { path: self.path.to_path_buf(), line: Some(line), column: Some(column), message: message.into() }
    }
    fn span<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.at(s.span().start, message)
    }
}

impl Config {
    /// Reads and validates a config file. A file whose name ends in `.toml` is a knockd.toml
    /// ([`Config::parse`]); any other (`/etc/knockd.conf`) is read as knockd 0.8's format
    /// ([`parse_knockd_conf`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        })?;
        if is_toml_path(path) {
            Config::parse(path, &text)
        } else {
            parse_knockd_conf(path, &text)
        }
    }

    /// Parses and validates knockd.toml text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let loc = Locator { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            loc.at(offset, toml_message(text, &e))
        })?;
        let resolve = |p: &str| resolve_path(path, p);
        let server = ServerConfig {
            state_dir: raw
                .server
                .state_dir
                .as_ref()
                .map_or_else(|| PathBuf::from("/var/lib/knockd"), |s| resolve(s.get_ref())),
            interfaces: raw.server.interfaces.clone().unwrap_or_else(|| vec!["any".into()]),
            firewall: match raw.server.firewall.as_ref().map(|s| (s, s.get_ref().as_str())) {
                None | Some((_, "nftables")) => FirewallKind::Nftables,
                Some((_, "iptables")) => FirewallKind::Iptables,
                Some((_, "none")) => FirewallKind::None,
                Some((s, other)) => {
                    return Err(loc.span(s, format!("unknown firewall `{other}` (expected nftables, iptables or none)")))
                }
            },
            nft_table: match &raw.server.nft_table {
                None => "knockd".into(),
                Some(s) if valid_name(s.get_ref()) => s.get_ref().clone(),
                Some(s) => return Err(loc.span(s, "nft_table must be 1-64 characters of a-z, 0-9, _ or -")),
            },
        };
        if server.interfaces.is_empty() {
            return Err(ConfigError {
                path: path.to_path_buf(),
                line: None,
                column: None,
                message: "[server] interfaces is empty; name at least one interface, or \"any\"".into(),
            });
        }
        let mut doors: Vec<Door> = Vec::with_capacity(raw.door.len());
        let mut names: HashSet<&str> = HashSet::with_capacity(raw.door.len());
        for d in &raw.door {
            let door = validate_door(&loc, d, &resolve)?;
            if !names.insert(d.get_ref().name.get_ref().as_str()) {
                return Err(loc.span(&d.get_ref().name, format!("door `{}` is defined twice", door.name)));
            }
            doors.push(door);
        }
        if doors.is_empty() {
            return Err(ConfigError {
                path: path.to_path_buf(),
                line: None,
                column: None,
                message: "no [[door]] defined; a daemon without doors protects nothing".into(),
            });
        }
        let ledger = match &raw.ledger {
            None => LedgerBackend::File,
            Some(l) => ledger::validate(&loc, l, &resolve)?,
        };
        Ok(Config { path: path.to_path_buf(), server, doors, ledger, legacy_options: None, warnings: Vec::new() })
    }

    /// The door called `name`.
    pub fn door(&self, name: &str) -> Option<&Door> {
        self.doors.iter().find(|d| d.name == name)
    }
}

/// The message of a TOML syntax error. The parser gives none for a control character in a
/// comment; then it names the character and the fix.
pub(crate) fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    if !message.is_empty() {
        return message.to_string();
    }
    let at = e.span().map_or(0, |s| s.start);
    match text.get(at..).and_then(|t| t.chars().next()) {
        Some(c) if c.is_control() => format!(
            "control character U+{:04X}: TOML allows none but tab outside a string, and in a string only \
             escaped (\\u{:04X}); remove it",
            u32::from(c),
            u32::from(c)
        ),
        Some(c) => format!("unexpected {c:?} here: this is not valid TOML"),
        None => "the file ends unexpectedly: this is not valid TOML".to_string(),
    }
}

/// Whether `path` names a knockd.toml (its name ends in `.toml`, any case) rather than a knockd.conf.
pub fn is_toml_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Whether `s` is a valid door, client or table name.
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn int_in<T: TryFrom<i64>>(
    loc: &Locator,
    v: &Option<Spanned<i64>>,
    default: T,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
) -> Result<T, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if range.contains(s.get_ref()) => {
            T::try_from(*s.get_ref()).map_err(|_| loc.span(s, format!("{what} is out of range")))
        }
        Some(s) => Err(loc.span(
            s,
            format!("{what} = {} is out of range (expected {}..={})", s.get_ref(), range.start(), range.end()),
        )),
    }
}

fn duration_field(
    loc: &Locator,
    v: &Option<Spanned<toml::Value>>,
    default: Duration,
    what: &str,
) -> Result<Duration, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let d = match s.get_ref() {
        toml::Value::Integer(n) if *n > 0 => Some(Duration::from_secs(*n as u64)),
        toml::Value::String(text) => parse_duration(text).ok(),
        _ => None,
    };
    d.filter(|d| !d.is_zero() && *d <= Duration::from_secs(7 * 86_400)).ok_or_else(|| {
        loc.span(s, format!("{what} must be a positive duration up to 7 days: seconds (30) or a string (\"30s\", \"500ms\", \"5m\")"))
    })
}

fn validate_door(loc: &Locator, sd: &Spanned<RawDoor>, resolve: &dyn Fn(&str) -> PathBuf) -> Result<Door, ConfigError> {
    let d = sd.get_ref();
    let name = d.name.get_ref().clone();
    if !valid_name(&name) {
        return Err(loc.span(&d.name, "door name must be 1-64 characters of a-z, 0-9, _ or -"));
    }
    let mode: Mode = d.mode.get_ref().parse().map_err(|e: String| loc.span(&d.mode, e))?;
    let action = command_action(loc, d, &name)?;
    let open = match &d.open {
        None if action != Action::Firewall => Vec::new(),
        None => {
            return Err(loc.span(
                sd,
                format!(
                    "door `{name}`: `open` is missing; list what the door opens, e.g. open = [\"22/tcp\"] \
                     (or give start_command and stop_command to run knockd-style commands)"
                ),
            ))
        }
        Some(o) => {
            let open = o
                .get_ref()
                .iter()
                .map(|s| s.parse::<OpenPort>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| loc.span(o, e))?;
            if open.is_empty() && action == Action::Firewall {
                return Err(loc.span(o, "open is empty; list what the door opens, e.g. [\"22/tcp\"]"));
            }
            open
        }
    };
    let range: PortRange = match &d.knock_ports {
        None => DEFAULT_KNOCK_PORTS.parse().map_err(|e: String| loc.span(sd, e))?,
        Some(s) => s.get_ref().parse().map_err(|e: String| loc.span(s, e))?,
    };
    let protos: Vec<Proto> = match &d.protocols {
        None => vec![Proto::Tcp],
        Some(s) => {
            s.get_ref().iter().map(|p| p.parse::<Proto>()).collect::<Result<_, _>>().map_err(|e| loc.span(s, e))?
        }
    };
    let alphabet = Alphabet::new(range, &protos)
        .ok_or_else(|| loc.span(sd, "protocols is empty; use [\"tcp\"], [\"udp\"] or both"))?;
    if let (Some(o), Some(span)) =
        (open.iter().find(|o| alphabet.contains(Knock { port: o.port, proto: o.proto })), &d.open)
    {
        return Err(
            loc.span(span, format!("{o} lies inside knock_ports {range}; knocks must not hit the protected port"))
        );
    }
    let length: usize = int_in(loc, &d.length, DEFAULT_LENGTH, 2..=MAX_LENGTH as i64, "length")?;
    if alphabet.size() < 2 && mode != Mode::Static {
        return Err(loc.span(sd, "knock_ports must hold at least 2 knocks"));
    }
    let window = int_in(loc, &d.window, DEFAULT_WINDOW, 1..=1000, "window")?;
    let step = duration_field(loc, &d.step, DEFAULT_STEP, "step")?;
    let skew = int_in(loc, &d.skew, DEFAULT_SKEW, 0..=i64::from(MAX_SKEW), "skew")?;
    if let Some(v) = d.step.as_ref().filter(|_| step < Duration::from_secs(1)) {
        return Err(loc.span(v, "step must be at least 1s"));
    }
    let misses = int_in(loc, &d.misses, DEFAULT_MISSES, 0..=16, "misses")?;
    let seq_timeout = duration_field(loc, &d.seq_timeout, DEFAULT_SEQ_TIMEOUT, "seq_timeout")?;
    let open_for = duration_field(loc, &d.open_for, DEFAULT_OPEN_FOR, "open_for")?;
    let keys_dir = d.keys.as_ref().map(|s| resolve(s.get_ref()));
    let sequence_file = d.sequence_file.as_ref().map(|s| resolve(s.get_ref()));
    let static_sequence = match &d.sequence {
        None => Vec::new(),
        Some(s) => {
            s.get_ref().iter().map(|k| k.parse::<Knock>()).collect::<Result<_, _>>().map_err(|e| loc.span(s, e))?
        }
    };
    let addresses = match &d.addresses {
        None => Vec::new(),
        Some(s) => s
            .get_ref()
            .iter()
            .map(|a| a.parse::<IpAddr>().map_err(|_| format!("`{a}` is not an IP address")))
            .collect::<Result<_, _>>()
            .map_err(|e| loc.span(s, e))?,
    };
    let always_allow = match &d.always_allow {
        None => Vec::new(),
        Some(list) => list
            .iter()
            .map(|s| s.get_ref().parse::<Prefix>().map_err(|e| loc.span(s, format!("always_allow: {e}"))))
            .collect::<Result<_, _>>()?,
    };
    match mode {
        Mode::Hotp | Mode::Totp if keys_dir.is_none() => {
            return Err(loc.span(
                sd,
                format!("door `{name}`: mode {} needs `keys = \"DIR\"` (one <client>.key per client)", mode.label()),
            ))
        }
        Mode::File if sequence_file.is_none() => {
            return Err(loc.span(sd, format!("door `{name}`: mode file needs `sequence_file = \"PATH\"`")))
        }
        Mode::Static if static_sequence.len() < 2 => {
            return Err(loc.span(
                sd,
                format!(
                "door `{name}`: mode static needs `sequence = [\"7000\", \"8000:udp\", ...]` with at least 2 knocks"
            ),
            ))
        }
        _ => {}
    }
    Ok(Door {
        name,
        mode,
        open,
        open_for,
        alphabet,
        length,
        seq_timeout,
        window,
        step,
        skew,
        misses,
        bind_source: d.bind_source,
        close: d.close,
        keys_dir,
        sequence_file,
        static_sequence,
        addresses,
        always_allow,
        action,
        legacy: None,
    })
}

/// A door's knockd-style commands: `Action::Commands` when any command is given.
fn command_action(loc: &Locator, d: &RawDoor, name: &str) -> Result<Action, ConfigError> {
    let commands = [&d.start_command, &d.start_command_6, &d.stop_command, &d.stop_command_6];
    if commands.iter().all(|c| c.is_none()) {
        if let Some(t) = &d.cmd_timeout {
            return Err(loc.span(
                t,
                format!("door `{name}`: cmd_timeout applies only to start_command/stop_command; remove it or add the commands"),
            ));
        }
        return Ok(Action::Firewall);
    }
    for c in commands.iter().copied().flatten() {
        if c.get_ref().contains(['\0', '\n', '\r']) {
            return Err(loc.span(
                c,
                "a command is one line, as in knockd.conf (no newline or NUL); chain commands with `;` or `&&`",
            ));
        }
    }
    let given = |c: &Option<Spanned<String>>| c.as_ref().is_some_and(|c| !c.get_ref().trim().is_empty());
    if !given(&d.start_command) && !given(&d.start_command_6) {
        let first = commands.iter().copied().flatten().next().map_or(0, |c| c.span().start);
        return Err(loc.at(
            first,
            format!(
                "door `{name}`: a stop command without a start command does nothing when knocked; \
                 add start_command (and start_command_6 for IPv6 if it differs)"
            ),
        ));
    }
    let text = |c: &Option<Spanned<String>>| c.as_ref().map(|c| c.get_ref().trim().to_string());
    Ok(Action::Commands(CommandAction {
        start: text(&d.start_command),
        start6: text(&d.start_command_6),
        stop: text(&d.stop_command),
        stop6: text(&d.stop_command_6),
        cmd_timeout: cmd_timeout_field(loc, &d.cmd_timeout)?,
    }))
}

/// `cmd_timeout`: like other durations, but 0 (run the stop command at once) is allowed as in knockd.
fn cmd_timeout_field(loc: &Locator, v: &Option<Spanned<toml::Value>>) -> Result<Duration, ConfigError> {
    let Some(s) = v else { return Ok(DEFAULT_CMD_TIMEOUT) };
    let d = match s.get_ref() {
        toml::Value::Integer(n) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
        toml::Value::String(text) => parse_duration(text).ok(),
        _ => None,
    };
    d.filter(|d| *d <= Duration::from_secs(7 * 86_400)).ok_or_else(|| {
        loc.span(s, "cmd_timeout must be a duration up to 7 days: seconds (10) or a string (\"10s\", \"5m\")")
    })
}

#[cfg(test)]
mod legacy_tests;
#[cfg(test)]
mod tests;
