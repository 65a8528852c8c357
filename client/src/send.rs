//! Sending knocks: a TCP knock is one SYN (a non-blocking connect that is dropped at once), a
//! UDP knock one datagram. Also finds the source address the kernel would use, and polls the
//! opened port for `--wait`.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use knock_core::{Knock, Proto};
use socket2::{Domain, Protocol, Socket, Type};

/// Sends one knock to `server`.
pub fn send_knock(server: IpAddr, knock: Knock) -> Result<(), String> {
    let addr = SocketAddr::new(server, knock.port);
    let fail = |e: std::io::Error| format!("knock {knock} to {server}: {e}");
    match knock.proto {
        Proto::Tcp => {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
            s.set_nonblocking(true).map_err(fail)?;
            match s.connect(&addr.into()) {
                // The SYN left with the connect call; nothing more is wanted from this socket.
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(115) || e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
                Err(e) => Err(fail(e)),
            }
        }
        Proto::Udp => {
            let bind: SocketAddr =
                if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| "bad bind")?;
            let s = UdpSocket::bind(bind).map_err(fail)?;
            s.send_to(&[0u8], addr).map_err(fail)?;
            Ok(())
        }
    }
}

/// Sends `knocks` in order, `delay` apart, calling `each` before every knock.
pub fn send_sequence(
    server: IpAddr,
    knocks: &[Knock],
    delay: Duration,
    mut each: impl FnMut(usize, Knock),
) -> Result<(), String> {
    for (i, k) in knocks.iter().enumerate() {
        if i > 0 && !delay.is_zero() {
            sleep(delay);
        }
        each(i, *k);
        send_knock(server, *k)?;
    }
    Ok(())
}

/// The local address the kernel picks to reach `server` (what the server sees without NAT).
pub fn local_source(server: IpAddr) -> Result<IpAddr, String> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| "bad bind")?;
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(SocketAddr::new(server, 9)).map_err(|e| format!("no route to {server}: {e}"))?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
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
