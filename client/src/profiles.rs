//! `knock profile import | list | show NAME | remove NAME | reset-step NAME`: what the profile
//! store holds, told without a secret. `show` names the key file and its fingerprint (which
//! `knockd client list` shows too) but never prints the key or a sequence of a list.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use knock_core::config::ConfigError;
use knock_core::profile::{Bundle, Profile};
use knock_core::sequence::Mode;
use knock_core::time::unix_now;
use zeroize::Zeroizing;

use crate::exit::Failure;
use crate::store::{Store, StoreError};

/// Why `knock profile import` or `reset-step` refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileCommandError {
    /// The bundle could not be read from standard input.
    #[error("cannot read the bundle from standard input: {0}")]
    ReadStdin(io::Error),
    /// The bundle file could not be read.
    #[error("cannot read the bundle {}: {source}", path.display())]
    ReadBundle {
        /// The file given.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The bundle is damaged (the error names the file and what is wrong).
    #[error(transparent)]
    Bundle(ConfigError),
    /// `reset-step` for a profile that does not follow the clock.
    #[error(
        "profile `{name}` is a {mode} profile: only totp profiles follow the clock, so there is no time step to reset"
    )]
    NotTotp {
        /// The profile.
        name: String,
        /// Its mode.
        mode: &'static str,
    },
}

/// `knock profile import FILE` (`-` reads standard input): installs the bundle's profile.
pub fn import(file: &Path) -> Result<(), Failure> {
    let mut text = Zeroizing::new(String::new());
    if file.as_os_str() == "-" {
        io::stdin().read_to_string(&mut text).map_err(ProfileCommandError::ReadStdin)?;
    } else {
        *text = std::fs::read_to_string(file)
            .map_err(|source| ProfileCommandError::ReadBundle { path: file.to_path_buf(), source })?;
    }
    let bundle = Bundle::parse_any(file, &text).map_err(ProfileCommandError::Bundle)?;
    println!("{}", Store::locate()?.import(&bundle)?);
    Ok(())
}

/// `knock profile list [--names]`: a table, or only the names (for shell completion).
pub fn list(store: &Store, names_only: bool) -> Result<(), StoreError> {
    let names = store.names()?;
    if names_only {
        for name in &names {
            println!("{name}");
        }
        return Ok(());
    }
    if names.is_empty() {
        println!("no profiles; import one with `knock profile import FILE`");
        return Ok(());
    }
    let mut rows = vec![["NAME", "SERVER", "DOOR", "CLIENT", "MODE", "NEXT"].map(String::from)];
    for name in &names {
        rows.push(match store.profile(name) {
            Ok(p) => [
                name.clone(),
                p.server.to_string(),
                p.door.clone(),
                p.client.clone(),
                p.mode.label().to_string(),
                next(store, &p).unwrap_or_else(|e| format!("unreadable: {e}")),
            ],
            Err(e) => {
                [name.clone(), format!("unreadable: {e}"), String::new(), String::new(), String::new(), String::new()]
            }
        });
    }
    let mut widths = [0; 6];
    for row in &rows[..] {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

/// What the profile's next knock uses, in a few words.
fn next(store: &Store, p: &Profile) -> Result<String, StoreError> {
    let stored = store.peek_counter(&p.name)?;
    Ok(match p.mode {
        Mode::Totp => format!("step {}", (unix_now() / p.step_secs).max(stored)),
        Mode::File => format!("sequence {stored}"),
        _ => format!("counter {stored}"),
    })
}

/// `knock profile show NAME`: every field of the profile, where its secret lies, and what comes
/// next; never the key or a sequence.
pub fn show(store: &Store, name: &str) -> Result<(), StoreError> {
    let p = store.profile(name)?;
    let mut out = format!("profile {name}\n");
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "  {:<13} {value}", format!("{label}:"));
    };
    field("path", store.profile_path(name).display().to_string());
    field("server", p.server.to_string());
    field("server id", knock_core::keys::hex(&p.server_id));
    field("door", p.door.clone());
    field("client", p.client.clone());
    field("mode", p.mode.label().to_string());
    let protocols: Vec<String> = p.protocols.iter().map(ToString::to_string).collect();
    field("knock ports", format!("{} {} ({} symbols)", p.knock_ports, protocols.join("+"), p.alphabet().size()));
    field("length", format!("{} knocks", p.length));
    field(
        "bind_source",
        match (p.bind_source, p.source_addr) {
            (false, _) => "no".into(),
            (true, Some(a)) => format!("yes, as {a} (source_addr: the address the server sees)"),
            (true, None) => "yes, as the address routing picks toward the server (behind NAT set source_addr)".into(),
        },
    );
    let open: Vec<String> = p.open.iter().map(ToString::to_string).collect();
    field("opens", if open.is_empty() { "(commands on the server)".into() } else { open.join(", ") });
    field("delay", format!("{} ms between knocks", p.delay_ms));
    field("close", if p.close { "yes (knock --close)".into() } else { "no".into() });
    let stored = store.peek_counter(name)?;
    match p.mode {
        Mode::Totp => {
            field("step", format!("{} s", p.step_secs));
            let current = unix_now() / p.step_secs;
            field("next step", format!("{} (the current one is {current})", current.max(stored)));
        }
        Mode::File => {
            let list = store.sequences(name)?;
            let total = list.sequences.len();
            let left = total.saturating_sub(stored as usize);
            field("sequences", format!("{left} of {total} left (warns below {})", p.warn_below));
            field(
                "next",
                match list.sequences.get(stored as usize) {
                    Some(s) => format!("sequence {stored}, on line {} of the list", s.line),
                    None => "none: import a new list (knockd sequences rotate on the server)".into(),
                },
            );
        }
        _ => field("next counter", stored.to_string()),
    }
    match p.mode {
        Mode::File => field("list", format!("{} (private; not shown)", store.seq_path(name).display())),
        _ => {
            let key = store.key(name)?;
            field(
                "key",
                format!("{} (fingerprint {}; private, not shown)", store.key_path(name).display(), key.fingerprint()),
            );
        }
    }
    print!("{out}");
    Ok(())
}

/// `knock profile remove NAME`: the profile, its key or sequence list and its counter, each
/// path printed as it goes.
pub fn remove(store: &Store, name: &str) -> Result<(), StoreError> {
    let removed = store.remove(name)?;
    println!("removed profile `{name}`:");
    for path in removed {
        println!("  {}", path.display());
    }
    Ok(())
}

/// `knock profile reset-step NAME`: a totp profile whose next step ran ahead of the clock,
/// brought back to the first step past the server's window.
pub fn reset_step(name: &str) -> Result<(), Failure> {
    let store = Store::locate()?;
    let p = store.profile(name)?;
    if p.mode != Mode::Totp {
        return Err(ProfileCommandError::NotTotp { name: name.into(), mode: p.mode.label() }.into());
    }
    let current = unix_now() / p.step_secs;
    match store.reset_step(name, current, p.skew)? {
        None => println!(
            "profile `{name}`: nothing to reset: its next time step is within {} s of this machine's clock",
            (u64::from(p.skew) + 2) * p.step_secs
        ),
        Some((old, new)) => println!(
            "profile `{name}`: next time step moved back from {old} to {new} (this clock: step {current}). The steps \
             the server accepts now (up to {}) are skipped, since a knock sent while the clock was wrong may \
             have used them: knock again in {} s",
            current + u64::from(p.skew),
            ((new - 1) * p.step_secs).saturating_sub(unix_now())
        ),
    }
    Ok(())
}
