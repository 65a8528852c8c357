//! Sending knocks: a TCP knock is one SYN (a non-blocking connect that is dropped at once), a
//! UDP knock one datagram, every knock of one attempt from one source port. Also finds the
//! source address the kernel would use, and polls the opened port for `--wait`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use knock_core::{Knock, Proto};
use socket2::{Domain, Protocol, Socket, Type};

/// Why knocks could not be sent, naming the server (and the knock and port).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No local port could be held for an attempt's knocks.
    #[error("reserving a source port for the knocks to {server}: {source}")]
    Reserve {
        /// The server to be knocked.
        server: IpAddr,
        /// What the socket calls said.
        source: io::Error,
    },
    /// One knock could not be sent.
    #[error("knock {knock} to {server} from port {port}: {source}")]
    Knock {
        /// The knock.
        knock: Knock,
        /// The server.
        server: IpAddr,
        /// The attempt's source port.
        port: u16,
        /// What the socket call said.
        source: io::Error,
    },
    /// The kernel has no route to the server, so no source address toward it.
    #[error("no route to {server}: {source}; check this machine's network (`ip route get {server}`)")]
    NoRoute {
        /// The server.
        server: IpAddr,
        /// What connect(2) said.
        source: io::Error,
    },
    /// The source address toward the server could not be read from a socket.
    #[error("finding the source address toward {server}: {source}")]
    SourceAddress {
        /// The server.
        server: IpAddr,
        /// What the socket call said.
        source: io::Error,
    },
}

/// Port 0 on the unspecified address of `server`'s family: bind there to let the kernel choose.
fn any_port_for(server: IpAddr) -> SocketAddr {
    let any = match server {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(any, 0)
}

/// How many times a source port is drawn before giving up (one in use for UDP by someone else).
const PORT_TRIES: usize = 16;

/// The source port every knock of one attempt leaves from. The server tells attempts apart by
/// (address, source port), so a neighbour behind the same address cannot spoil this one with
/// wrong knocks (docs/PROTOCOL.md section 7). The port is held (a bound TCP socket, and the UDP
/// socket UDP knocks go out of) until the attempt is over.
pub struct AttemptPort {
    local: SocketAddr,
    _tcp: Socket,
    udp: UdpSocket,
}

impl AttemptPort {
    /// Reserves a free port, for TCP and UDP alike, in the family of `server`.
    pub fn reserve(server: IpAddr) -> Result<AttemptPort, SendError> {
        let any = any_port_for(server);
        let fail = |source: io::Error| SendError::Reserve { server, source };
        let mut last = None;
        for _ in 0..PORT_TRIES {
            let tcp = reusable_tcp(any).map_err(fail)?;
            tcp.bind(&any.into()).map_err(fail)?;
            let local = tcp.local_addr().map_err(fail)?;
            let local =
                local.as_socket().ok_or_else(|| fail(io::Error::other("the bound socket has no IP address")))?;
            match UdpSocket::bind(local) {
                Ok(udp) => return Ok(AttemptPort { local, _tcp: tcp, udp }),
                // Free for TCP but taken for UDP: draw another.
                Err(e) => last = Some(e),
            }
        }
        Err(fail(last.unwrap_or_else(|| io::Error::other("no port"))))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.local.port()
    }

    /// Sends one knock to `server` from this port.
    pub fn send_knock(&self, server: IpAddr, knock: Knock) -> Result<(), SendError> {
        let addr = SocketAddr::new(server, knock.port);
        let fail = |source: io::Error| SendError::Knock { knock, server, port: self.port(), source };
        match knock.proto {
            Proto::Tcp => {
                let s = reusable_tcp(addr).map_err(fail)?;
                // Closed without TIME_WAIT even if something answered, so a later knock of the
                // attempt to the same port can use the same four-tuple again.
                s.set_linger(Some(Duration::ZERO)).map_err(fail)?;
                s.bind(&self.local.into()).map_err(fail)?;
                s.set_nonblocking(true).map_err(fail)?;
                match s.connect(&addr.into()) {
                    // The SYN left with the connect call; nothing more is wanted from this socket.
                    Ok(()) => Ok(()),
                    Err(e) if e.raw_os_error() == Some(115) || e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                    Err(e) => Err(fail(e)),
                }
            }
            Proto::Udp => self.udp.send_to(&[0u8], addr).map(|_| ()).map_err(fail),
        }
    }
}

/// A TCP socket for `addr`'s family that may share its local port with the attempt's others
/// (none of them listens, and each connects to another destination port).
fn reusable_tcp(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    Ok(s)
}

/// Sends `knocks` in order, `delay` apart, all from one source port, calling `each` before
/// every knock.
pub fn send_sequence(
    server: IpAddr,
    knocks: &[Knock],
    delay: Duration,
    mut each: impl FnMut(usize, Knock),
) -> Result<(), SendError> {
    let from = AttemptPort::reserve(server)?;
    for (i, k) in knocks.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            sleep(delay);
        }
        each(i, *k);
        from.send_knock(server, *k)?;
    }
    Ok(())
}

/// The local address the kernel picks to reach `server` (what the server sees without NAT).
pub fn local_source(server: IpAddr) -> Result<IpAddr, SendError> {
    let unreadable = |source: io::Error| SendError::SourceAddress { server, source };
    let s = UdpSocket::bind(any_port_for(server)).map_err(unreadable)?;
    s.connect(SocketAddr::new(server, 9)).map_err(|source| SendError::NoRoute { server, source })?;
    Ok(s.local_addr().map_err(unreadable)?.ip())
}

/// Polls `server:port` with TCP connects until one succeeds or `timeout` passes.
/// Returns how long it took from `since`.
pub fn wait_for_port(server: IpAddr, port: u16, since: Instant, timeout: Duration) -> Option<Duration> {
    let addr = SocketAddr::new(server, port);
    while since.elapsed() < timeout {
        let left = timeout.saturating_sub(since.elapsed()).min(Duration::from_millis(100));
        if left.is_zero() {
            break;
        }
        if TcpStream::connect_timeout(&addr, left).is_ok() {
            return Some(since.elapsed());
        }
        sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    /// Every knock of an attempt, TCP and UDP, leaves from the attempt's one port (on
    /// loopback, where the listeners see the peer's port).
    #[test]
    fn an_attempts_knocks_share_one_source_port() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let tcp = TcpListener::bind((lo, 0)).unwrap();
        let udp = UdpSocket::bind((lo, 0)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (tcp_port, udp_port) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
        let from = AttemptPort::reserve(lo).unwrap();
        let other = AttemptPort::reserve(lo).unwrap();
        assert_ne!(from.port(), other.port(), "each attempt has its own port");
        for _ in 0..2 {
            from.send_knock(lo, Knock::udp(udp_port)).unwrap();
            let mut buf = [0u8; 8];
            let (_, peer) = udp.recv_from(&mut buf).unwrap();
            assert_eq!(peer.port(), from.port());
        }
        // The same knock twice in one attempt (knocks 1 and 3 may be equal), to a port where
        // something answers: both leave from the attempt's port.
        for _ in 0..2 {
            from.send_knock(lo, Knock::tcp(tcp_port)).unwrap();
            let (mut conn, peer) = tcp.accept().unwrap();
            assert_eq!(peer.port(), from.port());
            let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = conn.read(&mut [0u8; 1]);
        }
    }
}
