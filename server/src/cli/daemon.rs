//! `knockd run` (the default command): the process around the daemon's loop. Detaching (`-d`),
//! logging (journald priorities under systemd, `-g FILE`, `--log-format json`), no core dumps,
//! the pid file, the signals (SIGTERM/SIGINT stop, SIGHUP reloads), systemd's readiness
//! notifications, then [`Daemon::run`] until a signal stops it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use knock_core::config::{Config, ConfigError};

use super::args::{Cli, LogFormat};
use super::default_config::DefaultConfig;
use super::journald;
use crate::hardening::{self, SyscallError};
use crate::runtime::daemon::{Daemon, DaemonError};
use crate::runtime::notify::Notifier;

/// Why `knockd run` could not set up its process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The log file (`-g`, `LogFile`) cannot be opened.
    #[error("log file {path}: {source}")]
    LogFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The pid file (`-p`, `PidFile`) cannot be written.
    #[error("pid file {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A signal handler cannot be installed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    /// `-d`: the process cannot detach.
    #[error(transparent)]
    Detach(#[from] SyscallError),
    /// The daemon could not start, or stopped on an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// Sets up logging to standard error, or appended to `file`.
fn init_logging(format: LogFormat, level: &str, file: Option<&Path>) -> Result<(), RunError> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KNOCKD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let writer = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| RunError::LogFile { path: path.to_path_buf(), source })?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(f))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    // Under systemd, standard error is the journal: priorities, no timestamps of our own.
    let journal = file.is_none() && journald::stderr_is_journal();
    match (format, journal) {
        (LogFormat::Text, false) => builder.init(),
        (LogFormat::Json, false) => builder.json().init(),
        (LogFormat::Text, true) => builder.event_format(journald::text_format()).init(),
        (LogFormat::Json, true) => builder.json().event_format(journald::json_format()).init(),
    }
    Ok(())
}

/// The daemon itself: logging, hardening, signals, then the loop. `default` is the
/// configuration taken without `-c`, which the log names; `load` reads the configuration again
/// on SIGHUP.
pub fn run_daemon(
    cli: &Cli,
    config: Config,
    default: Option<&DefaultConfig>,
    load: &dyn Fn() -> Result<Config, ConfigError>,
) -> Result<(), RunError> {
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
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RunError::Signal)?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload)).map_err(RunError::Signal)?;
    let mut daemon = Daemon::new(config)?;
    daemon.only_ipv4(cli.only_ipv4);
    match Notifier::from_env() {
        Some(Ok(notifier)) => daemon.notify_with(notifier),
        Some(Err(e)) => tracing::warn!("systemd will not hear that knockd is ready: {e}"),
        None => {}
    }
    Ok(daemon.run(stop, reload, load)?)
}

/// A PID file, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn create(path: &Path) -> Result<PidFile, RunError> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|source| RunError::PidFile { path: path.to_path_buf(), source })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
