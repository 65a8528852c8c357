//! How a knockd command that did not succeed ends: [`Failure`] sorts what went wrong into the
//! exit statuses of `knock_core::exit` (one table for knock and knockd, printed in knockd(8)'s
//! EXIT STATUS section). `main` turns a `Failure` into its status in one place.
//!
//! Most admin commands still report errors as `String`; those become [`Failure::Failed`] (69)
//! through `?`. Where the cause is known at the call site (the configuration, the command line)
//! the caller picks the variant. Typed errors can later get their own `From` impls here.

use std::fmt;

use knock_core::exit;

/// Why a command did not succeed, with the message for standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The command line names something that does not exist (a door).
    Usage(String),
    /// The configuration file cannot be read or is invalid.
    Config(String),
    /// A file or directory could not be read or written.
    Io(String),
    /// Anything else: the command could not do what it was asked.
    Failed(String),
}

impl Failure {
    /// The exit status (see `knock_core::exit::TABLE`).
    pub fn status(&self) -> u8 {
        match self {
            Failure::Usage(_) => exit::USAGE,
            Failure::Config(_) => exit::CONFIG,
            Failure::Io(_) => exit::IO,
            Failure::Failed(_) => exit::FAILED,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Failed(message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Config(m) | Failure::Io(m) | Failure::Failed(m) => f.write_str(m),
        }
    }
}
