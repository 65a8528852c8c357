//! What `--generate` hands the packager, tried the way users meet it: knockd(8), knock(1) and
//! the hand-written knockd.toml(5) rendered by groff and man without a warning, and the
//! completion scripts loaded into real bash, zsh and fish, which must offer an imported
//! profile's name after `knock --profile` (asked of `knock profile list --names`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{run_split, scratch, two_profiles};
use crate::lab::bin;

/// `program --generate kind`, which must succeed quietly.
fn generated(program: &str, kind: &str) -> String {
    let out = Command::new(bin(program)).args(["--generate", kind]).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{program} --generate {kind}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The page rendered for a terminal, after checking that groff and man render it without a
/// single warning.
fn rendered(page: &Path) -> String {
    let groff = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(page).output();
    let groff = groff.unwrap_or_else(|e| panic!("groff (Debian: groff-base) is needed: {e}"));
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "groff warns about {}:\n{}",
        page.display(),
        text(&groff)
    );
    let man = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env_remove("MAN_KEEP_FORMATTING")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|e| panic!("man (Debian: man-db) is needed: {e}"));
    assert!(man.status.success() && man.stderr.is_empty(), "man warns about {}:\n{}", page.display(), text(&man));
    // man pipes through col -b when not on a terminal: plain text, no overstrikes.
    String::from_utf8_lossy(&man.stdout).into_owned()
}

/// Collapses runs of spaces (justification) so phrases can be searched for.
fn words(page: &str) -> String {
    page.split_whitespace().collect::<Vec<_>>().join(" ").replace("\u{2010} ", "").replace("- ", "-")
}

#[test]
fn man_pages_render_without_warnings_and_list_every_exit_status() {
    let d = scratch("man");
    let knockd = d.join("knockd.8");
    fs::write(&knockd, generated("knockd", "man")).unwrap();
    let knock = d.join("knock.1");
    fs::write(&knock, generated("knock", "man")).unwrap();
    let toml = knock_test_support::repo().join("docs/knockd.toml.5");

    let (knockd, knock, toml) = (rendered(&knockd), rendered(&knock), rendered(&toml));
    assert!(knockd.starts_with("knockd(8)") && knock.starts_with("knock(1)"), "{knockd}\n{knock}");
    assert!(toml.starts_with("KNOCKD.TOML(5)"), "{toml}");
    for page in [&knockd, &knock] {
        let flat = words(page);
        let section = flat.split("EXIT STATUS").nth(1).expect("an EXIT STATUS section");
        for status in knock_core::exit::TABLE {
            let first_words: String = status.meaning.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
            assert!(
                section.contains(&format!("{} {first_words}", status.code)),
                "status {} missing:\n{page}",
                status.code
            );
        }
    }
    let flat = words(&knockd);
    for command in [
        "run",
        "init",
        "check",
        "client add",
        "client revoke",
        "client list",
        "sequences rotate",
        "sequences generate",
        "status",
        "migrate",
        "grant",
        "ledger recover",
        "audit",
        "audit init-key",
        "replay",
    ] {
        assert!(flat.contains(&format!("knockd {command} ")), "knockd(8) does not document `knockd {command}`");
    }
    assert!(flat.contains("--force Accept doors below 64 bits"), "a command's own option: {knockd}");
    assert!(flat.contains("--pcap <FILE> The capture file"), "replay's own option: {knockd}");
    let flat = words(&knock);
    for command in ["profile import", "profile list", "profile show", "profile remove"] {
        assert!(flat.contains(&format!("knock {command} ")), "knock(1) does not document `knock {command}`");
    }
    assert!(!flat.contains("--generate") && !words(&knockd).contains("--generate"), "--generate is for packagers");
    let _ = fs::remove_dir_all(&d);
}

/// A directory with two imported profiles (`paper-file`, `ssh-alice`), and the environment a
/// shell needs to find them and the `knock` under test.
struct Shell {
    dir: PathBuf,
    path: String,
}

