//! What systemd sees of the daemon (issue 10; docs/OPERATIONS.md, "The package"): `Type=notify`
//! readiness only once the capture and the table are up, `RELOADING=1`/`READY=1` around SIGHUP,
//! `STOPPING=1` on SIGTERM; and, when standard error is the journal, syslog priorities on every
//! line and no timestamps of its own. The notification socket is one this test binds, as
//! systemd binds its own.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::lab::{Host, Lab, SERVER};
use crate::{hotp_door, require_root};

/// The next notification, or a panic naming what was expected.
fn notification(socket: &UnixDatagram, expected: &str, lab: &Lab) -> String {
    let mut buf = [0u8; 1024];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification ({expected} expected): {e}\n{}", lab.log()),
    }
}

#[test]
fn ready_once_capture_and_table_are_up_then_reloading_and_stopping_with_journal_priorities() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    // A second client whose key others can read: refused at start, an error in the journal.
    lab.add_client("ssh", "bob", SERVER, Host::Outsider);
    let bob = lab.dir.join("keys/ssh/bob.key");
    std::fs::set_permissions(&bob, std::fs::Permissions::from_mode(0o644)).unwrap();

    let path = lab.dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Standard error is `daemon.log`: JOURNAL_STREAM names that very file, as systemd names
    // the journal's stream.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(lab.dir.join("daemon.log")).unwrap();
    let meta = log.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    lab.spawn_daemon(&[("NOTIFY_SOCKET", path.to_str().unwrap()), ("JOURNAL_STREAM", &stream)]);

    let ready = notification(&socket, "READY=1", &lab);
    assert_eq!(ready, "READY=1\nSTATUS=capturing on br0; doors ssh", "the first notification");
    // Ready means ready: the table is installed and the capture runs, so a knock sent this
    // instant (no settling time) opens.
    let table = lab.exec(Host::Server, "nft", &["list", "table", "inet", "knockd"]);
    assert!(table.status.success(), "READY=1 before the table: {table:?}");
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 300), "22 is dropped");
    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "the first knock after READY=1 did not open: {o:?}\n{}", lab.log());

    lab.signal_daemon("HUP");
    assert!(notification(&socket, "RELOADING=1", &lab).starts_with("RELOADING=1\n"));
    assert!(notification(&socket, "READY=1 after the reload", &lab).starts_with("READY=1\n"));

    let status = lab.stop_daemon("TERM");
    assert!(notification(&socket, "STOPPING=1", &lab).starts_with("STOPPING=1\n"));
    assert!(status.success(), "{status:?}");

    // Every line carries its priority, none its own timestamp: journald adds the time.
    let text = lab.log();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        let rest = line.strip_prefix('<').and_then(|l| l.get(2..)).unwrap_or_else(|| panic!("no priority: {line}"));
        assert!(!rest.starts_with(|c: char| c.is_ascii_digit()), "a timestamp of its own: {line}");
    }
    let find = |needle: &str| *lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}:\n{text}"));
    assert!(find("knockd started").starts_with("<6>knockd started"));
    assert!(find("door opened").starts_with("<6>door opened"));
    // Refusals at warning or higher.
    assert!(find("client bob refused").starts_with("<3>"), "{text}");
}
