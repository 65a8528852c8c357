//! Key files: 32-byte secrets from the OS RNG, created 0600 in one `open`, refused when
//! readable by group or others (as ssh refuses such private keys), zeroized on drop and never
//! printable. Other secret files (the server's sequence files) are read through the same
//! private-file check, so they are refused with the same message.
//!
//! On disk a key file is one line: `one-time-knock-key-v1 <base64url of the 32 bytes>`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every secret in bytes.
pub const SECRET_LEN: usize = 32;
const HEADER: &str = "one-time-knock-key-v1";

/// A 32-byte secret. `Debug` is redacted; the bytes are wiped when dropped. Not `Clone`: each
/// secret has one owner, so no forgotten copy outlives the wipe.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Wraps raw bytes (tests and test vectors).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Secret(bytes)
    }

    /// A fresh secret from the operating system's RNG.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; SECRET_LEN];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(Secret(bytes))
    }

    /// The raw bytes, for the HMAC only.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// A public fingerprint: hex of the first 16 bytes of SHA-256("one-time-knock/fingerprint" || key).
    /// Ledger state is keyed by it, so a replaced key starts fresh and a restored old key finds its state.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"one-time-knock/fingerprint");
        h.update(self.0);
        hex(&h.finalize()[..16])
    }

    /// The key-file line (secret material: callers must keep it out of logs).
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{HEADER} {}\n", URL_SAFE_NO_PAD.encode(self.0)))
    }

    /// Parses a key-file line.
    pub fn decode(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        if words.next() != Some(HEADER) {
            return Err(format!("does not start with `{HEADER}`"));
        }
        let body = words.next().ok_or("has no key after the header")?;
        if words.next().is_some() {
            return Err("has extra text after the key".into());
        }
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(body).map_err(|_| "holds a key that is not base64url")?);
        let arr: [u8; SECRET_LEN] =
            bytes.as_slice().try_into().map_err(|_| format!("holds {} bytes, expected {SECRET_LEN}", bytes.len()))?;
        Ok(Secret(arr))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex into exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// What can go wrong with a key file. Messages name the file and the fix, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS RNG failed.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(String),
    /// Group or others may read the file.
    #[error(
        "{what} {path} is accessible by group or others (mode {mode:04o}); it must be private. \
         Fix: chmod 600 {path}"
    )]
    TooOpen {
        /// What the file is: `key file`, `sequence file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is malformed.
    #[error("key file {path} {reason}; recreate it with `knockd client add` or `knock profile import`")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file would be overwritten.
    #[error("key file {0} already exists; refusing to overwrite a key (remove it first if you mean to replace it)")]
    Exists(PathBuf),
    /// An I/O error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the file is: `key file`, `sequence file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

const KEY_FILE: &str = "key file";

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KeyError + 'a {
    move |source| KeyError::Io { what, path: path.to_path_buf(), source }
}

/// Reads at most `limit` bytes of a secret file, refusing it (before reading a byte) when group
/// or others have any access, as ssh refuses such private keys. `what` names the file in errors
/// (`key file`, `sequence file`). The bytes are wiped when dropped.
pub fn read_private_file(path: &Path, what: &'static str, limit: u64) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let file = File::open(path).map_err(io_err(what, path))?;
    let mode = file.metadata().map_err(io_err(what, path))?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen { what, path: path.to_path_buf(), mode });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit).read_to_end(&mut bytes).map_err(io_err(what, path))?;
    Ok(bytes)
}

/// Reads a key file, refusing it when group or others have any access.
pub fn read_key_file(path: &Path) -> Result<Secret, KeyError> {
    let bytes = read_private_file(path, KEY_FILE, 4096)?;
    let malformed = |reason: String| KeyError::Malformed { path: path.to_path_buf(), reason };
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed("is not text".into()))?;
    Secret::decode(text).map_err(malformed)
}

/// Writes `secret` to a new file at `path`, created with mode 0600 in the same `open`.
/// Never overwrites; syncs the file and its directory.
pub fn write_key_file(path: &Path, secret: &Secret) -> Result<(), KeyError> {
    write_private_file(path, secret.encode().as_bytes()).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
        _ => KeyError::Io { what: KEY_FILE, path: path.to_path_buf(), source: e },
    })
}

/// Creates `path` with mode 0600 (never overwriting), writes `data`, syncs file and directory.
pub fn write_private_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("knock-keys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_with_private_mode() {
        let d = tmpdir("rt");
        let p = d.join("a.key");
        let s = Secret::generate().unwrap();
        write_key_file(&p, &s).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(read_key_file(&p).unwrap().expose(), s.expose());
        assert!(matches!(write_key_file(&p, &s), Err(KeyError::Exists(_))));
    }

    #[test]
    fn group_readable_key_is_refused_with_the_fix() {
        let d = tmpdir("open");
        let p = d.join("b.key");
        write_key_file(&p, &Secret::generate().unwrap()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_key_file(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("b.key") && err.contains("0640"), "{err}");
    }

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let s = Secret::from_bytes([0xAB; 32]);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let enc = s.encode();
        let body = enc.split_whitespace().nth(1).unwrap().to_string();
        let err = Secret::decode(&format!("{HEADER} {body} extra")).unwrap_err();
        assert!(!err.contains(&body));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert!(Secret::decode("").is_err());
        assert!(Secret::decode("one-time-knock-key-v1").is_err());
        assert!(Secret::decode("one-time-knock-key-v1 AAAA").is_err());
        assert!(Secret::decode("other AAAA").is_err());
    }
}
