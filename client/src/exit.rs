//! How a knock command that did not succeed ends: [`Failure`] sorts what went wrong into the
//! exit statuses of `knock_core::exit` (one table for knock and knockd, printed in knock(1)'s
//! EXIT STATUS section). `main` turns a `Failure` into its status in one place.
//!
//! Errors that are still `String` (sending, resolving) become [`Failure::Failed`] (69) through
//! `?`; the profile store and the command line pick the variant where the cause is known.

use std::fmt;

use knock_core::exit;
use knock_core::keys::KeyError;

/// Why a command did not succeed, with the message for standard error.
#[derive(Debug)]
pub enum Failure {
    /// The command line is wrong, or names a profile that does not exist.
    Usage(String),
    /// Data knock reads is damaged: a bundle to import, a key file, a sequence list, a counter.
    Data(String),
    /// A profile cannot be read or is invalid.
    Config(String),
    /// A key file or sequence list is open to group or others.
    Permission(String),
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
            Failure::Data(_) => exit::DATA,
            Failure::Config(_) => exit::CONFIG,
            Failure::Permission(_) => exit::PERMISSION,
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

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Failure {
        let message = e.to_string();
        match e {
            KeyError::TooOpen { .. } => Failure::Permission(message),
            KeyError::Malformed { .. } => Failure::Data(message),
            KeyError::Io { .. } => Failure::Io(message),
            KeyError::Rng(_) | KeyError::Exists(_) => Failure::Failed(message),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m)
            | Failure::Data(m)
            | Failure::Config(m)
            | Failure::Permission(m)
            | Failure::Io(m)
            | Failure::Failed(m) => f.write_str(m),
        }
    }
}
