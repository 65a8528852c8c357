//! The exit statuses of `knock` and `knockd`: one table for both binaries and every command.
//! Each binary's `main` maps its failures to these numbers in one place, and its man page prints
//! [`TABLE`] as its EXIT STATUS section, so the two cannot drift apart.
//!
//! | status | name | when |
//! |---|---|---|
//! | 0 | success | the command did what it was asked |
//! | 1 | problems | the command ran and found problems (`knockd check`, `knockd status`, `knockd audit --verify`); its report is on standard output |
//! | 2 | usage | the command line is wrong, or names a door or profile that does not exist |
//! | 65 | data | data knock reads is damaged: a bundle to import, a key file, a sequence list, a counter |
//! | 69 | failed | the command could not do what it was asked; standard error says why |
//! | 74 | io | a file or directory could not be read or written |
//! | 77 | permission | a key file or sequence list is open to group or others |
//! | 78 | config | the configuration (knockd.toml, knockd.conf, a profile) cannot be read or is invalid, or knockd refused every door at start |
//!
//! Above 2 the numbers are those of BSD's `sysexits.h` (`EX_DATAERR`, `EX_UNAVAILABLE`,
//! `EX_IOERR`, `EX_NOPERM`, `EX_CONFIG`), which service managers know: the systemd unit stops
//! restarting a daemon that exits 78, since a broken configuration does not heal by itself.

/// The command did what it was asked.
pub const SUCCESS: u8 = 0;
/// The command ran and found problems; its report is on standard output.
pub const PROBLEMS: u8 = 1;
/// The command line is wrong, or names a door or profile that does not exist (clap's own
/// usage errors exit 2 as well).
pub const USAGE: u8 = 2;
/// Data knock reads is damaged: a bundle to import, a key file, a sequence list, a counter
/// (`EX_DATAERR`).
pub const DATA: u8 = 65;
/// The command could not do what it was asked (`EX_UNAVAILABLE`, the catch-all).
pub const FAILED: u8 = 69;
/// A file or directory could not be read or written (`EX_IOERR`).
pub const IO: u8 = 74;
/// A secret file is open to group or others (`EX_NOPERM`).
pub const PERMISSION: u8 = 77;
/// The configuration cannot be read or is invalid (`EX_CONFIG`).
pub const CONFIG: u8 = 78;

/// One exit status and what it means, for the man pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The number.
    pub code: u8,
    /// When a command exits with it.
    pub meaning: &'static str,
}

/// Every exit status, in order.
pub const TABLE: &[ExitStatus] = &[
    ExitStatus { code: SUCCESS, meaning: "Success: the command did what it was asked." },
    ExitStatus {
        code: PROBLEMS,
        meaning: "The command ran and found problems: knockd check (a door below 64 bits, a key or sequence \
                  file the daemon would refuse), knockd status (a file door running out of sequences, a refused \
                  door or client), knockd audit --verify (the log was changed). The report is on standard output.",
    },
    ExitStatus {
        code: USAGE,
        meaning: "Usage: the command line is wrong (an unknown option, a missing or malformed argument), or it \
                  names a door or profile that does not exist.",
    },
    ExitStatus {
        code: DATA,
        meaning: "Data error: data knock reads is damaged: a bundle or one-line profile to import, a key file, \
                  a sequence list or a counter.",
    },
    ExitStatus {
        code: FAILED,
        meaning: "Failure: the command could not do what it was asked (the port did not open after every \
                  attempt of knock --wait, the daemon could not start its capture or firewall, a client that \
                  exists already, ...). Standard error says why.",
    },
    ExitStatus { code: IO, meaning: "I/O error: a file or directory could not be read or written." },
    ExitStatus {
        code: PERMISSION,
        meaning: "Permission: a key file or sequence list is open to group or others; the message names the \
                  file and the fix (chmod 600).",
    },
    ExitStatus {
        code: CONFIG,
        meaning: "Configuration error: knockd.toml or knockd.conf (knockd), or a profile (knock), cannot be read \
                  or is invalid; the message names the file, line and column. Also when the daemon refused every \
                  door at start (a missing keys directory, a key or sequence file open to others, a missing \
                  ledger: the log names each door and the fix). The systemd unit does not restart knockd after it.",
    },
];
