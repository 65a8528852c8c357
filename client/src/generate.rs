//! `knock --generate man|bash|zsh|fish`: knock(1) and the shell completion scripts, made from
//! the clap definitions and printed on standard output for packagers (ripgrep's `rg --generate`).
//!
//! The man page is clap_mangen's name, synopsis, description and options, then one subsection
//! per command, then EXIT STATUS (from `knock_core::exit::TABLE`), FILES, ENVIRONMENT, EXAMPLES
//! and SEE ALSO: the shared rendering is `knock_manpage`, this file holds knock's texts.
//!
//! clap_complete's scripts are static; [`profile_names`] adds the one dynamic part: where a
//! profile name goes (`--profile`, `-p`, `profile show`, `profile remove`) the shell asks
//! `knock profile list --names`.

use clap::{Arg, Command};
use clap_complete::Shell;
use knock_manpage::Page;
pub use knock_manpage::{requested, Kind};

/// Why `--generate` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// clap_mangen could not render the page.
    #[error("rendering knock(1): {0}")]
    ManPage(std::io::Error),
    /// clap_complete wrote something that is not text.
    #[error("the {shell} completion script is not UTF-8: {source}")]
    NotUtf8 {
        /// The shell.
        shell: Shell,
        /// Where the bytes went wrong.
        source: std::string::FromUtf8Error,
    },
    /// clap_complete's script no longer has the shape the profile-name completion hooks into
    /// (a clap_complete upgrade; the fix is in this file).
    #[error("the {shell} script from clap_complete has no {what} to complete profile names at")]
    ScriptShape {
        /// The shell.
        shell: Shell,
        /// What is missing.
        what: String,
    },
}

/// The hidden `--generate KIND` flag.
pub fn arg() -> Arg {
    knock_manpage::arg("knock(1)")
}

/// The text `--generate KIND` prints.
pub fn render(kind: Kind, cmd: Command) -> Result<String, GenerateError> {
    let Some(shell) = kind.shell() else {
        return knock_manpage::render(cmd, &PAGE).map_err(GenerateError::ManPage);
    };
    let script = String::from_utf8(knock_manpage::completion(shell, cmd, "knock"))
        .map_err(|source| GenerateError::NotUtf8 { shell, source })?;
    profile_names(shell, &script)
}

/// The command that lists profile names for completion; quiet when there are none.
const NAMES: &str = "knock profile list --names 2>/dev/null";

/// bash: a wrapper around clap's `_knock` that answers where a profile name goes and leaves
/// the rest to clap.
const BASH_PROFILES: &str = r#"
# Profile names, which a static script cannot know, come from `knock profile list --names`.
_knock_profiles() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ $prev == --profile || $prev == -p ]] ||
        [[ $COMP_CWORD -eq 3 && ${COMP_WORDS[1]} == profile && $cur != -* &&
            ( ${COMP_WORDS[2]} == show || ${COMP_WORDS[2]} == remove || ${COMP_WORDS[2]} == reset-step ) ]]; then
        COMPREPLY=($(compgen -W "$(knock profile list --names 2>/dev/null)" -- "$cur"))
        return 0
    fi
    _knock "$@"
}
"#;

/// zsh: the completer clap's specs call where a profile name goes.
const ZSH_PROFILES: &str = r#"(( $+functions[_knock_profile_names] )) ||
_knock_profile_names() {
    local -a names
    names=(${(f)"$(knock profile list --names 2>/dev/null)"})
    _describe -t profiles 'profile' names
}

"#;

