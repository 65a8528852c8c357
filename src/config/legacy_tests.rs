//! knockd.conf parsing (the man page's examples, knockd's spellings, located errors, fuzzing)
//! and `migrate` (its output parses back).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::knock::{Knock, Proto};
use crate::sequence::Mode;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knockd").join(name)
}

fn load(name: &str) -> Config {
    Config::load(&fixture(name)).unwrap_or_else(|e| panic!("{e}"))
}

fn conf(text: &str) -> Result<Config, ConfigError> {
    parse_knockd_conf(Path::new("/etc/knockd.conf"), text)
}

fn commands(d: &Door) -> &CommandAction {
    match &d.action {
        Action::Commands(c) => c,
        Action::Firewall => panic!("door {} has no commands", d.name),
    }
}

fn legacy(d: &Door) -> &LegacyRules {
    d.legacy.as_ref().expect("a legacy door")
}

/// Line and column of an error, with the error in the failure message.
fn at(r: Result<Config, ConfigError>) -> (usize, usize, String) {
    let e = r.expect_err("expected an error");
    assert!(e.to_string().starts_with("/etc/knockd.conf:"), "{e}");
    (e.line.unwrap_or(0), e.column.unwrap_or(0), e.message)
}

const MINIMAL: &str = "[openSSH]\n  sequence = 7000,8000,9000\n  command = /bin/true %IP%\n";

