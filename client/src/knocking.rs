//! `knock --profile NAME [--wait] [--close] [--resync] [--dry-run]`: the next one-time sequence
//! of a profile, reserved on disk before the first packet leaves, sent, and with `--wait` the
//! door's port polled (a new sequence when it does not answer).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use knock_core::profile::Profile;
use knock_core::sequence::{derive, Mode, Purpose, SequenceId};
use knock_core::time::{unix_now, utc_day};
use knock_core::Knock;

use crate::exit::Failure;
use crate::send;
use crate::store::{self, StepPlan, Store};
use crate::KnockArgs;

/// Why a profile's knock was refused or did not open, naming the profile and the fix.
#[derive(Debug, thiserror::Error)]
pub enum KnockError {
    /// `--close` for a door without a closing sequence.
    #[error(
        "profile `{name}`: door {door} on {server} has no closing sequence (the server sets `close = true` on the door)"
    )]
    NoClosingSequence {
        /// The profile.
        name: String,
        /// Its door.
        door: String,
        /// Its server.
        server: IpAddr,
    },
    /// `--close` for a file profile.
    #[error("profile `{name}` is a file profile; file doors have no closing sequence")]
    FileHasNoClose {
        /// The profile.
        name: String,
    },
    /// `--wait` without a port, for a profile that opens none (a door of commands).
    #[error("profile `{name}` opens no port to wait for; give one: --wait PORT")]
    NoPortToWait {
        /// The profile.
        name: String,
    },
    /// A mode only a server has (knockd's fixed sequences).
    #[error(
        "profile `{name}`: mode {mode} cannot be knocked (hotp, totp and file profiles can); import the door's \
         bundle from `knockd client add` or `knockd sequences generate`"
    )]
    NotKnockable {
        /// The profile.
        name: String,
        /// Its mode.
        mode: &'static str,
    },
    /// Every sequence of a file profile's list was used.
    #[error(
        "profile `{name}` has used all {total} sequences of its list; import a new list from `knockd sequences generate`"
    )]
    ListUsedUp {
        /// The profile.
        name: String,
        /// How many the list had.
        total: usize,
    },
    /// A totp profile used its steps up to one that starts in more than a step.
    #[error(
        "profile `{name}`: the next unused time step starts in {starts_in}; the ones before it were used or skipped \
         (each step opens once): knock again in {again} s"
    )]
    StepSoon {
        /// The profile.
        name: String,
        /// When the next unused step starts, for people.
        starts_in: String,
        /// Seconds until a knock may go out.
        again: u64,
    },
    /// A totp profile whose next step lies far ahead of the clock.
    #[error(
        "profile `{name}`: its next unused time step ({next}) lies {ahead} ahead of this machine's clock (step \
         {current}): the clock ran ahead when this profile last knocked, or was set back since. If the clock \
         is right now (compare `date -u` with a trusted clock), run `knock profile reset-step {name}`: it \
         moves the profile back to the present without reusing a step the server may still accept"
    )]
    StepAhead {
        /// The profile.
        name: String,
        /// Its next unused step.
        next: u64,
        /// The clock's step.
        current: u64,
        /// How far ahead, for people.
        ahead: String,
    },
    /// `--wait`: the port stayed closed after every attempt.
    #[error(
        "port {port} on {server} did not open after {attempts} sequences of profile `{name}`. Check that the server \
         runs knockd, that this machine's clock is within a day of UTC (now {now}), and that the profile's server \
         id matches the server"
    )]
    NeverOpened {
        /// The profile.
        name: String,
        /// The port waited for.
        port: u16,
        /// The server.
        server: IpAddr,
        /// Sequences sent.
        attempts: u32,
        /// This machine's clock, Unix seconds.
        now: u64,
    },
}

/// The knocks of the next sequence of a profile, reserving it unless `dry_run`.
fn next_sequence(store: &Store, name: &str, dry_run: bool, purpose: Purpose) -> Result<(u64, Vec<Knock>), Failure> {
    let p = store.profile(name)?;
    let counter = match (p.mode, dry_run) {
        (Mode::Totp, true) => {
            let current = unix_now() / p.step_secs;
            usable_step(&p, store::plan_step(current, store.peek_counter(name)?), current)?
        }
        (Mode::Totp, false) => {
            let current = unix_now() / p.step_secs;
            let step = usable_step(&p, store.reserve_step(name, current)?, current)?;
            if step > current {
                // This step was used already (each is usable once): wait for the next one,
                // which starts within one step.
                let wait = step.saturating_mul(p.step_secs).saturating_sub(unix_now()).min(p.step_secs);
                eprintln!("knock: waiting {wait} s for the next time step (the current one was used)");
                std::thread::sleep(Duration::from_secs(wait));
            }
            step
        }
        (_, true) => store.peek_counter(name)?,
        (_, false) => store.reserve_counter(name)?,
    };
    let knocks = match p.mode {
        Mode::Hotp | Mode::Totp => {
            let key = store.key(name)?;
            let source = if p.bind_source {
                Some(match p.source_addr {
                    Some(a) => a,
                    None => send::local_source(p.server)?,
                })
            } else {
                None
            };
            let id = SequenceId {
                purpose,
                server_id: p.server_id,
                door: p.door.clone(),
                client: p.client.clone(),
                mode: p.mode,
                counter,
                epoch: utc_day(unix_now()),
            };
            derive(&key, &id, &p.alphabet(), p.length, source)
        }
        Mode::File if purpose == Purpose::Close => return Err(KnockError::FileHasNoClose { name: name.into() }.into()),
        Mode::File => {
            let f = store.sequences(name)?;
            let total = f.sequences.len();
            let s = f.sequences.get(counter as usize).ok_or(KnockError::ListUsedUp { name: name.into(), total })?;
            let left = total - counter as usize - 1;
            if (left as u64) < p.warn_below {
                eprintln!(
                    "knock: warning: only {left} unused sequences left in profile `{name}`; ask for a new list \
                     (knockd sequences rotate) and import it"
                );
            }
            s.knocks.clone()
        }
        other => return Err(KnockError::NotKnockable { name: name.into(), mode: other.label() }.into()),
    };
    Ok((counter, knocks))
}

