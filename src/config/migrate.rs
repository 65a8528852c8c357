//! `knockd migrate`: the knockd.toml that moves each door of a knockd.conf to a one-time mode.
//!
//! - A `sequence` door (mode `static`) becomes `mode = "hotp"` with `keys = "keys/<name>"`: each
//!   client gets its own key with `knockd client add`, and its knocks are never valid twice.
//! - A `one_time_sequences` door becomes `mode = "file"` on the same file: our file format reads
//!   knockd's lines as they are and skips the lines knockd already invalidated with `#`. Its
//!   `knock_ports` and `protocols` span the knocks of the file when it can be read now (this is
//!   the one file this module reads), else all ports, TCP and UDP (narrow them by hand: the
//!   capture passes the whole range).
//! - Each door keeps its commands, `cmd_timeout`, `seq_timeout` and `target` (as `addresses`);
//!   `Interface` becomes `interfaces`; `LogFile`, `PidFile` and `UseSyslog` have no knockd.toml
//!   key and are noted in comments (`-g`, `-p`).
//! - Door names are lower-cased and every character outside `[a-z0-9_-]` becomes `-`; two doors
//!   that end up with one name are an error.
//! - A hotp door's `knock_ports` is the default range, unless a port that one of the config's
//!   commands opens lies in it (`--dport N`, `--dports N,M`, `--dport A:B`, nft's `dport N`):
//!   then the first of a few fixed 2048-port ranges that holds none of them.
//!
//! Doors that are already one-time (a knockd.toml given to `migrate`) are written back as they are.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::legacy::tcp_flags_text;
use super::{
    Action, Config, ConfigError, Door, FirewallKind, TcpFlagRule, DEFAULT_CMD_TIMEOUT, DEFAULT_KNOCK_PORTS,
    DEFAULT_LENGTH,
};
use crate::knock::{PortRange, Proto};
use crate::seqfile::SequenceFile;
use crate::sequence::{Mode, MAX_LENGTH};

/// Knock ranges tried in order for a migrated hotp door: the default one first.
const RANGES: [(u16, u16); 5] = [(40000, 42047), (43000, 45047), (50000, 52047), (20000, 22047), (10000, 12047)];

/// A door name for knockd.toml: lower-cased, anything outside `[a-z0-9_-]` replaced by `-`.
pub fn sanitise_name(name: &str) -> String {
    name.chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '-' })
        .collect()
}

/// The ports a shell command opens, as far as a simple scan of iptables / nft words can tell:
/// the numbers after `--dport`, `--dports`, `--destination-port(s)` or `dport` (lists and ranges).
pub fn command_ports(command: &str) -> Vec<PortRange> {
    let mut out = Vec::new();
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        let (word, inline) = match w.split_once('=') {
            Some((a, b)) => (a, Some(b)),
            None => (w, None),
        };
        if !matches!(word, "--dport" | "--dports" | "--destination-port" | "--destination-ports" | "dport") {
            continue;
        }
        let Some(arg) = inline.or_else(|| words.next()) else { break };
        for part in arg.split(',') {
            let part = part.trim_matches(|c: char| matches!(c, '{' | '}' | '"' | '\''));
            let (a, b) = part.split_once([':', '-']).unwrap_or((part, part));
            let (Ok(a), Ok(b)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) else { continue };
            if let Some(r) = PortRange::new(a.max(1), b) {
                out.push(r);
            }
        }
    }
    out
}

fn commands_of(door: &Door) -> Vec<&str> {
    match &door.action {
        Action::Commands(c) => {
            [&c.start, &c.start6, &c.stop, &c.stop6].into_iter().flatten().map(String::as_str).collect()
        }
        Action::Firewall => Vec::new(),
    }
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Text for a `#` comment: TOML comments hold no control character but tab, so every other one
/// (a newline in a path, DEL) is written as its escape.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { c.escape_unicode().to_string() } else { c.to_string() })
        .collect()
}

