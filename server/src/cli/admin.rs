//! Admin subcommands that change state on disk: `init`, `client add`, `client revoke`,
//! `client list`, `sequences generate` and `rotate` (with the emergency sheet), `migrate`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use knock_core::config::{valid_name, Config, Door};
use knock_core::keys::{read_key_file, write_key_file, write_private_file, Secret};
use knock_core::ledger::{Ledger, LedgerError};
use knock_core::profile::{Bundle, BundleSecret, Profile};
use knock_core::seqfile::{generate, SequenceFile};
use knock_core::sequence::Mode;
use knock_core::time::format_utc_ms;
use zeroize::Zeroizing;

use super::error::CliError;
use crate::state::door_files::{incoming_path, key_files, key_path};
use crate::state::ledger_backend;
use crate::state::ledgers::LedgerStores;
use crate::state::StateDir;

/// `knockd init`: the state directory and a random server id.
pub fn init(config: &Config) -> Result<String, CliError> {
    let state = StateDir::new(&config.server.state_dir);
    let id = state.init()?;
    Ok(format!("initialised {} (server id {})", config.server.state_dir.display(), knock_core::keys::hex(&id)))
}

/// The door a command names, or [`CliError::NoDoor`] listing the configured doors.
pub fn door<'a>(config: &'a Config, name: &str) -> Result<&'a Door, CliError> {
    config.door(name).ok_or_else(|| {
        let names: Vec<&str> = config.doors.iter().map(|d| d.name.as_str()).collect();
        CliError::NoDoor { config: config.path.clone(), name: name.to_string(), doors: names.join(", ") }
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

fn write_bundle(out: &Path, bundle: &Bundle) -> Result<(), CliError> {
    write_private_file(out, bundle.to_toml().as_bytes()).map_err(CliError::io(out))
}

/// `knockd client add`: a new key for `client` on a hotp door, its empty ledger, and a bundle
/// (profile + key) for `knock profile import`: a 0600 file, or one line on standard output.
pub fn client_add(
    config: &Config,
    door_name: &str,
    client: &str,
    server: IpAddr,
    dest: &BundleDest,
) -> Result<String, CliError> {
    let d = door(config, door_name)?;
    if !matches!(d.mode, Mode::Hotp | Mode::Totp) {
        return Err(CliError::NotKeyed { door: door_name.to_string(), mode: d.mode.label() });
    }
    if !valid_name(client) {
        return Err(CliError::BadClientName(client.to_string()));
    }
    let state = StateDir::new(&config.server.state_dir);
    let server_id = state.server_id()?;
    let dir = d.keys_dir.as_ref().ok_or(CliError::Incomplete("keys directory"))?;
    std::fs::create_dir_all(dir).map_err(CliError::io(dir))?;
    let path = key_path(dir, client);
    let secret = Secret::generate()?;
    write_key_file(&path, &secret)?;
    let label = secret.fingerprint();
    ledger_stores(config, &state)?.create(&label)?;
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
fn keys_dir<'a>(config: &'a Config, door_name: &str) -> Result<&'a Path, CliError> {
    let d = door(config, door_name)?;
    d.keys_dir.as_deref().ok_or_else(|| CliError::NoClients { door: door_name.to_string(), mode: d.mode.label() })
}

/// `knockd client revoke`: deletes the key (the ledger stays, keyed by the key's fingerprint).
pub fn client_revoke(config: &Config, door_name: &str, client: &str) -> Result<String, CliError> {
    let path = key_path(keys_dir(config, door_name)?, client);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(format!(
            "client {client} of door {door_name} revoked ({} deleted). Reload knockd (systemctl reload knockd, \
             or kill -HUP its pid) to drop it and remove its live grants now.",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CliError::NoClient { door: door_name.to_string(), client: client.to_string(), path })
        }
        Err(e) => Err(CliError::Io { path, source: e }),
    }
}

/// `knockd client list`: a door's clients.
pub fn client_list(config: &Config, door_name: &str) -> Result<String, CliError> {
    let dir = keys_dir(config, door_name)?;
    let state = StateDir::new(&config.server.state_dir);
    let stores = ledger_stores(config, &state)?;
    let entries = key_files(dir).map_err(CliError::io(dir))?;
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
                let next = stores.open(&label).map(|l| l.next().to_string()).unwrap_or_else(|e| {
                    if matches!(e, LedgerError::Missing(_)) {
                        "no ledger".into()
                    } else {
                        "unavailable".into()
                    }
                });
                // A file ledger's last change; a shared ledger has no file here.
                let ledger_path = Ledger::path_for(&state.ledger_dir(), &label);
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
) -> Result<String, CliError> {
    let d = door(config, door_name)?;
    if d.mode != Mode::File {
        return Err(CliError::NotFile { door: door_name.to_string(), mode: d.mode.label() });
    }
    if !(1..=1_000_000).contains(&count) {
        return Err(CliError::Count);
    }
    let state = StateDir::new(&config.server.state_dir);
    let server_id = state.server_id()?;
    let current: PathBuf = d.sequence_file.clone().ok_or(CliError::Incomplete("sequence_file"))?;
    if rotate && !current.exists() {
        return Err(CliError::NoCurrentFile(current));
    }
    let path = if rotate { incoming_path(&current) } else { current };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(CliError::io(dir))?;
    }
    let text = Zeroizing::new(generate(&d.alphabet, d.length, count, &format!("door: {door_name}")));
    write_private_file(&path, text.as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => CliError::SequenceFileExists { path: path.clone(), rotating: rotate },
        _ => CliError::Io { path: path.clone(), source: e },
    })?;
    let file = SequenceFile::load(&path)?;
    let label = file.ledger_label();
    ledger_stores(config, &state)?.create(&label)?;
    let out = match out {
        SequencesOut::Bundle(out) => out,
        SequencesOut::Sheet => return Ok(emergency_sheet(d, server, &file, knock_core::time::unix_now_ms())),
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
pub fn migrate(config: &Config, out: Option<&Path>) -> Result<String, CliError> {
    if config.legacy_options.is_none() {
        return Err(CliError::NotKnockdConf(config.path.clone()));
    }
    let text = knock_core::config::migrate(config)?;
    match out {
        None => Ok(text),
        Some(path) => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .map_err(CliError::io(path))?;
            Ok(format!("wrote {}; read its first lines for the next steps", path.display()))
        }
    }
}

/// The ledger stores of the configuration: existing ledgers only read (the daemon may be writing
/// them), new ones created (a file created anew, or an etcd key that does not exist yet).
fn ledger_stores(config: &Config, state: &StateDir) -> Result<Box<dyn LedgerStores>, CliError> {
    Ok(ledger_backend::configured(config, &state.ledger_dir(), None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
