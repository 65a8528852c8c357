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

/// The keys the parser accepts in one table, read from its own "unknown field" error (serde
/// lists every field it expects), so this cannot drift from the parser.
fn accepted_keys(table: &str) -> Vec<String> {
    let e = parse(&format!("{table}\nzz_not_a_key = 1\n")).unwrap_err();
    let expected = e.message.split("expected").nth(1).unwrap_or_else(|| panic!("{e}"));
    let mut keys: Vec<String> = expected.split('`').skip(1).step_by(2).map(String::from).collect();
    keys.sort();
    keys
}

/// The keys knockd.toml(5) documents in a section: the `.B key` tag of each `.TP` entry.
fn documented_keys(page: &str, section: &str) -> Vec<String> {
    let body = page.split(&format!(".SH \"{section}\"\n")).nth(1).unwrap_or_else(|| panic!("no section {section}"));
    let body = body.split("\n.SH ").next().unwrap_or_default();
    let lines: Vec<&str> = body.lines().collect();
    let mut keys: Vec<String> = lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| w[1].strip_prefix(".B ").unwrap_or_else(|| panic!("{section}: tag `{}` is not `.B key`", w[1])))
        .map(String::from)
        .collect();
    keys.sort();
    keys
}

#[test]
fn every_key_the_parser_accepts_is_documented_in_knockd_toml_5() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/knockd.toml.5"));
    let page = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(accepted_keys(""), ["door", "ledger", "server"], "top-level tables");
    let ledger = accepted_keys("[ledger]");
    assert!(ledger.contains(&"endpoints".to_string()), "{ledger:?}");
    assert_eq!(documented_keys(&page, "[LEDGER] TABLE"), ledger, "[ledger] keys in {}", path.display());
    let server = accepted_keys("[server]");
    assert!(server.contains(&"state_dir".to_string()), "{server:?}");
    assert_eq!(documented_keys(&page, "[SERVER] TABLE"), server, "[server] keys in {}", path.display());
    let door = accepted_keys("[[door]]");
    assert!(door.len() > 20 && door.contains(&"bind_source".to_string()), "{door:?}");
    assert_eq!(documented_keys(&page, "[[DOOR]] TABLES"), door, "[[door]] keys in {}", path.display());
}

/// The text of one key's entry in knockd.toml(5), roff requests and font escapes dropped.
fn documented_entry(page: &str, key: &str) -> String {
    let entry = page.split(&format!(".TP\n.B {key}\n")).nth(1).unwrap_or_else(|| panic!("no entry for {key}"));
    let entry = entry.split("\n.TP\n").next().unwrap_or_default().split("\n.SH").next().unwrap_or_default();
    entry
        .lines()
        .map(|l| l.split_once(' ').filter(|_| l.starts_with('.')).map_or(l, |(_, rest)| rest))
        .collect::<Vec<_>>()
        .join(" ")
        .replace("\\-", "-")
}

/// The word after `label` in an entry ("Default: 8." gives "8").
fn after<'a>(entry: &'a str, label: &str) -> &'a str {
    let rest = entry.split(label).nth(1).unwrap_or_else(|| panic!("no `{label}` in `{entry}`"));
    rest.split_whitespace().next().unwrap_or_default().trim_end_matches(['.', ','])
}

