//! Packet capture: live on interfaces (one thread each) or offline from a `.pcap` file,
//! through the same path: BPF filter in the kernel, [`parse_frame`], keep only knocks.
//! `knockd replay` reads capture files itself (`pcapfile.rs`) and parses their frames with the
//! same [`frame_knock`].
//!
//! Live capture never blocks on its consumer: a full channel drops the knock and counts it.
//! A capture that fails after start (link down, interface renamed) is logged and reopened
//! with backoff until the capture is stopped.

pub mod filter;
pub mod pcapfile;
#[cfg(test)]
pub(crate) mod testframes;

pub use filter::{bpf_filter, bpf_filter_rules};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use knock_core::packet::{parse_frame, KnockPacket, LinkType};
use pcap::{Active, BreakLoop, Capture, Device};

/// Read timeout of a live capture. libpcap 1.10 on Linux in immediate mode keeps waiting past
/// it while no packet comes, so stopping also breaks the read with `pcap_breakloop`.
const READ_TIMEOUT_MS: i32 = 100;
/// Bytes kept of each frame: the headers of a knock, with room for options.
const SNAPLEN: i32 = 256;
/// First wait before reopening a failed capture.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before reopening a failed capture.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Least time between two log lines about dropped knocks.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);

/// One knock seen by the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedKnock {
    /// What was knocked, by whom.
    pub packet: KnockPacket,
    /// When it was seen (offline: the file's timestamps, relative to the moment of reading).
    pub at: Instant,
    /// The interface it came in on (offline: the file's path).
    pub interface: String,
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The interface does not exist.
    #[error("interface `{interface}` does not exist; list interfaces with `ip link`, or capture on \"any\"")]
    NoSuchInterface {
        /// The interface named in the config.
        interface: String,
    },
    /// The interface exists but libpcap cannot capture on it.
    #[error("cannot capture on interface `{interface}`: {source} (are you root? list interfaces with `ip link`)")]
    Open {
        /// The interface.
        interface: String,
        /// What libpcap said.
        source: pcap::Error,
    },
    /// The filter expression does not compile for this capture.
    #[error("cannot set the capture filter on `{on}`: {source}")]
    Filter {
        /// The interface or file.
        on: String,
        /// What libpcap said.
        source: pcap::Error,
    },
    /// The capture delivers a link type knocks cannot be parsed from.
    #[error("`{on}` has link type {dlt}, which knockd cannot parse (Ethernet, Linux cooked, loopback and raw IP are supported)")]
    LinkType {
        /// The interface or file.
        on: String,
        /// The pcap data link type number.
        dlt: i32,
    },
    /// A capture file cannot be opened or read.
    #[error("cannot read capture file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What libpcap said.
        source: pcap::Error,
    },
    /// The capture thread cannot be started.
    #[error("cannot start the capture thread for `{interface}`: {source}")]
    Thread {
        /// The interface.
        interface: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Running live captures; [`CaptureHandle::stop`] ends them. Dropping the handle asks the
/// threads to stop without waiting for them.
pub struct CaptureHandle {
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
}

/// Wakes a capture thread blocked in a read: the break handle of its current capture.
type Waker = Arc<Mutex<Option<BreakLoop>>>;

impl CaptureHandle {
    /// Stops every capture thread and waits for them.
    pub fn stop(mut self) {
        self.signal();
        for thread in std::mem::take(&mut self.threads) {
            if thread.join().is_err() {
                tracing::error!("a capture thread panicked");
            }
        }
    }

    /// Sets the stop flag, then breaks every blocked read (a thread that arms a new capture
    /// afterwards sees the flag before reading).
    fn signal(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            if let Some(b) = waker.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                b.breakloop();
            }
        }
    }
}

impl std::fmt::Debug for CaptureHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureHandle").field("threads", &self.threads.len()).finish()
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.signal();
    }
}

