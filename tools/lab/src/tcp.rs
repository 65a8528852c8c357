//! A stand-in for SSH in the lab: `serve` accepts connections, sends a banner and echoes lines;
//! `probe` connects (exit 0 when it can) and can hold a session, checking every echo, to show
//! that a session opened during a grant survives the grant's expiry.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::addr::check_allowed;
use crate::cli::{ProbeArgs, ServeArgs};

const BANNER: &str = "SSH-2.0-knock-lab\r\n";

/// Serves until `max_seconds` pass.
pub fn serve(args: &ServeArgs) -> Result<(), String> {
    let max = Duration::from_secs(args.max_seconds.min(3600));
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(SocketAddr::new(args.listen, args.port)),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| e.to_string())?;
    if args.listen.is_ipv6() {
        sock.set_only_v6(false).map_err(|e| e.to_string())?;
    }
    sock.set_reuse_address(true).map_err(|e| e.to_string())?;
    sock.bind(&SocketAddr::new(args.listen, args.port).into()).map_err(|e| format!("bind port {}: {e}", args.port))?;
    sock.listen(64).map_err(|e| e.to_string())?;
    let listener: TcpListener = sock.into();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let start = Instant::now();
    while start.elapsed() < max {
        match listener.accept() {
            Ok((stream, _)) => {
                thread::spawn(move || echo(stream, max));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

fn echo(mut stream: TcpStream, max: Duration) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(max));
    if stream.write_all(BANNER.as_bytes()).is_err() {
        return;
    }
    let Ok(read) = stream.try_clone() else { return };
    for line in BufReader::new(read).lines() {
        let Ok(line) = line else { return };
        if stream.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// Connects; with `hold_ms`, keeps exchanging lines until then.
pub fn probe(args: &ProbeArgs) -> Result<(), String> {
    check_allowed(args.addr, "destination")?;
    let addr = SocketAddr::new(args.addr, args.port);
    let timeout = Duration::from_millis(args.timeout_ms.clamp(1, 60_000));
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut banner = String::new();
    reader.read_line(&mut banner).map_err(|e| format!("no banner from {addr}: {e}"))?;
    let hold = Duration::from_millis(args.hold_ms.min(120_000));
    let start = Instant::now();
    let mut writer = stream;
    let mut n = 0u32;
    while start.elapsed() < hold {
        n += 1;
        writer.write_all(format!("ping {n}\n").as_bytes()).map_err(|e| format!("session to {addr} broke: {e}"))?;
        let mut back = String::new();
        reader.read_line(&mut back).map_err(|e| format!("session to {addr} broke after {n} lines: {e}"))?;
        if back.trim() != format!("ping {n}") {
            return Err(format!("session to {addr}: echo {n} was `{}`", back.trim()));
        }
        thread::sleep(Duration::from_millis(200));
    }
    println!("connected to {addr}{}", if n > 0 { format!(", session held with {n} echoes") } else { String::new() });
    Ok(())
}
