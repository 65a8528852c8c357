//! A small blocking client for etcd's v3 JSON gateway (`/v3/kv/range`, `/v3/kv/txn`) over HTTPS
//! with a client certificate: what knockd's shared ledger needs and nothing more. Every call is
//! bounded in time: each endpoint gets at most the configured timeout, and a call gives up after
//! trying each endpoint once.
//!
//! Why the gateway and not gRPC: the daemon's decision path is synchronous, and a blocking
//! HTTPS request with a deadline keeps it so; the gRPC client (etcd-client) brings an async
//! runtime and a protobuf compiler to the build for the same three calls. etcd serves the
//! gateway on its client port from 3.3 on (`/v3/` from 3.4).
//!
//! Reads are linearizable (etcd's default): a member without quorum cannot answer them, so a
//! node never acts on a stale view of the shared state.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

pub use wire::KeyValue;

/// What can go wrong. Messages name the file or endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A TLS file cannot be read or holds no usable certificate or key.
    #[error("etcd TLS file {file}: {reason}")]
    Tls {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An endpoint is not a URL this client can use.
    #[error("etcd endpoint `{0}`: give https://HOST:PORT (http:// only without TLS settings)")]
    Endpoint(String),
    /// No endpoint answered in time (down, unreachable, without quorum, or refusing us).
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
}

/// The files of a TLS connection with a client certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the members' certificates (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Client URLs of the members, tried in order from the last one that answered.
    pub endpoints: Vec<String>,
    /// TLS with a client certificate; `None` for plain http (tests, or a local proxy).
    pub tls: Option<TlsFiles>,
    /// The most one endpoint may take to answer one call.
    pub timeout: Duration,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// Written; the cluster's revision after the write.
    Written {
        /// The revision of the write.
        revision: i64,
    },
    /// The key had changed (or appeared): nothing was written. What it holds now.
    Conflict {
        /// The key now, `None` when it does not exist.
        current: Option<KeyValue>,
    },
}

/// After a call found no endpoint answering, calls fail at once for this long, without trying:
/// a caller that loops (the daemon) must not stall for every endpoint's timeout on each call
/// while the cluster is down.
pub const COOLDOWN: Duration = Duration::from_secs(2);

/// A client of one cluster.
#[derive(Debug)]
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
    /// The endpoint to try first: the last one that answered.
    first: AtomicUsize,
    timeout: Duration,
    /// When the client was made, the origin of `down_until_ms`.
    born: Instant,
    /// Calls fail at once until this many ms after `born` (0: not down).
    down_until_ms: AtomicU64,
}

fn read(path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| EtcdError::Tls { file: path.to_path_buf(), reason: e.to_string() })
}

fn tls_config(files: &TlsFiles) -> Result<TlsConfig, EtcdError> {
    let bad = |file: &Path, reason: String| EtcdError::Tls { file: file.to_path_buf(), reason };
    let certs = |path: &Path| -> Result<Vec<Certificate<'static>>, EtcdError> {
        let pem = read(path)?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| bad(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(path, "no certificate in it (PEM `BEGIN CERTIFICATE`)".into()));
        }
        Ok(certs)
    };
    let ca = certs(&files.ca)?;
    let chain = certs(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKey::from_pem(&key_pem).map_err(|e| bad(&files.key, format!("no private key in it: {e}")))?;
    key_matches(&chain, &key_pem)
        .map_err(|e| bad(&files.key, format!("{e}; it is not the key of {}", files.cert.display())))?;
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&ca))
        .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
        .build())
}

