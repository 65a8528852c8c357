//! `[ledger]`: where consumption is recorded. The default is the state directory's ledger
//! files; `backend = "etcd"` shares them with the other nodes of an HA pair through an etcd
//! cluster (docs/OPERATIONS.md, "Two bastions, one door").

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration::parse_duration;
use super::{valid_name, ConfigError, Locator};

/// The etcd timeout when none is given, per endpoint and call.
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_millis(500);
/// The shortest and longest etcd timeouts accepted.
pub const ETCD_TIMEOUT_BOUNDS: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(10));
/// The key prefix when none is given.
pub const DEFAULT_ETCD_PREFIX: &str = "/knockd/";

/// Where consumption is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LedgerBackend {
    /// One ledger file per key or sequence file in the state directory.
    #[default]
    File,
    /// One key per ledger in an etcd cluster, shared by every node that names it.
    Etcd(EtcdSettings),
}

/// `backend = "etcd"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The members' client URLs (`https://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// Every key this daemon uses starts with it (`<prefix>ledger/<label>`).
    pub prefix: String,
    /// The CA that signed the members' certificates.
    pub ca_file: PathBuf,
    /// This node's client certificate.
    pub cert_file: PathBuf,
    /// Its key (refused unless only its owner can read it).
    pub key_file: PathBuf,
    /// The most one member may take to answer one call.
    pub timeout: Duration,
    /// This node's name, in the shared state and the audit log.
    pub node: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    backend: Option<Spanned<String>>,
    endpoints: Option<Spanned<Vec<String>>>,
    prefix: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
}

impl RawLedger {
    /// The keys given, with their spans, for the "only with etcd" check.
    fn etcd_keys(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut keys = Vec::new();
        if let Some(s) = &self.endpoints {
            keys.push(("endpoints", s.span()));
        }
        for (name, s) in [
            ("prefix", &self.prefix),
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("timeout", &self.timeout),
            ("node", &self.node),
        ] {
            if let Some(s) = s {
                keys.push((name, s.span()));
            }
        }
        keys
    }
}

/// Validates `[ledger]`; paths are resolved with `resolve` (relative to the config file).
pub(super) fn validate(
    loc: &Locator,
    raw: &Spanned<RawLedger>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<LedgerBackend, ConfigError> {
    let r = raw.get_ref();
    match r.backend.as_ref().map_or("file", |s| s.get_ref().as_str()) {
        "file" => {
            if let Some((key, span)) = r.etcd_keys().into_iter().next() {
                return Err(loc
                    .at(span.start, format!("`{key}` is for backend = \"etcd\"; the file backend takes no settings")));
            }
            Ok(LedgerBackend::File)
        }
        "etcd" => {
            let need = |v: &Option<Spanned<String>>, key: &str| -> Result<PathBuf, ConfigError> {
                v.as_ref().map(|s| resolve(s.get_ref())).ok_or_else(|| {
                    loc.span(
                        raw,
                        format!(
                            "backend = \"etcd\" needs `{key}` (a PEM file; TLS with a client certificate is required)"
                        ),
                    )
                })
            };
            let endpoints = r.endpoints.as_ref().ok_or_else(|| {
                loc.span(raw, "backend = \"etcd\" needs `endpoints`, e.g. [\"https://198.18.0.11:2379\"]")
            })?;
            if endpoints.get_ref().is_empty() {
                return Err(loc.span(endpoints, "endpoints is empty; list the members' client URLs"));
            }
            if let Some(bad) = endpoints.get_ref().iter().find(|e| !valid_endpoint(e)) {
                return Err(loc.span(endpoints, format!("endpoint `{bad}` must be https://HOST:PORT")));
            }
            let prefix = match &r.prefix {
                None => DEFAULT_ETCD_PREFIX.to_string(),
                Some(s) if s.get_ref().starts_with('/') && s.get_ref().ends_with('/') && s.get_ref().len() > 1 => {
                    s.get_ref().clone()
                }
                Some(s) => return Err(loc.span(s, "prefix must start and end with `/`, e.g. \"/knockd/\"")),
            };
            let timeout = match &r.timeout {
                None => DEFAULT_ETCD_TIMEOUT,
                Some(s) => {
                    let t = parse_duration(s.get_ref()).map_err(|e| loc.span(s, e))?;
                    let (lo, hi) = ETCD_TIMEOUT_BOUNDS;
                    if t < lo || t > hi {
                        return Err(loc.span(s, format!("timeout must lie between {lo:?} and {hi:?}")));
                    }
                    t
                }
            };
            let node = match &r.node {
                Some(s) if valid_name(s.get_ref()) => s.get_ref().clone(),
                Some(s) => return Err(loc.span(s, "node must be 1-64 characters of a-z, 0-9, _ or -")),
                None => {
                    return Err(loc.span(raw, "backend = \"etcd\" needs `node`, this node's name (unique in the pair)"))
                }
            };
            Ok(LedgerBackend::Etcd(EtcdSettings {
                endpoints: endpoints.get_ref().clone(),
                prefix,
                ca_file: need(&r.ca_file, "ca_file")?,
                cert_file: need(&r.cert_file, "cert_file")?,
                key_file: need(&r.key_file, "key_file")?,
                timeout,
                node,
            }))
        }
        other => {
            let message = format!("unknown ledger backend `{other}` (expected file or etcd)");
            Err(r.backend.as_ref().map_or_else(|| loc.span(raw, message.clone()), |s| loc.span(s, message.clone())))
        }
    }
}

fn valid_endpoint(e: &str) -> bool {
    e.strip_prefix("https://").is_some_and(|host| !host.is_empty() && !host.contains('/') && host.contains(':'))
}
