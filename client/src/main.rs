//! `knock`: sends port-knock sequences, either knockd's classic form
//! (`knock [-v] [-u] [-d ms] [-4|-6] host port[:tcp|udp] ...`) or the next one-time sequence of
//! a profile (`knock --profile NAME [--wait]`).
#![forbid(unsafe_code)]

mod classic;
mod exit;
mod generate;
mod knocking;
mod profiles;
mod send;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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

/// The knock itself: a profile's next sequence, or the classic form.
#[derive(Args)]
pub struct KnockArgs {
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
    /// Bring a totp profile whose next time step ran ahead of this machine's clock (a clock
    /// that was wrong when it last knocked) back to the present, skipping every step the
    /// server may still accept.
    ResetStep {
        /// The profile.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Some(Command::Profile(ProfileCommand::Import { file })) => profiles::import(file),
        Some(Command::Profile(ProfileCommand::List { names })) => Ok(profiles::list(&Store::locate()?, *names)?),
        Some(Command::Profile(ProfileCommand::Show { name })) => Ok(profiles::show(&Store::locate()?, name)?),
        Some(Command::Profile(ProfileCommand::Remove { name })) => Ok(profiles::remove(&Store::locate()?, name)?),
        Some(Command::Profile(ProfileCommand::ResetStep { name })) => profiles::reset_step(name),
        None => match &cli.knock.profile {
            Some(name) => knocking::knock(&cli.knock, name),
            None => classic::knock(&cli.knock),
        },
    }
}

/// The one place where a failure becomes a message and an exit status (`knock_core::exit`);
/// clap exits 2 on usage errors before this.
fn main() -> ExitCode {
    // `--generate` stays out of `Cli`, so that neither --help nor the completions offer it.
    let matches = Cli::command().arg(generate::arg()).get_matches();
    let result = match generate::requested(&matches) {
        Some(kind) => generate::render(kind, Cli::command()).map(|text| print!("{text}")).map_err(Failure::from),
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