/// Makes the places where a profile name goes (`--profile`, `-p`, `profile show`, `profile
/// remove`) complete the installed profiles' names. Fails, rather than print a script without
/// them, if clap_complete's output no longer has the shape this expects.
fn profile_names(shell: Shell, script: &str) -> Result<String, GenerateError> {
    let missing = |what: &str| GenerateError::ScriptShape { shell, what: what.to_string() };
    let replace_all = |text: &str, from: &str, to: &str, expected: usize| {
        let found = text.matches(from).count();
        (found == expected).then(|| text.replace(from, to)).ok_or_else(|| missing(&format!("{expected} × `{from}`")))
    };
    match shell {
        Shell::Bash => {
            let registered = "complete -F _knock ";
            let script = replace_all(script, registered, "complete -F _knock_profiles ", 2)?;
            let at = script.find("\nif [[ \"${BASH_VERSINFO[0]}\"").ok_or_else(|| missing("`complete` lines"))?;
            Ok(format!("{}\n{}{}", &script[..at], BASH_PROFILES.trim_start(), &script[at..]))
        }
        Shell::Zsh => {
            let script = replace_all(script, "]:NAME:_default'", "]:NAME:_knock_profile_names'", 2)?;
            let positional = "':name -- The profile:_default'";
            // show, remove and reset-step.
            let script = replace_all(&script, positional, "':name -- The profile:_knock_profile_names'", 3)?;
            // clap's spec for the classic form's HOST PORT words takes the first word, so that
            // `knock profile ...` never reaches the subcommands (and the command is `$line[2]`).
            // Those words have nothing to complete: the spec goes, and the command is `$line[1]`.
            let target = script
                .lines()
                .find(|l| l.starts_with("'::target -- "))
                .ok_or_else(|| missing("`::target` spec"))?
                .to_string();
            let script = replace_all(&script, &format!("{target}\n"), "", 1)?;
            let script = replace_all(&script, "$line[2]", "$line[1]", 3)?;
            let at = script.find("if [ \"$funcstack[1]\" = \"_knock\" ]").ok_or_else(|| missing("closing dispatch"))?;
            Ok(format!("{}{ZSH_PROFILES}{}", &script[..at], &script[at..]))
        }
        Shell::Fish => {
            // clap's conditions fail while an option still lacks its value, so the option's
            // own line would never apply to `knock --profile <TAB>`: these carry no such condition.
            let mut script = script.to_string();
            script.push_str(&format!(
                "complete -c knock -n \"not __fish_seen_subcommand_from profile help\" -s p -l profile -r -f -a \
                 \"({NAMES})\"\n\
                 complete -c knock -n \"__fish_knock_using_subcommand profile; and __fish_seen_subcommand_from show \
                 remove reset-step\" -f -a \"({NAMES})\"\n"
            ));
            Ok(script)
        }
        _ => Ok(script.to_string()),
    }
}

/// knock(1) beyond the clap definitions.
const PAGE: Page = Page {
    section: "1",
    manual: "User Commands",
    description: DESCRIPTION,
    commands_note: "",
    files: FILES,
    environment: ENVIRONMENT,
    examples: EXAMPLES,
    see_also: SEE_ALSO,
};

/// DESCRIPTION: more than `--help` says (which stays short).
const DESCRIPTION: &str =
    "Knock on a server's ports: a one-time sequence from a profile, or a classic knockd sequence.\n\n\
        With --profile NAME, knock sends the next one-time sequence of a profile imported from the server's \
        bundle (knock profile import), and reserves it on disk before the first packet leaves, so no sequence is \
        ever sent twice. Without it, knock takes knockd's classic form, a host and its ports, like knockd's own knock.";

const FILES: &[(&str, &str)] = &[
    (
        "~/.config/knock/profiles/NAME.toml",
        "A profile: the server, its id, the door, the client, the mode and the alphabet (no secret).",
    ),
    (
        "~/.config/knock/keyring/NAME.key, NAME.seq",
        "The profile's key (hotp, totp) or sequence list (file), mode 0600 in a 0700 directory; knock refuses \
         them when group or others may read them.",
    ),
    (
        "~/.local/state/knock/NAME.next",
        "The next counter, time step or sequence of the profile, reserved and synced before a knock is sent, so \
         a crash never reuses one.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("XDG_CONFIG_HOME", "Where profiles and the keyring live instead of ~/.config."),
    ("XDG_STATE_HOME", "Where counters live instead of ~/.local/state."),
];

const EXAMPLES: &[(&str, &str)] = &[
    ("knock profile import ssh-alice.knock", "Install a bundle from knockd client add, then delete the file."),
    (
        "knock --profile ssh-alice --wait",
        "Send the next sequence and wait until the door's port answers (a new sequence if it does not).",
    ),
    ("knock --profile ssh-alice --dry-run", "Print the next sequence without sending or consuming it."),
    ("knock profile show ssh-alice", "Show the profile, never its key."),
    ("knock -v 198.18.0.1 7000 8000:udp 9000", "Knock a classic knockd sequence."),
];

const SEE_ALSO: &str = "knockd(8), knockd.toml(5); PROTOCOL.md (the protocol and the profile bundle, for \
    other clients) in the documentation directory";
