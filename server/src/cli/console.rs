//! Recovery commands for the admin at the server's console (docs/OPERATIONS.md, "Locked out?"):
//!
//! - `knockd grant ADDR --door D --for T`: an audited manual grant through the configured
//!   firewall backend with a kernel timeout, journaled (`state/manual_grants.rs`) so that a
//!   running daemon restores it when its table is deleted under it. It only adds set elements, so it works whether the daemon runs or not.
//! - `knockd ledger recover --door D [--client C] [--next N | --line L | --skip S]`: a fresh
//!   ledger for a key or sequence file whose ledger is missing or damaged (or one moved forward
//!   when it was rolled back), starting at a counter the client has not used yet, so nothing
//!   used before can open again. A knockd `one_time_sequences` file is its own ledger: there,
//!   recovering marks lines used with `#`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knock_core::config::{parse_duration, Action, Config, Door, LedgerBackend};
use knock_core::keys::read_key_file;
use knock_core::ledger::{ConsumeStore, Ledger, LedgerError, WriterLock};
use knock_core::seqfile::SequenceFile;
use knock_core::sequence::Mode;
use knock_core::time::unix_now_ms;

use super::admin::door;
use super::error::CliError;
use crate::runtime::firewall::setup;
use crate::state::audit::used::audited_use;
use crate::state::audit::{AuditLog, Record};
use crate::state::door_files::{key_files, key_path};
use crate::state::ledgers::{FileLedgers, LedgerStores};
use crate::state::legacy_onetime::OneTimeFile;
use crate::state::manual_grants::{self, ManualGrant};
use crate::state::shared_ledgers::EtcdLedgers;
use crate::state::StateDir;

/// The longest manual grant: a console grant is a way back in, not a standing rule (that is
/// what `always_allow` is for).
pub const MAX_MANUAL_GRANT: Duration = Duration::from_secs(7 * 86_400);

/// Who ran the command, for the audit record (`SUDO_USER`, else `USER`/`LOGNAME`).
fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "?".into())
}

/// Why `--for` is not a manual grant's duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration.
    #[error("{0}")]
    Unreadable(String),
    /// Shorter than 1 s or longer than [`MAX_MANUAL_GRANT`].
    #[error(
        "--for {0}: a manual grant lasts from 1s to 168h (to let a source in for good, add it to the door's \
         always_allow)"
    )]
    OutOfRange(String),
}

/// Parses `--for`: a duration from 1 s to [`MAX_MANUAL_GRANT`].
pub fn grant_duration(text: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(text).map_err(DurationError::Unreadable)?;
    if d < Duration::from_secs(1) || d > MAX_MANUAL_GRANT {
        return Err(DurationError::OutOfRange(text.to_string()));
    }
    Ok(d)
}

/// `knockd grant ADDR --door D --for T`: opens door `D`'s ports for `addr` for `duration`
/// through the configured backend (a kernel timeout), audited (event `manual-grant`) before the
/// firewall changes. Works while the daemon runs (it only adds set elements) and while it is down
/// (the table stays in the kernel).
pub fn grant(config: &Config, addr: IpAddr, door_name: &str, duration: Duration) -> Result<String, CliError> {
    let d = door(config, door_name)?;
    let addr = addr.to_canonical();
    if d.action != Action::Firewall || d.open.is_empty() {
        return Err(CliError::CommandDoor { door: door_name.to_string(), addr });
    }
    let mut fw = setup::backend(config)?.ok_or_else(|| CliError::NoFirewall(config.path.clone()))?;
    let state = StateDir::new(&config.server.state_dir);
    let audit_path = state.audit_log();
    let ports: Vec<String> = d.open.iter().map(ToString::to_string).collect();
    let until_ms = unix_now_ms().saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    let audit_err =
        |source| CliError::GrantUnaudited { log: audit_path.clone(), dir: config.server.state_dir.clone(), source };
    let mut audit = AuditLog::open(&audit_path).map_err(audit_err)?;
    let record = Record::new("manual-grant")
        .with("door", door_name)
        .with("source", addr.to_string())
        .with("ports", ports.join(","))
        .with("open_for_ms", u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
        .with("operator", operator());
    audit.write(record, true).map_err(audit_err)?;
    if let Err(e) = fw.grant(addr, &d.open, duration) {
        let failed = Record::new("manual-grant-failed")
            .with("door", door_name)
            .with("source", addr.to_string())
            .with("reason", e.to_string());
        let _ = audit.write(failed, true);
        return Err(CliError::NotGranted(e));
    }
    let manual = ManualGrant { door: door_name.into(), addr, ports: d.open.clone(), until_ms };
    let journaled = match manual_grants::journal(&config.server.state_dir, &manual, unix_now_ms()) {
        Ok(()) => String::new(),
        Err(e) => format!("\nwarning: {e}; if the table is deleted under the daemon, this grant is not restored"),
    };
    Ok(format!(
        "granted {addr} access to {} of door {door_name} for {}s (a kernel timeout: it expires by itself, \
         with or without the daemon); audited as manual-grant{journaled}",
        ports.join(","),
        duration.as_secs()
    ))
}

/// Where `ledger recover` starts the new ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverFrom {
    /// At this counter (hotp) or sequence number (file door): what the client's
    /// `knock --profile P --dry-run` prints as "next sequence N".
    Next(u64),
    /// At the sequence on this line of the door's sequence file.
    Line(usize),
    /// This many counters past the old ledger's next one (0 when it is missing or damaged).
    Skip(u64),
}

