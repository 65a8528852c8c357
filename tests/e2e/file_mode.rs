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
    // Two comment lines head the file, so sequences 0 and 1 are lines 3 and 4.
    assert!(
        grants[0].contains("\"sequence\":\"line 3\"") && grants[1].contains("\"sequence\":\"line 4\""),
        "{grants:?}"
    );
}
