//! The persistent `NETLINK_NETFILTER` socket that carries grant and revoke batches.
//!
//! One request at a time: send a batch, then read replies until the ack (or error) of its
//! element message arrives, or a deadline passes. A failed batch gets an error for the
//! failing message and no ack for the batch end, so nothing else is awaited. Replies not from
//! the kernel (port id 0) or for other sequence numbers are skipped. After any error of the
//! socket itself its state is unknown: the owner drops it and opens a new one.

use std::io;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::ack::{self, Reply};
use super::nfnl::Batch;

/// How long one `recv` blocks before the deadline is checked again.
const RECV_SLICE: Duration = Duration::from_millis(100);
/// Room for one datagram of replies (acks are capped to the request's header).
const RECV_BUFFER: usize = 32 * 1024;

/// Why a request failed.
#[derive(Debug)]
pub enum RequestError {
    /// The socket failed (send, receive).
    Io(io::Error),
    /// The kernel refused the batch.
    Refused {
        /// Positive errno.
        errno: i32,
        /// The extended ack's message, if any.
        message: Option<String>,
        /// The extended ack's offset of the offending attribute, if any.
        offset: Option<u32>,
    },
    /// No ack or error arrived in time.
    Timeout(Duration),
    /// A reply could not be parsed.
    Malformed(&'static str),
}

/// A bound nfnetlink socket and the next free sequence number.
pub struct NfnlSocket {
    socket: Socket,
    next_seq: u32,
    buf: Vec<u8>,
}

impl NfnlSocket {
    /// Opens and binds the socket in the calling thread's network namespace. Asks for capped
    /// acks (no echo of the request) and extended acks (the kernel's error details).
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.set_cap_ack(true)?;
        // Extended acks only add detail to errors; an old kernel without them still works.
        let _ = socket.set_ext_ack(true);
        set_receive_timeout(&socket, RECV_SLICE)?;
        Ok(NfnlSocket { socket, next_seq: 1, buf: Vec::with_capacity(RECV_BUFFER) })
    }

    /// Reserves the three sequence numbers of one batch and returns the first.
    pub fn reserve_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(3);
        seq
    }

    /// Sends `batch` and waits up to `timeout` for the ack of its element message.
    pub fn request(&mut self, batch: &Batch, timeout: Duration) -> Result<(), RequestError> {
        let sent = self.socket.send(&batch.bytes, 0).map_err(RequestError::Io)?;
        if sent != batch.bytes.len() {
            return Err(RequestError::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", batch.bytes.len()),
            )));
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.buf.clear();
            match self.socket.recv_from(&mut self.buf, 0) {
                Ok((_, from)) if !is_kernel(&from) => {}
                Ok((len, _)) => {
                    let datagram = self.buf.get(..len).unwrap_or(&self.buf);
                    match ack::scan(datagram, batch.ack_seq).map_err(RequestError::Malformed)? {
                        Reply::Pending => {}
                        Reply::Acked => return Ok(()),
                        Reply::Refused { errno, message, offset } => {
                            return Err(RequestError::Refused { errno, message, offset })
                        }
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RequestError::Io(e)),
            }
            if Instant::now() >= deadline {
                return Err(RequestError::Timeout(timeout));
            }
        }
    }
}

fn is_kernel(from: &SocketAddr) -> bool {
    from.port_number() == 0
}

/// Sets `SO_RCVTIMEO` on the netlink socket (netlink-sys 0.8 has no setter for it): through
/// socket2's borrowed view of the same descriptor, so nothing is duplicated or closed.
fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    socket2::SockRef::from(socket).set_read_timeout(Some(timeout))
}
