//! Drop-in for knockd 0.8 (issue 3): knockd.conf doors with their commands, tested against
//! Debian's real `knock` and `knockd` in both directions (unpacked under target/peers/ by
//! scripts/setup.sh, not installed: see `lab::peer`).

use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::lab::{bin, peer, Host, Lab, SERVER};
use crate::require_root;

/// The server's own firewall, as a knockd user has it: 22 dropped unless a rule accepts it.
fn base_firewall(lab: &Lab) {
    for rule in [
        "-A INPUT -p tcp --dport 22 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        "-A INPUT -p tcp --dport 22 -j DROP",
    ] {
        let args: Vec<&str> = rule.split(' ').collect();
        assert!(lab.exec(Host::Server, "iptables", &args).status.success(), "iptables {rule}");
    }
}

const OPENCLOSE: &str = "[options]
\tUseSyslog

[opencloseSSH]
\tsequence      = 7000,8000:udp,9000
\tseq_timeout   = 5
\ttcpflags      = syn
\tstart_command = iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\tcmd_timeout   = 3
\tstop_command  = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

fn debian_knock(lab: &Lab, host: Host, ports: &[&str]) {
    let mut args = vec!["-d", "50", SERVER];
    args.extend_from_slice(ports);
    let o = lab.exec(host, peer("usr/bin/knock"), &args);
    assert!(o.status.success(), "Debian's knock failed: {o:?}");
}

#[test]
fn debian_knock_opens_our_daemon_on_a_classic_config_for_cmd_timeout() {
    require_root();
    let mut lab = Lab::legacy(OPENCLOSE);
    base_firewall(&lab);
    lab.start_daemon();
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    debian_knock(&lab, Host::Client, &["7000", "8000:udp", "9000"]);
    let opened = Instant::now();
    lab.wait_log("door opened", Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)), "{}", lab.log());
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500), "only the knocking address");
    // cmd_timeout later the stop command has closed it again.
    sleep(Duration::from_millis(3600).saturating_sub(opened.elapsed()));
    lab.wait_closed(Host::Client, Duration::from_secs(3));
    // A static sequence is replayable, as in knockd, and the daemon said so when it started.
    assert!(lab.log().contains("static sequence: anyone who sees it once can replay it"));
}

#[test]
fn our_knock_opens_debians_knockd() {
    require_root();
    let mut lab = Lab::legacy(OPENCLOSE);
    base_firewall(&lab);
    lab.start_real_knockd();
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    let o = lab.knock(Host::Client, &["-v", "-d", "50", SERVER, "7000", "8000:udp", "9000"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches("hitting").count(), 3, "-v prints each knock");
    lab.wait_log("OPEN SESAME", Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)), "{}", lab.log());
    assert!(!lab.can_connect(Host::Outsider, SERVER, 22, 500));
}

/// The classic open/close pair: knocking the reverse sequence shuts the door again.
#[test]
fn a_closing_section_shuts_the_door_again() {
    require_root();
    let conf = "[openSSH]
\tsequence    = 7000,8000,9000
\tseq_timeout = 5
\ttcpflags    = syn
\tcommand     = iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT

[closeSSH]
\tsequence    = 9000,8000,7000
\tseq_timeout = 5
\ttcpflags    = syn
\tcommand     = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";
    let mut lab = Lab::legacy(conf);
    base_firewall(&lab);
    lab.start_daemon();
    debian_knock(&lab, Host::Client, &["7000", "8000", "9000"]);
    lab.wait_log("door opened", Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)));
    debian_knock(&lab, Host::Client, &["9000", "8000", "7000"]);
    lab.wait_log_count("door opened", 2, Duration::from_secs(3));
    lab.wait_closed(Host::Client, Duration::from_secs(3));
}

const ONE_TIME: &str = "[opencloseSSH]
\tone_time_sequences = sequences.txt
\tseq_timeout        = 5
\ttcpflags           = syn
\tstart_command      = iptables -I INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
\tcmd_timeout        = 2
\tstop_command       = iptables -D INPUT -s %IP% -p tcp --dport 22 -j ACCEPT
";

