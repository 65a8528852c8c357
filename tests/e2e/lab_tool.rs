//! End-to-end check of knock-lab between two network namespaces joined by a
//! veth pair (needs root, `ip` and `tcpdump`): crafted
//! knocks arrive in order with the right ports, protocols, source and valid
//! checksums; a replay with `--src` arrives rewritten with valid checksums; a
//! plain replay arrives byte-exact; a capture holding a forbidden address is
//! refused; a small flood stays inside its source prefix and port range.
//! Every wait is bounded.

use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use knock_test_support::netns::{just_outside_the_test_ranges, unique_tag, Netns};
use knock_test_support::require_root;
use knock_test_support::run::{wait_bounded, Reaped};

use crate::lab::bin;

const WAIT: Duration = Duration::from_secs(5);
const A_IP: &str = "198.18.88.1";
const B_IP: &str = "198.18.88.2";

/// Runs a command to completion within `WAIT`, killing it otherwise; returns
/// (success, stdout, stderr).
fn run_bounded(cmd: &mut Command, dir: &Path, tag: &str) -> (bool, String, String) {
    let out_path = dir.join(format!("{tag}.out"));
    let err_path = dir.join(format!("{tag}.err"));
    let mut child = cmd
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let ok = wait_bounded(&mut child, WAIT).is_some_and(|s| s.success());
    let out = fs::read_to_string(&out_path).unwrap_or_default();
    let err = fs::read_to_string(&err_path).unwrap_or_default();
    (ok, out, err)
}

