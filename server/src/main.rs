//! `knockd`: the one-time port knocking daemon and its admin commands. The command line, the
//! commands and the daemon live in the library (`knockd::cli`); this is where their outcome
//! becomes output and an exit status.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use knockd::cli::args::Cli;
use knockd::cli::exit::Failure;
use knockd::cli::report::Report;
use knockd::cli::{generate, run};

/// The one place where a command's outcome becomes output and an exit status
/// (`knock_core::exit`): a report on standard output, exit 1 when it counts problems; a failure
/// on standard error with its own status ([`Failure::status`]). clap exits 2 on usage errors
/// before this.
fn main() -> ExitCode {
    // `--generate` stays out of `Cli`, so that neither --help nor the completions offer it.
    let matches = Cli::command().arg(generate::arg()).get_matches();
    let outcome = match generate::requested(&matches) {
        Some(kind) => generate::render(kind, Cli::command()).map(Report::clean).map_err(Failure::from),
        None => run::run(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())),
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