#[test]
fn knockd_toml_5_states_the_defaults_and_bounds_the_parser_applies() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/knockd.toml.5")).unwrap();
    let door = "[[door]]\nname = \"ssh\"\nmode = \"totp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n";
    let defaults = parse(door).unwrap().doors.remove(0);
    let integers = [
        ("length", defaults.length as i64),
        ("window", defaults.window.into()),
        ("skew", defaults.skew.into()),
        ("misses", defaults.misses.into()),
    ];
    for (key, default) in integers {
        let entry = documented_entry(&page, key);
        assert_eq!(after(&entry, "Default:"), default.to_string(), "default of {key}: {entry}");
        let low: i64 = after(&entry, "Bounds:").parse().unwrap_or_else(|_| panic!("bounds of {key}: {entry}"));
        let high: i64 = after(&entry, &format!("Bounds: {low} to")).parse().unwrap();
        for (value, ok) in [(low - 1, false), (low, true), (high, true), (high + 1, false)] {
            assert_eq!(
                parse(&format!("{door}{key} = {value}\n")).is_ok(),
                ok,
                "{key} = {value} (documented {low} to {high})"
            );
        }
    }
    let durations = [("seq_timeout", defaults.seq_timeout), ("open_for", defaults.open_for), ("step", defaults.step)];
    for (key, default) in durations {
        let entry = documented_entry(&page, key);
        assert_eq!(parse_duration(after(&entry, "Default:")), Ok(default), "default of {key}: {entry}");
    }
    let entry = documented_entry(&page, "cmd_timeout");
    assert_eq!(parse_duration(after(&entry, "Default:")), Ok(DEFAULT_CMD_TIMEOUT), "{entry}");
    let entry = documented_entry(&page, "knock_ports");
    assert!(entry.contains(&format!("Default: \\(dq{DEFAULT_KNOCK_PORTS}\\(dq")), "{entry}");
}

const DOOR: &str = "[[door]]\nname = \"ssh\"\nmode = \"hotp\"\nopen = [\"22/tcp\"]\nkeys = \"keys\"\n";

/// A `[ledger]` for etcd with `extra` lines.
fn etcd(extra: &str) -> String {
    format!(
        "[ledger]\nbackend = \"etcd\"\nendpoints = [\"https://198.18.0.11:2379\"]\nca_file = \"etcd/ca.pem\"\n\
         cert_file = \"etcd/knockd.pem\"\nkey_file = \"etcd/knockd.key\"\nnode = \"a\"\n{extra}\n{DOOR}"
    )
}

#[test]
fn the_ledger_is_files_unless_etcd_is_named_with_everything_it_needs() {
    assert_eq!(parse(DOOR).unwrap().ledger, LedgerBackend::File);
    assert_eq!(parse(&format!("[ledger]\nbackend = \"file\"\n{DOOR}")).unwrap().ledger, LedgerBackend::File);
    let LedgerBackend::Etcd(e) = parse(&etcd("")).unwrap().ledger else { panic!("etcd") };
    assert_eq!(e.prefix, DEFAULT_ETCD_PREFIX);
    assert_eq!(e.timeout, DEFAULT_ETCD_TIMEOUT);
    assert_eq!(e.ca_file, Path::new("/etc/knockd/etcd/ca.pem"), "relative to the config file");
    assert_eq!(e.node, "a");
    let LedgerBackend::Etcd(e) = parse(&etcd("prefix = \"/pair-1/\"\ntimeout = \"2s\"")).unwrap().ledger else {
        panic!("etcd")
    };
    assert_eq!((e.prefix.as_str(), e.timeout), ("/pair-1/", std::time::Duration::from_secs(2)));
}

#[test]
fn ledger_mistakes_are_named_with_their_place_and_fix() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    let e = err(&format!("[ledger]\nendpoints = [\"https://198.18.0.11:2379\"]\n{DOOR}"));
    assert!(e.contains(":2:13:") && e.contains("is for backend = \"etcd\""), "{e}");
    let e = err(&format!("[ledger]\nbackend = \"zookeeper\"\n{DOOR}"));
    assert!(e.contains(":2:11:") && e.contains("expected file or etcd"), "{e}");
    let e = err(&etcd("").replace("node = \"a\"\n", ""));
    assert!(e.contains("needs `node`"), "{e}");
    let e = err(&etcd("").replace("ca_file = \"etcd/ca.pem\"\n", ""));
    assert!(e.contains("needs `ca_file`"), "{e}");
    let e = err(&etcd("").replace("https://198.18.0.11:2379", "http://198.18.0.11:2379"));
    assert!(e.contains("must be https://HOST:PORT"), "{e}");
    let e = err(&etcd("prefix = \"knockd\""));
    assert!(e.contains("prefix must start and end with `/`"), "{e}");
    let e = err(&etcd("timeout = \"1ms\""));
    assert!(e.contains("timeout must lie between"), "{e}");
    let e = err(&etcd("").replace("node = \"a\"", "node = \"A B\""));
    assert!(e.contains("node must be"), "{e}");
}
