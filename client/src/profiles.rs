//! `knock profile list | show NAME | remove NAME`: what the profile store holds, told without
//! a secret. `show` names the key file and its fingerprint (which `knockd client list` shows
//! too) but never prints the key or a sequence of a list.

use std::fmt::Write as _;

use knock_core::profile::Profile;
use knock_core::sequence::Mode;
use knock_core::time::unix_now;

use crate::exit::Failure;
use crate::store::Store;

/// `knock profile list [--names]`: a table, or only the names (for shell completion).
pub fn list(store: &Store, names_only: bool) -> Result<(), Failure> {
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
fn next(store: &Store, p: &Profile) -> Result<String, Failure> {
    let stored = store.peek_counter(&p.name)?;
    Ok(match p.mode {
        Mode::Totp => format!("step {}", (unix_now() / p.step_secs).max(stored)),
        Mode::File => format!("sequence {stored}"),
        _ => format!("counter {stored}"),
    })
}

/// `knock profile show NAME`: every field of the profile, where its secret lies, and what comes
/// next; never the key or a sequence.
pub fn show(store: &Store, name: &str) -> Result<(), Failure> {
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
pub fn remove(store: &Store, name: &str) -> Result<(), Failure> {
    let removed = store.remove(name)?;
    println!("removed profile `{name}`:");
    for path in removed {
        println!("  {}", path.display());
    }
    Ok(())
}
