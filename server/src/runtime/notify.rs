//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) without libsystemd: one datagram
//! per state change to the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` in the
//! abstract namespace). The daemon says `READY=1` once its capture and its firewall table are up,
//! `RELOADING=1` then `READY=1` around a SIGHUP, and `STOPPING=1` on its way out.
//!
//! Nothing here may stop the daemon: a send that fails is reported once as a warning.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Why `NOTIFY_SOCKET` cannot be used (systemd then never hears that knockd is ready).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Not a name.
    #[error("NOTIFY_SOCKET={0:?} is not valid UTF-8")]
    NotUtf8(std::ffi::OsString),
    /// Not a socket address, or no socket.
    #[error("NOTIFY_SOCKET={name}: {source}")]
    Socket {
        /// The variable's value.
        name: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where state changes go: systemd's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// The socket as `NOTIFY_SOCKET` named it, for messages.
    name: String,
    warned: bool,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for: `None` when it is unset (not started by systemd),
    /// an error naming the variable when it cannot be used.
    pub fn from_env() -> Option<Result<Notifier, NotifyError>> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        Some(match name.to_str() {
            Some(name) => Notifier::new(name),
            None => Err(NotifyError::NotUtf8(name)),
        })
    }

    /// A notifier for the socket `name`: a path, or `@name` for the abstract namespace.
    pub fn new(name: &str) -> Result<Notifier, NotifyError> {
        let err = |source| NotifyError::Socket { name: name.to_string(), source };
        let addr = socket_addr(name).map_err(err)?;
        let socket = UnixDatagram::unbound().map_err(err)?;
        Ok(Notifier { socket, addr, name: name.to_string(), warned: false })
    }

    /// Capture and firewall are up (again, after a reload); `status` is shown by systemctl.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A reload (SIGHUP) starts; [`Notifier::ready`] ends it.
    pub fn reloading(&mut self) {
        self.send("RELOADING=1\nSTATUS=reloading the configuration");
    }

    /// The daemon is stopping.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&mut self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            if !self.warned {
                tracing::warn!("cannot notify systemd at NOTIFY_SOCKET={}: {e}", self.name);
                self.warned = true;
            }
        }
    }
}

/// The address of a `NOTIFY_SOCKET` value.
fn socket_addr(name: &str) -> std::io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None if name.starts_with('/') => SocketAddr::from_pathname(name),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract socket (@name)",
        )),
    }
}

/// A status line: systemd takes one line per field.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn states_reach_a_socket_by_path() {
        let dir = std::env::temp_dir().join(format!("knockd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.ready("capturing on eth0\ndoors ssh");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=capturing on eth0 doors ssh");
        n.reloading();
        assert!(receive(&listener).starts_with("RELOADING=1\n"));
        n.stopping();
        assert!(receive(&listener).starts_with("STOPPING=1\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn states_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("knockd-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(&format!("@{name}")).unwrap().ready("up");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=up");
    }

    #[test]
    fn a_relative_path_is_refused_and_a_lost_socket_does_not_stop_the_daemon() {
        let e = Notifier::new("notify.sock").err().expect("refused").to_string();
        assert!(e.contains("NOTIFY_SOCKET=notify.sock") && e.contains("absolute path"), "{e}");
        let mut n = Notifier::new("/nonexistent/knockd/notify").unwrap();
        n.ready("up");
        n.stopping();
        assert!(n.warned);
    }
}
