//! knockd's hand-over of files an admin command run as root created (`knockd::state::handover`): they
//! go to the state directory's owner, and nothing outside it moves, whatever links the daemon's
//! account planted. Needs root (only root changes owners).

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use knock_core::config::Config;
use knock_test_support::require_root;
use knockd::state::handover::{hand_over, keep_owner, Owner};

/// An account that is not root (the tests run as root: only root can chown).
const NOBODY: Owner = Owner { uid: 65534, gid: 65534 };

fn uid(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().uid()
}

fn config(dir: &Path) -> Config {
    let text = "[server]\nstate_dir = \"state\"\n\n\
        [[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys/ssh\"\n\n\
        [[door]]\nname = \"paper\"\nmode = \"file\"\nopen = [\"22/tcp\"]\nsequence_file = \"sequences/paper.seq\"\n\
        knock_ports = \"43000-44999\"\n\n\
        [[door]]\nname = \"here\"\nmode = \"file\"\nopen = [\"2222/tcp\"]\nsequence_file = \"here.seq\"\n\
        knock_ports = \"45000-46999\"\n";
    Config::parse(&dir.join("knockd.toml"), text).unwrap()
}

#[test]
fn root_files_go_to_the_state_dirs_owner_and_nothing_outside_moves() {
    require_root();
    let dir = std::env::temp_dir().join(format!("knockd-handover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let outside = std::env::temp_dir().join(format!("knockd-handover-outside-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    for d in ["state/ledger", "keys/ssh", "sequences"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    for f in ["knockd.toml", "here.seq", "state/server-id", "state/ledger/a.ledger", "keys/ssh/alice.key"] {
        std::fs::write(dir.join(f), "x").unwrap();
    }
    std::fs::write(dir.join("sequences/paper.seq"), "x").unwrap();
    std::fs::write(dir.join("sequences/paper.seq.next"), "x").unwrap();
    std::fs::write(outside.join("secret"), "x").unwrap();
    std::fs::write(outside.join("sub/inner"), "x").unwrap();
    // What the daemon's account could plant: a link to a file elsewhere, a hard link, and a
    // link to a directory elsewhere.
    std::os::unix::fs::symlink(outside.join("secret"), dir.join("state/link")).unwrap();
    std::fs::hard_link(outside.join("secret"), dir.join("state/hard")).unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), dir.join("state/dirlink")).unwrap();
    std::os::unix::fs::chown(dir.join("state"), Some(NOBODY.uid), Some(NOBODY.gid)).unwrap();
    std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o700)).unwrap();

    let report = hand_over(&config(&dir), NOBODY);

    for handed in [
        "state/server-id",
        "state/ledger",
        "state/ledger/a.ledger",
        "keys/ssh",
        "keys/ssh/alice.key",
        "sequences",
        "sequences/paper.seq",
        "sequences/paper.seq.next",
        "here.seq",
    ] {
        assert_eq!(uid(&dir.join(handed)), NOBODY.uid, "{handed} was not handed over: {report:?}");
    }
    // The configuration's directory and file, and everything outside, stay root's.
    for kept in [dir.join("knockd.toml"), dir.clone(), dir.join("keys"), outside.join("secret"), outside.join("sub")] {
        assert_eq!(uid(&kept), 0, "{} changed owner", kept.display());
    }
    assert_eq!(uid(&outside.join("sub/inner")), 0, "walked through a link to a directory");
    assert_eq!(uid(&dir.join("state/link")), 0, "the link itself is not followed");
    assert!(report.warnings.iter().any(|w| w.contains("hard links")), "{:?}", report.warnings);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn a_file_written_to_replace_another_takes_its_owner() {
    require_root();
    let dir = std::env::temp_dir().join(format!("knockd-keep-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new, fresh) = (dir.join("audit.key"), dir.join("audit.key.tmp"), dir.join("other"));
    std::fs::write(&old, "x").unwrap();
    std::os::unix::fs::chown(&old, Some(NOBODY.uid), Some(NOBODY.gid)).unwrap();
    let f = File::create(&new).unwrap();
    keep_owner(&f, &old).unwrap();
    assert_eq!(uid(&new), NOBODY.uid);
    let f = File::create(&fresh).unwrap();
    keep_owner(&f, &dir.join("missing")).unwrap();
    assert_eq!(uid(&fresh), 0, "nothing replaced, nothing changes");
    std::fs::remove_dir_all(&dir).unwrap();
}