/// A duration as knockd.toml writes it: whole seconds, or milliseconds in a string.
fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("\"{}ms\"", d.as_millis())
    }
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().map(|s| quote(&s)).collect::<Vec<_>>().join(", "))
}

/// Renders the knockd.toml equivalent of `config`, each door moved to a one-time mode (see the
/// module documentation). The output parses back with [`Config::parse`]. Fails only when two
/// door names collide once sanitised.
pub fn migrate(config: &Config) -> Result<String, ConfigError> {
    let names: Vec<String> = config.doors.iter().map(|d| sanitise_name(&d.name)).collect();
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        if let Some(&j) = first_of.get(n.as_str()) {
            return Err(ConfigError {
                path: config.path.clone(),
                line: None,
                column: None,
                message: format!(
                    "doors [{}] and [{}] would both be named `{n}` in knockd.toml (names are lower-cased, \
                     other characters become `-`); rename one section and migrate again",
                    config.doors[j].name, config.doors[i].name
                ),
            });
        }
        first_of.insert(n, i);
    }
    let mut opened: Vec<PortRange> = config.doors.iter().flat_map(commands_of).flat_map(command_ports).collect();
    opened.extend(config.doors.iter().flat_map(|d| &d.open).filter_map(|o| PortRange::new(o.port, o.port)));
    let hotp: Vec<&String> = config
        .doors
        .iter()
        .zip(&names)
        .filter(|(d, _)| matches!(d.mode, Mode::Static | Mode::Hotp))
        .map(|(_, n)| n)
        .collect();

    let mut out = String::new();
    let from = comment(&config.path.display().to_string());
    let _ = writeln!(out, "# knockd.toml written by `knockd migrate` from {from}.");
    out.push_str(
        "#\n\
         # Every door below takes one-time sequences now; its commands, cmd_timeout, seq_timeout and\n\
         # target are kept. What to do next:\n",
    );
    let mut steps = vec![
        "Review this file and save it as /etc/knockd/knockd.toml.".to_string(),
        "knockd -c /etc/knockd/knockd.toml init     (once: the state directory and server id)".to_string(),
    ];
    if !hotp.is_empty() {
        let mut s = "Give each client of each hotp door its own key, and hand it the profile bundle:".to_string();
        for n in &hotp {
            let _ = write!(
                s,
                "\n#        knockd -c /etc/knockd/knockd.toml client add --door {n} --name CLIENT --server-addr ADDR"
            );
        }
        s.push_str("\n#      then on each client: knock profile import BUNDLE; knock --profile NAME");
        steps.push(s);
    }
    steps.push("knockd -c /etc/knockd/knockd.toml check    (validates and prints each door's strength)".into());
    steps.push("Restart knockd with -c /etc/knockd/knockd.toml.".into());
    for (i, step) in steps.iter().enumerate() {
        let _ = writeln!(out, "#   {}. {step}", i + 1);
    }
    if let Some(o) = &config.legacy_options {
        if o.use_syslog || o.log_file.is_some() || o.pid_file.is_some() {
            out.push_str("#\n# [options] with no knockd.toml key:\n");
        }
        if let Some(f) = &o.log_file {
            let f = comment(&f.display().to_string());
            let _ = writeln!(out, "#   LogFile = {f}  ->  run knockd with -g {f}");
        }
        if let Some(f) = &o.pid_file {
            let f = comment(&f.display().to_string());
            let _ = writeln!(out, "#   PidFile = {f}  ->  run knockd with -p {f}");
        }
        if o.use_syslog {
            out.push_str(
                "#   UseSyslog  ->  knockd logs to standard error, which journald (or your service manager) keeps\n",
            );
        }
    }

    out.push_str("\n[server]\n");
    let _ = writeln!(out, "state_dir = {}", quote(&config.server.state_dir.display().to_string()));
    let _ = writeln!(out, "interfaces = {}", list(config.server.interfaces.iter().cloned()));
    let firewall = match config.server.firewall {
        FirewallKind::Nftables => "nftables",
        FirewallKind::Iptables => "iptables",
        FirewallKind::None => "none",
    };
    if config.legacy_options.is_some() && config.server.firewall == FirewallKind::None {
        out.push_str("# The doors' commands open and close the firewall, as they did under knockd. To let knockd\n");
        out.push_str(
            "# own it instead, set firewall = \"nftables\" and replace a door's commands with open = [\"22/tcp\"].\n",
        );
    }
    let _ = writeln!(out, "firewall = {}", quote(firewall));
    if config.server.nft_table != "knockd" {
        let _ = writeln!(out, "nft_table = {}", quote(&config.server.nft_table));
    }

    for (door, name) in config.doors.iter().zip(&names) {
        out.push('\n');
        write_door(&mut out, door, name, &opened);
    }
    Ok(out)
}