/// Whether the key in `key_pem` belongs to the first certificate of `chain` (ureq would panic on
/// a mismatch, at the first connection).
fn key_matches(chain: &[Certificate<'static>], key_pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let certs = chain.iter().map(|c| CertificateDer::from(c.der().to_vec())).collect();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs, key)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Client {
    /// A client for `settings`: reads the TLS files and checks the endpoints; connects lazily.
    pub fn new(settings: &Settings) -> Result<Client, EtcdError> {
        let scheme = if settings.tls.is_some() { "https://" } else { "http://" };
        let mut endpoints = Vec::new();
        for e in &settings.endpoints {
            let url = e.trim_end_matches('/');
            let host = url.strip_prefix(scheme).ok_or_else(|| EtcdError::Endpoint(e.clone()))?;
            if host.is_empty() || host.contains('/') {
                return Err(EtcdError::Endpoint(e.clone()));
            }
            endpoints.push(url.to_string());
        }
        if endpoints.is_empty() {
            return Err(EtcdError::Endpoint(String::new()));
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(2);
        if let Some(files) = &settings.tls {
            config = config.tls_config(tls_config(files)?);
        }
        Ok(Client {
            agent: config.build().new_agent(),
            endpoints,
            first: AtomicUsize::new(0),
            timeout: settings.timeout,
            born: Instant::now(),
            down_until_ms: AtomicU64::new(0),
        })
    }

    /// Posts `body` to `path` on the first endpoint that answers with a response of type `T`.
    fn call<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, EtcdError> {
        let started = Instant::now();
        let now_ms = started.duration_since(self.born).as_millis() as u64;
        let down_until = self.down_until_ms.load(Ordering::Relaxed);
        if now_ms < down_until {
            return Err(EtcdError::Unavailable(format!(
                "no endpoint answered {} ms ago; not tried again for {} ms",
                now_ms + COOLDOWN.as_millis() as u64 - down_until,
                down_until - now_ms
            )));
        }
        let first = self.first.load(Ordering::Relaxed) % self.endpoints.len();
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let at = (first + i) % self.endpoints.len();
            let endpoint = &self.endpoints[at];
            match self.call_one::<T>(endpoint, path, body) {
                Ok(answer) => {
                    self.first.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(why) => failures.push(format!("{endpoint}: {why}")),
            }
        }
        let failed_ms = Instant::now().duration_since(self.born).as_millis() as u64;
        self.down_until_ms.store(failed_ms + COOLDOWN.as_millis() as u64, Ordering::Relaxed);
        Err(EtcdError::Unavailable(format!(
            "{} (tried {} endpoint(s) in {} ms, {} ms each at most)",
            failures.join("; "),
            self.endpoints.len(),
            started.elapsed().as_millis(),
            self.timeout.as_millis()
        )))
    }

    fn call_one<T: DeserializeOwned>(&self, endpoint: &str, path: &str, body: &Value) -> Result<T, String> {
        let url = format!("{endpoint}{path}");
        let response = self.agent.post(&url).send_json(body).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.into_body().with_config().limit(16 << 20).read_to_string().map_err(|e| e.to_string())?;
        if status != 200 {
            let why = serde_json::from_str::<wire::GatewayError>(&text)
                .map(|e| if e.message.is_empty() { e.error } else { e.message })
                .unwrap_or_else(|_| text.chars().take(200).collect());
            return Err(format!("HTTP {status}: {why}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("not an etcd gateway answer ({e})"))
    }

    /// The key, if it exists, and the cluster's revision at the read.
    pub fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), EtcdError> {
        let r: wire::RangeResponse = self.call("/v3/kv/range", &wire::range(key, false))?;
        let revision = r.header.revision;
        let mut kvs = r.kvs().map_err(EtcdError::Unavailable)?;
        Ok((kvs.pop(), revision))
    }

    /// Every key under `prefix`, and the cluster's revision at the read.
    pub fn list(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let r: wire::RangeResponse = self.call("/v3/kv/range", &wire::range(prefix, true))?;
        let revision = r.header.revision;
        Ok((r.kvs().map_err(EtcdError::Unavailable)?, revision))
    }

    /// Writes `value` to `key` in one transaction if the key was last written at
    /// `expected_mod_revision` (0: if it does not exist); otherwise writes nothing and says
    /// what the key holds now. An error means the outcome is unknown: the write may or may not
    /// have been committed (a lost answer), and the caller must treat it as not done.
    pub fn put_if(&self, key: &[u8], expected_mod_revision: i64, value: &[u8]) -> Result<Swap, EtcdError> {
        let r: wire::TxnResponse = self.call("/v3/kv/txn", &wire::put_if(key, expected_mod_revision, value))?;
        if r.succeeded {
            return Ok(Swap::Written { revision: r.header.revision });
        }
        Ok(Swap::Conflict { current: r.read_back().map_err(EtcdError::Unavailable)? })
    }
}
