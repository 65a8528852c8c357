//! `knockd`: the one-time port knocking daemon and its admin commands.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use knock_core::config::Config;
use knockd::cli::exit::Failure;
use knockd::cli::generate;
use knockd::cli::report::Report;
use knockd::cli::{admin, default_config};
use knockd::hardening;
use knockd::runtime::daemon::Daemon;

/// Opens a firewall port only for the address that knocked a valid, never-used sequence.
#[derive(Parser)]
#[command(
    name = "knockd",
    version,
    after_help = "Examples:\n  knockd -c /etc/knockd/knockd.toml init\n  knockd client add --door ssh --name alice --server-addr 198.18.0.1\n  knockd check\n  knockd                       (runs the daemon)\n  knockd audit --replays"
)]
struct Cli {
    /// The configuration file [default: /etc/knockd/knockd.toml, or /etc/knockd.conf when only
    /// that exists].
    #[arg(short = 'c', long, global = true, value_name = "CONFIG")]
    config: Option<PathBuf>,
    /// Log format: text for journald, json for collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Debug logging.
    #[arg(short = 'D', long)]
    debug: bool,
    /// Capture on these interfaces instead of the configured ones (knockd's -i; repeat or use commas).
    #[arg(short = 'i', long, value_delimiter = ',', value_name = "IFACE")]
    interface: Vec<String>,
    /// Detach and run in the background (knockd's -d). Under systemd, leave it off.
    #[arg(short = 'd', long = "daemon")]
    daemonize: bool,
    /// Write the daemon's process id here (knockd's -p; default: a knockd.conf's PidFile).
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Append logs to this file instead of standard error (knockd's -g; default: a knockd.conf's LogFile).
    #[arg(short = 'g', long, value_name = "FILE")]
    logfile: Option<PathBuf>,
    /// Accepted for knockd compatibility (-l), but no DNS lookups are made: they would tell the DNS who knocked.
    #[arg(short = 'l', long)]
    lookup: bool,
    /// More detail in the log (knockd's -v); knocks themselves are never logged.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Keep the server id, ledgers, audit log and pending stop commands here instead of the
    /// configured state_dir (a knockd.conf has none: /var/lib/knockd).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Handle IPv4 knocks only; IPv6 packets are ignored (knockd's -4).
    #[arg(short = '4', long = "only-ip-v4")]
    only_ipv4: bool,
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
    /// Validate the configuration and print each door's strength in bits (64 at least, unless --force).
    Check {
        /// Accept doors below 64 bits (static knockd doors count 0).
        #[arg(long)]
        force: bool,
    },
    /// Manage the clients of a hotp door.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage the sequence files of file doors.
    #[command(subcommand)]
    Sequences(SequencesCommand),
    /// Show the server's clock, each door's clients and counters, and how many sequences file
    /// doors have left.
    Status {
        /// Warn (and exit 1) when a file door has fewer unused sequences than this.
        #[arg(long, default_value_t = 10)]
        warn_below: usize,
    },
    /// Print a knockd.toml equivalent to a knockd.conf, each door moved to a one-time mode.
    Migrate {
        /// Write it here (never over an existing file) instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// At the console: let ADDR through a door's ports for a while (audited; a kernel timeout).
    Grant {
        /// The address to let in.
        addr: IpAddr,
        /// The door whose ports open.
        #[arg(long)]
        door: String,
        /// How long: 30s, 10m, 2h (at most 168h).
        #[arg(long = "for", value_name = "DURATION", value_parser = knockd::cli::console::grant_duration)]
        duration: std::time::Duration,
    },
    /// Repair a door's ledgers.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Show the audit log.
    Audit(knockd::cli::audit::AuditArgs),
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
        #[arg(long, conflicts_with = "export")]
        out: Option<PathBuf>,
        /// Print the bundle as one line on standard output instead (for `knock profile import -`).
        #[arg(long)]
        export: bool,
    },
    /// Delete a client's key; on reload (SIGHUP) the daemon drops it and removes its live grants.
    Revoke {
        /// The door.
        #[arg(long)]
        door: String,
        /// The client.
        #[arg(long)]
        name: String,
    },
    /// List a door's clients: key fingerprint, creation, next counter, last activity.
    List {
        /// The door.
        #[arg(long)]
        door: String,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Start a missing, damaged or rolled-back ledger again past every sequence the client used.
    Recover {
        /// The door.
        #[arg(long)]
        door: String,
        /// The client (hotp doors with more than one client).
        #[arg(long)]
        client: Option<String>,
        /// Start at this sequence: the "next sequence N" of the client's `knock --profile P --dry-run`.
        #[arg(long, conflicts_with_all = ["line", "skip"])]
        next: Option<u64>,
        /// File doors: start at the sequence on this line of the sequence file.
        #[arg(long, conflicts_with = "skip")]
        line: Option<usize>,
        /// Otherwise start this many counters past the old ledger (0 when it is lost).
        #[arg(long, default_value_t = 1000)]
        skip: u64,
    },
}

#[derive(Subcommand)]
enum SequencesCommand {
    /// Write the next sequence file beside the current one and the client's twin; both files
    /// are accepted until the first knock from the new one, so there is no gap.
    Rotate(SequencesArgs),
    /// Write a fresh sequence file for a file door and the client's twin as a bundle.
    Generate {
        #[command(flatten)]
        args: SequencesArgs,
        /// Print an emergency sheet instead of writing a bundle: a plain page for a safe, each
        /// sequence a numbered `knock` command line to type and cross out.
        #[arg(long, conflicts_with = "out")]
        emergency: bool,
    },
}

/// What `sequences generate` and `sequences rotate` take.
#[derive(clap::Args)]
struct SequencesArgs {
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
}

/// Sets up logging to standard error, or appended to `file`.
fn init_logging(format: LogFormat, level: &str, file: Option<&std::path::Path>) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KNOCKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let writer = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("log file {}: {e}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(f))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    // Under systemd, standard error is the journal: priorities, no timestamps of our own.
    let journal = file.is_none() && knockd::cli::journal::stderr_is_journal();
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Text, true) => builder.event_format(knockd::cli::journal::text_format()).init(),
        (LogFormat::Json, true) => builder.json().event_format(knockd::cli::journal::json_format()).init(),
    }
    Ok(())
}

