//! Recovery paths: never locked out, never open by accident (issue 6, DESIGN "Recovery").

use std::process::Output;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::lab::{bin, Host, Lab, OUTSIDER, SERVER, SERVER6};
use crate::{hotp_door, require_root};

const OUTSIDER6: &str = "2001:db8::3";

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Door `ssh` (22) always allows the outsider's addresses (.3, ::3); door `web` (8080) does not.
fn allow_outsider_doors() -> String {
    let ssh = hotp_door("ssh", "22/tcp", "always_allow = [\"198.18.0.3/32\", \"2001:db8::3\"]");
    let web = hotp_door("web", "8080/tcp", "knock_ports = \"43000-43999\"");
    format!("{ssh}\n{web}")
}

#[test]
fn always_allow_passes_without_a_knock_even_with_the_daemon_killed() {
    require_root();
    let mut lab = Lab::new(&allow_outsider_doors());
    lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.add_client("web", "alice", SERVER, Host::Client);
    lab.start_daemon();
    let set = lab.exec(Host::Server, "nft", &["list", "set", "inet", "knockd", "allow4"]);
    assert!(out(&set).contains("198.18.0.3 . tcp . 22"), "{}", out(&set));

    let check = |lab: &Lab, when: &str| {
        assert!(lab.can_connect(Host::Outsider, SERVER, 22, 500), "{when}: the allowed outsider must reach 22");
        assert!(lab.can_connect(Host::Outsider, SERVER6, 22, 500), "{when}: ... over IPv6 too");
        assert!(
            !lab.can_connect(Host::Outsider, SERVER, 8080, 500),
            "{when}: only the ports of the door that allows it"
        );
        assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "{when}: a source not allowed is dropped");
        assert!(!lab.can_connect(Host::Client, SERVER6, 22, 500), "{when}: ... over IPv6 too");
    };
    check(&lab, "daemon running");
    lab.stop_daemon("KILL");
    check(&lab, "daemon killed");
}

/// `knockd grant ARGS` run at the server's console (inside its namespace).
fn console_grant(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["-c", "knockd.toml", "grant"];
    all.extend_from_slice(args);
    lab.exec(Host::Server, bin("knockd"), &all)
}

#[test]
fn a_console_grant_is_audited_and_expires_by_itself_with_or_without_the_daemon() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    lab.add_client("ssh", "alice", SERVER, Host::Client);
    lab.start_daemon();
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));

    let o = console_grant(&lab, &[OUTSIDER, "--door", "ssh", "--for", "3s"]);
    let granted = Instant::now();
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("granted 198.18.0.3 access to 22/tcp of door ssh for 3s"), "{}", out(&o));
    assert!(lab.can_connect(Host::Outsider, SERVER, 22, 500), "the console grant opens 22");
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500), "for that address only");
    let audit = lab.audit_events("manual-grant");
    assert!(
        audit.len() == 1
            && audit[0].contains("\"source\":\"198.18.0.3\"")
            && audit[0].contains("\"door\":\"ssh\"")
            && audit[0].contains("\"open_for_ms\":3000")
            && audit[0].contains("\"operator\""),
        "{audit:?}"
    );
    sleep(Duration::from_millis(3300).saturating_sub(granted.elapsed()));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "the kernel timeout ends the grant");

    // With the daemon dead (its table stays in the kernel), a grant over IPv6.
    lab.stop_daemon("KILL");
    let o = console_grant(&lab, &[OUTSIDER6, "--door", "ssh", "--for", "10s"]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(lab.can_connect(Host::Outsider, SERVER6, 22, 500));
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "IPv6 only");

    // Refusals say why: unknown door, absurd duration.
    let o = console_grant(&lab, &[OUTSIDER, "--door", "web", "--for", "1m"]);
    assert!(!o.status.success() && out(&o).contains("no door `web`"), "{}", out(&o));
    let o = console_grant(&lab, &[OUTSIDER, "--door", "ssh", "--for", "30d"]);
    assert!(!o.status.success() && out(&o).contains("--for"), "{}", out(&o));
    assert_eq!(lab.audit_events("manual-grant").len(), 2);
}
