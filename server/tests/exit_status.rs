//! Exit statuses of failures, as a service manager and a script see them: the built binary on
//! a temporary configuration, each failure with the status knock_core::exit documents for its
//! kind (docs: knockd(8), EXIT STATUS), the message on standard error naming what failed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use knock_core::exit::{CONFIG, DATA, PERMISSION, USAGE};

static N: AtomicUsize = AtomicUsize::new(0);

/// A directory with `knockd.toml` (hotp door `ssh` with keys in `keys/`, file door `paper`),
/// removed when dropped.
struct Fixture(PathBuf);

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("knockd-exit-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("knockd.toml"),
            "[server]\nstate_dir = \"state\"\ninterfaces = [\"lo\"]\nfirewall = \"none\"\n\n\
             [[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n\n\
             [[door]]\nname = \"paper\"\nmode = \"file\"\nopen = [\"22/tcp\"]\nsequence_file = \"paper.seq\"\n\
             knock_ports = \"43000-43999\"\n",
        )
        .unwrap();
        Fixture(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Runs `knockd -c knockd.toml ARGS` here: its exit status and standard error.
    fn knockd(&self, args: &[&str]) -> (u8, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_knockd"))
            .arg("-c")
            .arg("knockd.toml")
            .args(args)
            .current_dir(&self.0)
            .output()
            .unwrap();
        let code = out.status.code().map_or(u8::MAX, |c| u8::try_from(c).unwrap_or(u8::MAX));
        (code, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// Doors refused when the daemon starts do not heal by themselves: 78, which the systemd unit
/// does not restart (RestartPreventExitStatus=78), and the log names each door and why.
#[test]
fn a_daemon_whose_every_door_is_refused_exits_78() {
    let f = Fixture::new("refused");
    assert_eq!(f.knockd(&["init"]).0, 0);
    // No keys directory, no sequence file.
    let (code, err) = f.knockd(&[]);
    assert_eq!(code, CONFIG, "{err}");
    assert!(err.contains("door ssh refused: keys directory") && err.contains("door paper refused"), "{err}");
    assert!(err.contains("knockd: ") && err.contains("every door was refused"), "{err}");
}

/// What the command line names must fit: a door without clients is a usage error (2).
#[test]
fn a_door_that_does_not_fit_the_command_is_a_usage_error() {
    let f = Fixture::new("usage");
    assert_eq!(f.knockd(&["init"]).0, 0);
    let (code, err) = f.knockd(&["client", "add", "--door", "paper", "--name", "bob", "--server-addr", "198.18.0.1"]);
    assert_eq!(code, USAGE, "{err}");
    assert!(err.contains("door `paper` is a file door; clients are added to hotp and totp doors"), "{err}");
}

/// A state directory others can read is a permission problem (77), a damaged key file a data
/// problem (65); each message names the file and the fix.
#[test]
fn permissions_and_damaged_files_have_their_own_statuses() {
    let f = Fixture::new("files");
    assert_eq!(f.knockd(&["init"]).0, 0);
    fs::create_dir_all(f.path("keys")).unwrap();
    private(&f.path("keys/alice.key"), "not a key\n");
    let (code, err) = f.knockd(&["ledger", "recover", "--door", "ssh", "--next", "5"]);
    assert_eq!(code, DATA, "{err}");
    assert!(err.contains("alice.key") && err.contains("knockd client add"), "{err}");
    fs::set_permissions(f.path("state"), fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = f.knockd(&["status"]);
    assert_eq!(code, PERMISSION, "{err}");
    assert!(err.contains("chmod 700"), "{err}");
}