impl Shell {
    fn new(tag: &str) -> Shell {
        let dir = scratch(tag);
        two_profiles(&dir);
        let bin_dir = bin("knock").parent().unwrap().display().to_string();
        Shell { path: format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default()), dir }
    }

    /// Runs `program args` with the test's PATH, HOME and XDG directories.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("HOME", &self.dir)
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("XDG_STATE_HOME", self.dir.join("state-home"))
            .env("XDG_DATA_HOME", self.dir.join("data"))
            .output()
            .unwrap_or_else(|e| panic!("{program} is needed (scripts/setup.sh installs it): {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `--generate shell` of `program` into the directory.
    fn script(&self, program: &str, shell: &str, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::write(&path, generated(program, shell)).unwrap();
        path
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The candidates bash's completion function offers for `words` (the last one is being typed).
fn bash_candidates(sh: &Shell, script: &Path, function: &str, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let n = words.len();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
         {function} {} '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        n - 1,
        words[0],
        words[n - 1],
        words[n - 2],
    );
    sh.run("bash", &["-c", &program]).lines().map(String::from).filter(|l| !l.is_empty()).collect()
}

#[test]
fn bash_completes_profile_names_commands_and_options() {
    let sh = Shell::new("bash");
    let knock = sh.script("knock", "bash", "knock.bash");
    let names = ["paper-file", "ssh-alice"];
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "--profile", ""]), names);
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "-v", "-p", "ss"]), ["ssh-alice"]);
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "profile", "show", ""]), names);
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "profile", "remove", "p"]), ["paper-file"]);
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "--pro"]), ["--profile"]);
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "profile", "sh"]), ["show"]);
    let knockd = sh.script("knockd", "bash", "knockd.bash");
    assert_eq!(bash_candidates(&sh, &knockd, "_knockd", &["knockd", "cl"]), ["client"]);
    assert_eq!(bash_candidates(&sh, &knockd, "_knockd", &["knockd", "client", "a"]), ["add"]);
    assert_eq!(bash_candidates(&sh, &knockd, "_knockd", &["knockd", "rep"]), ["replay"]);
    assert_eq!(bash_candidates(&sh, &knockd, "_knockd", &["knockd", "replay", "--pc"]), ["--pcap"]);
    // Gone from the store, gone from the completion.
    assert_eq!(run_split(&sh.dir, "knock", &["profile", "remove", "ssh-alice"]).code, 0);
    assert_eq!(bash_candidates(&sh, &knock, "_knock_profiles", &["knock", "--profile", ""]), ["paper-file"]);
}

#[test]
fn fish_completes_profile_names_commands_and_options() {
    let sh = Shell::new("fish");
    let knock = sh.script("knock", "fish", "knock.fish");
    let knockd = sh.script("knockd", "fish", "knockd.fish");
    let complete = |line: &str| -> Vec<String> {
        let program = format!("source '{}'; source '{}'; complete -C'{line}'", knock.display(), knockd.display());
        let out = sh.run("fish", &["--no-config", "-c", &program]);
        out.lines().map(|l| l.split('\t').next().unwrap_or_default().to_string()).collect()
    };
    let names = ["paper-file", "ssh-alice"];
    assert_eq!(complete("knock --profile "), names);
    assert_eq!(complete("knock -p ss"), ["ssh-alice"]);
    assert_eq!(complete("knock profile show "), names);
    assert_eq!(complete("knock profile remove pa"), ["paper-file"]);
    assert_eq!(complete("knock --pro"), ["--profile"]);
    assert_eq!(complete("knockd cl"), ["client"]);
}

/// zsh completes only inside its line editor: an interactive `zsh -f` in a pseudo-terminal
/// (zsh/zpty) loads the script through compinit, gets `line` and a TAB, and the screen is read
/// until `expect` shows (5 s at most).
const ZSH_TYPE: &str = r#"
zmodload zsh/zpty || exit 3
zpty z zsh -f -i
zpty -w z "PS1='%% '; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D; print READY"
screen=''
for i in {1..50}; do
    while zpty -rt z chunk; do screen+=$chunk; done
    [[ $screen == *READY* ]] && break
    sleep 0.1
done
zpty -w -n z "$2"$'\t'
screen=''
for i in {1..50}; do
    while zpty -rt z chunk; do screen+=$chunk; done
    [[ $screen == *"$3"* ]] && break
    sleep 0.1
done
zpty -d z
print -r -- "$screen"
"#;

#[test]
fn zsh_completes_profile_names_commands_and_options() {
    let sh = Shell::new("zsh");
    let functions = sh.dir.join("zfunc");
    fs::create_dir_all(&functions).unwrap();
    fs::write(functions.join("_knock"), generated("knock", "zsh")).unwrap();
    fs::write(functions.join("_knockd"), generated("knockd", "zsh")).unwrap();
    let driver = sh.dir.join("type.zsh");
    fs::write(&driver, ZSH_TYPE).unwrap();
    let dir = functions.display().to_string();
    // Each line has one completion, which zsh writes into the line.
    for (line, completed) in [
        ("knock --profile ss", "knock --profile ssh-alice"),
        ("knock -v -p pa", "knock -v -p paper-file"),
        ("knock profile show ss", "knock profile show ssh-alice"),
        ("knock profile remove pa", "knock profile remove paper-file"),
        ("knock profile sh", "knock profile show"),
        ("knock --dry-r", "knock --dry-run"),
        ("knockd cli", "knockd client"),
    ] {
        let screen = sh.run("zsh", &["-f", driver.to_str().unwrap(), &dir, line, completed]);
        assert!(screen.contains(completed), "zsh did not complete `{line}` to `{completed}`:\n{screen:?}");
    }
}
