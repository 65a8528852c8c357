//! Config parsing and validation, with the line and column of each error.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/knockd/knockd.toml"), text)
}

const GOOD: &str = r#"
[server]
state_dir = "state"
interfaces = ["eth0"]

[[door]]
name = "ssh"
mode = "hotp"
open = ["22/tcp"]
keys = "keys/ssh"
open_for = "3s"
seq_timeout = 2
"#;

#[test]
fn good_config_has_safe_defaults_and_resolved_paths() {
    let c = parse(GOOD).unwrap();
    let d = c.door("ssh").unwrap();
    assert_eq!(c.server.state_dir, Path::new("/etc/knockd/state"));
    assert_eq!(d.keys_dir.as_deref(), Some(Path::new("/etc/knockd/keys/ssh")));
    assert_eq!(d.open_for, Duration::from_secs(3));
    assert_eq!(d.seq_timeout, Duration::from_secs(2));
    assert_eq!(d.length, DEFAULT_LENGTH);
    assert_eq!(d.alphabet.size(), 2048);
    assert!(!d.bind_source);
}

#[test]
fn syntax_error_names_line_and_column() {
    let e = parse("[server]\nstate_dir = \"x\"\n[[door]\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.to_string().starts_with("/etc/knockd/knockd.toml:3:"), "{e}");
}

#[test]
fn unknown_key_is_refused_where_it_stands() {
    let text = GOOD.replace("seq_timeout = 2", "seq_timeout = 2\nopen_fro = 3");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(13), "{e}");
    assert!(e.message.contains("open_fro"), "{e}");
}

#[test]
fn bad_values_point_at_the_value() {
    let e = parse(&GOOD.replace("\"22/tcp\"", "\"22/sctp\"")).unwrap_err();
    assert_eq!((e.line, e.column), (Some(9), Some(8)), "{e}");
    assert!(e.message.contains("sctp"));

    let e = parse(&GOOD.replace("seq_timeout = 2", "seq_timeout = \"soon\"")).unwrap_err();
    assert_eq!((e.line, e.column), (Some(12), Some(15)), "{e}");

    let e = parse(&GOOD.replace("mode = \"hotp\"", "mode = \"hotpp\"")).unwrap_err();
    assert_eq!(e.line, Some(8));
    assert!(e.message.contains("hotpp"));

    let e = parse(&format!("{GOOD}length = 1\n")).unwrap_err();
    assert!(e.message.contains("length = 1"), "{e}");
}

#[test]
fn protected_port_inside_the_knock_range_is_refused() {
    let e = parse(&format!("{GOOD}knock_ports = \"20-30\"\n")).unwrap_err();
    assert!(e.message.contains("22/tcp lies inside"), "{e}");
}

#[test]
fn duplicate_doors_and_missing_keys_are_refused() {
    let twice =
        format!("{GOOD}\n[[door]]\nname = \"ssh\"\nmode = \"file\"\nopen = [\"23/tcp\"]\nsequence_file = \"x\"\n");
    assert!(parse(&twice).unwrap_err().message.contains("defined twice"));
    let nokeys = GOOD.replace("keys = \"keys/ssh\"\n", "");
    assert!(parse(&nokeys).unwrap_err().message.contains("needs `keys"));
    assert!(parse("[server]\n").unwrap_err().message.contains("no [[door]]"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/knockd.toml"));
    let c = Config::load(path).unwrap();
    assert_eq!(c.doors.len(), 2);
    assert_eq!(c.door("ssh").unwrap().open_for, Duration::from_secs(30));
}

const COMMANDS: &str = r#"
[[door]]
name = "web"
mode = "hotp"
keys = "keys/web"
start_command = "iptables -A INPUT -s %IP% -p tcp --dport 443 -j ACCEPT"
stop_command = "iptables -D INPUT -s %IP% -p tcp --dport 443 -j ACCEPT"
start_command_6 = ""
cmd_timeout = "1m"
"#;

#[test]
fn doors_may_run_knockd_style_commands_instead_of_opening_ports() {
    let c = parse(&format!("{GOOD}{COMMANDS}")).unwrap();
    assert_eq!(c.door("ssh").unwrap().action, Action::Firewall);
    let d = c.door("web").unwrap();
    assert!(d.open.is_empty());
    let Action::Commands(a) = &d.action else { panic!("{:?}", d.action) };
    assert!(a.start.as_deref().unwrap().starts_with("iptables -A"));
    assert!(a.stop.as_deref().unwrap().starts_with("iptables -D"));
    assert_eq!(a.start6.as_deref(), Some(""));
    assert_eq!(a.stop6, None);
    assert_eq!(a.cmd_timeout, Duration::from_secs(60));
    assert!(c.legacy_options.is_none() && d.legacy.is_none());

    let c = parse(&format!("{GOOD}{}", COMMANDS.replace("cmd_timeout = \"1m\"", "open = [\"443/tcp\"]"))).unwrap();
    let d = c.door("web").unwrap();
    assert_eq!(d.open, [OpenPort { port: 443, proto: Proto::Tcp }]);
    let Action::Commands(a) = &d.action else { panic!() };
    assert_eq!(a.cmd_timeout, DEFAULT_CMD_TIMEOUT);
}

#[test]
fn open_is_still_required_without_commands() {
    let e = parse(&GOOD.replace("open = [\"22/tcp\"]\n", "")).unwrap_err();
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("`open` is missing") && e.message.contains("start_command"), "{e}");
    let e = parse(&GOOD.replace("[\"22/tcp\"]", "[]")).unwrap_err();
    assert!(e.message.contains("open is empty"), "{e}");
    let e = parse(&format!("{GOOD}cmd_timeout = 5\n")).unwrap_err();
    assert_eq!(e.line, Some(13), "{e}");
    assert!(e.message.contains("cmd_timeout applies only"), "{e}");
    let e = parse(&format!("{GOOD}{}", COMMANDS.replace("start_command = ", "x = "))).unwrap_err();
    assert!(e.message.contains("unknown field `x`"), "{e}");
    let only_stop =
        COMMANDS.replace("start_command = \"iptables -A INPUT -s %IP% -p tcp --dport 443 -j ACCEPT\"\n", "");
    let e = parse(&format!("{GOOD}{only_stop}")).unwrap_err();
    assert!(e.message.contains("stop command without a start command"), "{e}");
    let e = parse(&format!("{GOOD}{}", COMMANDS.replace("cmd_timeout = \"1m\"", "cmd_timeout = -1"))).unwrap_err();
    assert_eq!((e.line, e.column), (Some(21), Some(15)), "{e}");
    let e = parse(&format!("{GOOD}{}", COMMANDS.replace("start_command_6 = \"\"", "start_command_6 = \"a\\nb\"")))
        .unwrap_err();
    assert!(e.message.contains("one line"), "{e}");
}

#[test]
fn firewall_backends() {
    let with = |fw: &str| parse(&GOOD.replace("[server]\n", &format!("[server]\nfirewall = \"{fw}\"\n")));
    assert_eq!(with("iptables").unwrap().server.firewall, FirewallKind::Iptables);
    assert_eq!(with("nftables").unwrap().server.firewall, FirewallKind::Nftables);
    assert_eq!(with("none").unwrap().server.firewall, FirewallKind::None);
    let e = with("ipfw").unwrap_err();
    assert!(e.message.contains("expected nftables, iptables or none"), "{e}");
    assert_eq!(parse(GOOD).unwrap().server.firewall, FirewallKind::Nftables);
}
