//! Admin subcommands that change state on disk: `init`, `client add`, `sequences generate`,
//! and the read-only `check`, `status` and `audit` reports.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use knock_core::config::{valid_name, Config, Door};
use knock_core::entropy::{off_path_bits, on_path_bits, DoorShape};
use knock_core::keys::{read_key_file, write_key_file, write_private_file, Secret};
use knock_core::ledger::Ledger;
use knock_core::profile::{Bundle, BundleSecret, Profile};
use knock_core::seqfile::{generate, SequenceFile};
use knock_core::sequence::Mode;
use zeroize::Zeroizing;

use crate::cli::report::Report;
use crate::runtime::doors::key_path;
use crate::state::StateDir;

/// `knockd init`: the state directory and a random server id.
pub fn init(config: &Config) -> Result<String, String> {
    let state = StateDir::new(&config.server.state_dir);
    let id = state.init().map_err(|e| e.to_string())?;
    Ok(format!("initialised {} (server id {})", config.server.state_dir.display(), knock_core::keys::hex(&id)))
}

fn door<'a>(config: &'a Config, name: &str) -> Result<&'a Door, String> {
    config.door(name).ok_or_else(|| {
        let names: Vec<&str> = config.doors.iter().map(|d| d.name.as_str()).collect();
        format!("{}: no door `{name}` (doors: {})", config.path.display(), names.join(", "))
    })
}

fn profile_for(d: &Door, client: &str, server: IpAddr, server_id: [u8; 16]) -> Profile {
    Profile {
        name: format!("{}-{}", d.name, client),
        server,
        server_id,
        door: d.name.clone(),
        client: client.to_string(),
        mode: d.mode,
        knock_ports: d.alphabet.range(),
        protocols: d.alphabet.protos().to_vec(),
        length: d.length,
        bind_source: d.bind_source,
        source_addr: None,
        open: d.open.clone(),
        delay_ms: 10,
        close: d.close,
        step_secs: d.step.as_secs(),
        skew: d.skew,
        warn_below: 10,
    }
}

/// Where a profile bundle goes.
pub enum BundleDest {
    /// A new file, mode 0600.
    File(std::path::PathBuf),
    /// One line on standard output.
    Line,
}

fn write_bundle(out: &Path, bundle: &Bundle) -> Result<(), String> {
    write_private_file(out, bundle.to_toml().as_bytes()).map_err(|e| format!("{}: {e}", out.display()))
}

/// `knockd client add`: a new key for `client` on a hotp door, its empty ledger, and a bundle
/// (profile + key) for `knock profile import`: a 0600 file, or one line on standard output.
pub fn client_add(
    config: &Config,
    door_name: &str,
    client: &str,
    server: IpAddr,
    dest: &BundleDest,
) -> Result<String, String> {
    let d = door(config, door_name)?;
    if !matches!(d.mode, Mode::Hotp | Mode::Totp) {
        return Err(format!(
            "door `{door_name}` is a {} door; clients are added to hotp and totp doors",
            d.mode.label()
        ));
    }
    if !valid_name(client) {
        return Err(format!("client name `{client}` must be 1-64 characters of a-z, 0-9, _ or -"));
    }
    let state = StateDir::new(&config.server.state_dir);
    let server_id = state.server_id().map_err(|e| e.to_string())?;
    let dir = d.keys_dir.as_ref().ok_or("door has no keys directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = key_path(dir, client);
    let secret = Secret::generate().map_err(|e| e.to_string())?;
    write_key_file(&path, &secret).map_err(|e| e.to_string())?;
    let label = secret.fingerprint();
    Ledger::create(&Ledger::path_for(&state.ledger_dir(), &label), &label).map_err(|e| e.to_string())?;
    let bundle = Bundle { profile: profile_for(d, client, server, server_id), secret: BundleSecret::Key(secret) };
    let added = format!("client {client} added to door {door_name} (key {}, fingerprint {label})", path.display());
    match dest {
        BundleDest::Line => {
            eprintln!("{added}. The line below is the profile with its key: paste it into `knock profile import -` on the client.");
            Ok(bundle.to_line().to_string())
        }
        BundleDest::File(out) => {
            write_bundle(out, &bundle)?;
            Ok(format!(
                "{added}.\nProfile bundle written to {} (mode 0600): copy it to the client, run `knock profile import {}`, \
                 then delete it.\nA running knockd picks the new client up on reload (SIGHUP) or restart.",
                out.display(),
                out.display()
            ))
        }
    }
}

/// The key directory of a hotp door.
fn keys_dir<'a>(config: &'a Config, door_name: &str) -> Result<&'a Path, String> {
    let d = door(config, door_name)?;
    d.keys_dir.as_deref().ok_or_else(|| format!("door `{door_name}` is a {} door; it has no clients", d.mode.label()))
}