#[test]
fn man_page_example_1_open_and_close() {
    let c = load("example1.conf");
    assert_eq!(c.legacy_options.as_ref().unwrap().log_file.as_deref(), Some(Path::new("/var/log/knockd.log")));
    assert!(!c.legacy_options.as_ref().unwrap().use_syslog);
    assert_eq!(c.server.interfaces, ["eth0"]);
    assert_eq!(c.server.firewall, FirewallKind::None);
    assert_eq!(c.server.state_dir, Path::new("/var/lib/knockd"));
    assert_eq!(c.server.nft_table, "knockd");
    assert_eq!(c.doors.len(), 2);
    let (open, close) = (c.door("openSSH").unwrap(), c.door("closeSSH").unwrap());
    assert_eq!(open.mode, Mode::Static);
    assert_eq!(open.static_sequence, [Knock::tcp(7000), Knock::tcp(8000), Knock::tcp(9000)]);
    assert_eq!(close.static_sequence, [Knock::tcp(9000), Knock::tcp(8000), Knock::tcp(7000)]);
    for d in [open, close] {
        assert_eq!(d.seq_timeout, Duration::from_secs(10));
        assert_eq!(legacy(d).tcp_flags, TcpFlagRule { set: SYN, clear: 0 });
        assert!(legacy(d).tcp_flags_given);
        assert_eq!(legacy(d).one_time_sequences, None);
        assert_eq!((d.window, d.misses, d.length), (1, 0, 3));
        assert!(d.open.is_empty() && d.addresses.is_empty() && d.keys_dir.is_none() && d.sequence_file.is_none());
        assert!(!d.bind_source && !d.close);
        assert_eq!(d.alphabet.range().to_string(), "7000-9000");
        assert_eq!(d.alphabet.protos(), [Proto::Tcp]);
        assert_eq!(commands(d).stop, None);
        assert_eq!(commands(d).cmd_timeout, Duration::from_secs(10));
    }
    assert_eq!(commands(open).start.as_deref(), Some("/sbin/iptables -A INPUT -s %IP% --dport 22 -j ACCEPT"));
    assert_eq!(commands(close).start.as_deref(), Some("/sbin/iptables -D INPUT -s %IP% --dport 22 -j ACCEPT"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn man_page_example_2_start_stop_and_mixed_protocols() {
    let c = load("example2.conf");
    let d = c.door("opencloseSSH").unwrap();
    assert_eq!(d.static_sequence, [Knock::udp(2222), Knock::tcp(3333), Knock::udp(4444)]);
    assert_eq!(d.seq_timeout, Duration::from_secs(15));
    assert_eq!(legacy(d).tcp_flags, TcpFlagRule { set: SYN | ACK, clear: 0 });
    assert_eq!(d.alphabet.range().to_string(), "2222-4444");
    assert_eq!(d.alphabet.protos(), [Proto::Tcp, Proto::Udp]);
    let a = commands(d);
    assert_eq!(a.start.as_deref(), Some("/usr/sbin/iptables -A INPUT -s %IP% -p tcp --syn -j ACCEPT"));
    assert_eq!(a.stop.as_deref(), Some("/usr/sbin/iptables -D INPUT -s %IP% -p tcp --syn -j ACCEPT"));
    assert_eq!((a.start6.as_deref(), a.stop6.as_deref()), (None, None));
    assert_eq!(a.cmd_timeout, Duration::from_secs(5));
    assert_eq!(d.open_for, Duration::from_secs(5));
}

#[test]
fn man_page_example_3_one_time_sequences() {
    let c = load("example3.conf");
    let d = c.door("opencloseSMTP").unwrap();
    assert_eq!(d.mode, Mode::File);
    let file = Path::new("/etc/knockd/smtp_sequences");
    assert_eq!(d.sequence_file.as_deref(), Some(file));
    assert_eq!(legacy(d).one_time_sequences.as_deref(), Some(file));
    assert_eq!(legacy(d).tcp_flags, TcpFlagRule { set: FIN, clear: ACK });
    assert!(d.static_sequence.is_empty());
    assert_eq!(d.length, 0);
    assert_eq!(d.alphabet.size(), 2 * 65535);
    assert_eq!(d.seq_timeout, Duration::from_secs(15));
    assert_eq!(commands(d).cmd_timeout, Duration::from_secs(5));
    assert!(commands(d).start.as_deref().unwrap().contains("--dport 25"));
}

#[test]
fn man_page_example_4_ipv6_commands() {
    let c = load("example4.conf");
    let a = commands(c.door("opencloseSMTP").unwrap());
    assert_eq!(a.start6.as_deref(), Some("/usr/sbin/ip6tables -A INPUT -s %IP% -p tcp --dport 25 -j ACCEPT"));
    assert_eq!(a.stop6.as_deref(), Some("/usr/sbin/ip6tables -D INPUT -s %IP% -p tcp --dport 25 -j ACCEPT"));
    assert!(a.start.as_deref().unwrap().starts_with("/usr/sbin/iptables -A"));
}

#[test]
fn the_shipped_knockd_conf_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/knockd.conf"));
    let c = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = c.doors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["openSSH", "closeSSH", "opencloseSSH"]);
    let d = c.door("opencloseSSH").unwrap();
    let a = commands(d);
    assert!(a.start.as_deref().unwrap().contains("-A INPUT -s %IP% -p tcp --dport 22"));
    assert!(a.stop.as_deref().unwrap().contains("-D INPUT -s %IP% -p tcp --dport 22"));
    assert_eq!(a.cmd_timeout, Duration::from_secs(10));
    assert_eq!(legacy(d).tcp_flags, TcpFlagRule { set: SYN, clear: 0 });
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    Config::parse(Path::new("/etc/knockd/knockd.toml"), &migrate(&c).unwrap()).unwrap();
}

#[test]
fn keys_are_case_insensitive_with_knockds_aliases() {
    let c = conf(
        "[options]\n\tUSESYSLOG\n\tInterface = eth0, eth1\n\tpidfile=run/knockd.pid\n\
         [Web]\n  SEQUENCE = 1111:UDP, 2222 ,3333:Tcp\n  Timeout = 7\n  TCPFlags = SYN,!Ack\n\
         \x20 Command = /bin/open %IP%\n  Command_6 =\n  Stop_Command = /bin/close %IP%\n  Cmd_Timeout = 0\n\
         [Mail]\n  Seq_Timeout=3\n  One_Time_Sequences = seqs/mail\n  Start_Command_6 = /bin/open6 %IP%\n\
         \x20 Stop_Command_6 = /bin/close6 %IP%\n  Target = 192.0.2.7\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = c.legacy_options.as_ref().unwrap();
    assert!(o.use_syslog);
    assert_eq!(o.pid_file.as_deref(), Some(Path::new("/etc/run/knockd.pid")));
    assert_eq!(c.server.interfaces, ["eth0", "eth1"]);
    let web = c.door("Web").unwrap();
    assert_eq!(web.static_sequence, [Knock::udp(1111), Knock::tcp(2222), Knock::tcp(3333)]);
    assert_eq!(web.seq_timeout, Duration::from_secs(7));
    assert_eq!(legacy(web).tcp_flags, TcpFlagRule { set: SYN, clear: ACK });
    let a = commands(web);
    assert_eq!(a.start.as_deref(), Some("/bin/open %IP%"));
    assert_eq!(a.start6.as_deref(), Some(""), "an empty value forces doing nothing");
    assert_eq!(a.cmd_timeout, Duration::ZERO);
    let mail = c.door("Mail").unwrap();
    assert_eq!(mail.seq_timeout, Duration::from_secs(3));
    assert_eq!(mail.sequence_file.as_deref(), Some(Path::new("/etc/seqs/mail")), "relative to the config");
    assert_eq!(commands(mail).start, None);
    assert_eq!(commands(mail).start6.as_deref(), Some("/bin/open6 %IP%"));
    assert_eq!(mail.addresses, ["192.0.2.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(mail.alphabet.size(), 2 * 65535);
    assert!(!legacy(mail).tcp_flags_given);
    assert_eq!(legacy(mail).tcp_flags, TcpFlagRule::ANY);
}

#[test]
fn knockd_defaults_and_lenient_layout() {
    let c = conf("# comment\r\n\r\n[options]\r\n[a.b-c_D]\r\n  sequence=7000\r\n command = x # not a comment\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server.interfaces, [legacy::KNOCKD_INTERFACE]);
    assert_eq!(c.legacy_options, Some(LegacyOptions::default()));
    let d = c.door("a.b-c_D").unwrap();
    assert_eq!(d.seq_timeout, legacy::KNOCKD_SEQ_TIMEOUT);
    assert_eq!(commands(d).cmd_timeout, DEFAULT_CMD_TIMEOUT);
    assert_eq!(commands(d).start.as_deref(), Some("x # not a comment"));
    assert_eq!(d.static_sequence, [Knock::tcp(7000)], "knockd accepts a one-knock sequence");
    assert_eq!(d.alphabet.size(), 1);
}

#[test]
fn warnings_for_what_has_no_effect() {
    let c = conf("[a]\nsequence = 1:udp,2:udp\ntcpflags = syn\ncommand = x\ncmd_timeout = 5\nUseSyslog\n").unwrap();
    let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().any(|w| w.starts_with("/etc/knockd.conf:5:1: warning: door [a]: cmd_timeout")), "{w:?}");
    assert!(w.iter().any(|w| w.contains(":3:1: warning: door [a]: tcpflags has no effect")), "{w:?}");
    assert!(w.iter().any(|w| w.contains(":6:1: warning: UseSyslog in door [a]")), "{w:?}");
    assert!(c.legacy_options.unwrap().use_syslog);
}

#[test]
fn errors_name_line_and_column() {
    // Unknown key, with a suggestion and what is accepted.
    let (l, c, m) =
        at(conf("[options]\n  logfile = x\n[openSSH]\n  sequence = 1,2\n  seq_timout = 5\n  command = x\n"));
    assert_eq!((l, c), (5, 3), "{m}");
    assert!(
        m.contains("unknown key `seq_timout`") && m.contains("seq_timeout") && m.contains("one_time_sequences"),
        "{m}"
    );
    // Missing `=`.
    let (l, c, m) = at(conf("[openSSH]\n\tsequence 7000,8000\n"));
    assert_eq!((l, c), (2, 2), "{m}");
    assert!(m.contains("missing `=` after `sequence`"), "{m}");
    let (l, c, m) = at(conf("[openSSH]\n  open sesame\n"));
    assert_eq!((l, c), (2, 3), "{m}");
    assert!(m.contains("no `=`") && m.contains("UseSyslog"), "{m}");
    // Bad port: the column points at the knock.
    let (l, c, m) = at(conf("[openSSH]\n  sequence = 7000, 80a0,9000\n  command = x\n"));
    assert_eq!((l, c), (2, 20), "{m}");
    assert!(m.contains("80a0") && m.contains("1-65535"), "{m}");
    let (l, c, m) = at(conf("[openSSH]\nsequence = 7000,70000\n"));
    assert_eq!((l, c), (2, 17), "{m}");
    assert!(m.contains("70000"), "{m}");
    let (l, c, m) = at(conf("[openSSH]\nsequence = 7000,0\n"));
    assert_eq!((l, c), (2, 17), "{m}");
    let (l, c, m) = at(conf("[openSSH]\nsequence = 7000:icmp\n"));
    assert_eq!((l, c), (2, 17), "{m}");
    assert!(m.contains("icmp") && m.contains("tcp or udp"), "{m}");
    let (l, c, m) = at(conf("[openSSH]\nsequence = 7000,,8000\n"));
    assert_eq!((l, c), (2, 17), "{m}");
    assert!(m.contains("empty knock"), "{m}");
    // Bad flag.
    let (l, c, m) = at(conf("[openSSH]\nsequence = 1,2\ntcpflags = syn, !ak\ncommand = x\n"));
    assert_eq!((l, c), (3, 17), "{m}");
    assert!(m.contains("`!ak`") && m.contains("fin, syn, rst, psh, ack or urg"), "{m}");
    let (l, c, m) = at(conf("[openSSH]\nsequence = 1,2\ntcpflags = syn,!syn\ncommand = x\n"));
    assert_eq!((l, c), (3, 16), "{m}");
    assert!(m.contains("both required and excluded"), "{m}");
    // A section without a sequence: the error points at its header.
    let (l, c, m) = at(conf("[options]\nUseSyslog\n\n[openSSH]\n  command = x\n"));
    assert_eq!((l, c), (4, 2), "{m}");
    assert!(m.contains("[openSSH] has no sequence"), "{m}");
    // A key outside any section.
    let (l, c, m) = at(conf("# knockd\n  sequence = 1,2\n[a]\n"));
    assert_eq!((l, c), (2, 3), "{m}");
    assert!(m.contains("outside any section"), "{m}");
    // A door defined twice.
    let (l, c, m) = at(conf(&format!("{MINIMAL}\n[openSSH]\nsequence = 3,4\ncommand = y\n")));
    assert_eq!((l, c), (5, 2), "{m}");
    assert!(m.contains("defined twice (first at line 1)"), "{m}");
}

#[test]
fn more_refusals_with_reasons() {
    let cases: &[(&str, (usize, usize), &str)] = &[
        ("[open SSH]\nsequence = 1,2\ncommand = x\n", (1, 6), "%DOOR%"),
        ("[a;rm -rf]\nsequence = 1,2\ncommand = x\n", (1, 3), "A-Z, a-z, 0-9"),
        ("[]\n", (1, 2), "empty section name"),
        ("[openSSH\n", (1, 1), "`[name]`"),
        ("[[door]]\nname = \"ssh\"\n", (1, 1), "rename the file to *.toml"),
        ("[options]\nUseSyslog = yes\n", (2, 1), "takes no value"),
        ("[Options]\nLogFile = /x\n", (2, 1), "the global section is spelt [options]"),
        ("[OPTIONS]\nUseSyslog\n", (1, 2), "the global section is spelt [options]"),
        ("[options]\nsequence = 1,2\n", (2, 1), "only be used within a door section"),
        ("[a]\nlogfile = /x\n", (2, 1), "belongs in [options]"),
        (
            "[a]\nsequence = 1,2\nSEQUENCE = 3,4\n",
            (3, 1),
            "given twice in this section (first as `sequence` at line 2)",
        ),
        ("[a]\ncommand = x\nstart_command = y\nsequence = 1,2\n", (3, 1), "given twice"),
        ("[a]\nsequence = 1,2\none_time_sequences = /x\ncommand = y\n", (3, 1), "both sequence"),
        ("[a]\nsequence = 1,2\nstop_command = y\n", (1, 2), "has no command"),
        ("[a]\nsequence = 1,2\ncommand =\n", (1, 2), "has no command"),
        ("[a]\nsequence = 1,2\ncommand = x\nseq_timeout = 5s\n", (4, 15), "whole seconds"),
        ("[a]\nsequence = 1,2\ncommand = x\nseq_timeout = 0\n", (4, 15), "from 1 to"),
        ("[a]\nsequence = 1,2\ncommand = x\ncmd_timeout = -1\n", (4, 15), "whole seconds"),
        ("[a]\nsequence = 1,2\ncommand = x\ntarget = gateway.lan\n", (4, 10), "not an IP address"),
        ("[a]\none_time_sequences =\ncommand = x\n", (2, 1), "needs a path"),
        ("[options]\nInterface = eth0,,eth1\n[a]\nsequence = 1,2\ncommand = x\n", (2, 18), "empty interface"),
        ("[options]\nInterface = /dev/eth0\n[a]\nsequence = 1,2\ncommand = x\n", (2, 13), "not /dev/eth0"),
        ("= 5\n", (1, 1), "missing key"),
        ("[options]\nlogfile = /x\n", (0, 0), "no door section"),
    ];
    for (text, (line, col), needle) in cases {
        let e = conf(text).expect_err(text);
        assert_eq!((e.line.unwrap_or(0), e.column.unwrap_or(0)), (*line, *col), "{text:?}: {e}");
        assert!(e.message.contains(needle), "{text:?}: {e}");
    }
    let long = format!("[{}]\nsequence = 1,2\ncommand = x\n", "a".repeat(65));
    assert!(conf(&long).unwrap_err().message.contains("at most 64"));
    let many = format!("[a]\nsequence = {}\ncommand = x\n", vec!["1"; 33].join(","));
    assert!(conf(&many).unwrap_err().message.contains("at most 32"));
    assert_eq!(
        conf(&format!("[a]\nsequence = {}\ncommand = x\n", vec!["1"; 32].join(","))).unwrap().doors[0].length,
        32
    );
}

#[test]
fn load_picks_the_format_by_file_name() {
    assert!(is_toml_path(Path::new("/etc/knockd/knockd.toml")));
    assert!(is_toml_path(Path::new("x.TOML")));
    assert!(!is_toml_path(Path::new("/etc/knockd.conf")));
    assert!(!is_toml_path(Path::new("/etc/knockd")));
    assert!(load("example1.conf").legacy_options.is_some());
    let toml = Config::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/knockd.toml"))).unwrap();
    assert!(toml.legacy_options.is_none() && toml.warnings.is_empty());
}

fn round_trip(c: &Config) -> (String, Config) {
    let text = migrate(c).unwrap_or_else(|e| panic!("{e}"));
    let back = Config::parse(Path::new("/etc/knockd/knockd.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, back)
}

#[test]
fn migrate_moves_static_doors_to_hotp_and_keeps_commands() {
    let c = load("example1.conf");
    let (text, back) = round_trip(&c);
    assert!(text.starts_with("# knockd.toml written by `knockd migrate`"), "{text}");
    let next_steps = text.split("\n\n").next().unwrap();
    assert!(next_steps.contains("client add --door openssh --name CLIENT"), "{text}");
    assert!(next_steps.contains("client add --door closessh --name CLIENT"), "{text}");
    assert!(next_steps.contains("knockd.toml check"), "{text}");
    assert!(next_steps.contains("-g /var/log/knockd.log"), "{text}");
    assert!(back.legacy_options.is_none());
    assert_eq!(back.server.interfaces, ["eth0"]);
    assert_eq!(back.server.firewall, FirewallKind::None);
    assert_eq!(back.doors.len(), 2);
    for (old, new) in c.doors.iter().zip(&back.doors) {
        assert_eq!(new.name, old.name.to_lowercase());
        assert_eq!(new.mode, Mode::Hotp);
        assert_eq!(new.keys_dir.as_deref(), Some(Path::new("/etc/knockd/keys").join(&new.name).as_path()));
        assert_eq!(new.action, old.action);
        assert_eq!(new.seq_timeout, old.seq_timeout);
        assert!(new.open.is_empty() && new.legacy.is_none());
        assert_eq!(new.alphabet.range().to_string(), DEFAULT_KNOCK_PORTS);
        assert_eq!(new.length, DEFAULT_LENGTH);
    }
}

#[test]
fn migrate_keeps_one_time_files_ipv6_commands_and_targets() {
    let mut c = load("example4.conf");
    c.doors[0].addresses = vec!["2001:db8::1".parse().unwrap()];
    let (text, back) = round_trip(&c);
    let d = back.door("openclosesmtp").unwrap();
    assert_eq!(d.mode, Mode::File);
    assert_eq!(d.sequence_file.as_deref(), Some(Path::new("/etc/knockd/smtp_sequences")));
    assert_eq!(d.action, c.doors[0].action);
    assert_eq!(d.addresses, c.doors[0].addresses);
    assert_eq!(d.seq_timeout, Duration::from_secs(15));
    assert!(text.contains("skips the ones knockd invalidated with `#`"), "{text}");
    assert!(text.contains("tcpflags = fin,!ack is not carried over"), "{text}");
    assert!(!text.contains("client add"), "no hotp door, no client to add:\n{text}");
    // The file is not there: every port, both protocols.
    assert_eq!(d.alphabet.size(), 2 * 65535);
}

#[test]
fn migrate_reads_a_one_time_file_for_its_range() {
    let dir = std::env::temp_dir().join(format!("knock-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("seqs"), "#7000,8000,9000\n 7100,8100:udp,9100\n 7200, 8200 ,9200\n").unwrap();
    let c = parse_knockd_conf(&dir.join("knockd.conf"), "[Door]\none_time_sequences = seqs\ncommand = x\n").unwrap();
    let (text, back) = round_trip(&c);
    std::fs::remove_dir_all(&dir).unwrap();
    let d = back.door("door").unwrap();
    assert_eq!(d.alphabet.range().to_string(), "7100-9200", "{text}");
    assert_eq!(d.alphabet.protos(), [Proto::Tcp, Proto::Udp]);
    assert_eq!(d.length, 3);
}

#[test]
fn migrate_moves_knock_ports_away_from_opened_ports_and_refuses_name_collisions() {
    let c = conf("[a]\nsequence = 1,2\ncommand = iptables -A INPUT -s %IP% -p tcp --dport 41000 -j ACCEPT\n").unwrap();
    let (text, back) = round_trip(&c);
    assert_eq!(back.doors[0].alphabet.range().to_string(), "43000-45047", "{text}");
    let c =
        conf("[a]\nsequence = 1,2\ncommand = nft add element inet f s { %IP% } ; x --dports 22,40000:50000\n").unwrap();
    assert_eq!(round_trip(&c).1.doors[0].alphabet.range().to_string(), "20000-22047");
    assert_eq!(migrate::command_ports("ip daddr x tcp dport 22 accept").len(), 1);
    let two = conf("[Open.SSH]\nsequence = 1,2\ncommand = x\n[open-ssh]\nsequence = 3,4\ncommand = y\n").unwrap();
    let e = migrate(&two).unwrap_err();
    assert!(e.message.contains("[Open.SSH] and [open-ssh] would both be named `open-ssh`"), "{e}");
}

#[test]
fn migrate_quotes_awkward_commands() {
    let c =
        conf("[a]\nsequence = 1,2\ncommand = echo \"it's %IP%\" \\ done\nstop_command_6 =\ncmd_timeout = 0\n").unwrap();
    let (_, back) = round_trip(&c);
    assert_eq!(back.doors[0].action, c.doors[0].action);
}

#[test]
fn migrate_writes_a_toml_config_back_as_it_is() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/knockd.toml"));
    let c = Config::load(path).unwrap();
    let (text, back) = round_trip(&c);
    for (a, b) in c.doors.iter().zip(&back.doors) {
        assert_eq!((&a.name, a.mode, &a.open, a.open_for), (&b.name, b.mode, &b.open, b.open_for), "{text}");
        assert_eq!((&a.alphabet, a.length, a.window, a.misses), (&b.alphabet, b.length, b.window, b.misses));
        assert_eq!((&a.keys_dir, &a.sequence_file, &a.action), (&b.keys_dir, &b.sequence_file, &b.action));
    }
}

#[test]
fn control_characters_in_values_are_refused_with_line_column_and_fix() {
    for (bad, code) in
        [("\0", "U+0000"), ("\r", "U+000D"), ("\x7f", "U+007F"), ("\x1b", "U+001B"), ("\u{85}", "U+0085")]
    {
        for line in [
            format!("command = echo{bad}done"),
            format!("sequence = 1{bad},2"),
            format!("one_time_sequences = /x{bad}y"),
        ] {
            let text = format!("[options]\n  LogFile = /var/log/k.log\n[door]\n{line}\ncommand = x\n");
            let (l, col, message) = at(conf(&text));
            assert_eq!((l, col), (4, line.find(bad).unwrap() + 1), "{message}");
            assert!(message.contains(code) && message.contains("remove it"), "{message}");
        }
        let e = conf(&format!("[options]\nLogFile = /l{bad}x\n[a]\nsequence = 1,2\ncommand = x\n")).unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(13)), "{e}");
    }
    // A tab is text, as in knockd; a carriage return ending a line is a CRLF file.
    let c = conf("[a]\r\nsequence = 1,2\r\ncommand = echo\tx\r\n").unwrap();
    assert_eq!(commands(&c.doors[0]).start.as_deref(), Some("echo\tx"));
    // Comments are knockd's business only.
    assert!(conf("# \0\x7f\n[a]\nsequence = 1,2\ncommand = x\n").is_ok());
}

#[test]
fn migrate_escapes_control_characters_in_comments() {
    let mut c = conf("[options]\nLogFile = /l\nPidFile = /p\n[a]\nsequence = 1,2\ncommand = x\n").unwrap();
    c.path = PathBuf::from("/etc/knock\nd\x7f.conf");
    let o = c.legacy_options.as_mut().unwrap();
    o.log_file = Some(PathBuf::from("/var/log/\0k\r.log"));
    o.pid_file = Some(PathBuf::from("/run/\x01k.pid"));
    let (text, back) = round_trip(&c);
    assert!(text.contains("from /etc/knock\\u{a}d\\u{7f}.conf."), "{text}");
    assert!(text.contains("-g /var/log/\\u{0}k\\u{d}.log"), "{text}");
    assert_eq!(back.doors[0].action, c.doors[0].action);
}

#[test]
fn toml_errors_at_control_characters_name_the_character() {
    let e = Config::parse(Path::new("/etc/knockd.toml"), "[server]\n# a\u{1}b\n").unwrap_err();
    assert_eq!((e.line, e.column), (Some(2), Some(4)), "{e}");
    assert!(e.message.contains("control character U+0001") && e.message.contains("remove it"), "{e}");
}

/// Many doors: the duplicate checks use sets, so 20 000 sections parse and migrate in well
/// under a second (a list scan per section made 40 000 take seconds). The time is printed,
/// not asserted; the duplicates at the very end must still be found.
#[test]
fn many_sections_parse_migrate_and_still_find_the_last_duplicate() {
    const N: usize = 20_000;
    let mut text = String::with_capacity(N * 40);
    for i in 0..N {
        text.push_str(&format!("[door{i}]\nsequence = 1,2\ncommand = x\n"));
    }
    let started = std::time::Instant::now();
    let c = conf(&text).unwrap();
    let legacy = started.elapsed();
    let out = migrate(&c).unwrap();
    let migrated = started.elapsed() - legacy;
    let back = Config::parse(Path::new("/etc/knockd/knockd.toml"), &out).unwrap();
    let parsed = started.elapsed() - legacy - migrated;
    eprintln!("{N} sections: knockd.conf {legacy:?}, migrate {migrated:?}, knockd.toml {parsed:?}");
    assert_eq!((c.doors.len(), back.doors.len()), (N, N));
    assert_eq!(back.doors[N - 1].name, format!("door{}", N - 1));

    let twice = format!("{text}[door{}]\n", N / 2);
    let (line, _, message) = at(conf(&twice));
    assert_eq!(line, 3 * N + 1);
    assert!(message.contains(&format!("first at line {}", 3 * (N / 2) + 1)), "{message}");
    let toml_twice =
        format!("{out}\n[[door]]\nname = \"door{}\"\nmode = \"hotp\"\nkeys = \"k\"\nstart_command = \"x\"\n", N - 1);
    let e = Config::parse(Path::new("/etc/knockd/knockd.toml"), &toml_twice).unwrap_err();
    assert!(e.message.contains(&format!("door `door{}` is defined twice", N - 1)), "{e}");
    let mut collide = c.clone();
    collide.doors[N - 1].name = "DOOR7".into();
    let e = migrate(&collide).unwrap_err();
    assert!(e.message.contains("[door7] and [DOOR7] would both be named `door7`"), "{e}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of knockd.conf lines, right and wrong, to splice together.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[options]".to_string()),
            Just("[openSSH]".to_string()),
            Just("[[door]]".to_string()),
            Just("UseSyslog".to_string()),
            Just("Interface = eth0, ,eth1".to_string()),
            Just("sequence = 7000,8000:udp,9000".to_string()),
            Just("sequence = 1:, :tcp,,".to_string()),
            Just("one_time_sequences = seqs".to_string()),
            Just("tcpflags = syn,!ack,!".to_string()),
            Just("command = /bin/x %IP%".to_string()),
            Just("cmd_timeout = 99999999999999999999".to_string()),
            Just("target = ::1".to_string()),
            Just("=".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            "[ -~\t]{0,30}",
            "\\PC{0,12}",
        ]
    }

    /// A value: mostly printable, now and then a control character, a quote or a backslash.
    fn value() -> impl Strategy<Value = String> {
        "([ -~]|[\u{0}-\u{1f}\u{7f}\u{85}\u{a0}'\"\\\\é]){0,12}"
    }

    /// One knockd.conf line, its directive chosen among those that reach the knockd.toml.
    fn directive() -> impl Strategy<Value = String> {
        let key = proptest::sample::select(vec![
            "LogFile",
            "PidFile",
            "Interface",
            "command",
            "start_command_6",
            "stop_command",
            "stop_command_6",
            "one_time_sequences",
            "target",
            "seq_timeout",
            "cmd_timeout",
            "tcpflags",
        ]);
        prop_oneof![
            Just("[options]\n".to_string()),
            "\\[[A-Za-z0-9_.-]{1,6}\\]\n".prop_map(|s| s),
            Just("sequence = 7000,8000:udp\n".to_string()),
            Just("UseSyslog\n".to_string()),
            (key.clone(), value()).prop_map(|(k, v)| format!("{k} = {v}\n")),
            (key, value()).prop_map(|(k, v)| format!("[d]\nsequence = 1,2\n{k} = {v}\ncommand = x\n")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC*(\n\\PC*){0,8}") {
            let _ = conf(&text);
        }

        /// Whatever the legacy parser accepts, `migrate` turns into a knockd.toml that parses
        /// back (values hold any character, control characters included).
        #[test]
        fn migrate_output_always_parses_back(
            lines in proptest::collection::vec(directive(), 1..10),
            path in "/[^\n]{0,3}[\u{0}-\u{1f}\u{7f}]?[a-z]{0,3}",
        ) {
            let text: String = lines.concat();
            if let Ok(c) = parse_knockd_conf(Path::new(&path), &text) {
                if let Ok(out) = migrate(&c) {
                    let back = Config::parse(Path::new("/etc/knockd/knockd.toml"), &out);
                    prop_assert!(back.is_ok(), "{}\n---\n{}", back.unwrap_err(), out);
                }
            }
        }

        #[test]
        fn spliced_lines_never_panic_and_errors_are_located(
            lines in proptest::collection::vec((fragment(), "[ \t]{0,2}", "[ \t\r]{0,2}"), 0..12),
        ) {
            let text: String = lines.iter().map(|(f, pre, post)| format!("{pre}{f}{post}\n")).collect();
            match conf(&text) {
                Ok(c) => {
                    prop_assert!(!c.doors.is_empty());
                    let _ = migrate(&c);
                }
                Err(e) => {
                    let n = text.split('\n').count();
                    prop_assert!(e.line.is_none_or(|l| l >= 1 && l <= n), "{}", e);
                }
            }
        }
    }
}
