//! The configuration read when `-c` is not given: `/etc/knockd/knockd.toml` when it exists,
//! else knockd 0.8's `/etc/knockd.conf`, so a server moved from Debian's knockd package to this
//! one keeps its configuration. The daemon says at start which one it took and why.

use std::path::{Path, PathBuf};

/// This daemon's own configuration file.
pub const TOML: &str = "/etc/knockd/knockd.toml";
/// knockd 0.8's configuration file.
pub const KNOCKD_CONF: &str = "/etc/knockd.conf";

/// The configuration taken without `-c`, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct DefaultConfig {
    pub path: PathBuf,
    /// True when knockd.toml was missing and knockd.conf is read instead.
    pub fell_back: bool,
}

impl DefaultConfig {
    /// The sentence the daemon logs at start.
    pub fn describe(&self) -> String {
        if self.fell_back {
            format!(
                "configuration {} (no -c given and {TOML} does not exist; knockd.conf doors keep knockd's \
                 behaviour, `knockd migrate` writes one-time doors)",
                self.path.display()
            )
        } else {
            format!("configuration {} (no -c given)", self.path.display())
        }
    }
}

/// The configuration to read without `-c`: [`TOML`] when it exists, else [`KNOCKD_CONF`] when
/// that exists, else [`TOML`] (whose absence the loader then reports).
pub fn choose() -> DefaultConfig {
    choose_between(Path::new(TOML), Path::new(KNOCKD_CONF))
}

fn choose_between(toml: &Path, knockd_conf: &Path) -> DefaultConfig {
    if toml.exists() || !knockd_conf.exists() {
        DefaultConfig { path: toml.to_path_buf(), fell_back: false }
    } else {
        DefaultConfig { path: knockd_conf.to_path_buf(), fell_back: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knockd_toml_first_then_knockd_conf() {
        let dir = std::env::temp_dir().join(format!("knockd-default-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (toml, conf) = (dir.join("knockd.toml"), dir.join("knockd.conf"));

        // Neither: the new file, so the error names it.
        assert_eq!(choose_between(&toml, &conf), DefaultConfig { path: toml.clone(), fell_back: false });
        // Only knockd.conf (a server moved from Debian's knockd): that one, and the log says why.
        std::fs::write(&conf, "[opencloseSSH]\n").unwrap();
        let fell_back = choose_between(&toml, &conf);
        assert_eq!(fell_back, DefaultConfig { path: conf.clone(), fell_back: true });
        assert!(fell_back.describe().contains("does not exist"), "{}", fell_back.describe());
        // Both: knockd.toml wins.
        std::fs::write(&toml, "[server]\n").unwrap();
        assert_eq!(choose_between(&toml, &conf), DefaultConfig { path: toml.clone(), fell_back: false });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