/// `knockd client revoke`: deletes the key (the ledger stays, keyed by the key's fingerprint).
pub fn client_revoke(config: &Config, door_name: &str, client: &str) -> Result<String, String> {
    let path = key_path(keys_dir(config, door_name)?, client);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(format!(
            "client {client} of door {door_name} revoked ({} deleted). Reload knockd (systemctl reload knockd, \
             or kill -HUP its pid) to drop it and remove its live grants now.",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "door {door_name} has no client {client} ({} does not exist); see `knockd client list --door {door_name}`",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `knockd client list`: a door's clients.
pub fn client_list(config: &Config, door_name: &str) -> Result<String, String> {
    let dir = keys_dir(config, door_name)?;
    let state = StateDir::new(&config.server.state_dir);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    entries.sort();
    let mut out = format!(
        "{:<16} {:<34} {:<24} {:>6} {:<24}\n",
        "client", "fingerprint", "created (UTC)", "next", "last activity (UTC)"
    );
    let mtime_ms = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| format_utc_ms(d.as_millis() as u64))
    };
    for path in entries {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let (fingerprint, next, activity) = match read_key_file(&path) {
            Ok(secret) => {
                let label = secret.fingerprint();
                let ledger_path = Ledger::path_for(&state.ledger_dir(), &label);
                let next = Ledger::read(&ledger_path, &label)
                    .map(|l| knock_core::ledger::ConsumeStore::next(&l).to_string())
                    .unwrap_or_else(|_| "no ledger".into());
                (label, next, mtime_ms(&ledger_path).unwrap_or_else(|| "-".into()))
            }
            Err(e) => (format!("refused: {e}"), "-".into(), "-".into()),
        };
        let created = mtime_ms(&path).unwrap_or_else(|| "-".into());
        out.push_str(&format!("{name:<16} {fingerprint:<34} {created:<24} {next:>6} {activity:<24}\n"));
    }
    Ok(out)
}

/// Where `knockd sequences generate` puts the client's side of a new sequence file.
pub enum SequencesOut<'a> {
    /// The client's twin as a profile bundle (mode 0600) at this path.
    Bundle(&'a Path),
    /// `--emergency`: a plain page for a safe, returned as the command's output; no bundle.
    Sheet,
}

/// `knockd sequences generate`: a fresh sequence file for a file door, its ledger, and the
/// client's twin as a bundle (or, with [`SequencesOut::Sheet`], an emergency sheet to print).
/// With `rotate`, the file goes to `<sequence_file>.next` instead: the daemon accepts both
/// files until a line of the new one is used, then the new one takes over (no gap), and the old
/// file's ledger is kept.
pub fn sequences_generate(
    config: &Config,
    door_name: &str,
    count: usize,
    server: IpAddr,
    out: SequencesOut<'_>,
    rotate: bool,
) -> Result<String, String> {
    let d = door(config, door_name)?;
    if d.mode != Mode::File {
        return Err(format!("door `{door_name}` is a {} door; sequence files are for file doors", d.mode.label()));
    }
    if !(1..=1_000_000).contains(&count) {
        return Err("--count must be 1..=1000000".into());
    }
    let state = StateDir::new(&config.server.state_dir);
    let server_id = state.server_id().map_err(|e| e.to_string())?;
    let current: PathBuf = d.sequence_file.clone().ok_or("door has no sequence_file")?;
    if rotate && !current.exists() {
        return Err(format!(
            "{} does not exist: generate the first file with `knockd sequences generate`",
            current.display()
        ));
    }
    let path = if rotate { crate::runtime::doors::incoming_path(&current) } else { current };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = Zeroizing::new(generate(&d.alphabet, d.length, count, &format!("door: {door_name}")));
    write_private_file(&path, text.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            format!(
                "{} exists; refusing to overwrite a sequence file in use{}",
                path.display(),
                if rotate { " (a rotation is pending: its first use completes it)" } else { "" }
            )
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    let file = SequenceFile::load(&path).map_err(|e| e.to_string())?;
    let label = file.ledger_label();
    Ledger::create(&Ledger::path_for(&state.ledger_dir(), &label), &label).map_err(|e| e.to_string())?;
    let out = match out {
        SequencesOut::Bundle(out) => out,
        SequencesOut::Sheet => return Ok(emergency_sheet(d, server, &file, now_ms())),
    };
    let bundle = Bundle { profile: profile_for(d, "file", server, server_id), secret: BundleSecret::Sequences(text) };
    write_bundle(out, &bundle)?;
    Ok(format!(
        "{count} sequences written to {} (mode 0600); client twin in bundle {} (import with `knock profile import`).{}",
        path.display(),
        out.display(),
        if rotate {
            "\nReload knockd (SIGHUP): it then accepts both files, and the first knock from the new list completes the rotation."
        } else {
            ""
        }
    ))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The emergency sheet of a file door: a plain page to print and keep in a safe, with each
/// sequence of `file` as a `knock` command line ready to type (TCP knocks as bare ports, so
/// knockd's own `knock` takes them too).
fn emergency_sheet(d: &Door, server: IpAddr, file: &SequenceFile, now_ms: u64) -> String {
    let open: Vec<String> = d.open.iter().map(ToString::to_string).collect();
    let date = format_utc_ms(now_ms);
    let date = date.split(' ').next().unwrap_or(&date);
    let mut out = format!(
        "EMERGENCY KNOCK SHEET - door {door} on {server}\n\
         Opens: {open} for {secs} s to the address that knocks.\n\
         Printed: {date} (UTC), from {file}.\n\
         \n\
         Keep this page in a safe. To get in, type the FIRST line that is not crossed out, on any\n\
         machine with `knock` (or knockd's `knock`), then CROSS OUT THAT LINE AT ONCE: each line\n\
         opens once, in order, and a used line (or one skipped past) never opens again. If a line\n\
         fails, cross it out and type the next one. When few lines are left, print a new sheet.\n\
         \n",
        door = d.name,
        open = open.join(", "),
        secs = d.open_for.as_secs(),
        file = file.path.display(),
    );
    let width = file.sequences.len().to_string().len();
    for (i, seq) in file.sequences.iter().enumerate() {
        let knocks: Vec<String> = seq
            .knocks
            .iter()
            .map(|k| match k.proto {
                knock_core::Proto::Tcp => k.port.to_string(),
                knock_core::Proto::Udp => k.to_string(),
            })
            .collect();
        out.push_str(&format!("{:>width$}.  knock -d 50 {server} {}\n", i + 1, knocks.join(" ")));
    }
    out
}

/// `knockd migrate`: the knockd.toml equivalent of a knockd.conf, to standard output or a new file.
pub fn migrate(config: &Config, out: Option<&Path>) -> Result<String, String> {
    if config.legacy_options.is_none() {
        return Err(format!("{} is already a knockd.toml; migrate reads a knockd.conf", config.path.display()));
    }
    let text = knock_core::config::migrate(config).map_err(|e| e.to_string())?;
    match out {
        None => Ok(text),
        Some(path) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(format!("wrote {}; read its first lines for the next steps", path.display()))
        }
    }
}

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
            (Some(dir), Mode::Hotp | Mode::Totp) => std::fs::read_dir(dir)
                .map(|r| r.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "key")).count())
                .unwrap_or(0),
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
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "key")) {
                    if let Err(err) = read_key_file(&e.path()) {
                        out.push_str(&format!("  problem: {err}\n"));
                        problems += 1;
                    }
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
        (Some(path), _) if path.exists() => {
            crate::state::legacy_onetime::OneTimeFile::load(path).err().into_iter().collect()
        }
        (None, Some(path)) if d.mode == Mode::File => [path.clone(), crate::runtime::doors::incoming_path(path)]
            .iter()
            .filter(|p| p.exists())
            .filter_map(|p| crate::runtime::doors::load_sequence_file(p).err())
            .collect(),
        _ => Vec::new(),
    }
}