/// The step a `totp` knock uses, or the refusal of a next step more than one step ahead: after
/// a few knocks in quick succession, when to try again; after a clock that ran ahead (or was
/// set back), what happened and `knock profile reset-step`.
fn usable_step(p: &Profile, plan: StepPlan, current: u64) -> Result<u64, KnockError> {
    let next = match plan {
        StepPlan::Use(step) => return Ok(step),
        StepPlan::Ahead { next } => next,
    };
    let name = p.name.clone();
    // A knock may go out once the next step is at most one step away.
    let again = (next - 1).saturating_mul(p.step_secs).saturating_sub(unix_now());
    if next <= current + u64::from(p.skew) + 1 {
        return Err(KnockError::StepSoon { name, starts_in: human_secs(again.saturating_add(p.step_secs)), again });
    }
    let ahead = human_secs((next - current).saturating_mul(p.step_secs));
    Err(KnockError::StepAhead { name, next, current, ahead })
}

/// A span of seconds for people: `45 s`, `3 min 20 s`, `5 h 2 min`, `412 days`.
fn human_secs(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7199 => format!("{} min {} s", secs / 60, secs % 60),
        7200..=172_799 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} days", secs / 86_400),
    }
}

/// `knock --profile NAME ...`.
pub fn knock(args: &KnockArgs, name: &str) -> Result<(), Failure> {
    let store = Store::locate()?;
    let p = store.profile(name)?;
    let delay = Duration::from_millis(args.delay.unwrap_or(p.delay_ms));
    if args.close && !p.close {
        return Err(KnockError::NoClosingSequence { name: name.into(), door: p.door.clone(), server: p.server }.into());
    }
    let purpose = if args.close { Purpose::Close } else { Purpose::Open };
    if args.dry_run {
        let (counter, knocks) = next_sequence(&store, name, true, purpose)?;
        let words: Vec<String> = knocks.iter().map(Knock::to_string).collect();
        println!("{} {} (next sequence {counter}, not consumed)", p.server, words.join(" "));
        return Ok(());
    }
    let wait_port = match args.wait {
        None => None,
        Some(0) => Some(p.open.first().map(|o| o.port).ok_or(KnockError::NoPortToWait { name: name.into() })?),
        Some(port) => Some(port),
    };
    let attempts = if wait_port.is_some() { args.attempts.max(1) } else { 1 };
    for attempt in 1..=attempts {
        // A resync sends two consecutive sequences; the server accepts the pair beyond its window.
        let mut counter = 0;
        let mut started = Instant::now();
        for round in 0..if args.resync { 2 } else { 1 } {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            let (c, knocks) = next_sequence(&store, name, false, purpose)?;
            counter = c;
            started = Instant::now();
            send::send_sequence(p.server, &knocks, delay, |i, k| {
                if args.verbose {
                    println!(
                        "hitting {} {}:{} ({}/{} of sequence {c})",
                        k.proto,
                        p.server,
                        k.port,
                        i + 1,
                        knocks.len()
                    );
                }
            })?;
        }
        let Some(port) = wait_port else {
            if args.verbose {
                println!("sent sequence {counter} of profile {name} to {}", p.server);
            }
            return Ok(());
        };
        let timeout = Duration::from_secs_f64(args.wait_timeout.clamp(0.1, 600.0));
        if let Some(took) = send::wait_for_port(p.server, port, started, timeout) {
            println!(
                "port {port} on {} answered {:.3} s after the first knock (sequence {counter})",
                p.server,
                took.as_secs_f64()
            );
            return Ok(());
        }
        eprintln!(
            "knock: port {port} on {} did not answer within {:.1} s (attempt {attempt} of {attempts})",
            p.server,
            timeout.as_secs_f64()
        );
    }
    // Only --wait gets here: without it, the first attempt returned.
    let port = wait_port.unwrap_or_default();
    Err(KnockError::NeverOpened { name: name.into(), port, server: p.server, attempts, now: unix_now() }.into())
}
