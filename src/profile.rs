//! Client profiles: what `knock --profile NAME` needs to knock one door of one server, and the
//! export bundle (`knockd client add`) that carries a profile together with its secret.
//!
//! A profile names the server (address and family), the server id, the door, the client, the
//! door's mode and alphabet, and the ports to wait for. It never holds the secret: the key (or
//! the sequence list of a `file` door) lives in the keyring directory, mode 0600. A bundle is a
//! profile plus a `[secret]` table, itself written 0600 and meant to be imported and deleted.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::{valid_name, ConfigError, OpenPort};
use crate::keys::{hex, unhex, Secret};
use crate::knock::{PortRange, Proto};
use crate::sequence::{Alphabet, Mode, SERVER_ID_LEN};

/// Format version of profiles and bundles.
pub const PROFILE_VERSION: i64 = 1;
/// Prefix of a bundle exported on one line (`knockd client add --export`).
pub const LINE_PREFIX: &str = "one-time-knock-profile-v1:";

/// Address family a profile knocks over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// A client profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile name (file stem).
    pub name: String,
    /// Server address.
    pub server: IpAddr,
    /// The server's random id.
    pub server_id: [u8; SERVER_ID_LEN],
    /// Door name.
    pub door: String,
    /// Client name.
    pub client: String,
    /// Door mode (`hotp` or `file`).
    pub mode: Mode,
    /// Knock range.
    pub knock_ports: PortRange,
    /// Knock protocols.
    pub protocols: Vec<Proto>,
    /// Knocks per sequence.
    pub length: usize,
    /// Whether the door binds the source address.
    pub bind_source: bool,
    /// Address the server sees this client as (behind NAT), for `bind_source`.
    pub source_addr: Option<IpAddr>,
    /// Ports the door opens (what `--wait` polls).
    pub open: Vec<OpenPort>,
    /// Delay between knocks in milliseconds.
    pub delay_ms: u64,
    /// Whether the door accepts closing sequences (`knock --close`).
    pub close: bool,
    /// `totp`: the time step in seconds.
    pub step_secs: u64,
    /// `totp`: the door's skew, in steps the server accepts on either side of its own.
    pub skew: u32,
    /// `file`: warn when fewer unused sequences than this remain.
    pub warn_below: u64,
}

/// The secret half of a bundle.
pub enum BundleSecret {
    /// A `hotp` key.
    Key(Secret),
    /// The client's twin of a `file` door's sequence list.
    Sequences(Zeroizing<String>),
}

impl std::fmt::Debug for BundleSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BundleSecret(<redacted>)")
    }
}

/// A profile and its secret, as exported by the server.
#[derive(Debug)]
pub struct Bundle {
    /// The profile.
    pub profile: Profile,
    /// Its secret.
    pub secret: BundleSecret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    version: i64,
    name: String,
    server: String,
    server_id: String,
    door: String,
    client: String,
    mode: String,
    knock_ports: String,
    protocols: Vec<String>,
    length: i64,
    #[serde(default)]
    bind_source: bool,
    source_addr: Option<String>,
    open: Vec<String>,
    #[serde(default = "default_delay")]
    delay_ms: i64,
    #[serde(default)]
    close: bool,
    #[serde(default = "default_step")]
    step_secs: i64,
    #[serde(default = "default_skew")]
    skew: i64,
    #[serde(default = "default_warn_below")]
    warn_below: i64,
}

fn default_warn_below() -> i64 {
    10
}

fn default_step() -> i64 {
    30
}

fn default_skew() -> i64 {
    i64::from(crate::config::DEFAULT_SKEW)
}

fn default_delay() -> i64 {
    20
}

#[derive(Deserialize)]
struct RawSecret {
    key: Option<String>,
    sequences: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    profile: RawProfile,
    secret: RawSecret,
}

fn toml_err(path: &Path, text: &str, e: toml::de::Error) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text[..offset];
    ConfigError {
        path: path.to_path_buf(),
        line: Some(before.matches('\n').count() + 1),
        column: Some(before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1),
        message: crate::config::toml_message(text, &e),
    }
}

fn plain_err(path: &Path, message: String) -> ConfigError {
    ConfigError { path: path.to_path_buf(), line: None, column: None, message }
}