/// `knockd audit`: the table or JSON lines, `--verify [--key FILE]` (a changed log is a problem
/// in the report), or `init-key --out FILE` (see [`crate::cli::audit::command`]).
pub fn audit(config: &Config, args: &crate::cli::audit::AuditArgs) -> Result<Report, String> {
    crate::cli::audit::command(&StateDir::new(&config.server.state_dir).audit_log(), args)
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC (civil-from-days, no time-zone database needed).
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}.{:03}", ms % 1000)
}

/// `knockd status`: the server's clock, each door's clients and counters, how many sequences
/// file doors have left (warning below `warn_below`), and refused doors or clients; each
/// warning counts as a problem of the report.
pub fn status(config: &Config, warn_below: usize) -> Result<Report, String> {
    let state = StateDir::new(&config.server.state_dir);
    let derives = config.doors.iter().any(|d| matches!(d.mode, Mode::Hotp | Mode::Totp));
    let server_id = if derives { state.server_id().map_err(|e| e.to_string())? } else { [0; 16] };
    // Read-only: the daemon may be appending to these very files.
    let mut doors = crate::runtime::doors::Doors::load(config, server_id, &state.ledger_dir(), None);
    doors.refuse_rolled_back(&state.audit_log());
    let now = knock_core::time::unix_now_ms();
    let mut out = format!(
        "server clock: {} UTC (day {}); clients more than a day off cannot knock hotp doors\n",
        format_utc_ms(now),
        knock_core::time::utc_day(now / 1000)
    );
    let (text, warnings) = doors.status(warn_below);
    out.push_str(&text);
    if warnings > 0 {
        out.push_str(&format!("{warnings} warning(s) above\n"));
    }
    Ok(Report { text: out, problems: warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_utc_ms(1_795_564_800_123), "2026-11-25 00:00:00.123");
        assert_eq!(format_utc_ms(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn the_emergency_sheet_numbers_typeable_knock_lines() {
        let text = "[server]\nstate_dir = \"s\"\n[[door]]\nname = \"paper\"\nmode = \"file\"\n\
                    open = [\"22/tcp\"]\nsequence_file = \"p.seq\"\nknock_ports = \"43000-43999\"\n";
        let config = Config::parse(Path::new("/etc/knockd/knockd.toml"), text).expect("config parses");
        let seq = b"# header\n43001:tcp 43002:udp 43003\n43004 43005 43006\n";
        let file = SequenceFile::parse(Path::new("/etc/knockd/p.seq"), seq).expect("file parses");
        let sheet = emergency_sheet(&config.doors[0], "198.18.0.1".parse().unwrap(), &file, 1_795_564_800_123);
        assert!(sheet.starts_with("EMERGENCY KNOCK SHEET - door paper on 198.18.0.1\n"), "{sheet}");
        assert!(sheet.contains("Opens: 22/tcp") && sheet.contains("2026-11-25 (UTC)"), "{sheet}");
        assert!(sheet.contains("CROSS OUT THAT LINE"), "{sheet}");
        assert!(sheet.contains("\n1.  knock -d 50 198.18.0.1 43001 43002:udp 43003\n"), "{sheet}");
        assert!(sheet.ends_with("\n2.  knock -d 50 198.18.0.1 43004 43005 43006\n"), "{sheet}");
    }

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
