//! `knockd`: the one-time port knocking daemon and its admin commands.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use knock_core::config::Config;
use knockd::{admin, daemon::Daemon, hardening};

/// Opens a firewall port only for the address that knocked a valid, never-used sequence.
#[derive(Parser)]
#[command(
    name = "knockd",
    version,
    after_help = "Examples:\n  knockd -c /etc/knockd/knockd.toml init\n  knockd client add --door ssh --name alice --server-addr 198.18.0.1\n  knockd check\n  knockd                       (runs the daemon)\n  knockd audit --replays"
)]
struct Cli {
    /// The configuration file.
    #[arg(short = 'c', long, global = true, default_value = "/etc/knockd/knockd.toml")]
    config: PathBuf,
    /// Log format: text for journald, json for collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Debug logging.
    #[arg(short = 'D', long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Create the state directory and this server's random id (once).
    Init,
    /// Validate the configuration and print each door's strength in bits.
    Check,
    /// Manage the clients of a hotp door.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the sequence files of file doors.
    #[command(subcommand)]
    Sequences(SequencesCommand),
    /// Show the audit log.
    Audit {
        /// Only this door.
        #[arg(long)]
        door: Option<String>,
        /// Only replays.
        #[arg(long)]
        replays: bool,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a key for a new client and write its profile bundle.
    Add {
        /// The door.
        #[arg(long)]
        door: String,
        /// The client's name (a-z, 0-9, _ or -).
        #[arg(long)]
        name: String,
        /// The address clients knock (goes into the profile).
        #[arg(long)]
        server_addr: IpAddr,
        /// Where to write the bundle (default: ./<door>-<name>.knock).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SequencesCommand {
    /// Write a fresh sequence file for a file door and the client's twin as a bundle.
    Generate {
        /// The door.
        #[arg(long)]
        door: String,
        /// How many sequences.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// The address clients knock (goes into the profile).
        #[arg(long)]
        server_addr: IpAddr,
        /// Where to write the bundle (default: ./<door>.knock).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn init_logging(format: LogFormat, debug: bool) {
    let level = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KNOCKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> Result<String, String> {
    let config = Config::load(&cli.config).map_err(|e| e.to_string())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            if let Err(e) = hardening::no_core_dumps() {
                tracing::warn!("could not disable core dumps: {e}");
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
            }
            Daemon::new(config)?.run(stop)?;
            Ok(String::new())
        }
        Command::Init => admin::init(&config),
        Command::Check => admin::check(&config),
        Command::Client(ClientCommand::Add { door, name, server_addr, out }) => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{door}-{name}.knock")));
            admin::client_add(&config, &door, &name, server_addr, &out)
        }
        Command::Sequences(SequencesCommand::Generate { door, count, server_addr, out }) => {
            let out = out.unwrap_or_else(|| PathBuf::from(format!("{door}.knock")));
            admin::sequences_generate(&config, &door, count, server_addr, &out)
        }
        Command::Audit { door, replays } => admin::audit(&config, replays, door.as_deref()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.debug);
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("knockd: {e}");
            ExitCode::FAILURE
        }
    }
}