/// Loads the configuration with the command line's overrides (`--state-dir`, `-i`).
/// (Its errors are configuration errors: `run` maps them to [`Failure::Config`].)
fn load_config(cli: &Cli) -> Result<Config, String> {
    let path = cli.config.clone().unwrap_or_else(|| PathBuf::from(default_config::TOML));
    let mut config = Config::load(&path).map_err(|e| e.to_string())?;
    if let Some(dir) = &cli.state_dir {
        config.server.state_dir = dir.clone();
    }
    if !cli.interface.is_empty() {
        config.server.interfaces = cli.interface.clone();
    }
    Ok(config)
}

/// The daemon itself: logging, hardening, signals, then the loop. `default` is the
/// configuration taken without `-c`, which the log names.
fn run_daemon(cli: &Cli, config: Config, default: Option<&default_config::DefaultConfig>) -> Result<(), String> {
    let legacy = config.legacy_options.clone().unwrap_or_default();
    let logfile = cli.logfile.clone().or(legacy.log_file);
    let pidfile = cli.pidfile.clone().or(legacy.pid_file);
    if cli.daemonize {
        if logfile.is_none() && !legacy.use_syslog {
            eprintln!("knockd: warning: -d without a log file (-g or LogFile): logs are discarded");
        }
        hardening::daemonize()?;
    }
    let level = if cli.debug {
        "debug"
    } else if cli.verbose {
        "knockd=debug,info"
    } else {
        "info"
    };
    init_logging(cli.log_format, level, logfile.as_deref())?;
    if let Some(default) = default {
        tracing::info!("{}", default.describe());
    }
    if legacy.use_syslog && logfile.is_none() {
        tracing::warn!("UseSyslog: logging to standard error, which journald or your service manager collects");
    }
    if cli.lookup {
        tracing::warn!("-l (DNS lookups) is accepted but ignored: a lookup would tell the DNS who knocked");
    }
    if let Err(e) = hardening::no_core_dumps() {
        tracing::warn!("could not disable core dumps: {e}");
    }
    let _pid = pidfile.as_deref().map(PidFile::create).transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload))
        .map_err(|e| format!("signal handler: {e}"))?;
    let load = || load_config(cli);
    let mut daemon = Daemon::new(config)?;
    daemon.only_ipv4(cli.only_ipv4);
    match knockd::runtime::notify::Notifier::from_env() {
        Some(Ok(notifier)) => daemon.notify_with(notifier),
        Some(Err(e)) => tracing::warn!("systemd will not hear that knockd is ready: {e}"),
        None => {}
    }
    daemon.run(stop, reload, &load)
}

/// A PID file, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &std::path::Path) -> Result<PidFile, String> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("pid file {}: {e}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Hands what an admin command created to the daemon's account when dropped (crate::state::handover).
struct HandOver(Config);

impl Drop for HandOver {
    fn drop(&mut self) {
        for w in knockd::state::handover::after_admin_command(&self.0).map(|r| r.warnings).unwrap_or_default() {
            eprintln!("knockd: warning: {w}");
        }
    }
}

/// Makes a path absolute against the working directory, so `-d` (which moves to /) keeps it.
fn absolute(path: &mut PathBuf) {
    if let Ok(p) = std::path::absolute(&*path) {
        *path = p;
    }
}

/// The door a command names, or a usage error that lists the configured doors.
fn known_door(config: &Config, name: &str) -> Result<(), Failure> {
    if config.door(name).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = config.doors.iter().map(|d| d.name.as_str()).collect();
    Err(Failure::Usage(format!("{}: no door `{name}` (doors: {})", config.path.display(), names.join(", "))))
}

