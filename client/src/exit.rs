//! How a knock command that did not succeed ends. Every error knock reports has its own type in
//! the module that raises it, saying what failed, on which file, profile or server, and the fix;
//! [`Failure`] gathers them, and [`Failure::status`] is the one table that sorts them into the
//! exit statuses of `knock_core::exit` (printed in knock(1)'s EXIT STATUS section). `main`
//! prints the message and exits with the status in one place.

use knock_core::exit;
use knock_core::keys::KeyError;

use crate::classic::ClassicError;
use crate::generate::GenerateError;
use crate::knocking::KnockError;
use crate::profiles::ProfileCommandError;
use crate::send::SendError;
use crate::store::StoreError;

/// Why a command did not succeed; its message is what standard error shows after `knock: `.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The profile store: a profile, key, sequence list or counter.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sending the knocks.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The classic form's command line or host.
    #[error(transparent)]
    Classic(#[from] ClassicError),
    /// Knocking with a profile.
    #[error(transparent)]
    Knock(#[from] KnockError),
    /// `knock profile import` and `reset-step`.
    #[error(transparent)]
    Profile(#[from] ProfileCommandError),
    /// `knock --generate`.
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

impl Failure {
    /// The exit status (see `knock_core::exit::TABLE`): the one place where knock's errors meet
    /// the numbers.
    pub fn status(&self) -> u8 {
        match self {
            Failure::Store(e) => match e {
                StoreError::BadName { .. } | StoreError::NoProfile { .. } => exit::USAGE,
                StoreError::Profile(_) => exit::CONFIG,
                StoreError::Io { .. } | StoreError::Counter { .. } | StoreError::Replace(_) => exit::IO,
                StoreError::CounterDamaged { .. } | StoreError::List(_) => exit::DATA,
                StoreError::ListTooOpen { .. } => exit::PERMISSION,
                StoreError::Key(e) => key_status(e),
                StoreError::NoHome | StoreError::Exists { .. } | StoreError::ExistsElsewhere { .. } => exit::FAILED,
            },
            Failure::Send(_) => exit::FAILED,
            Failure::Classic(e) => match e {
                ClassicError::NoHost | ClassicError::NoPorts | ClassicError::BadKnock(_) => exit::USAGE,
                ClassicError::Resolve { .. } | ClassicError::NoAddress { .. } => exit::FAILED,
            },
            Failure::Knock(e) => match e {
                KnockError::NoClosingSequence { .. }
                | KnockError::FileHasNoClose { .. }
                | KnockError::NoPortToWait { .. } => exit::USAGE,
                KnockError::NotKnockable { .. } => exit::CONFIG,
                KnockError::ListUsedUp { .. }
                | KnockError::StepSoon { .. }
                | KnockError::StepAhead { .. }
                | KnockError::NeverOpened { .. } => exit::FAILED,
            },
            Failure::Profile(e) => match e {
                ProfileCommandError::ReadStdin(_) | ProfileCommandError::ReadBundle { .. } => exit::IO,
                ProfileCommandError::Bundle(_) => exit::DATA,
                ProfileCommandError::NotTotp { .. } => exit::USAGE,
            },
            Failure::Generate(e) => match e {
                GenerateError::ManPage(_) => exit::IO,
                GenerateError::NotUtf8 { .. } | GenerateError::ScriptShape { .. } => exit::FAILED,
            },
        }
    }
}

/// A key file's refusal: open to others, damaged, unreadable, or (never when knocking) the RNG.
fn key_status(e: &KeyError) -> u8 {
    match e {
        KeyError::TooOpen { .. } => exit::PERMISSION,
        KeyError::Malformed { .. } => exit::DATA,
        KeyError::Io { .. } => exit::IO,
        KeyError::Rng(_) | KeyError::Exists(_) => exit::FAILED,
    }
}