/// Two namespaces joined by a veth pair, deleted (with the scratch
/// directory) on drop, also when the test fails.
struct Lab {
    ns_a: Netns,
    ns_b: Netns,
    veth_a: String,
    veth_b: String,
    mac_a: String,
    mac_b: String,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let tag = unique_tag();
        let dir = std::env::temp_dir().join(format!("klab-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (ns_a, ns_b) = (Netns::create(format!("klab-{tag}-a")), Netns::create(format!("klab-{tag}-b")));
        let (veth_a, veth_b) = ("kla".to_string(), "klb".to_string());
        ns_a.veth(&veth_a, &ns_b, &veth_b);
        ns_a.addr(&veth_a, "198.18.88.1/24");
        ns_b.addr(&veth_b, "198.18.88.2/24");
        let (mac_a, mac_b) = (mac_of(ns_a.name(), &veth_a), mac_of(ns_b.name(), &veth_b));
        Lab { ns_a, ns_b, veth_a, veth_b, mac_a, mac_b, dir }
    }

    /// `ip netns exec A knock-lab ARGS`, bounded.
    fn lab_a(&self, args: &[&str], tag: &str) -> (bool, String, String) {
        run_bounded(self.ns_a.command(bin("knock-lab")).args(args), &self.dir, tag)
    }

    /// Starts tcpdump in B on its veth, incoming only, stopping after
    /// `count` packets; returns once it is listening (killed when dropped).
    fn capture(&self, count: usize, file: &Path) -> Reaped {
        let err_path = file.with_extension("tcpdump.err");
        let mut child = self
            .ns_b
            .command("tcpdump")
            .args(["-i", &self.veth_b])
            .args(["--immediate-mode", "-B", "8192", "-Q", "in", "-n", "-U", "-c", &count.to_string(), "-w"])
            .arg(file)
            .arg(format!("(tcp or udp) and dst host {B_IP}"))
            .stdout(Stdio::null())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .expect("cannot start tcpdump");
        let start = Instant::now();
        loop {
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            if err.contains("listening on") {
                return Reaped(child);
            }
            if start.elapsed() >= WAIT || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tcpdump did not start listening: {err}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The namespaces go with their fields.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out =
        Command::new("ip").args(["-n", ns, "-j", "link", "show", "dev", dev]).output().expect("cannot run ip -j link");
    let json = String::from_utf8_lossy(&out.stdout);
    let key = "\"address\":\"";
    let start = json.find(key).expect("no address in ip -j link output") + key.len();
    let end = start + json[start..].find('"').unwrap();
    json[start..end].to_string()
}

/// Waits (bounded) for a capture to end and returns `tcpdump -vv -r` of the
/// file, one string per packet.
fn finish_capture(mut capture: Reaped, file: &Path, expected: usize) -> Vec<String> {
    let status = wait_bounded(&mut capture.0, WAIT);
    let mut read = Command::new("tcpdump");
    read.args(["-vv", "-n", "-r"]).arg(file);
    let (_, text, err) = run_bounded(&mut read, file.parent().unwrap(), "decode");
    let mut packets: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = packets.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else if !line.is_empty() {
            packets.push(line.to_string());
        }
    }
    assert!(status.is_some(), "capture of {expected} packets timed out; got: {packets:#?} {err}");
    assert_eq!(packets.len(), expected, "{packets:#?}");
    for p in &packets {
        assert!(!p.contains("incorrect") && !p.contains("bad cksum"), "bad checksum: {p}");
    }
    packets
}

fn check_knocks(packets: &[String], src: &str, knocks: &[(u16, &str)]) {
    for (p, (port, proto)) in packets.iter().zip(knocks) {
        let dst = format!("> {B_IP}.{port}: ");
        assert!(p.contains(&format!(" {src}.")) && p.contains(&dst), "{p}");
        match *proto {
            "tcp" => {
                assert!(p.contains("proto TCP (6)") && p.contains("Flags [S],"), "{p}");
                assert!(p.contains("(correct)"), "{p}");
            }
            _ => assert!(p.contains("proto UDP (17)") && p.contains("[udp sum ok]"), "{p}"),
        }
    }
}

fn frames(file: &Path) -> Vec<Vec<u8>> {
    let mut cap = pcap::Capture::from_file(file).unwrap();
    let mut out = Vec::new();
    while let Ok(p) = cap.next_packet() {
        out.push(p.data.to_vec());
        assert!(out.len() < 10_000);
    }
    out
}

#[test]
fn send_replay_and_flood_between_namespaces() {
    require_root();
    let lab = Lab::new();
    let knocks = [(40001, "tcp"), (40002, "udp"), (40003, "tcp")];
    let send_args = |src: &str| {
        vec![
            "send".to_string(),
            "--iface".into(),
            lab.veth_a.clone(),
            "--src".into(),
            src.into(),
            "--dst".into(),
            B_IP.into(),
            "--src-mac".into(),
            lab.mac_a.clone(),
            "--dst-mac".into(),
            lab.mac_b.clone(),
            "--knocks".into(),
            "40001:tcp,40002:udp,40003:tcp".into(),
            "--max-seconds".into(),
            "4".into(),
        ]
    };

    // 1. Crafted knocks.
    let sent_file = lab.dir.join("sent.pcap");
    let cap = lab.capture(3, &sent_file);
    let args = send_args(A_IP);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = lab.lab_a(&args, "send");
    assert!(ok, "send failed: {out}{err}");
    assert!(out.contains("sent 3 packets"), "{out}");
    let packets = finish_capture(cap, &sent_file, 3);
    check_knocks(&packets, A_IP, &knocks);

    // 2. Replay with a new source address.
    let rewritten_file = lab.dir.join("rewritten.pcap");
    let cap = lab.capture(3, &rewritten_file);
    let sent_path = sent_file.to_str().unwrap();
    let (ok, out, err) =
        lab.lab_a(&["replay", "--pcap", sent_path, "--iface", &lab.veth_a, "--src", "198.18.88.3"], "replay-src");
    assert!(ok && out.contains("sent 3 frames"), "replay failed: {out}{err}");
    let packets = finish_capture(cap, &rewritten_file, 3);
    check_knocks(&packets, "198.18.88.3", &knocks);
    let (orig, rewritten) = (frames(&sent_file), frames(&rewritten_file));
    for (o, r) in orig.iter().zip(&rewritten) {
        assert_eq!(&r[26..30], &Ipv4Addr::new(198, 18, 88, 3).octets());
        assert_eq!(o[34..38], r[34..38], "ports must be kept");
    }

    // 3. Plain replay is byte-exact.
    let exact_file = lab.dir.join("exact.pcap");
    let cap = lab.capture(3, &exact_file);
    let (ok, out, err) = lab.lab_a(&["replay", "--pcap", sent_path, "--iface", &lab.veth_a], "replay-exact");
    assert!(ok, "replay failed: {out}{err}");
    finish_capture(cap, &exact_file, 3);
    assert_eq!(frames(&exact_file), orig);

    // 4. A capture holding a forbidden source is refused as a whole.
    let mut bytes = fs::read(&sent_file).unwrap();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "expected a little-endian pcap");
    let src_at = 24 + 16 + 14 + 12; // file header, record header, Ethernet, IPv4 src
    let [below_v4, above_v4, ..] = just_outside_the_test_ranges();
    let IpAddr::V4(forbidden) = below_v4 else { unreachable!("the first is IPv4") };
    bytes[src_at..src_at + 4].copy_from_slice(&forbidden.octets());
    let bad_file = lab.dir.join("forbidden.pcap");
    fs::write(&bad_file, bytes).unwrap();
    let (ok, out, err) =
        lab.lab_a(&["replay", "--pcap", bad_file.to_str().unwrap(), "--iface", &lab.veth_a], "replay-bad");
    assert!(!ok && err.contains(&format!("refusing source address {forbidden}")), "{out}{err}");
    assert!(!out.contains("sent"), "{out}");

    // 5. A forbidden spoofed source for send is refused too.
    let args = send_args(&above_v4.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = lab.lab_a(&args, "send-bad");
    assert!(!ok && err.contains(&format!("refusing source address {above_v4}")), "{err}");

    // 6. A small seeded flood stays in its prefix and port range.
    let flood_file = lab.dir.join("flood.pcap");
    let cap = lab.capture(50, &flood_file);
    let (ok, out, err) = lab.lab_a(
        &[
            "flood",
            "--iface",
            &lab.veth_a,
            "--dst",
            B_IP,
            "--src-mac",
            &lab.mac_a,
            "--dst-mac",
            &lab.mac_b,
            "--ports",
            "41000-41009",
            "--count",
            "50",
            "--max-seconds",
            "4",
            "--sources",
            "198.18.64.0/18",
            "--seed",
            "1",
        ],
        "flood",
    );
    assert!(ok, "flood failed: {out}{err}");
    assert!(out.trim_end().lines().last().unwrap().starts_with("sent 50 packets in "), "{out}");
    finish_capture(cap, &flood_file, 50);
    for f in frames(&flood_file) {
        assert!(f[26] == 198 && f[27] == 18 && (64..128).contains(&f[28]), "{f:?}");
        let port = u16::from_be_bytes([f[36], f[37]]);
        assert!((41000..=41009).contains(&port), "{port}");
        assert_eq!(f[47], 0x02, "SYN");
    }
}

/// Packet counters of an nftables ingress chain on B's veth: (flood packets
/// inside the expected source prefix, port range and destination; every TCP/UDP packet).
fn ingress_counters(lab: &Lab) -> (u64, u64) {
    let out = lab.ns_b.command("nft").args(["list", "table", "netdev", "klab"]).output().expect("cannot run nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u64> = text
        .split("counter packets ")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "{text}");
    (counts[0] + counts[1], counts[2])
}

#[test]
fn flood_puts_exactly_count_packets_on_the_wire_from_its_prefix() {
    require_root();
    let lab = Lab::new();
    // Counted where the frames arrive, before any routing: the v4 and v6 floods' packets with
    // the expected source prefix, destination and ports, and every TCP/UDP packet at all.
    let rules = format!(
        "table netdev klab {{\n chain in {{\n type filter hook ingress device \"{}\" priority 0\n\
         ip saddr 198.19.64.0/18 ip daddr {B_IP} tcp dport 41000-41009 counter\n\
         ip6 saddr 2001:db8:77::/48 ip6 daddr 2001:db8:88::2 udp dport 41000-41009 counter\n\
         meta l4proto {{ tcp, udp }} counter\n }}\n}}\n",
        lab.veth_b
    );
    let out = lab.ns_b.command("nft").args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().and_then(
        |mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(rules.as_bytes())?;
            c.wait_with_output()
        },
    );
    assert!(out.as_ref().is_ok_and(|o| o.status.success()), "nft -f failed: {out:?}");

    // Counts that are not multiples of a batch; one flood at full speed, one paced. The IPv4
    // sources lie outside the veth's 198.18.88.0/24, so neither host answers any of them (a
    // spoofed 198.18.88.x source draws replies that A's own stack answers in turn).
    let floods: [(&str, &str, &str, &str, &[&str]); 2] = [
        ("20037", B_IP, "198.19.64.0/18", "tcp", &[]),
        ("5001", "2001:db8:88::2", "2001:db8:77::/48", "udp", &["--pps", "50000"]),
    ];
    let mut total = 0u64;
    for (i, (count, dst, sources, proto, extra)) in floods.into_iter().enumerate() {
        let mut args = vec![
            "flood",
            "--iface",
            &lab.veth_a,
            "--dst",
            dst,
            "--src-mac",
            &lab.mac_a,
            "--dst-mac",
            &lab.mac_b,
            "--ports",
            "41000-41009",
            "--proto",
            proto,
            "--count",
            count,
            "--max-seconds",
            "4",
            "--sources",
            sources,
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = lab.lab_a(&args, &format!("flood-count-{i}"));
        assert!(ok, "flood failed: {out}{err}");
        assert!(out.contains(&format!("sent {count} packets in ")), "{out}{err}");
        total += count.parse::<u64>().unwrap();
    }
    // Sending is synchronous on a veth: the frames have passed the ingress hook already.
    let (inside, all) = ingress_counters(&lab);
    assert_eq!(inside, total, "flood packets on the wire with the expected sources");
    assert_eq!(all, total, "TCP/UDP packets on the wire in all");

    // A pace far below a batch a second still stops at the time limit, not a batch later.
    let started = Instant::now();
    let args = [
        "flood",
        "--iface",
        &lab.veth_a,
        "--dst",
        B_IP,
        "--src-mac",
        &lab.mac_a,
        "--dst-mac",
        &lab.mac_b,
        "--ports",
        "41000-41009",
        "--count",
        "1000",
        "--max-seconds",
        "1",
        "--sources",
        "198.19.64.0/18",
        "--pps",
        "1",
    ];
    let (ok, out, err) = lab.lab_a(&args, "flood-slow");
    assert!(ok, "a slow flood did not stop by its time limit: {out}{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let sent: u64 = out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out}"));
    assert!((1..1000).contains(&sent), "{out}");
    let (inside, _) = ingress_counters(&lab);
    assert_eq!(inside, total + sent, "{out}");
}
