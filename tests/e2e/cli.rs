//! The command lines' own words, pinned in golden files under tests/golden/: `--help`, a config
//! error with its line and column, the refusal of a key file others can read, and `knock
//! profile list | show | remove`. Run with `BLESS=1` to rewrite the golden files after an
//! intended change, then review the diff. Also the exit statuses of knock_core::exit, and which
//! stream a report or an error goes to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use knock_test_support::golden::check as golden;
use knock_test_support::repo;

use crate::lab::bin;

pub fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("knock-cli-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// What a run printed on each stream, and its exit status.
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs a binary in `dir` (XDG dirs inside it).
pub fn run_split(dir: &Path, program: &str, args: &[&str]) -> Ran {
    let out = Command::new(bin(program))
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_STATE_HOME", dir.join("state-home"))
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Runs a binary in `dir` (HOME and XDG dirs inside it) and returns stdout + stderr and the code.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let r = run_split(dir, program, args);
    format!("{}{}[exit {}]\n", r.stdout, r.stderr, r.code)
}

#[test]
fn help_texts() {
    let d = scratch("help");
    golden("knock-help.txt", &run(&d, "knock", &["--help"]));
    golden("knockd-help.txt", &run(&d, "knockd", &["--help"]));
    golden("knockd-client-add-help.txt", &run(&d, "knockd", &["client", "add", "--help"]));
}

const CONFIG: &str = "[server]\nstate_dir = \"state\"\ninterfaces = [\"br0\"]\n\n[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\n";

/// `knockd init` and `knockd client add --door ssh --name alice` in `dir` (its knockd.toml
/// written already): the bundle is `alice.knock`.
fn init_and_add_alice(dir: &Path) {
    let init = run(dir, "knockd", &["-c", "knockd.toml", "init"]);
    assert!(init.ends_with("[exit 0]\n"), "{init}");
    let add =
        ["client", "add", "--door", "ssh", "--name", "alice", "--server-addr", "198.18.0.1", "--out", "alice.knock"];
    let added = run(dir, "knockd", &[&["-c", "knockd.toml"][..], &add].concat());
    assert!(added.ends_with("[exit 0]\n"), "{added}");
}

#[test]
fn config_errors_name_file_line_and_column() {
    let d = scratch("config");
    fs::write(d.join("knockd.toml"), CONFIG.replace("\"22/tcp\"", "\"22/tpc\"")).unwrap();
    golden("config-error-value.txt", &run(&d, "knockd", &["-c", "knockd.toml", "check"]));
    fs::write(d.join("knockd.toml"), format!("{CONFIG}open_for = 30\nopen_for = 40\n")).unwrap();
    golden("config-error-duplicate.txt", &run(&d, "knockd", &["-c", "knockd.toml", "check"]));
    golden("config-error-missing.txt", &run(&d, "knockd", &["-c", "nowhere.toml", "check"]));
}

#[test]
fn knockd_conf_errors_and_migration() {
    let d = scratch("legacy");
    fs::write(
        d.join("knockd.conf"),
        "[options]\n\tlogfile = knockd.log\n\n[openSSH]\n\tsequence = 7000,8000\n\tseq_timout = 5\n",
    )
    .unwrap();
    golden("knockd-conf-error.txt", &run(&d, "knockd", &["-c", "knockd.conf", "check"]));
    let etc = repo().join("etc/knockd.conf");
    let migrated = run(&d, "knockd", &["-c", etc.to_str().unwrap(), "migrate"]);
    golden("knockd-migrate.txt", &migrated.replace(repo().to_str().unwrap(), "$REPO"));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn doors_below_64_bits_are_refused_unless_forced() {
    let d = scratch("weak");
    fs::write(d.join("knockd.toml"), format!("{CONFIG}knock_ports = \"45000-45255\"\nlength = 4\n")).unwrap();
    golden("check-weak-door.txt", &run(&d, "knockd", &["-c", "knockd.toml", "check"]));
    golden("check-weak-door-forced.txt", &run(&d, "knockd", &["-c", "knockd.toml", "check", "--force"]));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn key_files_open_to_others_are_refused_on_both_sides() {
    let d = scratch("keys");
    fs::write(d.join("knockd.toml"), CONFIG).unwrap();
    init_and_add_alice(&d);
    let import = run(&d, "knock", &["profile", "import", "alice.knock"]);
    assert!(import.ends_with("[exit 0]\n"), "{import}");
    fs::set_permissions(d.join("keys/ssh/alice.key"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(d.join("config/knock/keyring/ssh-alice.key"), fs::Permissions::from_mode(0o640)).unwrap();
    let check = run(&d, "knockd", &["-c", "knockd.toml", "check"]);
    golden("key-too-open-server.txt", &check);
    let knock = run(&d, "knock", &["--profile", "ssh-alice", "--dry-run"]);
    golden("key-too-open-client.txt", &knock.replace(&d.display().to_string(), "$DIR"));
    let _ = fs::remove_dir_all(&d);
}

/// A hotp door with a closing sequence and a file door, for the profile and exit-status tests.
const TWO_DOORS: &str = "[server]\nstate_dir = \"state\"\ninterfaces = [\"lo\"]\n\n[[door]]\nname = \"ssh\"\n\
    mode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\nclose = true\n\n[[door]]\nname = \"paper\"\nmode = \"file\"\n\
    open = [\"23/tcp\"]\nsequence_file = \"paper.seq\"\nknock_ports = \"43000-43999\"\n";

/// `dir` with TWO_DOORS, a server id, client alice of door ssh and a list of 5 for door paper,
/// both imported as profiles `ssh-alice` and `paper-file` whose server is 127.0.0.1 (loopback:
/// the only address these tests may knock outside a namespace).
pub fn two_profiles(dir: &Path) {
    fs::write(dir.join("knockd.toml"), TWO_DOORS).unwrap();
    let ok = |program: &str, args: &[&str]| {
        let r = run(dir, program, args);
        assert!(r.ends_with("[exit 0]\n"), "{program} {args:?}: {r}");
    };
    ok("knockd", &["-c", "knockd.toml", "init"]);
    let add = ["client", "add", "--door", "ssh", "--name", "alice", "--server-addr", "127.0.0.1", "--out", "a.knock"];
    ok("knockd", &[&["-c", "knockd.toml"][..], &add].concat());
    let seq =
        ["sequences", "generate", "--door", "paper", "--count", "5", "--server-addr", "127.0.0.1", "--out", "p.knock"];
    ok("knockd", &[&["-c", "knockd.toml"][..], &seq].concat());
    ok("knock", &["profile", "import", "a.knock"]);
    ok("knock", &["profile", "import", "p.knock"]);
}

/// The placeholders that make a profile's output stable: its directory, server id and key
/// fingerprint.
fn stable(dir: &Path, text: &str) -> String {
    let id = fs::read_to_string(dir.join("state/server-id")).unwrap();
    let fingerprint = text.split("fingerprint ").nth(1).map_or("", |f| &f[..32.min(f.len())]).to_string();
    let mut out = text.replace(&dir.display().to_string(), "$DIR").replace(id.trim(), "<SERVER-ID>");
    if !fingerprint.is_empty() {
        out = out.replace(&fingerprint, "<FINGERPRINT>");
    }
    out
}

/// The words of the secrets: the key's base64 and every sequence of the list.
fn secrets(dir: &Path) -> Vec<String> {
    let key = fs::read_to_string(dir.join("keys/ssh/alice.key")).unwrap();
    let mut out = vec![key.split_whitespace().nth(1).unwrap().to_string()];
    let list = fs::read_to_string(dir.join("paper.seq")).unwrap();
    out.extend(list.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(String::from));
    assert_eq!(out.len(), 6, "the key and 5 sequences");
    out
}

#[test]
fn profile_list_show_and_remove() {
    let d = scratch("profiles");
    two_profiles(&d);
    golden("profile-list-fresh.txt", &run(&d, "knock", &["profile", "list"]));
    // One knock each (to loopback), so the next counter and line move on.
    for profile in ["ssh-alice", "paper-file"] {
        let r = run(&d, "knock", &["--profile", profile, "-d", "0"]);
        assert!(r.ends_with("[exit 0]\n"), "{r}");
    }
    golden("profile-list.txt", &run(&d, "knock", &["profile", "list"]));
    golden("profile-list-names.txt", &run(&d, "knock", &["profile", "list", "--names"]));
    let hotp = run(&d, "knock", &["profile", "show", "ssh-alice"]);
    let file = run(&d, "knock", &["profile", "show", "paper-file"]);
    for secret in secrets(&d) {
        assert!(
            !hotp.contains(&secret) && !file.contains(&secret),
            "`show` printed a secret ({secret}):\n{hotp}{file}"
        );
    }
    golden("profile-show-hotp.txt", &stable(&d, &hotp));
    golden("profile-show-file.txt", &stable(&d, &file));

    let removed = run(&d, "knock", &["profile", "remove", "ssh-alice"]);
    golden("profile-remove.txt", &stable(&d, &removed));
    for gone in [
        "config/knock/profiles/ssh-alice.toml",
        "config/knock/keyring/ssh-alice.key",
        "state-home/knock/ssh-alice.next",
    ] {
        assert!(!d.join(gone).exists(), "{gone} is still there");
    }
    assert!(d.join("config/knock/profiles/paper-file.toml").exists(), "the other profile stays");
    assert_eq!(run_split(&d, "knock", &["profile", "list", "--names"]).stdout, "paper-file\n");
    let again = run_split(&d, "knock", &["profile", "remove", "ssh-alice"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("no profile `ssh-alice`"), "{}", again.stderr);
    let _ = fs::remove_dir_all(&d);
}

/// Exit statuses (knock_core::exit) and streams: a report on standard output with status 1, a
/// failure on standard error with its own status, for both binaries.
#[test]
fn exit_statuses_and_where_reports_go() {
    use knock_core::exit;
    let d = scratch("exit");
    two_profiles(&d);
    let status = |ran: &Ran| u8::try_from(ran.code).unwrap_or(u8::MAX);

    let check = run_split(&d, "knockd", &["-c", "knockd.toml", "check"]);
    assert_eq!((status(&check), check.stderr.as_str()), (exit::SUCCESS, ""), "{}", check.stdout);
    fs::write(d.join("weak.toml"), format!("{TWO_DOORS}length = 3\n")).unwrap();
    let weak = run_split(&d, "knockd", &["-c", "weak.toml", "check"]);
    assert_eq!((status(&weak), weak.stderr.as_str()), (exit::PROBLEMS, ""), "the report goes to stdout");
    assert!(weak.stdout.contains("problem: door paper offers") && weak.stdout.ends_with("1 problem(s) above\n"));
    let status_report = run_split(&d, "knockd", &["-c", "knockd.toml", "status", "--warn-below", "6"]);
    assert_eq!((status(&status_report), status_report.stderr.as_str()), (exit::PROBLEMS, ""));
    assert!(status_report.stdout.contains("warning: only 5 unused sequences left"), "{}", status_report.stdout);
    assert_eq!(status(&run_split(&d, "knockd", &["-c", "knockd.toml", "status", "--warn-below", "5"])), exit::SUCCESS);

    fs::write(d.join("bad.toml"), TWO_DOORS.replace("close = true", "close = 1")).unwrap();
    for args in [&["-c", "bad.toml", "check"][..], &["-c", "bad.toml"], &["-c", "missing.toml", "status"]] {
        let r = run_split(&d, "knockd", args);
        assert_eq!((status(&r), r.stdout.as_str()), (exit::CONFIG, ""), "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("knockd: ") && r.stderr.contains(".toml"), "{}", r.stderr);
    }
    let no_door = run_split(&d, "knockd", &["-c", "knockd.toml", "client", "list", "--door", "web"]);
    assert_eq!(status(&no_door), exit::USAGE);
    assert!(no_door.stderr.contains("no door `web` (doors: ssh, paper)"), "{}", no_door.stderr);
    assert_eq!(status(&run_split(&d, "knockd", &["--no-such-flag"])), exit::USAGE);
    let twice = run_split(&d, "knockd", &["-c", "knockd.toml", "init"]);
    assert_eq!(status(&twice), exit::FAILED, "{}", twice.stderr);

    assert_eq!(status(&run_split(&d, "knock", &["--profile", "nosuch", "--dry-run"])), exit::USAGE);
    assert_eq!(status(&run_split(&d, "knock", &["profile", "show", "../../etc"])), exit::USAGE);
    assert_eq!(status(&run_split(&d, "knock", &["127.0.0.1"])), exit::USAGE);
    assert_eq!(status(&run_split(&d, "knock", &["127.0.0.1", "70000"])), exit::USAGE);
    fs::write(d.join("damaged.knock"), "one-time-knock-profile-v1:!!not base64!!\n").unwrap();
    let damaged = run_split(&d, "knock", &["profile", "import", "damaged.knock"]);
    assert_eq!(status(&damaged), exit::DATA, "{}", damaged.stderr);
    let missing = run_split(&d, "knock", &["profile", "import", "nowhere.knock"]);
    assert_eq!(status(&missing), exit::IO, "{}", missing.stderr);
    let profile = d.join("config/knock/profiles/ssh-alice.toml");
    let text = fs::read_to_string(&profile).unwrap();
    fs::write(&profile, text.replace("length = 8", "length = 99")).unwrap();
    let broken = run_split(&d, "knock", &["--profile", "ssh-alice", "--dry-run"]);
    assert_eq!(status(&broken), exit::CONFIG, "{}", broken.stderr);
    let _ = fs::remove_dir_all(&d);
}

/// Each of knock's failures: its exit status, and a message on standard error alone that says
/// what failed, on which file or profile, and the fix.
#[test]
fn knock_failures_name_what_failed_where_and_the_fix() {
    use knock_core::exit;
    let d = scratch("failures");
    two_profiles(&d);
    let dir = d.display().to_string();
    let expect = |args: &[&str], code: u8, words: &[&str]| {
        let r = run_split(&d, "knock", args);
        assert_eq!((r.code, r.stdout.as_str()), (i32::from(code), ""), "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("knock: ") && r.stderr.lines().count() == 1, "{args:?}: {}", r.stderr);
        for word in words {
            assert!(r.stderr.contains(word), "{args:?}: `{word}` missing from: {}", r.stderr);
        }
    };

    let list = format!("{dir}/config/knock/keyring/paper-file.seq");
    fs::set_permissions(&list, fs::Permissions::from_mode(0o644)).unwrap();
    expect(&["--profile", "paper-file", "--dry-run"], exit::PERMISSION, &[&list, "mode 0644", "chmod 600"]);
    fs::set_permissions(&list, fs::Permissions::from_mode(0o600)).unwrap();

    let counter = format!("{dir}/state-home/knock/ssh-alice.next");
    fs::create_dir_all(d.join("state-home/knock")).unwrap();
    fs::write(&counter, "seven\n").unwrap();
    expect(&["--profile", "ssh-alice", "--dry-run"], exit::DATA, &["`ssh-alice`", &counter, "a number"]);
    fs::remove_file(&counter).unwrap();

    expect(&["profile", "import", "a.knock"], exit::FAILED, &["`ssh-alice` exists", "knock profile remove ssh-alice"]);
    expect(&["profile", "show", "nobody"], exit::USAGE, &["no profile `nobody`", "knock profile import FILE"]);
    expect(
        &["profile", "remove", "Bad/Name"],
        exit::USAGE,
        &["`Bad/Name` is not a profile name", "knock profile list"],
    );
    expect(&["profile", "reset-step", "paper-file"], exit::USAGE, &["`paper-file` is a file profile", "totp"]);
    expect(&["--profile", "paper-file", "--close"], exit::USAGE, &["`paper-file`", "no closing sequence"]);
    expect(&["-4", "::1", "7000"], exit::FAILED, &["::1 has no IPv4 address", "without -4"]);
    expect(&["127.0.0.1", "7000:sctp"], exit::USAGE, &["`sctp`", "tcp or udp"]);
    expect(&["profile", "import", "nowhere.knock"], exit::IO, &["cannot read the bundle nowhere.knock"]);

    // Nothing listens on port 1 of loopback: the port never answers.
    let wait = ["--profile", "ssh-alice", "--wait", "1", "--wait-timeout", "0.2", "--attempts", "1"];
    let r = run_split(&d, "knock", &wait);
    assert_eq!(r.code, i32::from(exit::FAILED), "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or_default();
    for words in ["knock: port 1 on 127.0.0.1 did not open after 1 sequences of profile `ssh-alice`", "clock"] {
        assert!(last.contains(words), "`{words}` missing from: {}", r.stderr);
    }
    let _ = fs::remove_dir_all(&d);
}

/// A totp profile whose next step ran far ahead (a clock that was a year fast when it last
/// knocked) is refused at once, naming the profile and the command that resets it; the reset
/// skips every step the server accepts now (issue 9).
#[test]
fn a_totp_step_far_ahead_is_refused_and_reset_step_brings_it_back() {
    let d = scratch("totp-ahead");
    let config = CONFIG.replace("mode = \"hotp\"", "mode = \"totp\"");
    fs::write(d.join("knockd.toml"), config).unwrap();
    init_and_add_alice(&d);
    assert!(run(&d, "knock", &["profile", "import", "alice.knock"]).ends_with("[exit 0]\n"));
    let now_step = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 30;
    let next_file = d.join("state-home/knock/ssh-alice.next");
    fs::create_dir_all(next_file.parent().unwrap()).unwrap();
    fs::write(&next_file, format!("{}\n", now_step() + 365 * 2880)).unwrap();

    let started = std::time::Instant::now();
    let refused = run(&d, "knock", &["--profile", "ssh-alice", "--dry-run"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "no sleeping: {refused}");
    assert!(refused.ends_with("[exit 69]\n"), "{refused}");
    for words in ["profile `ssh-alice`", "365 days ahead", "knock profile reset-step ssh-alice"] {
        assert!(refused.contains(words), "{words}: {refused}");
    }

    let before = now_step();
    let reset = run(&d, "knock", &["profile", "reset-step", "ssh-alice"]);
    assert!(reset.ends_with("[exit 0]\n") && reset.contains("moved back"), "{reset}");
    let next: u64 = fs::read_to_string(&next_file).unwrap().trim().parse().unwrap();
    assert!((before + 2..=now_step() + 2).contains(&next), "skew 1: past the window, {next}");
    let soon = run(&d, "knock", &["--profile", "ssh-alice", "--dry-run"]);
    assert!(soon.contains("knock again in") && !soon.contains("reset-step"), "{soon}");
    let again = run(&d, "knock", &["profile", "reset-step", "ssh-alice"]);
    assert!(again.contains("nothing to reset") && again.ends_with("[exit 0]\n"), "{again}");
    let missing = run(&d, "knock", &["profile", "reset-step", "nobody"]);
    assert!(missing.contains("no profile `nobody`") && missing.ends_with("[exit 2]\n"), "{missing}");
    let _ = fs::remove_dir_all(&d);
}