fn write_door(out: &mut String, d: &Door, name: &str, opened: &[PortRange]) {
    let legacy = d.legacy.as_ref();
    match d.mode {
        Mode::Static => {
            let seq: Vec<String> = d.static_sequence.iter().map(|k| k.to_string()).collect();
            let _ = writeln!(
                out,
                "# [{}]: the static sequence {} is replayable; now one-time (hotp).",
                comment(&d.name),
                seq.join(",")
            );
        }
        Mode::File if legacy.is_some() => {
            let _ = writeln!(
                out,
                "# [{}]: knockd's one_time_sequences file, used as it is: our file format reads knockd's lines\n\
                 # and skips the ones knockd invalidated with `#`. Used lines are recorded in the ledger (the\n\
                 # file is not rewritten), and any of the next `window` unused lines is accepted.",
                comment(&d.name)
            );
        }
        _ => {}
    }
    let syn_like = |r: TcpFlagRule| r.set == TcpFlagRule::SYN_ONLY.set && r.clear & !TcpFlagRule::SYN_ONLY.clear == 0;
    if let Some(l) = legacy.filter(|l| l.tcp_flags_given && !syn_like(l.tcp_flags)) {
        let _ = writeln!(
            out,
            "# knockd's tcpflags = {} is not carried over: one-time doors take TCP SYNs and UDP datagrams.",
            tcp_flags_text(l.tcp_flags)
        );
    }
    out.push_str("[[door]]\n");
    let _ = writeln!(out, "name = {}", quote(name));
    let mode = match d.mode {
        Mode::Static | Mode::Hotp => Mode::Hotp,
        m => m,
    };
    let _ = writeln!(out, "mode = {}", quote(mode.label()));
    match mode {
        Mode::Hotp | Mode::Totp => {
            let keys = match (&d.keys_dir, legacy) {
                (Some(k), None) => k.display().to_string(),
                _ => format!("keys/{name}"),
            };
            let _ = writeln!(out, "keys = {}", quote(&keys));
        }
        Mode::File => {
            if let Some(f) = &d.sequence_file {
                let _ = writeln!(out, "sequence_file = {}", quote(&f.display().to_string()));
            }
        }
        Mode::Static => {}
    }
    if !d.open.is_empty() {
        let _ = writeln!(out, "open = {}", list(d.open.iter().map(|o| o.to_string())));
    }
    if d.action == Action::Firewall {
        let _ = writeln!(out, "open_for = {}", duration(d.open_for));
    }
    match (d.mode, legacy) {
        (Mode::Static, _) => {
            let range = RANGES
                .iter()
                .filter_map(|(a, b)| PortRange::new(*a, *b))
                .find(|r| !opened.iter().any(|o| o.first() <= r.last() && r.first() <= o.last()));
            match range {
                Some(r) if r.to_string() == DEFAULT_KNOCK_PORTS => {}
                Some(r) => {
                    let _ =
                        writeln!(out, "# not the default range {DEFAULT_KNOCK_PORTS}: a command opens a port in it");
                    let _ = writeln!(out, "knock_ports = {}", quote(&r.to_string()));
                }
                None => {
                    let _ = writeln!(
                        out,
                        "# CHECK: the commands open ports in every range tried; choose knock_ports away from them"
                    );
                }
            }
        }
        (Mode::File, Some(_)) => write_file_range(out, d),
        _ => {
            let _ = writeln!(out, "knock_ports = {}", quote(&d.alphabet.range().to_string()));
            let _ = writeln!(out, "protocols = {}", list(d.alphabet.protos().iter().map(|p| p.to_string())));
            if (2..=MAX_LENGTH).contains(&d.length) && d.length != DEFAULT_LENGTH {
                let _ = writeln!(out, "length = {}", d.length);
            }
            let _ = writeln!(out, "window = {}", d.window);
            let _ = writeln!(out, "misses = {}", d.misses);
        }
    }
    let _ = writeln!(out, "seq_timeout = {}", duration(d.seq_timeout));
    if legacy.is_none() {
        if d.bind_source {
            out.push_str("bind_source = true\n");
        }
        if d.close {
            out.push_str("close = true\n");
        }
    }
    if !d.addresses.is_empty() {
        let _ = writeln!(out, "addresses = {}", list(d.addresses.iter().map(|a| a.to_string())));
    }
    if let Action::Commands(c) = &d.action {
        let line = |out: &mut String, key: &str, v: &Option<String>| {
            if let Some(v) = v {
                let _ = writeln!(out, "{key} = {}", quote(v));
            }
        };
        line(out, "start_command", &c.start);
        line(out, "start_command_6", &c.start6);
        line(out, "stop_command", &c.stop);
        line(out, "stop_command_6", &c.stop6);
        let stops = [&c.stop, &c.stop6].iter().any(|s| s.as_deref().is_some_and(|s| !s.is_empty()));
        if stops || c.cmd_timeout != DEFAULT_CMD_TIMEOUT {
            let _ = writeln!(out, "cmd_timeout = {}", duration(c.cmd_timeout));
        }
    }
}

