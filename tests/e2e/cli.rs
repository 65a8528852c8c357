//! The command lines' own words, pinned in golden files under tests/golden/: `--help`, a config
//! error with its line and column, and the refusal of a key file others can read. Run with
//! `BLESS=1` to rewrite the golden files after an intended change, then review the diff.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::bin;

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with BLESS=1 to create it)", path.display()));
    assert_eq!(actual, expected, "output differs from {} (BLESS=1 rewrites it)", path.display());
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("knock-cli-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a binary in `dir` (HOME and XDG dirs inside it) and returns stdout + stderr and the code.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(bin(program))
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_STATE_HOME", dir.join("state-home"))
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    format!(
        "{}{}[exit {}]\n",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1)
    )
}

#[test]
fn help_texts() {
    let d = scratch("help");
    golden("knock-help.txt", &run(&d, "knock", &["--help"]));
    golden("knockd-help.txt", &run(&d, "knockd", &["--help"]));
    golden("knockd-client-add-help.txt", &run(&d, "knockd", &["client", "add", "--help"]));
}

const CONFIG: &str = "[server]\nstate_dir = \"state\"\ninterfaces = [\"br0\"]\n\n[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\n";

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
    let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/knockd.conf");
    let migrated = run(&d, "knockd", &["-c", etc.to_str().unwrap(), "migrate"]);
    golden("knockd-migrate.txt", &migrated.replace(env!("CARGO_MANIFEST_DIR"), "$REPO"));
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
    let init = run(&d, "knockd", &["-c", "knockd.toml", "init"]);
    assert!(init.ends_with("[exit 0]\n"), "{init}");
    let add = run(
        &d,
        "knockd",
        &[
            "-c",
            "knockd.toml",
            "client",
            "add",
            "--door",
            "ssh",
            "--name",
            "alice",
            "--server-addr",
            "198.18.0.1",
            "--out",
            "alice.knock",
        ],
    );
    assert!(add.ends_with("[exit 0]\n"), "{add}");
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

/// A totp profile whose next step ran far ahead (a clock that was a year fast when it last
/// knocked) is refused at once, naming the profile and the command that resets it; the reset
/// skips every step the server accepts now (issue 9).
#[test]
fn a_totp_step_far_ahead_is_refused_and_reset_step_brings_it_back() {
    let d = scratch("totp-ahead");
    let config = CONFIG.replace("mode = \"hotp\"", "mode = \"totp\"");
    fs::write(d.join("knockd.toml"), config).unwrap();
    assert!(run(&d, "knockd", &["-c", "knockd.toml", "init"]).ends_with("[exit 0]\n"));
    let add = [
        "-c",
        "knockd.toml",
        "client",
        "add",
        "--door",
        "ssh",
        "--name",
        "alice",
        "--server-addr",
        "198.18.0.1",
        "--out",
        "alice.knock",
    ];
    assert!(run(&d, "knockd", &add).ends_with("[exit 0]\n"));
    assert!(run(&d, "knock", &["profile", "import", "alice.knock"]).ends_with("[exit 0]\n"));
    let now_step = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 30;
    let next_file = d.join("state-home/knock/ssh-alice.next");
    fs::create_dir_all(next_file.parent().unwrap()).unwrap();
    fs::write(&next_file, format!("{}\n", now_step() + 365 * 2880)).unwrap();

    let started = std::time::Instant::now();
    let refused = run(&d, "knock", &["--profile", "ssh-alice", "--dry-run"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "no sleeping: {refused}");
    assert!(refused.ends_with("[exit 1]\n"), "{refused}");
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
    assert!(missing.contains("no profile `nobody`") && missing.ends_with("[exit 1]\n"), "{missing}");
    let _ = fs::remove_dir_all(&d);
}