impl Profile {
    /// The alphabet of the door.
    pub fn alphabet(&self) -> Alphabet {
        Alphabet::new(self.knock_ports, &self.protocols).unwrap_or_else(|| {
            Alphabet::new(self.knock_ports, &[Proto::Tcp]).expect("a range with tcp is a valid alphabet")
        })
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| plain_err(path, format!("cannot read: {e}")))?;
        Profile::parse(path, &text)
    }

    /// Parses the text of a profile file that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Profile, ConfigError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| toml_err(path, text, e))?;
        Profile::from_raw(path, raw)
    }

    fn from_raw(path: &Path, r: RawProfile) -> Result<Profile, ConfigError> {
        let bad = |m: String| plain_err(path, m);
        if r.version != PROFILE_VERSION {
            return Err(bad(format!(
                "profile version {} is not supported (this knock reads version {PROFILE_VERSION}); update knock",
                r.version
            )));
        }
        for (what, n) in [("name", &r.name), ("door", &r.door), ("client", &r.client)] {
            if !valid_name(n) {
                return Err(bad(format!("{what} `{n}` must be 1-64 characters of a-z, 0-9, _ or -")));
            }
        }
        let mode: Mode = r.mode.parse().map_err(bad)?;
        if !matches!(mode, Mode::Hotp | Mode::Totp | Mode::File) {
            return Err(bad(format!("mode `{}` cannot be used from a profile (hotp, totp or file)", r.mode)));
        }
        let protocols = r.protocols.iter().map(|p| p.parse()).collect::<Result<Vec<Proto>, _>>().map_err(bad)?;
        let knock_ports: PortRange = r.knock_ports.parse().map_err(bad)?;
        if Alphabet::new(knock_ports, &protocols).is_none() {
            return Err(bad("protocols is empty".into()));
        }
        Ok(Profile {
            name: r.name,
            server: r.server.parse().map_err(|_| bad(format!("server `{}` is not an IP address", r.server)))?,
            server_id: unhex(&r.server_id)
                .ok_or_else(|| bad("server_id must be 32 hex digits (from `knockd client add`)".into()))?,
            door: r.door,
            client: r.client,
            mode,
            knock_ports,
            protocols,
            length: usize::try_from(r.length)
                .ok()
                .filter(|l| (2..=crate::sequence::MAX_LENGTH).contains(l))
                .ok_or_else(|| bad(format!("length {} is out of range (2..=32)", r.length)))?,
            bind_source: r.bind_source,
            source_addr: r
                .source_addr
                .map(|s| s.parse().map_err(|_| bad(format!("source_addr `{s}` is not an IP address"))))
                .transpose()?,
            open: r.open.iter().map(|o| o.parse()).collect::<Result<_, _>>().map_err(bad)?,
            delay_ms: u64::try_from(r.delay_ms)
                .ok()
                .filter(|d| *d <= 10_000)
                .ok_or_else(|| bad("delay_ms must be 0..=10000".into()))?,
            close: r.close,
            step_secs: u64::try_from(r.step_secs)
                .ok()
                .filter(|s| (1..=3600).contains(s))
                .ok_or_else(|| bad("step_secs must be 1..=3600".into()))?,
            skew: u32::try_from(r.skew)
                .ok()
                .filter(|s| *s <= crate::config::MAX_SKEW)
                .ok_or_else(|| bad(format!("skew must be 0..={}", crate::config::MAX_SKEW)))?,
            warn_below: u64::try_from(r.warn_below).map_err(|_| bad("warn_below must be 0 or more".into()))?,
        })
    }

    /// Renders the profile as TOML (no secret in it).
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let q = |v: &[String]| v.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(s, "# one-time-knock client profile");
        let _ = writeln!(s, "version = {PROFILE_VERSION}");
        let _ = writeln!(s, "name = \"{}\"", self.name);
        let _ = writeln!(s, "server = \"{}\"", self.server);
        let _ = writeln!(s, "server_id = \"{}\"", hex(&self.server_id));
        let _ = writeln!(s, "door = \"{}\"", self.door);
        let _ = writeln!(s, "client = \"{}\"", self.client);
        let _ = writeln!(s, "mode = \"{}\"", self.mode.label());
        let _ = writeln!(s, "knock_ports = \"{}\"", self.knock_ports);
        let _ = writeln!(s, "protocols = [{}]", q(&self.protocols.iter().map(|p| p.to_string()).collect::<Vec<_>>()));
        let _ = writeln!(s, "length = {}", self.length);
        let _ = writeln!(s, "bind_source = {}", self.bind_source);
        if let Some(a) = self.source_addr {
            let _ = writeln!(s, "source_addr = \"{a}\"");
        }
        let _ = writeln!(s, "open = [{}]", q(&self.open.iter().map(|o| o.to_string()).collect::<Vec<_>>()));
        let _ = writeln!(s, "delay_ms = {}", self.delay_ms);
        if self.close {
            let _ = writeln!(s, "close = true");
        }
        if self.mode == Mode::Totp {
            let _ = writeln!(s, "step_secs = {}", self.step_secs);
            let _ = writeln!(s, "skew = {}", self.skew);
        }
        if self.mode == Mode::File {
            let _ = writeln!(s, "warn_below = {}", self.warn_below);
        }
        s
    }
}