/// Writes a one-time sequences file as an admin keeps it: private (our daemon refuses one that
/// others can read, as it refuses such a key file).
fn write_one_time_file(lab: &Lab, text: &str) {
    let path = lab.dir.join("sequences.txt");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// Runs the one-time sequences story against a daemon and returns the file afterwards.
fn one_time_story(real_knockd: bool) -> String {
    let mut lab = Lab::legacy(ONE_TIME);
    let seqs = " 7001,8001,9001\n 7002,8002:udp,9002\n 7003,8003,9003\n";
    write_one_time_file(&lab, seqs);
    base_firewall(&lab);
    if real_knockd {
        // knockd reads the file relative to its working directory, which is the lab's.
        lab.start_real_knockd();
    } else {
        lab.start_daemon();
    }
    let opened = if real_knockd { "OPEN SESAME" } else { "door opened" };
    debian_knock(&lab, Host::Client, &["7001", "8001", "9001"]);
    lab.wait_log(opened, Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)), "line 1 opens: {}", lab.log());
    lab.wait_closed(Host::Client, Duration::from_secs(5));
    // The used line never opens again.
    debian_knock(&lab, Host::Client, &["7001", "8001", "9001"]);
    sleep(Duration::from_millis(800));
    assert_eq!(lab.log().matches(opened).count(), 1, "a used line opened again: {}", lab.log());
    assert!(!lab.can_connect(Host::Client, SERVER, 22, 500));
    // The next line does.
    debian_knock(&lab, Host::Client, &["7002", "8002:udp", "9002"]);
    lab.wait_log_count(opened, 2, Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)));
    fs::read_to_string(lab.dir.join("sequences.txt")).unwrap()
}

#[test]
fn one_time_sequences_behave_as_with_knockd() {
    require_root();
    let ours = one_time_story(false);
    let theirs = one_time_story(true);
    assert_eq!(ours, "#7001,8001,9001\n#7002,8002:udp,9002\n 7003,8003,9003\n");
    assert_eq!(ours, theirs, "the sequence file must end the same with our daemon as with knockd");
}

/// knockd's one-time file is its own ledger (used lines start with `#`). A copy restored with
/// fewer marks (a VM snapshot) would make used lines open again: the audit log's record of the
/// used lines catches it, the door stays refused until `knockd ledger recover` marks them, and
/// the other door keeps working (issue 9).
#[test]
fn a_one_time_file_restored_with_fewer_marks_is_refused_until_ledger_recover() {
    require_root();
    let conf = format!("{ONE_TIME}\n[ping]\n\tsequence = 6001,6002,6003\n\tcommand = true\n");
    let mut lab = Lab::legacy(&conf);
    let seqs = " 7001,8001,9001\n 7002,8002,9002\n 7003,8003,9003\n";
    write_one_time_file(&lab, seqs);
    base_firewall(&lab);
    lab.start_daemon();
    debian_knock(&lab, Host::Client, &["7001", "8001", "9001"]);
    lab.wait_log("door opened", Duration::from_secs(3));
    let grant = lab.audit_events("grant");
    assert!(grant.len() == 1 && grant[0].contains("\"key\":\"knockd-"), "{grant:?}");
    lab.stop_daemon("TERM");
    write_one_time_file(&lab, seqs); // the snapshot, from before line 1 was used
    lab.start_daemon();

    lab.wait_log("door opencloseSSH refused", Duration::from_secs(2));
    let log = lab.log();
    let line = log.lines().find(|l| l.contains("door opencloseSSH refused")).unwrap();
    assert!(
        line.contains("sequences.txt was rolled back")
            && line.contains("records line 1 as used")
            && line.contains("`knockd ledger recover --door opencloseSSH`"),
        "{line}"
    );
    lab.wait_closed(Host::Client, Duration::from_secs(5));
    debian_knock(&lab, Host::Client, &["7001", "8001", "9001"]);
    sleep(Duration::from_millis(800));
    assert_eq!(lab.log().matches("door opened").count(), 1, "a used line opened again: {}", lab.log());
    debian_knock(&lab, Host::Client, &["6001", "6002", "6003"]);
    lab.wait_log_count("door opened", 2, Duration::from_secs(3));

    let recover = ["-c", "knockd.conf", "--state-dir", "state", "ledger", "recover", "--door", "opencloseSSH"];
    let o = lab.exec(Host::Server, bin("knockd"), &recover);
    assert!(!o.status.success(), "recover ran beside the daemon, which rewrites the file: {o:?}");
    lab.stop_daemon("TERM");
    let o = lab.exec(Host::Server, bin("knockd"), &recover);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(fs::read_to_string(lab.dir.join("sequences.txt")).unwrap(), seqs.replacen(' ', "#", 1));
    assert_eq!(lab.audit_events("ledger-recover").len(), 1);
    lab.start_daemon();
    assert_eq!(lab.log().matches("was rolled back").count(), 1, "{}", lab.log());
    debian_knock(&lab, Host::Client, &["7001", "8001", "9001"]);
    sleep(Duration::from_millis(800));
    assert_eq!(lab.log().matches("door opened").count(), 2, "line 1 stays used: {}", lab.log());
    debian_knock(&lab, Host::Client, &["7002", "8002", "9002"]);
    lab.wait_log_count("door opened", 3, Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)), "line 2 opens");
}

