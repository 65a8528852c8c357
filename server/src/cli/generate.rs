//! `knockd --generate man|bash|zsh|fish`: knockd(8) and the shell completion scripts, made from
//! the clap definitions and printed on standard output for packagers (ripgrep's `rg --generate`).
//!
//! The man page is clap_mangen's name, synopsis, description and options, then one subsection
//! per command with its own synopsis and options, then the sections clap knows nothing of:
//! EXIT STATUS (from `knock_core::exit::TABLE`), FILES, ENVIRONMENT, EXAMPLES and SEE ALSO.

use clap::{Arg, Command};
use clap_complete::Shell;
use knock_manpage::Page;
pub use knock_manpage::{requested, Kind};

/// Why `--generate` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The man page could not be rendered.
    #[error("rendering knockd(8): {0}")]
    Man(std::io::Error),
    /// A completion script came out as something else than text.
    #[error("the {shell} completion script is not UTF-8: {source}")]
    NotText {
        /// The shell.
        shell: Shell,
        /// Where it stops being text.
        source: std::string::FromUtf8Error,
    },
}

/// The hidden `--generate KIND` flag.
pub fn arg() -> Arg {
    knock_manpage::arg("knockd(8)")
}

/// The text `--generate KIND` prints.
pub fn render(kind: Kind, cmd: Command) -> Result<String, GenerateError> {
    let Some(shell) = kind.shell() else {
        return knock_manpage::render(cmd, &PAGE).map_err(GenerateError::Man);
    };
    String::from_utf8(knock_manpage::completion(shell, cmd, "knockd"))
        .map_err(|source| GenerateError::NotText { shell, source })
}

/// knockd(8) beyond the clap definitions.
const PAGE: Page = Page {
    section: "8",
    manual: "System Administration",
    description: DESCRIPTION,
    commands_note: "Each command reads the configuration named by -c like the daemon.",
    files: FILES,
    environment: ENVIRONMENT,
    examples: EXAMPLES,
    see_also: SEE_ALSO,
};

/// DESCRIPTION: more than `--help` says (which stays short).
const DESCRIPTION: &str = "Opens a firewall port only for the address that knocked a valid, never-used sequence.\n\n\
        knockd watches the knock ports of each door of its configuration (knockd.toml(5), or knockd 0.8's \
        knockd.conf) and, when an address completes a one-time sequence, records the sequence as used before it \
        lets that address through the door's ports for a while. Without a command it runs the daemon; the \
        commands below set it up, inspect it and repair it.";

const FILES: &[(&str, &str)] = &[
    (
        "/etc/knockd/knockd.toml",
        "The configuration (knockd.toml(5)), read without -c when it exists; another file with -c.",
    ),
    (
        "/etc/knockd.conf",
        "A knockd 0.8 configuration, read as it is when -c names it (any name not ending in .toml) or, \
         without -c, when /etc/knockd/knockd.toml does not exist; knockd migrate turns it into a knockd.toml.",
    ),
    (
        "/var/lib/knockd/",
        "The state directory (state_dir, --state-dir), mode 0700: server-id, the ledgers (ledger/), the audit log \
         (audit.log) and its key state (audit.key), pending stop commands.",
    ),
    ("/etc/knockd/keys/DOOR/CLIENT.key", "A client's key (the door's keys directory), mode 0600."),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("KNOCKD_LOG", "A tracing filter (e.g. knockd=debug) that overrides -D and -v."),
    ("NOTIFY_SOCKET", "Set by systemd (Type=notify): READY=1 is sent there once the capture and the table are up."),
    (
        "JOURNAL_STREAM",
        "Set by systemd: when it names standard error, lines carry syslog priorities and no timestamps.",
    ),
    ("KNOCKD_AUDIT_ROTATE_BYTES", "Rotate the audit log after this many bytes instead of 64 MiB (tests, small disks)."),
];

const EXAMPLES: &[(&str, &str)] = &[
    ("knockd -c /etc/knockd/knockd.toml init", "Create the state directory and the server id, once."),
    (
        "knockd client add --door ssh --name alice --server-addr 198.18.0.1",
        "Add client alice to door ssh and write her profile bundle, ./ssh-alice.knock.",
    ),
    ("knockd check", "Validate the configuration and print each door's strength; exit 1 on a problem."),
    ("knockd", "Run the daemon."),
    ("knockd audit --replays", "List the sequences that were knocked again after their use."),
    (
        "knockd replay --pcap knocks.pcap --state-dir /root/state-copy",
        "Forensics: what the capture would have opened, replayed and burned, judged by a copy of the state \
         directory; writes nothing.",
    ),
];

const SEE_ALSO: &str = "knock(1), knockd.toml(5), nft(8), iptables(8), systemd.service(5); \
    PROTOCOL.md, OPERATIONS.md and AUDIT.md in the documentation directory";