/// `knock_ports`, `protocols` and `length` of a knockd one-time file door, from the file when it
/// can be read now.
fn write_file_range(out: &mut String, d: &Door) {
    let file = d.sequence_file.as_deref().and_then(|p| SequenceFile::load(p).ok());
    let knocks = || file.iter().flat_map(|f| f.sequences.iter()).flat_map(|s| s.knocks.iter());
    let (min, max) = (knocks().map(|k| k.port).min(), knocks().map(|k| k.port).max());
    let range = min.zip(max).and_then(|(a, b)| PortRange::new(a, b));
    let Some(range) = range else {
        out.push_str(
            "# The file could not be read (or holds no sequence) now: these cover every knock it may hold.\n\
             # Narrow them to the ports your file uses; the capture passes the whole range to the matcher.\n",
        );
        let _ = writeln!(out, "knock_ports = {}", quote("1-65535"));
        let _ = writeln!(out, "protocols = {}", list(["tcp".to_string(), "udp".to_string()]));
        return;
    };
    let mut protos: Vec<Proto> = knocks().map(|k| k.proto).collect();
    protos.sort();
    protos.dedup();
    let _ = writeln!(out, "knock_ports = {}", quote(&range.to_string()));
    let _ = writeln!(out, "protocols = {}", list(protos.iter().map(|p| p.to_string())));
    let lengths: Vec<usize> = file.iter().flat_map(|f| f.sequences.iter()).map(|s| s.knocks.len()).collect();
    if let Some(&l) = lengths.first() {
        if lengths.iter().all(|x| *x == l) && (2..=MAX_LENGTH).contains(&l) && l != DEFAULT_LENGTH {
            let _ = writeln!(out, "length = {l}");
        }
    }
}
