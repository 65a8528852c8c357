//! A `file`-mode door consumes its lines in order; a used line never opens again (issue 2, i).

use std::thread::sleep;
use std::time::Duration;

use crate::lab::{bin, Host, Lab, SERVER};
use crate::{answered, require_root};

const DOOR: &str = r#"[[door]]
name = "files"
mode = "file"
open = ["8080/tcp"]
sequence_file = "sequences/files.seq"
knock_ports = "43000-43999"
open_for = "2s"
seq_timeout = "2s"
"#;

#[test]
fn file_door_uses_lines_in_order_and_never_twice() {
    require_root();
    let mut lab = Lab::new(DOOR);
    let bundle = lab.dir.join("files.knock");
    lab.knockd(&[
        "sequences",
        "generate",
        "--door",
        "files",
        "--count",
        "5",
        "--server-addr",
        SERVER,
        "--out",
        bundle.to_str().unwrap(),
    ]);
    let o = lab.knock(Host::Client, &["profile", "import", bundle.to_str().unwrap()]);
    assert!(o.status.success());
    lab.start_daemon();

    let first = lab.dry_run(Host::Client, "files-file");
    assert!(!lab.can_connect(Host::Client, SERVER, 8080, 500));
    let o = lab.knock(Host::Client, &["--profile", "files-file", "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(0), "{o:?}");
    sleep(Duration::from_millis(2300)); // open_for passes

    // The first line again, knocked by hand in knockd's classic form: a replay.
    let mut args: Vec<&str> = vec!["-d", "10", SERVER];
    args.extend(first.iter().map(String::as_str));
    assert!(lab.exec(Host::Client, bin("knock"), &args).status.success());
    lab.wait_log("replayed knock sequence", Duration::from_secs(3));
    assert!(!lab.can_connect(Host::Client, SERVER, 8080, 500), "a used line must never open again");

    // The next line works.
    let o = lab.knock(Host::Client, &["--profile", "files-file", "--wait", "--wait-timeout", "2", "--attempts", "1"]);
    assert_eq!(answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1), Some(1), "{o:?}");
    let grants = lab.audit_events("grant");
    assert_eq!(grants.len(), 2, "{grants:?}");
    // Three of five left: `knockd status` warns below four (and exits 1), not below three.
    let status =
        |below: &str| lab.exec(Host::Server, bin("knockd"), &["-c", "knockd.toml", "status", "--warn-below", below]);
    let o = status("4");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!o.status.success() && text.contains("only 3 unused sequences left"), "{text}");
    assert!(status("3").status.success());
    // Two comment lines head the file, so sequences 0 and 1 are lines 3 and 4.
    assert!(
        grants[0].contains("\"sequence\":\"line 3\"") && grants[1].contains("\"sequence\":\"line 4\""),
        "{grants:?}"
    );
}

/// Rotation: the new file is accepted beside the old one until its first use, so there is no
/// gap; then it takes over and the old file's remaining lines are retired (issue 4).
#[test]
fn a_rotated_sequence_file_takes_over_without_a_gap() {
    require_root();
    let mut lab = Lab::new(DOOR);
    let bundle = lab.dir.join("files.knock");
    let b = bundle.to_str().unwrap();
    lab.knockd(&["sequences", "generate", "--door", "files", "--count", "3", "--server-addr", SERVER, "--out", b]);
    assert!(lab.knock(Host::Client, &["profile", "import", b]).status.success());
    lab.start_daemon();
    let knock = |lab: &Lab| {
        let o =
            lab.knock(Host::Client, &["--profile", "files-file", "--wait", "--wait-timeout", "2", "--attempts", "1"]);
        answered(&String::from_utf8_lossy(&o.stdout)).map(|a| a.1)
    };
    assert_eq!(knock(&lab), Some(0));
    // Rotate on the server; the client has not imported the new list yet: the old one works.
    let next = lab.dir.join("next.knock");
    let n = next.to_str().unwrap();
    lab.knockd(&["sequences", "rotate", "--door", "files", "--count", "5", "--server-addr", SERVER, "--out", n]);
    lab.signal_daemon("HUP");
    lab.wait_log("configuration reloaded", Duration::from_secs(3));
    assert_eq!(knock(&lab), Some(1), "the old list still opens during the rotation");
    let old = std::fs::read_to_string(lab.dir.join("sequences/files.seq")).unwrap();
    let old_third = old.lines().filter(|l| !l.starts_with('#')).nth(2).unwrap().to_string();
    // The client takes the new list; its first line completes the rotation.
    let o = lab.knock(Host::Client, &["profile", "import", n]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(knock(&lab), Some(0), "the new list starts at its first line");
    lab.wait_log("rotation done", Duration::from_secs(2));
    assert_eq!(lab.audit_events("rotate").len(), 1);
    // The old file's last unused line no longer opens.
    sleep(Duration::from_millis(2300));
    let mut args: Vec<&str> = vec!["-d", "10", SERVER];
    args.extend(old_third.split_whitespace());
    assert!(lab.exec(Host::Client, bin("knock"), &args).status.success());
    sleep(Duration::from_millis(800));
    assert_eq!(lab.audit_events("grant").len(), 3, "{:?}", lab.audit_lines());
    assert!(!lab.can_connect(Host::Client, SERVER, 8080, 500));
}