impl Bundle {
    /// Renders the bundle (secret material: write it 0600 only).
    pub fn to_toml(&self) -> Zeroizing<String> {
        let mut s =
            String::from("# one-time-knock profile bundle: import with `knock profile import FILE`, then delete it\n");
        s.push_str("[profile]\n");
        s.push_str(&self.profile.to_toml().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n"));
        s.push_str("\n\n[secret]\n");
        match &self.secret {
            BundleSecret::Key(k) => s.push_str(&format!("key = \"{}\"\n", k.encode().trim())),
            BundleSecret::Sequences(seq) => s.push_str(&format!("sequences = \"\"\"\n{}\"\"\"\n", seq.as_str())),
        }
        Zeroizing::new(s)
    }

    /// The bundle on one line, for copy and paste: `one-time-knock-profile-v1:` and the base64url
    /// of its TOML (secret material: keep it out of shell history and logs).
    pub fn to_line(&self) -> Zeroizing<String> {
        use base64::Engine;
        let toml = self.to_toml();
        Zeroizing::new(format!(
            "{LINE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(toml.as_bytes())
        ))
    }

    /// Parses a bundle given as TOML or as the one-line form.
    pub fn parse_any(path: &Path, text: &str) -> Result<Bundle, ConfigError> {
        use base64::Engine;
        let Some(body) = text.trim().strip_prefix(LINE_PREFIX) else { return Bundle::parse(path, text) };
        let bytes =
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body.trim()).map_err(|_| {
                plain_err(path, "the one-line profile is damaged (not base64url); copy it again".into())
            })?);
        let toml =
            std::str::from_utf8(&bytes).map_err(|_| plain_err(path, "the one-line profile is damaged".into()))?;
        Bundle::parse(path, toml)
    }

    /// Parses a bundle.
    pub fn parse(path: &Path, text: &str) -> Result<Bundle, ConfigError> {
        let raw: RawBundle = toml::from_str(text).map_err(|e| toml_err(path, text, e))?;
        let profile = Profile::from_raw(path, raw.profile)?;
        let secret = match (raw.secret.key, raw.secret.sequences, profile.mode) {
            (Some(k), None, Mode::Hotp | Mode::Totp) => {
                let k = Zeroizing::new(k);
                BundleSecret::Key(Secret::decode(&k).map_err(|r| plain_err(path, format!("[secret] key {r}")))?)
            }
            (None, Some(s), Mode::File) => BundleSecret::Sequences(Zeroizing::new(s)),
            _ => {
                return Err(plain_err(
                    path,
                    "[secret] must hold `key` for a hotp profile or `sequences` for a file profile".into(),
                ))
            }
        };
        Ok(Bundle { profile, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        Profile {
            name: "prod".into(),
            server: "198.18.0.1".parse().unwrap(),
            server_id: [0x42; 16],
            door: "ssh".into(),
            client: "alice".into(),
            mode: Mode::Hotp,
            knock_ports: "40000-42047".parse().unwrap(),
            protocols: vec![Proto::Tcp],
            length: 8,
            bind_source: false,
            source_addr: None,
            open: vec!["22/tcp".parse().unwrap()],
            delay_ms: 20,
            close: true,
            step_secs: 30,
            skew: 1,
            warn_below: 10,
        }
    }

    #[test]
    fn bundle_round_trip_keeps_profile_and_key() {
        let key = Secret::from_bytes([7; 32]);
        let b = Bundle { profile: sample(), secret: BundleSecret::Key(Secret::from_bytes([7; 32])) };
        let text = b.to_toml();
        let back = Bundle::parse(Path::new("b.toml"), &text).unwrap();
        assert_eq!(back.profile, sample());
        assert!(!format!("{back:?}").contains(key.encode().split(' ').nth(1).unwrap().trim()));
        match back.secret {
            BundleSecret::Key(k) => assert_eq!(k.expose(), key.expose()),
            BundleSecret::Sequences(_) => panic!("expected a key"),
        }
    }

    #[test]
    fn a_totp_profile_keeps_its_step_and_skew() {
        let totp = Profile { mode: Mode::Totp, step_secs: 10, skew: 3, ..sample() };
        let back = Bundle::parse(
            Path::new("b.toml"),
            &Bundle { profile: totp.clone(), secret: BundleSecret::Key(Secret::from_bytes([1; 32])) }.to_toml(),
        )
        .unwrap();
        assert_eq!(back.profile, totp);
        let old = totp.to_toml().replace("skew = 3\n", "");
        let raw: RawProfile = toml::from_str(&old).unwrap();
        assert_eq!(Profile::from_raw(Path::new("p.toml"), raw).unwrap().skew, crate::config::DEFAULT_SKEW);
    }

    #[test]
    fn one_line_export_round_trips_and_refuses_damage() {
        let b = Bundle { profile: sample(), secret: BundleSecret::Key(Secret::from_bytes([9; 32])) };
        let line = b.to_line();
        assert!(line.starts_with(LINE_PREFIX) && !line.contains('\n'));
        let back = Bundle::parse_any(Path::new("-"), &format!("{}\n", line.as_str())).unwrap();
        assert_eq!(back.profile, sample());
        let damaged = format!("{}!!", &line[..line.len() - 2]);
        assert!(Bundle::parse_any(Path::new("-"), &damaged).unwrap_err().message.contains("damaged"));
    }

    /// PROTOCOL.md section 9.4: base64url (RFC 4648 section 5) without `=` padding; a reader
    /// refuses padding and the standard alphabet's `+` and `/`.
    #[test]
    fn the_one_line_form_is_base64url_without_padding() {
        use base64::Engine;
        let mut padded_tried = 0;
        for n in 0..3 {
            let mut p = sample();
            p.name = format!("prod{}", "x".repeat(n));
            let b = Bundle { profile: p, secret: BundleSecret::Key(Secret::from_bytes([0xfb; 32])) };
            let line = b.to_line();
            let body = line.strip_prefix(LINE_PREFIX).unwrap();
            assert!(body.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{body}");
            assert!(Bundle::parse_any(Path::new("-"), &format!("  {}\n", line.as_str())).is_ok());
            let padded = base64::engine::general_purpose::URL_SAFE.encode(b.to_toml().as_bytes());
            if padded.ends_with('=') {
                padded_tried += 1;
                assert!(
                    Bundle::parse_any(Path::new("-"), &format!("{LINE_PREFIX}{padded}")).is_err(),
                    "padding refused"
                );
            }
            for foreign in ["+", "/", "="] {
                let bad = format!("{LINE_PREFIX}{foreign}{}", &body[1..]);
                assert!(Bundle::parse_any(Path::new("-"), &bad).is_err(), "`{foreign}` refused");
            }
        }
        assert!(padded_tried > 0);
    }

    #[test]
    fn profile_errors_say_what_is_wrong() {
        let text = sample().to_toml().replace("length = 8", "length = 99");
        let raw: RawProfile = toml::from_str(&text).unwrap();
        let e = Profile::from_raw(Path::new("p.toml"), raw).unwrap_err();
        assert!(e.message.contains("length 99"), "{e}");
        let e = Bundle::parse(Path::new("p.toml"), "[profile]\nversion = \n").unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