/// Starts one capture thread per interface, each sending the knocks that pass `filter` to
/// `tx`. Every interface is opened before any thread starts, so a bad interface name or
/// filter refuses the start with an error naming it.
pub fn spawn_live(
    interfaces: &[String],
    filter: &str,
    tx: SyncSender<CapturedKnock>,
) -> Result<CaptureHandle, CaptureError> {
    let opened = interfaces
        .iter()
        .map(|name| open_checked(name, filter).map(|cap| (name.clone(), cap)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut handle = CaptureHandle { stop: Arc::new(AtomicBool::new(false)), wakers: Vec::new(), threads: Vec::new() };
    for (interface, (cap, link)) in opened {
        let waker = Waker::default();
        handle.wakers.push(Arc::clone(&waker));
        let worker = Worker {
            interface: interface.clone(),
            filter: filter.to_string(),
            tx: tx.clone(),
            stop: Arc::clone(&handle.stop),
            waker,
            drops: DropLog::default(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("capture {interface}"))
            .spawn(move || worker.run(cap, link))
            .map_err(|source| CaptureError::Thread { interface, source })?;
        handle.threads.push(thread);
    }
    Ok(handle)
}

/// Reads the knocks that pass `filter` from a capture file. Their `at` keeps the spacing of
/// the file's timestamps, starting now.
pub fn read_offline(path: &Path, filter: &str) -> Result<Vec<CapturedKnock>, CaptureError> {
    let file_error = |source| CaptureError::File { path: path.to_path_buf(), source };
    let mut cap = Capture::from_file(path).map_err(file_error)?;
    let on = path.display().to_string();
    cap.filter(filter, true).map_err(|source| CaptureError::Filter { on: on.clone(), source })?;
    let link = link_type(&on, cap.get_datalink().0)?;
    let start = Instant::now();
    let mut first_ts: Option<Duration> = None;
    let mut knocks = Vec::new();
    loop {
        let packet = match cap.next_packet() {
            Ok(packet) => packet,
            Err(pcap::Error::NoMorePackets) => return Ok(knocks),
            Err(e) => return Err(file_error(e)),
        };
        let tv = &packet.header.ts;
        let ts = timestamp(u64::try_from(tv.tv_sec).ok(), u64::try_from(tv.tv_usec).ok());
        let since_first = ts.saturating_sub(*first_ts.get_or_insert(ts));
        let at = start.checked_add(since_first).unwrap_or(start);
        if let Some(knock) = knock_of(link, packet.data, at, &on) {
            knocks.push(knock);
        }
    }
}

/// A pcap timestamp as time since the epoch (negative, malformed fields count as zero).
fn timestamp(secs: Option<u64>, micros: Option<u64>) -> Duration {
    let secs = Duration::from_secs(secs.unwrap_or(0));
    secs.saturating_add(Duration::from_micros(micros.unwrap_or(0)))
}

/// The knock in one frame, if it holds one.
fn knock_of(link: LinkType, frame: &[u8], at: Instant, interface: &str) -> Option<CapturedKnock> {
    // The BPF filter chose what reaches us; each door checks its own TCP flags rule.
    frame_knock(link, frame, interface).map(|packet| CapturedKnock { packet, at, interface: interface.to_string() })
}

/// The packet one frame carries, parsed as every capture parses it (live, offline, replay);
/// `None` (logged at trace level, naming `on`) when it carries none.
#[inline]
pub fn frame_knock(link: LinkType, frame: &[u8], on: &str) -> Option<KnockPacket> {
    match parse_frame(link, frame) {
        Ok(packet) => Some(packet),
        Err(e) => {
            tracing::trace!(interface = on, "frame skipped: {e}");
            None
        }
    }
}

fn link_type(on: &str, dlt: i32) -> Result<LinkType, CaptureError> {
    LinkType::from_dlt(dlt).ok_or_else(|| CaptureError::LinkType { on: on.to_string(), dlt })
}

/// Opens a live capture on `name` with `filter`, or says clearly why not.
fn open_checked(name: &str, filter: &str) -> Result<(Capture<Active>, LinkType), CaptureError> {
    open_live(name, filter).map_err(|e| match e {
        CaptureError::Open { interface, .. } if !interface_exists(&interface) => {
            CaptureError::NoSuchInterface { interface }
        }
        other => other,
    })
}

fn open_live(name: &str, filter: &str) -> Result<(Capture<Active>, LinkType), CaptureError> {
    let open_error = |source| CaptureError::Open { interface: name.to_string(), source };
    let mut cap = Capture::from_device(name)
        .map_err(open_error)?
        .immediate_mode(true)
        .timeout(READ_TIMEOUT_MS)
        .snaplen(SNAPLEN)
        .open()
        .map_err(open_error)?;
    cap.filter(filter, true).map_err(|source| CaptureError::Filter { on: name.to_string(), source })?;
    let link = link_type(name, cap.get_datalink().0)?;
    Ok((cap, link))
}

fn interface_exists(name: &str) -> bool {
    Device::list().is_ok_and(|devices| devices.iter().any(|d| d.name == name))
}

/// One interface's capture loop.
struct Worker {
    interface: String,
    filter: String,
    tx: SyncSender<CapturedKnock>,
    stop: Arc<AtomicBool>,
    waker: Waker,
    drops: DropLog,
}

/// Why a capture loop ended.
enum Ended {
    Stopped,
    Failed(pcap::Error),
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Lets [`CaptureHandle::stop`] break reads of `cap`.
    fn arm(&self, cap: &mut Capture<Active>) {
        let mut waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        *waker = Some(cap.breakloop_handle());
    }

    /// Captures until stopped, reopening the capture with backoff whenever it fails.
    fn run(mut self, cap: Capture<Active>, link: LinkType) {
        let mut current = Some((cap, link));
        let mut backoff = FIRST_BACKOFF;
        while let Some((cap, link)) = current.take() {
            let opened = Instant::now();
            match self.capture(cap, link) {
                Ended::Stopped => return,
                Ended::Failed(e) => {
                    tracing::warn!(interface = %self.interface, "capture failed, reopening: {e}");
                }
            }
            if opened.elapsed() > MAX_BACKOFF {
                backoff = FIRST_BACKOFF;
            }
            current = self.reopen(&mut backoff);
        }
    }

    /// Reads frames until the stop flag is set, the consumer is gone, or the capture fails.
    fn capture(&mut self, mut cap: Capture<Active>, link: LinkType) -> Ended {
        self.arm(&mut cap);
        while !self.stopping() {
            match cap.next_packet() {
                Ok(packet) => {
                    let knock = knock_of(link, packet.data, Instant::now(), &self.interface);
                    if let Some(knock) = knock {
                        if !self.deliver(knock) {
                            return Ended::Stopped;
                        }
                    }
                }
                // A broken loop (NoMorePackets on a live capture) only means: check the flag.
                Err(pcap::Error::TimeoutExpired | pcap::Error::NoMorePackets) => {}
                Err(e) => return Ended::Failed(e),
            }
        }
        Ended::Stopped
    }

    /// Hands a knock on without blocking; false when the consumer is gone.
    fn deliver(&mut self, knock: CapturedKnock) -> bool {
        match self.tx.try_send(knock) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.drops.dropped(&self.interface);
                true
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::debug!(interface = %self.interface, "knock consumer gone; capture ends");
                false
            }
        }
    }

    /// Waits `backoff` (doubling it, up to [`MAX_BACKOFF`]) and tries to reopen, until it
    /// succeeds or the stop flag is set.
    fn reopen(&self, backoff: &mut Duration) -> Option<(Capture<Active>, LinkType)> {
        loop {
            if !self.sleep(*backoff) {
                return None;
            }
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            match open_checked(&self.interface, &self.filter) {
                Ok(opened) => {
                    tracing::info!(interface = %self.interface, "capture reopened");
                    return Some(opened);
                }
                Err(e) => tracing::warn!(
                    interface = %self.interface,
                    "capture still failing, retrying in {:?}: {e}",
                    *backoff
                ),
            }
        }
    }

    /// Sleeps `total` in short steps; false when the stop flag was set meanwhile.
    fn sleep(&self, total: Duration) -> bool {
        let step = Duration::from_millis(READ_TIMEOUT_MS.unsigned_abs().into());
        let until = Instant::now() + total;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(step));
        }
        false
    }
}

