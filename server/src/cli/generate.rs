//! `knockd --generate man|bash|zsh|fish`: knockd(8) and the shell completion scripts, made from
//! the clap definitions and printed on standard output for packagers (ripgrep's `rg --generate`).
//!
//! The man page is clap_mangen's name, synopsis, description and options, then one subsection
//! per command with its own synopsis and options, then the sections clap knows nothing of:
//! EXIT STATUS (from `knock_core::exit::TABLE`), FILES, ENVIRONMENT, EXAMPLES and SEE ALSO.

use clap::{Arg, ArgMatches, Command, ValueEnum};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// knockd(8), in roff.
    Man,
    /// The bash completion script.
    Bash,
    /// The zsh completion script.
    Zsh,
    /// The fish completion script.
    Fish,
}

/// The hidden `--generate KIND` flag, added to the command line beside the derived `Cli`, so
/// that the completions made from `Cli` do not offer it.
pub fn arg() -> Arg {
    Arg::new("generate")
        .long("generate")
        .value_name("KIND")
        .value_parser(clap::value_parser!(Kind))
        .hide(true)
        .help("Print knockd(8) (man) or a completion script (bash, zsh, fish) on standard output")
}

/// The kind `--generate` asks for, if it was given.
pub fn requested(matches: &ArgMatches) -> Option<Kind> {
    matches.get_one::<Kind>("generate").copied()
}

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

/// The text `--generate KIND` prints.
pub fn render(kind: Kind, cmd: Command) -> Result<String, GenerateError> {
    let shell = match kind {
        Kind::Man => return man_page(cmd).map_err(GenerateError::Man),
        Kind::Bash => Shell::Bash,
        Kind::Zsh => Shell::Zsh,
        Kind::Fish => Shell::Fish,
    };
    let mut cmd = cmd;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "knockd", &mut out);
    String::from_utf8(out).map_err(|source| GenerateError::NotText { shell, source })
}

/// knockd(8).
fn man_page(cmd: Command) -> std::io::Result<String> {
    let mut cmd = cmd.long_about(DESCRIPTION).disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone()).section("8").manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    roff.text([roman("Each command reads the configuration named by "), bold("-c"), roman(" like the daemon.")]);
    roff.to_writer(&mut out)?;
    for sub in documented_commands(&cmd) {
        command_section(sub, &mut out)?;
    }
    let mut roff = Roff::new();
    exit_status_section(&mut roff);
    roff.control("SH", ["FILES"]);
    for (path, what) in FILES {
        roff.control("TP", []).text([italic(*path)]).text([roman(*what)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, what) in ENVIRONMENT {
        roff.control("TP", []).text([bold(*var)]).text([roman(*what)]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (command, what) in EXAMPLES {
        roff.control("TP", []).text([bold(*command)]).text([roman(*what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    String::from_utf8(out).map_err(std::io::Error::other)
}

/// Every command a subsection documents: those that take arguments or have no subcommands of
/// their own (`client` is only a group; `client add` and `audit` are commands).
fn documented_commands(cmd: &Command) -> Vec<&Command> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let own_args = sub.get_arguments().any(|a| !a.is_global_set() && !is_builtin(a));
        if own_args || !sub.has_subcommands() {
            out.push(sub);
        }
        out.extend(documented_commands(sub));
    }
    out
}

/// `-h` / `-V`, which every command has and OPTIONS describes once.
fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// One command's subsection: its name, what it does, its synopsis and its own options (the
/// global ones are under OPTIONS).
fn command_section(sub: &Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name()).to_string();
    let mut own = sub.clone();
    for id in sub.get_arguments().filter(|a| a.is_global_set() || is_builtin(a)).map(|a| a.get_id().clone()) {
        own = own.mut_arg(id, |a| a.hide(true));
    }
    let man = Man::new(own);
    let mut synopsis = Vec::new();
    man.render_synopsis_section(&mut synopsis)?;
    let mut about = Roff::new();
    about.control("PP", []);
    if let Some(text) = sub.get_long_about().or_else(|| sub.get_about()) {
        about.text([roman(text.to_string())]);
    }
    let mut options = Vec::new();
    man.render_options_section(&mut options)?;
    Roff::new().control("SS", [name.as_str()]).to_writer(out)?;
    for text in [synopsis, about.render().into_bytes(), options] {
        let text = String::from_utf8(text).map_err(std::io::Error::other)?;
        // Our own heading (.SS) stands for clap_mangen's .SH SYNOPSIS / .SH OPTIONS.
        for line in text.lines().filter(|l| !l.starts_with(".SH ")) {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    Ok(())
}

/// EXIT STATUS, from the table both binaries share.
fn exit_status_section(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for status in knock_core::exit::TABLE {
        roff.control("TP", []).text([bold(status.code.to_string())]).text([roman(status.meaning)]);
    }
}

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
];

const SEE_ALSO: &str = "knock(1), knockd.toml(5), nft(8), iptables(8), systemd.service(5); \
    PROTOCOL.md, OPERATIONS.md and AUDIT.md in the documentation directory";