/// The ledger of one client (or sequence file) of a door.
struct LedgerOf {
    label: String,
    path: PathBuf,
    /// `door D client C` or `door D (sequence file F)`.
    what: String,
    client: String,
    file: Option<SequenceFile>,
}

fn ledger_of(config: &Config, d: &Door, client: Option<&str>) -> Result<LedgerOf, CliError> {
    let dir = StateDir::new(&config.server.state_dir).ledger_dir();
    match d.mode {
        Mode::Hotp | Mode::Totp if d.legacy.is_none() => {
            let keys = d.keys_dir.as_ref().ok_or(CliError::Incomplete("keys directory"))?;
            let client = match client {
                Some(c) => c.to_owned(),
                None => {
                    let names: Vec<String> = key_files(keys)
                        .map_err(CliError::io(keys))?
                        .iter()
                        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
                        .collect();
                    match names.as_slice() {
                        [one] => one.clone(),
                        _ => return Err(CliError::WhichClient { door: d.name.clone(), clients: names.join(", ") }),
                    }
                }
            };
            let secret = read_key_file(&key_path(keys, &client))?;
            let label = secret.fingerprint();
            Ok(LedgerOf {
                path: Ledger::path_for(&dir, &label),
                label,
                what: format!("door {} client {client}", d.name),
                client,
                file: None,
            })
        }
        Mode::File if d.legacy.is_none() => {
            if client.is_some() {
                return Err(CliError::ClientGiven { door: d.name.clone(), what: "a file door" });
            }
            let path = d.sequence_file.as_ref().ok_or(CliError::Incomplete("sequence_file"))?;
            let file = SequenceFile::load(path)?;
            let label = file.ledger_label();
            Ok(LedgerOf {
                path: Ledger::path_for(&dir, &label),
                label,
                what: format!("door {} (sequence file {})", d.name, path.display()),
                client: "-".into(),
                file: Some(file),
            })
        }
        _ => Err(CliError::NoLedger { door: d.name.clone(), mode: d.mode.label() }),
    }
}

/// `--next` at or past this is refused: no client counts that far, and the counter after the
/// last one must stay representable (issue 9: a ledger at u64::MAX used to wrap to 0).
const MAX_RECOVER_NEXT: u64 = 1 << 62;

