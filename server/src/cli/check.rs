//! `knockd check`: the configuration validated, and each door's strength in bits against an
//! off-path and an on-path attacker (docs/PROTOCOL.md, section 8), with the key and sequence
//! files the daemon would refuse. Its report is output (exit 1 when it counts problems).

use knock_core::config::{Config, Door};
use knock_core::entropy::{off_path_bits, on_path_bits, DoorShape};
use knock_core::keys::read_key_file;
use knock_core::sequence::Mode;

use super::report::Report;
use crate::state::door_files::{incoming_path, key_files, load_sequence_file};
use crate::state::legacy_onetime::OneTimeFile;

/// The least a door may offer an off-path attacker, in bits (PROTOCOL.md section 8).
pub const MIN_BITS: f64 = 64.0;

/// `knockd check`: validates the config and reports each door's strength; a door below
/// [`MIN_BITS`] is a problem unless `force`, and so is a key or sequence file the daemon would
/// refuse.
pub fn check(config: &Config, force: bool) -> Report {
    let mut out = format!("{}: configuration is valid\n", config.path.display());
    for w in &config.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push_str(&command_doors_note(config));
    let mut problems = 0;
    for d in &config.doors {
        let clients = match (&d.keys_dir, d.mode) {
            (Some(dir), Mode::Hotp | Mode::Totp) => key_files(dir).map_or(0, |f| f.len()),
            _ => 1,
        };
        let sharing = config
            .doors
            .iter()
            .filter(|o| {
                o.alphabet.range().first() <= d.alphabet.range().last()
                    && d.alphabet.range().first() <= o.alphabet.range().last()
            })
            .count();
        let shape = DoorShape {
            alphabet: d.alphabet.size(),
            length: d.length,
            window: d.window,
            clients: clients.max(1) as u32,
            epochs: match d.mode {
                Mode::Hotp => 3,
                Mode::Totp => 2 * d.skew + 1,
                _ => 1,
            },
            purposes: if d.close { 2 } else { 1 },
            doors_sharing: sharing as u32,
            misses: d.misses,
            bind_source: d.bind_source,
        };
        let (off, on) = if d.mode == Mode::Static { (0.0, 0.0) } else { (off_path_bits(&shape), on_path_bits(&shape)) };
        let weak = (off < MIN_BITS).then(|| {
            format!(
                "  {}: door {} offers {off:.1} bits, below {MIN_BITS}: widen knock_ports, add knocks (length) or \
                 narrow the window{}\n",
                if force { "accepted (--force)" } else { "problem" },
                d.name,
                if force { "" } else { ", or accept it with --force" }
            )
        });
        out.push_str(&format!(
            "door {}: mode {}, {} knocks over {} ({} symbols), window {}, {} client(s): {:.1} bits off-path, {:.1} bits on-path{}\n",
            d.name,
            d.mode.label(),
            d.length,
            d.alphabet.range(),
            d.alphabet.size(),
            d.window,
            clients,
            off,
            on,
            match d.mode {
                Mode::Static => " (static: replayable by anyone who saw it once)",
                _ if !d.bind_source => " (without bind_source an attacker who can drop packets on the path can finish a knock)",
                _ => "",
            }
        ));
        if let Some(w) = weak {
            out.push_str(&w);
            problems += usize::from(!force);
        }
        if let (Some(dir), Mode::Hotp) = (&d.keys_dir, d.mode) {
            for path in key_files(dir).unwrap_or_default() {
                if let Err(err) = read_key_file(&path) {
                    out.push_str(&format!("  problem: {err}\n"));
                    problems += 1;
                }
            }
        }
        for err in sequence_file_problems(d) {
            out.push_str(&format!("  problem: {err}\n"));
            problems += 1;
        }
    }
    if problems > 0 {
        out.push_str(&format!("{problems} problem(s) above\n"));
    }
    Report { text: out, problems }
}

/// knockd.conf doors run shell commands (iptables ...) that need root, which the package's
/// systemd unit (user knockd, two capabilities) does not give: its drop-in does.
fn command_doors_note(config: &Config) -> String {
    let doors: Vec<&str> = config
        .doors
        .iter()
        .filter(|d| matches!(d.action, knock_core::config::Action::Commands(_)))
        .map(|d| d.name.as_str())
        .collect();
    if doors.is_empty() {
        return String::new();
    }
    format!(
        "note: door(s) {} run shell commands, which need root: the package's systemd unit runs knockd as user \
         knockd, so enable its drop-in /usr/share/knockd-onetime/knockd-conf.conf (docs/OPERATIONS.md, \
         \"Coming from Debian's knockd\")\n",
        doors.join(", ")
    )
}

/// Why the daemon would refuse a door's sequence files (its incoming one too, and a knockd
/// one-time file): permissions or syntax. A file not there yet is no problem here.
fn sequence_file_problems(d: &Door) -> Vec<String> {
    let one_time = d.legacy.as_ref().and_then(|l| l.one_time_sequences.as_ref());
    match (one_time, &d.sequence_file) {
        (Some(path), _) if path.exists() => OneTimeFile::load(path).err().map(|e| e.to_string()).into_iter().collect(),
        (None, Some(path)) if d.mode == Mode::File => [path.clone(), incoming_path(path)]
            .iter()
            .filter(|p| p.exists())
            .filter_map(|p| load_sequence_file(p).err().map(|e| e.to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn check_says_command_doors_need_the_drop_in() {
        let conf = "[openSSH]\n\tsequence = 7000,8000,9000\n\tcommand = iptables -A INPUT -s %IP% -j ACCEPT\n\n\
                    [ping]\n\tsequence = 6001,6002,6003\n\tcommand = true\n";
        let legacy = knock_core::config::parse_knockd_conf(Path::new("/etc/knockd.conf"), conf).unwrap();
        let note = command_doors_note(&legacy);
        assert!(note.starts_with("note: door(s) openSSH, ping run shell commands, which need root"), "{note}");
        assert!(note.contains("/usr/share/knockd-onetime/knockd-conf.conf"), "{note}");
        let toml = "[server]\nstate_dir = \"s\"\n[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"k\"\n";
        let config = Config::parse(Path::new("/etc/knockd/knockd.toml"), toml).unwrap();
        assert_eq!(command_doors_note(&config), "", "firewall doors need no root");
    }
}
