//! The man pages of `knock` and `knockd`, made from their clap definitions the same way
//! (ripgrep's `rg --generate`): clap_mangen's name, synopsis, description and options, then one
//! subsection per command with its own synopsis and options, then what clap knows nothing of:
//! EXIT STATUS (from `knock_core::exit::TABLE`, one table for both binaries), FILES,
//! ENVIRONMENT, EXAMPLES and SEE ALSO. Also the hidden `--generate KIND` flag both binaries take.
//! Each binary keeps its own texts and its completion scripts' particulars.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use clap::{Arg, ArgMatches, Command, ValueEnum};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The man page, in roff.
    Man,
    /// The bash completion script.
    Bash,
    /// The zsh completion script.
    Zsh,
    /// The fish completion script.
    Fish,
}

impl Kind {
    /// The shell of a completion script (`None` for the man page).
    pub fn shell(self) -> Option<Shell> {
        match self {
            Kind::Man => None,
            Kind::Bash => Some(Shell::Bash),
            Kind::Zsh => Some(Shell::Zsh),
            Kind::Fish => Some(Shell::Fish),
        }
    }
}

/// The hidden `--generate KIND` flag, added to the command line beside the derived `Cli`, so
/// that the completions made from `Cli` do not offer it. `page` names the man page, e.g. `knock(1)`.
pub fn arg(page: &str) -> Arg {
    Arg::new("generate")
        .long("generate")
        .value_name("KIND")
        .value_parser(clap::value_parser!(Kind))
        .hide(true)
        .help(format!("Print {page} (man) or a completion script (bash, zsh, fish) on standard output"))
}

/// The kind `--generate` asks for, if it was given.
pub fn requested(matches: &ArgMatches) -> Option<Kind> {
    matches.get_one::<Kind>("generate").copied()
}

/// clap_complete's script for `shell`, as bytes (the caller checks they are text).
pub fn completion(shell: Shell, mut cmd: Command, bin_name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin_name, &mut out);
    out
}

/// What one page says beyond the clap definitions.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The manual section (`1`, `8`).
    pub section: &'a str,
    /// The manual's title (`User Commands`).
    pub manual: &'a str,
    /// DESCRIPTION: more than `--help` says (which stays short).
    pub description: &'a str,
    /// A paragraph under COMMANDS, before the commands (none when empty).
    pub commands_note: &'a str,
    /// FILES: path and what it is.
    pub files: &'a [(&'a str, &'a str)],
    /// ENVIRONMENT: variable and what it does.
    pub environment: &'a [(&'a str, &'a str)],
    /// EXAMPLES: command and what it does.
    pub examples: &'a [(&'a str, &'a str)],
    /// SEE ALSO.
    pub see_also: &'a str,
}

/// The page for `cmd`.
pub fn render(cmd: Command, page: &Page) -> std::io::Result<String> {
    let mut cmd = cmd.long_about(page.description.to_string()).disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone()).section(page.section.to_string()).manual(page.manual.to_string());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    if !page.commands_note.is_empty() {
        roff.text([roman(page.commands_note)]);
    }
    roff.to_writer(&mut out)?;
    for sub in documented_commands(&cmd) {
        command_section(sub, &mut out)?;
    }
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for status in knock_core::exit::TABLE {
        roff.control("TP", []).text([bold(status.code.to_string())]).text([roman(status.meaning)]);
    }
    // Paths in italics, variables and commands in bold, as man pages set them.
    for (heading, entries, italic_terms) in
        [("FILES", page.files, true), ("ENVIRONMENT", page.environment, false), ("EXAMPLES", page.examples, false)]
    {
        roff.control("SH", [heading]);
        for (term, what) in entries {
            let term = if italic_terms { italic(*term) } else { bold(*term) };
            roff.control("TP", []).text([term]).text([roman(*what)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(page.see_also)]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    String::from_utf8(out).map_err(std::io::Error::other)
}

/// Every command a subsection documents: those that take arguments of their own or have no
/// subcommands (a group like `knock profile` or `knockd client` is documented by its commands).
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
fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// One command's subsection: its name, its synopsis, what it does and its own options (the
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

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Command {
        // clap_mangen needs a version for the page's footer (both binaries have theirs).
        Command::new("demo")
            .version("1")
            .arg(Arg::new("global").long("global").value_name("G").global(true))
            .subcommand(
                Command::new("group")
                    .about("A group.")
                    .subcommand(Command::new("leaf").about("A leaf.").arg(Arg::new("x").long("x").value_name("X"))),
            )
            .subcommand(Command::new("plain").about("No arguments."))
    }

    #[test]
    fn every_command_with_something_to_say_gets_a_subsection_and_the_exit_table_is_listed() {
        let page = Page {
            section: "1",
            manual: "User Commands",
            description: "A demo.",
            commands_note: "",
            files: &[("/etc/demo", "its file")],
            environment: &[],
            examples: &[("demo plain", "does nothing")],
            see_also: "knock(1)",
        };
        let text = render(demo(), &page).unwrap();
        assert!(text.contains(".SS \"demo group leaf\"") || text.contains(".SS demo group leaf"), "{text}");
        assert!(text.contains("demo plain") && !text.contains(".SS \"demo group\"\n"), "{text}");
        for status in knock_core::exit::TABLE {
            assert!(text.contains(&format!("\\fB{}\\fR", status.code)), "exit status {}: {text}", status.code);
        }
        assert!(text.contains("/etc/demo") && text.contains("SEE ALSO"));
    }
}