/// `knockd ledger recover`: makes the ledger of a door's client (or sequence file) usable again
/// without making any used sequence valid again.
///
/// - Missing: a new ledger is created that starts at the chosen counter.
/// - Damaged: it is moved aside (`<name>.damaged-<unix ms>`) and a new one is created likewise.
/// - Present (rolled back, e.g. a restored snapshot): it is moved forward; never back.
///
/// The start is `--next N` (the client's `knock --profile P --dry-run` prints it as "next
/// sequence N"), `--line L` (file doors), or else `--skip S` counters past the old ledger (0
/// when it is lost). Audited as `ledger-recover` before anything changes. The daemon holds the
/// ledgers' writer lock while it runs: stop it first, and start it again afterwards.
pub fn ledger_recover(
    config: &Config,
    door_name: &str,
    client: Option<&str>,
    from: RecoverFrom,
) -> Result<String, CliError> {
    let d = door(config, door_name)?;
    if let Some(path) = d.legacy.as_ref().and_then(|l| l.one_time_sequences.as_ref()) {
        return recover_one_time(config, door_name, path, client, from);
    }
    let l = ledger_of(config, d, client)?;
    if let RecoverFrom::Next(n) = from {
        if n >= MAX_RECOVER_NEXT {
            return Err(CliError::NextTooFar { next: n, max: MAX_RECOVER_NEXT - 1 });
        }
    }
    // The file backend: the writer's lock, refused while the daemon runs, since it holds the
    // ledgers open. A shared ledger (etcd) is changed by compare-and-swap beside the daemons,
    // which take it up at their next reload.
    let stores: Box<dyn LedgerStores> = match &config.ledger {
        LedgerBackend::File => {
            let lock = l.path.parent().map(WriterLock::acquire).transpose()?;
            let lock = lock.ok_or_else(|| CliError::NoLedgerDir(l.path.clone()))?;
            // Files are opened here, with the lock held, so the lock may go with this scope.
            Box::new(FileRecovery { lock, dir: l.path.parent().map(Path::to_path_buf).unwrap_or_default() })
        }
        LedgerBackend::Etcd(etcd) => Box::new(EtcdLedgers::new(etcd, true)?),
    };
    let (old, was) = match stores.open(&l.label) {
        Ok(ledger) => {
            let next = ledger.next();
            (Some(ledger), format!("present, next counter {next}"))
        }
        Err(LedgerError::Missing(_)) => (None, "missing".to_owned()),
        Err(LedgerError::Corrupt { line, reason, .. }) if config.ledger == LedgerBackend::File => {
            (None, format!("damaged at line {line} ({reason})"))
        }
        Err(e @ LedgerError::WrongLabel { .. }) => return Err(CliError::ForeignLedger(e)),
        Err(e) => return Err(e.into()),
    };
    let old_next = old.as_ref().map_or(0, |l| l.next());
    let next = match (from, &l.file) {
        (RecoverFrom::Next(n), _) => n,
        (RecoverFrom::Line(line), Some(file)) => {
            file.sequences.iter().position(|s| s.line == line).ok_or(CliError::NoSequenceOnLine(line))? as u64
        }
        (RecoverFrom::Line(_), None) => return Err(CliError::LineForFileDoors),
        (RecoverFrom::Skip(skip), _) => old_next.saturating_add(skip),
    };
    if let Some(file) = &l.file {
        if next >= file.sequences.len() as u64 {
            return Err(CliError::WouldLeaveNone { count: file.sequences.len(), next });
        }
    }
    if old.is_some() && next <= old_next {
        return Ok(format!(
            "the ledger of {} is intact and already at counter {old_next} (>= {next}): nothing to do",
            l.what
        ));
    }
    let mut audit =
        AuditLog::open(&StateDir::new(&config.server.state_dir).audit_log()).map_err(CliError::RecoveryUnaudited)?;
    let record = Record::new("ledger-recover")
        .with("door", door_name)
        .with("client", l.client.clone())
        .with("was", was.clone())
        .with("next", next)
        .with("operator", operator());
    audit.write(record, true).map_err(CliError::RecoveryUnaudited)?;
    let mut ledger = match old {
        Some(ledger) => ledger,
        None => {
            if config.ledger == LedgerBackend::File && l.path.exists() {
                let aside = l.path.with_extension(format!("ledger.damaged-{}", unix_now_ms()));
                std::fs::rename(&l.path, &aside).map_err(CliError::io(&l.path))?;
            }
            stores.create(&l.label)?;
            stores.open(&l.label)?
        }
    };
    ledger.skip_to(next)?;
    let restart = match config.ledger {
        LedgerBackend::File => "Start knockd again so the daemon opens the new ledger.",
        LedgerBackend::Etcd(_) => "Reload knockd on every node (systemctl reload knockd) so each takes it up.",
    };
    let mut out = format!(
        "ledger of {} ({was}) now starts at counter {next}: every sequence before it is refused.\n{restart}",
        l.what
    );
    if let RecoverFrom::Skip(skip) = from {
        out.push_str(&format!(
            "\nNote: the client's knocks open only if its next sequence is {next} to {} (the door's window). \
             Check with `knock --profile PROFILE --dry-run` on the client (\"next sequence N\"); if it \
             differs, run this again with --next N (forward only). Skipped {skip} counters.",
            next + u64::from(d.window) - 1
        ));
    }
    Ok(out)
}

