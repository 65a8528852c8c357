//! `knockd`'s command line as clap derives it: the global options (knockd 0.8's `-c -d -i -p -g
//! -l -v -D -4` among them) and every subcommand with its arguments. `knockd --generate` makes
//! the man page and completions from these.

// The doc comments are clap's help texts, where `<door>` is a placeholder, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Opens a firewall port only for the address that knocked a valid, never-used sequence.
#[derive(Parser)]
#[command(
    name = "knockd",
    version,
    after_help = "Examples:\n  knockd -c /etc/knockd/knockd.toml init\n  knockd client add --door ssh --name alice --server-addr 198.18.0.1\n  knockd check\n  knockd                       (runs the daemon)\n  knockd audit --replays"
)]
pub struct Cli {
    /// The configuration file [default: /etc/knockd/knockd.toml, or /etc/knockd.conf when only
    /// that exists].
    #[arg(short = 'c', long, global = true, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text for journald, json for collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Debug logging.
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Capture on these interfaces instead of the configured ones (knockd's -i; repeat or use commas).
    #[arg(short = 'i', long, value_delimiter = ',', value_name = "IFACE")]
    pub interface: Vec<String>,
    /// Detach and run in the background (knockd's -d). Under systemd, leave it off.
    #[arg(short = 'd', long = "daemon")]
    pub daemonize: bool,
    /// Write the daemon's process id here (knockd's -p; default: a knockd.conf's PidFile).
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Append logs to this file instead of standard error (knockd's -g; default: a knockd.conf's LogFile).
    #[arg(short = 'g', long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// Accepted for knockd compatibility (-l), but no DNS lookups are made: they would tell the DNS who knocked.
    #[arg(short = 'l', long)]
    pub lookup: bool,
    /// More detail in the log (knockd's -v); knocks themselves are never logged.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Keep the server id, ledgers, audit log and pending stop commands here instead of the
    /// configured state_dir (a knockd.conf has none: /var/lib/knockd).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Handle IPv4 knocks only; IPv6 packets are ignored (knockd's -4).
    #[arg(short = '4', long = "only-ip-v4")]
    pub only_ipv4: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
        #[arg(long = "for", value_name = "DURATION", value_parser = super::console::grant_duration)]
        duration: std::time::Duration,
    },
    /// Repair a door's ledgers.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Show the audit log.
    Audit(super::audit::AuditArgs),
    /// Forensics: what a capture file would have opened, replayed and burned; writes nothing.
    ///
    /// Runs the capture through the doors' matcher with the packets' own timestamps as the
    /// clock, and prints what would have opened, what was a replay of a used sequence (per the
    /// ledger, or earlier in the file), what would have been burned, and the guessing traffic
    /// per source. Ledgers are only read (--state-dir names a copy); no firewall, no audit record.
    #[command(
        after_help = "Examples:\n  knockd replay --pcap knocks.pcap\n  knockd replay --pcap knocks.pcap --state-dir /root/state-copy --json"
    )]
    Replay(super::replay::ReplayArgs),
}

#[derive(Subcommand)]
pub enum ClientCommand {
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
pub enum LedgerCommand {
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
    /// Print every ledger of the configured backend as JSON lines, or write them to
    /// a file (mode 0600): to move the ledgers into etcd or back without enrolling any client.
    Export {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Merge the ledgers of an export into the configured backend: each ends with everything
    /// either side knows is used, so nothing used becomes fresh. Files: stop knockd first.
    Import {
        /// The export.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum SequencesCommand {
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
pub struct SequencesArgs {
    /// The door.
    #[arg(long)]
    pub door: String,
    /// How many sequences.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// The address clients knock (goes into the profile).
    #[arg(long)]
    pub server_addr: IpAddr,
    /// Where to write the bundle (default: ./<door>.knock).
    #[arg(long)]
    pub out: Option<PathBuf>,
}