/// Runs the command: its output for standard output (a report may count problems), or why it failed.
fn run(mut cli: Cli) -> Result<Report, Failure> {
    // Without -c: knockd.toml, else knockd 0.8's knockd.conf (a server moved from Debian's knockd).
    let default = cli.config.is_none().then(default_config::choose);
    if let Some(d) = &default {
        cli.config = Some(d.path.clone());
    }
    if cli.daemonize {
        for p in [&mut cli.config, &mut cli.state_dir, &mut cli.pidfile, &mut cli.logfile].into_iter().flatten() {
            absolute(p);
        }
    }
    let config = load_config(&cli).map_err(Failure::Config)?;
    let command = cli.command.take().unwrap_or(Command::Run);
    if let (Some(d), false) = (&default, matches!(command, Command::Run)) {
        if d.fell_back {
            eprintln!("knockd: {}", d.describe());
        }
    }
    if let Some(door) = command.door() {
        known_door(&config, door)?;
    }
    // Admin commands run as root hand what they create to the daemon's account when they end.
    let _handover = (!matches!(command, Command::Run)).then(|| HandOver(config.clone()));
    let text = match command {
        Command::Run => run_daemon(&cli, config, default.as_ref()).map(|()| String::new()),
        Command::Init => admin::init(&config),
        Command::Check { force } => return Ok(admin::check(&config, force)),
        Command::Status { warn_below } => return Ok(admin::status(&config, warn_below)?),
        Command::Audit(args) => return Ok(admin::audit(&config, &args)?),
        Command::Client(ClientCommand::Add { door, name, server_addr, out, export }) => {
            let dest = match (export, out) {
                (true, _) => admin::BundleDest::Line,
                (false, out) => {
                    admin::BundleDest::File(out.unwrap_or_else(|| PathBuf::from(format!("{door}-{name}.knock"))))
                }
            };
            admin::client_add(&config, &door, &name, server_addr, &dest)
        }
        Command::Client(ClientCommand::Revoke { door, name }) => admin::client_revoke(&config, &door, &name),
        Command::Client(ClientCommand::List { door }) => admin::client_list(&config, &door),
        Command::Sequences(SequencesCommand::Generate { args, emergency }) => {
            let out = args.out.unwrap_or_else(|| PathBuf::from(format!("{}.knock", args.door)));
            let out = if emergency { admin::SequencesOut::Sheet } else { admin::SequencesOut::Bundle(&out) };
            admin::sequences_generate(&config, &args.door, args.count, args.server_addr, out, false)
        }
        Command::Sequences(SequencesCommand::Rotate(args)) => {
            let out = args.out.unwrap_or_else(|| PathBuf::from(format!("{}.knock", args.door)));
            let out = admin::SequencesOut::Bundle(&out);
            admin::sequences_generate(&config, &args.door, args.count, args.server_addr, out, true)
        }
        Command::Grant { addr, door, duration } => knockd::cli::console::grant(&config, addr, &door, duration),
        Command::Ledger(LedgerCommand::Recover { door, client, next, line, skip }) => {
            use knockd::cli::console::RecoverFrom;
            let from = next.map(RecoverFrom::Next).or(line.map(RecoverFrom::Line)).unwrap_or(RecoverFrom::Skip(skip));
            knockd::cli::console::ledger_recover(&config, &door, client.as_deref(), from)
        }
        Command::Migrate { out } => admin::migrate(&config, out.as_deref()),
    }?;
    Ok(Report::clean(text))
}

impl Command {
    /// The door the command names with `--door`, if any.
    fn door(&self) -> Option<&str> {
        match self {
            Command::Client(
                ClientCommand::Add { door, .. } | ClientCommand::Revoke { door, .. } | ClientCommand::List { door },
            )
            | Command::Grant { door, .. }
            | Command::Ledger(LedgerCommand::Recover { door, .. }) => Some(door),
            Command::Sequences(SequencesCommand::Generate { args, .. } | SequencesCommand::Rotate(args)) => {
                Some(&args.door)
            }
            // `audit --door` may name a door the configuration no longer has: its records stay.
            _ => None,
        }
    }
}

/// The one place where a command's outcome becomes output and an exit status
/// (`knock_core::exit`): a report on standard output, exit 1 when it counts problems; a failure
/// on standard error with its own status. clap exits 2 on usage errors before this.
fn main() -> ExitCode {
    // `--generate` stays out of `Cli`, so that neither --help nor the completions offer it.
    let matches = Cli::command().arg(generate::arg()).get_matches();
    let outcome = match generate::requested(&matches) {
        Some(kind) => generate::render(kind, Cli::command()).map(Report::clean),
        None => run(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())),
    };
    match outcome {
        Ok(report) => {
            print!("{}", report.text);
            if !report.text.is_empty() && !report.text.ends_with('\n') {
                println!();
            }
            ExitCode::from(if report.is_clean() { knock_core::exit::SUCCESS } else { knock_core::exit::PROBLEMS })
        }
        Err(failure) => {
            eprintln!("knockd: {failure}");
            ExitCode::from(failure.status())
        }
    }
}