/// Counts knocks dropped because the consumer was behind, logging at most once a second.
#[derive(Debug, Default)]
struct DropLog {
    since_log: u64,
    total: u64,
    last_log: Option<Instant>,
}

impl DropLog {
    fn dropped(&mut self, interface: &str) {
        self.since_log += 1;
        self.total += 1;
        if self.last_log.is_some_and(|t| t.elapsed() < DROP_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            interface,
            dropped = self.since_log,
            total = self.total,
            "knock consumer is behind; knocks dropped"
        );
        self.since_log = 0;
        self.last_log = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::sync_channel;

    use knock_core::Knock;

    use super::testframes::{self as tf, Link, V4_DST, V4_SRC, V6_DST, V6_SRC};
    use super::*;

    /// A path in the temp directory unique to this process and call, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(stem: &str) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let name = format!("{stem}-{}-{n}.pcap", std::process::id());
            TempFile(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn write_pcap(stem: &str, link: Link, frames: &[(u32, Vec<u8>)]) -> TempFile {
        let file = TempFile::new(stem);
        std::fs::write(&file.0, tf::pcap_file(link, frames)).expect("write pcap file");
        file
    }

    fn door_filter(extra: &str) -> String {
        let text = format!(
            "[server]\nstate_dir = \"s\"\n[[door]]\nname = \"ssh\"\nmode = \"hotp\"\n\
             open = [\"22/tcp\"]\nkeys = \"k\"\nknock_ports = \"40000-40999\"\n{extra}\n"
        );
        let config = knock_core::config::Config::parse(Path::new("/etc/knockd/knockd.toml"), &text);
        filter::bpf_filter(&config.expect("test config parses").doors)
    }

    #[test]
    fn offline_reads_only_knocks_with_their_spacing() {
        let v4 = |port, flags| tf::ipv4(V4_SRC, V4_DST, 6, &tf::tcp(port, flags));
        let v6 = |port, flags| tf::ipv6(V6_SRC, V6_DST, 6, &tf::tcp(port, flags));
        let v6_udp = tf::ipv6(V6_SRC, V6_DST, 17, &tf::udp(40100, b"x"));
        let frames: Vec<(u32, Vec<u8>)> = [
            (0, v4(40001, tf::SYN)),
            (100, v4(40001, tf::SYN | tf::ACK)),
            (250, v6(40002, tf::SYN)),
            (300, v4(22, tf::SYN)),
            (400, v6_udp.clone()),
            (1500, v4(40999, tf::SYN)),
        ]
        .into_iter()
        .map(|(ms, l3)| (ms, tf::frame(Link::LinuxSll, &l3)))
        .collect();
        let file = write_pcap("knockd-offline", Link::LinuxSll, &frames);
        let knocks = read_offline(&file.0, &door_filter("protocols = [\"tcp\", \"udp\"]"));
        let knocks = knocks.expect("offline read");
        let got: Vec<(IpAddr, Knock)> = knocks.iter().map(|k| (k.packet.src, k.packet.knock)).collect();
        let want = vec![
            (IpAddr::V4(V4_SRC), Knock::tcp(40001)),
            (IpAddr::V6(V6_SRC), Knock::tcp(40002)),
            (IpAddr::V6(V6_SRC), Knock::udp(40100)),
            (IpAddr::V4(V4_SRC), Knock::tcp(40999)),
        ];
        assert_eq!(got, want);
        let spacing = knocks.last().zip(knocks.first()).map(|(l, f)| l.at - f.at);
        assert_eq!(spacing, Some(Duration::from_millis(1500)));
        assert!(knocks.iter().all(|k| k.interface == file.0.display().to_string()));
    }

    #[test]
    fn offline_errors_name_the_file() {
        let missing = Path::new("/nonexistent/knocks.pcap");
        let e = read_offline(missing, "tcp").expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/knocks.pcap"), "{e}");
        let file = write_pcap("knockd-badfilter", Link::Ethernet, &[]);
        let e = read_offline(&file.0, "tcp and and").expect_err("bad filter");
        assert!(matches!(e, CaptureError::Filter { .. }), "{e}");
        assert!(e.to_string().contains(&file.0.display().to_string()), "{e}");
    }

    #[test]
    fn a_missing_interface_is_refused_with_a_hint() {
        let (tx, _rx) = sync_channel(1);
        let e = spawn_live(&["knockd-nosuch0".into()], "tcp", tx).expect_err("no such interface");
        let msg = e.to_string();
        assert!(msg.contains("knockd-nosuch0") && msg.contains("ip link"), "{msg}");
    }

    fn worker(tx: SyncSender<CapturedKnock>) -> Worker {
        Worker {
            interface: "test0".into(),
            filter: String::new(),
            tx,
            stop: Arc::new(AtomicBool::new(false)),
            waker: Waker::default(),
            drops: DropLog::default(),
        }
    }

    fn a_knock() -> CapturedKnock {
        let l3 = tf::ipv4(V4_SRC, V4_DST, 17, &tf::udp(40001, b""));
        knock_of(LinkType::Raw, &l3, Instant::now(), "test0").expect("a knock")
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let (tx, rx) = sync_channel(1);
        let mut w = worker(tx);
        assert!(w.deliver(a_knock()));
        assert!(w.deliver(a_knock()));
        assert!(w.deliver(a_knock()));
        assert_eq!(w.drops.total, 2);
        assert_eq!(rx.try_iter().count(), 1);
        drop(rx);
        assert!(!w.deliver(a_knock()), "a gone consumer ends the capture");
    }

    #[test]
    fn sleeping_ends_early_when_stopped() {
        let (tx, _rx) = sync_channel(1);
        let w = worker(tx);
        w.stop.store(true, Ordering::Relaxed);
        let t = Instant::now();
        assert!(!w.sleep(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
