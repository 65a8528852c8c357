//! `knock`: sends port-knock sequences, either knockd's classic form
//! (`knock [-v] [-u] [-d ms] [-4|-6] host port[:tcp|udp] ...`) or the next one-time sequence of
//! a profile (`knock --profile NAME [--wait]`).
#![forbid(unsafe_code)]

mod exit;
mod generate;
mod profiles;
mod send;
mod store;

use std::io::Read;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use knock_core::profile::Bundle;
use knock_core::sequence::{derive, Mode, Purpose, SequenceId};
use knock_core::time::{unix_now, utc_day};
use knock_core::Knock;
use zeroize::Zeroizing;

use exit::Failure;
use store::Store;

/// Knock on a server's ports: a one-time sequence from a profile, or a classic knockd sequence.
#[derive(Parser)]
#[command(
    name = "knock",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  knock profile import alice.knock\n  knock --profile ssh-alice --wait -v\n  knock -v 198.18.0.1 7000 8000:udp 9000      (classic knockd form)"
)]
struct Cli {
    #[command(flatten)]
    knock: KnockArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args)]
struct KnockArgs {
    /// Send the next one-time sequence of this profile.
    #[arg(long, short = 'p', value_name = "NAME")]
    profile: Option<String>,
    /// Print each knock as it is sent.
    #[arg(short, long)]
    verbose: bool,
    /// Classic form: knocks without :tcp/:udp are UDP.
    #[arg(short = 'u', long)]
    udp: bool,
    /// Delay between knocks in milliseconds (default: the profile's, or 0 in the classic form).
    #[arg(short, long, value_name = "MS")]
    delay: Option<u64>,
    /// Classic form: resolve the host to IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    ipv4: bool,
    /// Classic form: resolve the host to IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// After knocking, wait until PORT (default: the profile's first opened port) answers, and
    /// retry with the next sequence when it does not.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "0")]
    wait: Option<u16>,
    /// Seconds to wait for the port after each sequence.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    wait_timeout: f64,
    /// Sequences to try with --wait before giving up.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Print the sequence that would be sent; send and consume nothing.
    #[arg(long)]
    dry_run: bool,
    /// Send the profile's closing sequence: the server removes this address's grant at once.
    #[arg(long, conflicts_with = "wait")]
    close: bool,
    /// Send two consecutive sequences, so a server that lost more knocks than its window
    /// takes this client back (hotp profiles).
    #[arg(long, conflicts_with_all = ["close", "dry_run"])]
    resync: bool,
    /// Classic form: the host and its ports, `host port[:tcp|udp] ...`.
    #[arg(value_name = "HOST PORT")]
    target: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// Install a bundle from `knockd client add` or `knockd sequences generate` (`-` reads stdin).
    Import {
        /// The bundle file, or `-`.
        file: PathBuf,
    },
    /// List the installed profiles: server, door, client, mode and the next sequence of each.
    List {
        /// Only the names, one per line (for scripts and shell completion).
        #[arg(long)]
        names: bool,
    },
    /// Show a profile: everything but its key or sequence list, which it never prints.
    Show {
        /// The profile.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Delete a profile with its key or sequence list and its counter (asks nothing).
    Remove {
        /// The profile.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

fn classic(args: &KnockArgs) -> Result<(), Failure> {
    let usage = "usage: knock [options] host port[:tcp|udp] ... (see --help)";
    let (host, ports) = args.target.split_first().ok_or_else(|| Failure::Usage(usage.into()))?;
    if ports.is_empty() {
        return Err(Failure::Usage("no ports to knock: knock [options] host port[:tcp|udp] ...".into()));
    }
    let knocks = ports
        .iter()
        .map(|p| {
            let mut k: Knock = p.parse()?;
            if args.udp && !p.contains(':') {
                k.proto = knock_core::Proto::Udp;
            }
            Ok(k)
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(Failure::Usage)?;
    let server = resolve(host, args.ipv4, args.ipv6)?;
    Ok(send::send_sequence(server, &knocks, Duration::from_millis(args.delay.unwrap_or(0)), |_, k| {
        if args.verbose {
            println!("hitting {} {}:{}", k.proto, server, k.port);
        }
    })?)
}

fn resolve(host: &str, v4: bool, v6: bool) -> Result<IpAddr, String> {
    let addrs = (host, 0).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs.map(|a| a.ip()).find(|ip| (!v4 || ip.is_ipv4()) && (!v6 || ip.is_ipv6())).ok_or_else(|| {
        format!(
            "{host} has no {} address",
            if v4 {
                "IPv4"
            } else if v6 {
                "IPv6"
            } else {
                "usable"
            }
        )
    })
}

/// The knocks of the next sequence of a profile, reserving it unless `dry_run`.
fn next_sequence(store: &Store, name: &str, dry_run: bool, purpose: Purpose) -> Result<(u64, Vec<Knock>), Failure> {
    let p = store.profile(name)?;
    let counter = match (p.mode, dry_run) {
        (Mode::Totp, true) => (unix_now() / p.step_secs).max(store.peek_counter(name)?),
        (Mode::Totp, false) => {
            let current = unix_now() / p.step_secs;
            let step = store.reserve_step(name, current)?;
            if step > current {
                // This step was used already (each is usable once): wait for the next one.
                let wait = (step * p.step_secs).saturating_sub(unix_now());
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
        Mode::File if purpose == Purpose::Close => {
            return Err(Failure::Usage(format!(
                "profile `{name}` is a file profile; file doors have no closing sequence"
            )))
        }
        Mode::File => {
            let f = store.sequences(name)?;
            let total = f.sequences.len();
            let s = f.sequences.get(counter as usize).ok_or_else(|| {
                Failure::Failed(format!("profile `{name}` has used all {total} sequences of its list; import a new list from `knockd sequences generate`"))
            })?;
            let left = total - counter as usize - 1;
            if (left as u64) < p.warn_below {
                eprintln!(
                    "knock: warning: only {left} unused sequences left in profile `{name}`; ask for a new list \
                     (knockd sequences rotate) and import it"
                );
            }
            s.knocks.clone()
        }
        other => return Err(Failure::Config(format!("profile mode {} cannot be knocked", other.label()))),
    };
    Ok((counter, knocks))
}

fn with_profile(args: &KnockArgs, name: &str) -> Result<(), Failure> {
    let store = Store::locate()?;
    let p = store.profile(name)?;
    let delay = Duration::from_millis(args.delay.unwrap_or(p.delay_ms));
    if args.close && !p.close {
        return Err(Failure::Usage(format!(
            "profile `{name}`: door {} on {} has no closing sequence (the server sets `close = true` on the door)",
            p.door, p.server
        )));
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
        Some(0) => Some(p.open.first().map(|o| o.port).ok_or_else(|| {
            Failure::Usage(format!("profile `{name}` opens no port to wait for; give one: --wait PORT"))
        })?),
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
    Err(Failure::Failed(format!(
        "port did not open after {attempts} sequences. Check that the server runs knockd, that this machine's clock is \
         within a day of UTC (now {}), and that the profile's server id matches the server",
        unix_now()
    )))
}

fn import(file: &PathBuf) -> Result<String, Failure> {
    let mut text = Zeroizing::new(String::new());
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map_err(|e| Failure::Io(format!("standard input: {e}")))?;
    } else {
        *text = std::fs::read_to_string(file).map_err(|e| Failure::Io(format!("{}: {e}", file.display())))?;
    }
    let bundle = Bundle::parse_any(file, &text).map_err(|e| Failure::Data(e.to_string()))?;
    Store::locate()?.import(&bundle)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Some(Command::Profile(ProfileCommand::Import { file })) => import(file).map(|m| println!("{m}")),
        Some(Command::Profile(ProfileCommand::List { names })) => profiles::list(&Store::locate()?, *names),
        Some(Command::Profile(ProfileCommand::Show { name })) => profiles::show(&Store::locate()?, name),
        Some(Command::Profile(ProfileCommand::Remove { name })) => profiles::remove(&Store::locate()?, name),
        None => match &cli.knock.profile {
            Some(name) => with_profile(&cli.knock, name),
            None => classic(&cli.knock),
        },
    }
}

/// The one place where a failure becomes a message and an exit status (`knock_core::exit`);
/// clap exits 2 on usage errors before this.
fn main() -> ExitCode {
    // `--generate` stays out of `Cli`, so that neither --help nor the completions offer it.
    let matches = Cli::command().arg(generate::arg()).get_matches();
    let result = match generate::requested(&matches) {
        Some(kind) => generate::render(kind, Cli::command()).map(|text| print!("{text}")),
        None => run(&Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("knock: {failure}");
            ExitCode::from(failure.status())
        }
    }
}