#[test]
fn pending_stop_commands_survive_a_crash() {
    require_root();
    let mut lab = Lab::legacy(OPENCLOSE);
    base_firewall(&lab);
    lab.start_daemon();
    debian_knock(&lab, Host::Client, &["7000", "8000:udp", "9000"]);
    lab.wait_log("door opened", Duration::from_secs(3));
    assert!(lab.opens_within(Host::Client, 22, Duration::from_secs(3)));
    lab.stop_daemon("KILL");
    sleep(Duration::from_millis(3500)); // the stop is overdue now
    assert!(
        lab.opens_within(Host::Client, 22, Duration::from_secs(3)),
        "nobody ran the stop while the daemon was down"
    );
    lab.start_daemon();
    lab.wait_closed(Host::Client, Duration::from_secs(3));
}

#[test]
fn knockd_flags_daemonize_with_pid_and_log_files() {
    require_root();
    let lab = Lab::legacy(OPENCLOSE);
    base_firewall(&lab);
    let o = lab.exec(
        Host::Server,
        bin("knockd"),
        &["-c", "knockd.conf", "-i", "br0", "--state-dir", "state", "-d", "-p", "knockd.pid", "-g", "knockd.log", "-l"],
    );
    assert!(o.status.success(), "{o:?}");
    let pid_path = lab.dir.join("knockd.pid");
    let start = Instant::now();
    while !pid_path.exists()
        || !fs::read_to_string(lab.dir.join("knockd.log")).unwrap_or_default().contains("knockd started")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "the daemon did not start in the background");
        sleep(Duration::from_millis(50));
    }
    let pid = fs::read_to_string(&pid_path).unwrap().trim().to_string();
    debian_knock(&lab, Host::Client, &["7000", "8000:udp", "9000"]);
    let opened = || fs::read_to_string(lab.dir.join("knockd.log")).unwrap_or_default().contains("door opened");
    let start = Instant::now();
    while !opened() {
        assert!(start.elapsed() < Duration::from_secs(5), "no knock in the log file");
        sleep(Duration::from_millis(50));
    }
    let log = fs::read_to_string(lab.dir.join("knockd.log")).unwrap();
    assert!(log.contains("-l (DNS lookups) is accepted but ignored"), "{log}");
    assert!(lab.exec(Host::Server, "kill", &[&pid]).status.success());
    let start = Instant::now();
    while pid_path.exists() {
        assert!(start.elapsed() < Duration::from_secs(5), "SIGTERM did not stop the daemon (pid file stays)");
        sleep(Duration::from_millis(50));
    }
}
