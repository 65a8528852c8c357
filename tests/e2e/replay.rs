//! `knockd replay` on a real capture (issue 12, target 5): tcpdump in the server's namespace
//! records a real `knock` opening the real daemon, the outsider re-sending those packets byte
//! for byte, and a spoofed source guessing; the replay of the file, beside the running daemon,
//! reports each, per the ledger as it was before the knock (a copy) and as it is now.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::lab::{bin, Host, Lab, CLIENT, SERVER};
use crate::{hotp_door, require_root};

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.push((path.display().to_string(), fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// `knockd replay --pcap FILE --json EXTRA` in the lab's directory, parsed.
fn replay(lab: &Lab, pcap: &str, extra: &[&str]) -> Value {
    let mut args = vec!["replay", "--pcap", pcap, "--json", "--top", "3"];
    args.extend_from_slice(extra);
    let text = lab.knockd(&args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

/// How many packets of `all.pcap` match `filter`, as `tcpdump -r` counts them.
fn in_file(lab: &Lab, filter: &str) -> u64 {
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-nr", "all.pcap"]).current_dir(&lab.dir);
    if !filter.is_empty() {
        cmd.arg(filter);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count() as u64
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.as_array().unwrap().iter().map(|f| f[key].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn a_real_capture_replayed_shows_the_opening_the_byte_exact_replay_and_the_guessing() {
    require_root();
    let mut lab = Lab::new(&hotp_door("ssh", "22/tcp", ""));
    let profile = lab.add_client("ssh", "alice", SERVER, Host::Client);
    // The state as it was before the knock, for the replay to judge by.
    let copied = Command::new("cp").args(["-a", "state", "state-before"]).current_dir(&lab.dir).status().unwrap();
    assert!(copied.success());
    lab.start_daemon();
    let knocks = "tcp dst portrange 40000-42047 and dst host 198.18.0.1";
    let all = lab.capture_knocks("all.pcap", knocks);
    let client_only = lab.capture_knocks("client.pcap", &format!("{knocks} and src host {CLIENT}"));

    let o = lab.knock(Host::Client, &["--profile", &profile, "--wait", "--wait-timeout", "1", "--attempts", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    lab.interrupt(client_only);
    lab.wait_background(client_only, Duration::from_secs(3));
    // The client's packets again, byte for byte (spoofing the client), from the outsider.
    assert_eq!(lab.replay(Host::Outsider, "client.pcap", &[]), 8);
    lab.wait_log("replayed knock sequence", Duration::from_secs(3));
    // One spoofed address guessing in the knock range: 300 SYNs to random ports of it.
    let guesser = "198.19.77.7";
    let flood = lab.flood(Host::Outsider, &format!("{guesser}/32"), &["--ports", "40000-42047"], 300, 1);
    let flooded = lab.wait_background(flood, Duration::from_secs(10));
    let sent: u64 = String::from_utf8_lossy(&flooded.stdout).split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(sent, 300, "{}", String::from_utf8_lossy(&flooded.stdout));
    std::thread::sleep(Duration::from_millis(500));
    lab.interrupt(all);
    lab.wait_background(all, Duration::from_secs(3));
    let before = snapshot(&lab.dir.join("state-before"));
    let live = snapshot(&lab.dir.join("state"));

    // Judged by the state before the knock: the knock opened, its copy is a replay of it.
    let doc = replay(&lab, "all.pcap", &["--state-dir", "state-before"]);
    let opened = &doc["opened"];
    assert_eq!(opened.as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(
        (opened[0]["door"].as_str(), opened[0]["client"].as_str(), opened[0]["source"].as_str()),
        (Some("ssh"), Some("alice"), Some(CLIENT))
    );
    assert_eq!(opened[0]["counter"], 0);
    let replays = &doc["replays"];
    assert_eq!(strs(replays, "used"), ["capture"], "{doc:#}");
    assert_eq!(strs(replays, "source"), [CLIENT], "the byte-exact copy carries the client's source");
    assert_eq!(replays[0]["first_time_ms"], opened[0]["time_ms"], "it names the first use");
    assert!(replays[0]["time_ms"].as_u64() > opened[0]["time_ms"].as_u64());
    // The guesser tops the table: each of its packets the file holds (tcpdump may drop some on
    // a busy machine: counted by tcpdump itself), every one in the range.
    let held = in_file(&lab, &format!("src host {guesser}"));
    assert!(held >= 100, "the capture holds {held} of the guesser's {sent} packets");
    let top = &doc["sources"]["top"][0];
    assert_eq!(top["source"], guesser, "{doc:#}");
    assert_eq!(top["packets"], held);
    assert_eq!(top["range_hits"], held);
    assert_eq!(doc["sources"]["total"]["sources"], 2, "the client and the guesser");
    assert_eq!(doc["sources"]["total"]["traffic"]["packets"], held + 16);
    assert_eq!(doc["capture"]["frames"], in_file(&lab, ""));

    // Judged by the ledger as it is now (the daemon running beside): both uses were replays.
    let now = replay(&lab, "all.pcap", &[]);
    assert!(now["opened"].as_array().unwrap().is_empty(), "{now:#}");
    assert_eq!(strs(&now["replays"], "used"), ["ledger", "ledger"], "{now:#}");

    // Nothing was written, in the copy or under the daemon; the daemon granted once.
    assert_eq!(snapshot(&lab.dir.join("state-before")), before);
    assert_eq!(snapshot(&lab.dir.join("state")), live);
    assert_eq!(lab.audit_events("grant").len(), 1);

    // The text report says the same, folded to the top rows.
    let text = lab.knockd(&["replay", "--pcap", "all.pcap", "--state-dir", "state-before", "--top", "1"]);
    assert!(text.contains("would have opened: 1\n"), "{text}");
    assert!(text.contains(&format!("  {guesser} ")), "{text}");
    assert!(text.contains("1 other sources"), "{text}");
    // A file that is no capture: a clear error naming it, exit 65.
    fs::write(lab.dir.join("notes.txt"), "not a capture").unwrap();
    let out = Command::new(bin("knockd"))
        .args(["-c", "knockd.toml", "replay", "--pcap", "notes.txt"])
        .current_dir(&lab.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt: not a pcap file"), "{out:?}");
}
