//! Batched injection for `flood`: an AF_PACKET raw socket bound to one
//! interface (qdisc bypassed) that sends a batch of Ethernet frames with one
//! `sendmmsg` call. Every frame passes the same network guard as
//! [`crate::inject::Injector`] before it enters a batch. The one module of knock-lab with unsafe code: the
//! libc calls, each with its SAFETY note.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::inject::guard_frame;

/// Most frames one batch holds (and one `sendmmsg` call sends).
pub const BATCH: usize = 64;
/// Room for one frame: Ethernet + IPv6 + UDP with a short payload fits.
const SLOT: usize = 128;

/// A batch of frames waiting to be sent on one interface.
pub struct BatchSender {
    fd: OwnedFd,
    ifindex: i32,
    iface: String,
    slots: Vec<[u8; SLOT]>,
    lens: [usize; BATCH],
    queued: usize,
}

/// What one flush did: frames sent, frames whose send failed, and the last error.
pub struct Flushed {
    pub sent: usize,
    pub failed: usize,
    pub error: Option<String>,
}

impl BatchSender {
    /// Opens a send-only packet socket on `iface` (protocol 0: it receives nothing).
    pub fn open(iface: &str) -> Result<Self, String> {
        let name = std::ffi::CString::new(iface).map_err(|_| format!("invalid interface name {iface:?}"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string we own.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(format!("no interface {iface:?}: {}", io::Error::last_os_error()));
        }
        let ifindex = i32::try_from(ifindex).map_err(|_| format!("interface index of {iface} out of range"))?;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(format!("cannot open a packet socket for {iface}: {}", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex;
        // SAFETY: bind(2) with a correctly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!("cannot bind a packet socket to {iface}: {}", io::Error::last_os_error()));
        }
        // Skipping the qdisc is an optimisation only; an old kernel without it still works.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) with an int option value of the right size.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(BatchSender {
            fd,
            ifindex,
            iface: iface.to_string(),
            slots: vec![[0; SLOT]; BATCH],
            lens: [0; BATCH],
            queued: 0,
        })
    }

    /// The interface this sender sends on.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Guards `frame` and queues it; the caller flushes when [`BATCH`] are queued.
    pub fn push(&mut self, frame: &[u8]) -> Result<(), String> {
        assert!(self.queued < BATCH, "flush before pushing more than {BATCH} frames");
        if frame.len() > SLOT {
            return Err(format!("frame of {} bytes is longer than the {SLOT}-byte batch slot", frame.len()));
        }
        guard_frame(frame)?;
        self.slots[self.queued][..frame.len()].copy_from_slice(frame);
        self.lens[self.queued] = frame.len();
        self.queued += 1;
        Ok(())
    }

    /// Sends every queued frame (sendmmsg, retried for the rest after a short
    /// count); the batch is empty afterwards.
    pub fn flush(&mut self) -> Flushed {
        let n = mem::replace(&mut self.queued, 0);
        let mut iov: [libc::iovec; BATCH] =
            // SAFETY: iovec is plain old data; the entries used are filled below.
            unsafe { mem::zeroed() };
        // SAFETY: mmsghdr is plain old data; the entries used are filled below.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for ((v, slot), &len) in iov.iter_mut().zip(&mut self.slots).zip(&self.lens).take(n) {
            *v = libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: len };
        }
        for (m, v) in msgs.iter_mut().zip(&mut iov).take(n) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let (mut done, mut failed, mut error) = (0, 0, None);
        while done < n {
            // SAFETY: msgs[done..n] point at iovecs into self.slots, alive for the call.
            let rc = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), msgs[done..n].as_mut_ptr(), (n - done) as libc::c_uint, 0)
            };
            if rc > 0 {
                done += rc as usize;
                continue;
            }
            let e = if rc == 0 { io::Error::other("sendmmsg sent nothing") } else { io::Error::last_os_error() };
            if e.kind() != io::ErrorKind::Interrupted {
                // The frame at `done` failed: count it and go on with the rest.
                failed += 1;
                done += 1;
                error = Some(format!("on {} (ifindex {}): {e}", self.iface, self.ifindex));
            }
        }
        Flushed { sent: n - failed, failed, error }
    }
}
