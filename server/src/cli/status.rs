//! `knockd status`: the server's clock, each door's clients and their next counters, how many
//! sequences file doors have left, and the doors or clients the daemon would refuse. The doors
//! are loaded read-only, as the daemon loads them (it may be appending to these very files).
//! Each warning is a problem of the report (exit 1).

use knock_core::config::Config;
use knock_core::sequence::Mode;
use knock_core::time::{format_utc_ms, unix_now_ms, utc_day};

use super::error::CliError;
use super::report::Report;
use crate::runtime::doors::{DoorKind, Doors};
use crate::state::ledger_backend;
use crate::state::StateDir;

/// `knockd status`: the server's clock, each door's clients and counters, how many sequences
/// file doors have left (warning below `warn_below`), and refused doors or clients; each
/// warning counts as a problem of the report.
pub fn status(config: &Config, warn_below: usize) -> Result<Report, CliError> {
    let state = StateDir::new(&config.server.state_dir);
    let derives = config.doors.iter().any(|d| matches!(d.mode, Mode::Hotp | Mode::Totp));
    let server_id = if derives { state.server_id()? } else { [0; 16] };
    // Read-only: the daemon may be appending to these very ledgers.
    let stores = ledger_backend::configured(config, &state.ledger_dir(), None)?;
    let mut doors = Doors::load(config, server_id, stores.as_ref());
    doors.refuse_rolled_back(&state.audit_log());
    let now = unix_now_ms();
    let mut out = format!(
        "server clock: {} UTC (day {}); clients more than a day off cannot knock hotp doors\n",
        format_utc_ms(now),
        utc_day(now / 1000)
    );
    let (text, warnings) = doors_report(&doors, warn_below);
    out.push_str(&text);
    if warnings > 0 {
        out.push_str(&format!("{warnings} warning(s) above\n"));
    }
    Ok(Report { text: out, problems: warnings })
}

/// Every door: clients and their next counters, unused sequences of file doors (with a warning
/// below `warn_below`), refused doors and clients. Returns the text and the number of warnings.
fn doors_report(doors: &Doors, warn_below: usize) -> (String, usize) {
    let mut out = String::new();
    let mut warnings = 0;
    for d in &doors.doors {
        let name = &d.config.name;
        match &d.kind {
            DoorKind::Keyed(clients) => {
                out.push_str(&format!("door {name} ({}): {} client(s)\n", d.config.mode.label(), clients.len()));
                for c in clients {
                    out.push_str(&format!("  {:<16} next counter {}\n", c.name, c.store().next()));
                }
            }
            DoorKind::File(files) => {
                let left: usize = files.iter().map(|f| f.unused()).sum();
                let total = files.first().map_or(0, |f| f.file.sequences.len());
                out.push_str(&format!(
                    "door {name} (file): {} unused of {total} sequences",
                    files.first().map_or(0, |f| f.unused())
                ));
                if let Some(next) = files.get(1) {
                    out.push_str(&format!("; incoming file: {} unused (rotation pending)", next.unused()));
                }
                out.push('\n');
                if left < warn_below {
                    warnings += 1;
                    out.push_str(&format!(
                        "  warning: only {left} unused sequences left; run `knockd sequences rotate --door {name}`\n"
                    ));
                }
            }
            DoorKind::Static => out.push_str(&format!("door {name} (static, replayable)\n")),
            DoorKind::KnockdOneTime(f) => {
                let left = f.entries().iter().filter(|e| !e.used).count();
                out.push_str(&format!("door {name} (knockd one_time_sequences): {left} unused lines\n"));
                if left < warn_below {
                    warnings += 1;
                    out.push_str(&format!("  warning: only {left} unused lines left in {}\n", f.path().display()));
                }
            }
        }
    }
    for r in &doors.refused {
        warnings += 1;
        out.push_str(&format!("refused: {r}\n"));
    }
    (out, warnings)
}