/// `ledger recover` for a knockd `one_time_sequences` door, whose file is its own ledger: marks
/// lines used with `#` as knockd does, never unmarks one. By default every line up to the last
/// one the audit log records as used (a file restored with fewer marks); with `--line L`, every
/// line before L. Audited as `ledger-recover` before the file changes.
fn recover_one_time(
    config: &Config,
    door_name: &str,
    path: &Path,
    client: Option<&str>,
    from: RecoverFrom,
) -> Result<String, CliError> {
    if client.is_some() {
        return Err(CliError::ClientGiven { door: door_name.to_string(), what: "a knockd one_time_sequences door" });
    }
    // The daemon rewrites this file as lines are used: like ledgers, it is recovered only while
    // the daemon, the holder of the writer's lock, is stopped.
    let state = StateDir::new(&config.server.state_dir);
    let _lock = WriterLock::acquire(&state.ledger_dir())?;
    let mut file = OneTimeFile::load(path)?;
    let audit_path = state.audit_log();
    let through = match from {
        RecoverFrom::Line(line) => {
            if !file.entries().iter().any(|e| e.line == line && !e.knocks.is_empty()) {
                return Err(CliError::NoSequenceOnOneTimeLine { line, path: path.to_path_buf() });
            }
            line - 1
        }
        RecoverFrom::Next(_) => return Err(CliError::OneTimeNext(path.to_path_buf())),
        RecoverFrom::Skip(_) => match audited_use(&audit_path).and_then(|u| u.of_key(file.label()).last().copied()) {
            Some(last) => usize::try_from(last).unwrap_or(usize::MAX),
            None => {
                return Ok(format!(
                    "the audit log records no line of {} as used: nothing to do (give --line L to mark every line \
                     before L used)",
                    path.display()
                ))
            }
        },
    };
    let marking: Vec<usize> = (0..file.entries().len())
        .filter(|&i| {
            file.entries()[i].line <= through && !file.entries()[i].used && !file.entries()[i].knocks.is_empty()
        })
        .collect();
    if marking.is_empty() {
        return Ok(format!(
            "every line of {} up to line {through} is marked used already: nothing to do",
            path.display()
        ));
    }
    let mut audit = AuditLog::open(&audit_path).map_err(CliError::RecoveryUnaudited)?;
    let record = Record::new("ledger-recover")
        .with("door", door_name)
        .with("client", "-")
        .with("was", format!("{} line(s) up to line {through} not marked used", marking.len()))
        .with("through_line", through as u64)
        .with("key", file.label())
        .with("operator", operator());
    audit.write(record, true).map_err(CliError::RecoveryUnaudited)?;
    for &i in &marking {
        file.invalidate(i)?;
    }
    Ok(format!(
        "marked {} line(s) of {} used with `#` (every sequence up to line {through}): none of them opens again.\n\
         Restart or reload knockd so the daemon takes the door again.",
        marking.len(),
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config in a fresh directory: hotp door `ssh` with client `alice`, file door `paper`
    /// with 5 sequences; the state directory initialised.
    fn lab(tag: &str) -> (PathBuf, Config) {
        let dir = std::env::temp_dir().join(format!("knockd-recover-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let text =
            "[server]\nstate_dir = \"state\"\n\n[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\n\
                    keys = \"keys\"\n\n[[door]]\nname = \"paper\"\nmode = \"file\"\nopen = [\"22/tcp\"]\n\
                    sequence_file = \"paper.seq\"\nknock_ports = \"43000-43999\"\n";
        let config = Config::parse(&dir.join("knockd.toml"), text).unwrap();
        StateDir::new(&config.server.state_dir).init().unwrap();
        let secret = knock_core::keys::Secret::generate().unwrap();
        knock_core::keys::write_key_file(&dir.join("keys/alice.key"), &secret).unwrap();
        let d = config.door("paper").unwrap();
        let seqs = knock_core::seqfile::generate(&d.alphabet, d.length, 5, "door: paper");
        std::fs::write(dir.join("paper.seq"), seqs).unwrap();
        (dir, config)
    }

    fn next_of(config: &Config, door_name: &str, client: Option<&str>) -> u64 {
        let l = ledger_of(config, config.door(door_name).unwrap(), client).unwrap();
        Ledger::read(&l.path, &l.label).unwrap().next()
    }

    #[test]
    fn recover_creates_moves_aside_and_only_goes_forward() {
        let (dir, config) = lab("hotp");
        // Missing: the default skip, with a note on the window.
        let out = ledger_recover(&config, "ssh", None, RecoverFrom::Skip(1000)).unwrap();
        assert!(out.contains("(missing) now starts at counter 1000") && out.contains("1000 to 1009"), "{out}");
        assert_eq!(next_of(&config, "ssh", Some("alice")), 1000);
        // Present: forward only.
        let out = ledger_recover(&config, "ssh", Some("alice"), RecoverFrom::Next(5)).unwrap();
        assert!(out.contains("nothing to do"), "{out}");
        ledger_recover(&config, "ssh", Some("alice"), RecoverFrom::Next(1500)).unwrap();
        assert_eq!(next_of(&config, "ssh", Some("alice")), 1500);
        // Damaged: moved aside, and a fresh one at the given counter.
        let l = ledger_of(&config, config.door("ssh").unwrap(), None).unwrap();
        let text = std::fs::read_to_string(&l.path).unwrap().replace("consume 999 ", "consume 9 ");
        std::fs::write(&l.path, format!("{text}garbage line\nconsume 1 2 3\n")).unwrap();
        let out = ledger_recover(&config, "ssh", None, RecoverFrom::Next(1600)).unwrap();
        assert!(out.contains("(damaged at line 2"), "{out}");
        assert_eq!(next_of(&config, "ssh", None), 1600);
        let aside = std::fs::read_dir(l.path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".ledger.damaged-"))
            .count();
        assert_eq!(aside, 1);
        // Every step was audited.
        let audit = std::fs::read_to_string(StateDir::new(&config.server.state_dir).audit_log()).unwrap();
        assert_eq!(audit.matches("ledger-recover").count(), 3, "{audit}");
        // Refusals.
        assert!(ledger_recover(&config, "ssh", Some("bob"), RecoverFrom::Next(1)).is_err());
        let err = ledger_recover(&config, "ssh", None, RecoverFrom::Line(3)).unwrap_err();
        assert!(err.to_string().contains("file doors"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recover_a_file_door_by_line_or_sequence_number() {
        let (dir, config) = lab("file");
        let err = ledger_recover(&config, "paper", None, RecoverFrom::Skip(1000)).unwrap_err().to_string();
        assert!(err.contains("has 5 sequences"), "{err}");
        assert!(ledger_recover(&config, "paper", Some("alice"), RecoverFrom::Next(1)).is_err());
        // Two comment lines head the file: sequence 2 is on line 5.
        let out = ledger_recover(&config, "paper", None, RecoverFrom::Line(5)).unwrap();
        assert!(out.contains("now starts at counter 2"), "{out}");
        assert_eq!(next_of(&config, "paper", None), 2);
        assert!(ledger_recover(&config, "paper", None, RecoverFrom::Line(1)).is_err(), "a comment line");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(grant_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(grant_duration("500ms").is_err());
        assert!(grant_duration("169h").unwrap_err().to_string().contains("always_allow"));
        assert!(grant_duration("soon").is_err());
    }
}

/// The file ledgers of a recovery: opened to write under the writer's lock it holds.
#[derive(Debug)]
struct FileRecovery {
    lock: WriterLock,
    dir: PathBuf,
}

impl LedgerStores for FileRecovery {
    fn open(&self, label: &str) -> Result<Box<dyn ConsumeStore>, LedgerError> {
        FileLedgers::writable(&self.dir, &self.lock).open(label)
    }

    fn create(&self, label: &str) -> Result<(), LedgerError> {
        FileLedgers::writable(&self.dir, &self.lock).create(label)
    }

    fn describe(&self, label: &str) -> PathBuf {
        Ledger::path_for(&self.dir, label)
    }
}
