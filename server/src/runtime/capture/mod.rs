//! Packet capture, live on interfaces (one thread each): BPF filter in the kernel,
//! [`parse_frame`], keep only knocks. `knockd replay` reads capture files itself
//! (`pcapfile.rs`) and parses their frames with the same [`frame_knock`]; the tests read files
//! through libpcap with the live filter (`read_offline`) to check that filter on real frames.
//!
//! A live capture reads what the kernel's ring holds at each wake-up (`pcap_dispatch`) and hands
//! it on as one [`KnockBatch`]; under a flood it naps briefly between reads, so a wake-up
//! carries many packets. It never blocks on its consumer: at most [`MAX_IN_FLIGHT`] knocks of
//! an interface wait to be decided, and past that a knock is dropped and counted. A capture
//! that fails after start (link down, interface renamed) is logged and reopened with backoff
//! until the capture is stopped.

pub mod filter;
pub mod pcapfile;
#[cfg(test)]
pub(crate) mod testframes;

pub use filter::{bpf_filter, bpf_filter_rules};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
/// Kernel ring of a live capture, in bytes. It is resident from the start (the kernel maps all
/// of it), so it is the largest part of an idle daemon's own memory; 512 KiB holds about 1400
/// knocks (TPACKET_V2 frames of ~370 bytes at our snap length): 5.6 ms of a 250k packets/s
/// flood while the capture thread is not running. What the ring cannot hold the kernel drops
/// (and the capture logs, see [`Worker::report_kernel_drops`]).
const RING_BYTES: i32 = 512 << 10;
/// Most knocks of one interface captured but not yet decided; past it knocks are dropped and
/// counted. About 80 bytes each, allocated only while the consumer is behind.
pub const MAX_IN_FLIGHT: usize = 16_384;
/// Most packets one read takes from the ring.
const MAX_BATCH: usize = 1024;
/// At this rate of knocks or more (per [`RATE_WINDOW`]), the capture naps [`NAP`] between reads,
/// so that each wake-up (of this thread and of the consumer) carries a batch rather than one
/// packet. Below it, a knock is handed on as soon as it comes.
const NAP_ABOVE_PER_WINDOW: u32 = 2_000;
/// The window in which the capture counts knocks to decide whether it is flooded.
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// How long a flooded capture waits between reads: what it adds to a knock's latency while
/// the interface receives over 20 000 knocks a second.
const NAP: Duration = Duration::from_micros(200);

/// One knock seen by the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedKnock {
    /// What was knocked, by whom.
    pub packet: KnockPacket,
    /// When it was seen (offline: the file's timestamps, relative to the moment of reading).
    pub at: Instant,
    /// The interface it came in on (offline: the file's path), shared by its capture's knocks.
    pub interface: Arc<str>,
}

/// The knocks one read of a live capture took from the kernel, in order. Dropping it (once they
/// are decided) makes room for as many new knocks of its interface (see [`MAX_IN_FLIGHT`]).
#[derive(Debug)]
pub struct KnockBatch {
    knocks: Vec<CapturedKnock>,
    in_flight: Arc<AtomicUsize>,
}

impl KnockBatch {
    /// The knocks, in the order they came.
    pub fn iter(&self) -> std::slice::Iter<'_, CapturedKnock> {
        self.knocks.iter()
    }

    /// Number of knocks.
    pub fn len(&self) -> usize {
        self.knocks.len()
    }

    /// Whether it holds no knock.
    pub fn is_empty(&self) -> bool {
        self.knocks.is_empty()
    }
}

impl<'a> IntoIterator for &'a KnockBatch {
    type Item = &'a CapturedKnock;
    type IntoIter = std::slice::Iter<'a, CapturedKnock>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Drop for KnockBatch {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.knocks.len(), Ordering::Relaxed);
    }
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
    tx: SyncSender<KnockBatch>,
) -> Result<CaptureHandle, CaptureError> {
    let opened = interfaces
        .iter()
        .map(|name| open_checked(name, filter).map(|cap| (name.clone(), cap)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut handle = CaptureHandle { stop: Arc::new(AtomicBool::new(false)), wakers: Vec::new(), threads: Vec::new() };
    for (interface, (cap, link)) in opened {
        let waker = Waker::default();
        handle.wakers.push(Arc::clone(&waker));
        let worker = Worker::new(&interface, filter, tx.clone(), Arc::clone(&handle.stop), waker);
        let thread = std::thread::Builder::new()
            .name(format!("capture {interface}"))
            .spawn(move || worker.run(cap, link))
            .map_err(|source| CaptureError::Thread { interface, source })?;
        handle.threads.push(thread);
    }
    Ok(handle)
}

/// Reads the knocks that pass `filter` from a capture file through libpcap, as a live capture
/// would see them. Their `at` keeps the spacing of the file's timestamps, starting now.
#[cfg(test)]
pub fn read_offline(path: &std::path::Path, filter: &str) -> Result<Vec<CapturedKnock>, CaptureError> {
    let file_error = |source| CaptureError::File { path: path.to_path_buf(), source };
    let mut cap = Capture::from_file(path).map_err(file_error)?;
    let on = path.display().to_string();
    cap.filter(filter, true).map_err(|source| CaptureError::Filter { on: on.clone(), source })?;
    let link = link_type(&on, cap.get_datalink().0)?;
    let start = Instant::now();
    let mut first_ts: Option<Duration> = None;
    let mut knocks = Vec::new();
    let on: Arc<str> = Arc::from(on);
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
#[cfg(test)]
fn timestamp(secs: Option<u64>, micros: Option<u64>) -> Duration {
    let secs = Duration::from_secs(secs.unwrap_or(0));
    secs.saturating_add(Duration::from_micros(micros.unwrap_or(0)))
}

/// The knock in one frame, if it holds one.
fn knock_of(link: LinkType, frame: &[u8], at: Instant, interface: &Arc<str>) -> Option<CapturedKnock> {
    // The BPF filter chose what reaches us; each door checks its own TCP flags rule.
    frame_knock(link, frame, interface).map(|packet| CapturedKnock { packet, at, interface: Arc::clone(interface) })
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
        .buffer_size(RING_BYTES)
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
    /// The same, as every knock of this interface carries it.
    name: Arc<str>,
    filter: String,
    tx: SyncSender<KnockBatch>,
    stop: Arc<AtomicBool>,
    waker: Waker,
    drops: DropLog,
    /// Knocks read but not handed on yet (the consumer's channel was full).
    pending: Vec<CapturedKnock>,
    /// Knocks handed on and not yet decided (shared with the batches).
    in_flight: Arc<AtomicUsize>,
    /// Knocks seen in the current [`RATE_WINDOW`], and when it began.
    window: (u32, Instant),
    /// Packets the kernel dropped on this capture so far (its ring was full), and when they
    /// were last asked for.
    kernel_drops: (u32, Instant),
}

/// Why a capture loop ended.
enum Ended {
    Stopped,
    Failed(pcap::Error),
}

impl Worker {
    fn new(interface: &str, filter: &str, tx: SyncSender<KnockBatch>, stop: Arc<AtomicBool>, waker: Waker) -> Worker {
        Worker {
            interface: interface.to_string(),
            name: Arc::from(interface),
            filter: filter.to_string(),
            tx,
            stop,
            waker,
            drops: DropLog::default(),
            pending: Vec::new(),
            in_flight: Arc::default(),
            window: (0, Instant::now()),
            kernel_drops: (0, Instant::now()),
        }
    }

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

    /// Reads frames until the stop flag is set, the consumer is gone, or the capture fails:
    /// what the ring holds at each wake-up, handed on as one batch.
    fn capture(&mut self, mut cap: Capture<Active>, link: LinkType) -> Ended {
        self.arm(&mut cap);
        while !self.stopping() {
            let in_flight = self.in_flight.load(Ordering::Relaxed);
            let (name, pending, drops) = (&self.name, &mut self.pending, &mut self.drops);
            let mut dropped = 0;
            let read = cap.dispatch(Some(MAX_BATCH), |packet| {
                if let Some(knock) = knock_of(link, packet.data, Instant::now(), name) {
                    if !admit(pending, in_flight, knock) {
                        dropped += 1;
                    }
                }
            });
            for _ in 0..dropped {
                drops.dropped(name);
            }
            match read {
                Ok(n) => {
                    if !self.hand_on() {
                        return Ended::Stopped;
                    }
                    self.nap_when_flooded(n);
                    self.report_kernel_drops(&mut cap);
                }
                // A broken loop (stop) or a timeout only means: check the flag.
                Err(_) if self.stopping() => return Ended::Stopped,
                Err(pcap::Error::TimeoutExpired | pcap::Error::NoMorePackets) => {}
                Err(e) => return Ended::Failed(e),
            }
        }
        Ended::Stopped
    }

    /// Hands the pending knocks on as one batch without blocking (a full channel keeps them
    /// for the next read); false when the consumer is gone.
    fn hand_on(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let n = self.pending.len();
        self.in_flight.fetch_add(n, Ordering::Relaxed);
        let batch = KnockBatch { knocks: std::mem::take(&mut self.pending), in_flight: Arc::clone(&self.in_flight) };
        match self.tx.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(mut batch)) => {
                // Back into `pending`; the batch's drop gives its count back.
                self.pending = std::mem::take(&mut batch.knocks);
                self.in_flight.fetch_sub(n, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::debug!(interface = %self.interface, "knock consumer gone; capture ends");
                false
            }
        }
    }

    /// At most once a second, asks the kernel how many packets it dropped because the ring was
    /// full, and warns when there are new ones.
    fn report_kernel_drops(&mut self, cap: &mut Capture<Active>) {
        let (seen, asked) = &mut self.kernel_drops;
        if asked.elapsed() < DROP_LOG_EVERY {
            return;
        }
        *asked = Instant::now();
        let Ok(stats) = cap.stats() else { return };
        if stats.dropped > *seen {
            tracing::warn!(
                interface = %self.interface,
                dropped = stats.dropped - *seen,
                total = stats.dropped,
                "capture ring full (the capture thread was not running); packets dropped by the kernel"
            );
        }
        *seen = stats.dropped;
    }

    /// Counts `read` knocks in the rate window; when the interface is flooded, waits [`NAP`] so
    /// the next read finds a batch in the ring.
    fn nap_when_flooded(&mut self, read: usize) {
        let (count, since) = &mut self.window;
        if since.elapsed() >= RATE_WINDOW {
            *count = 0;
            *since = Instant::now();
        }
        *count = count.saturating_add(u32::try_from(read).unwrap_or(u32::MAX));
        if *count >= NAP_ABOVE_PER_WINDOW && read < MAX_BATCH {
            std::thread::sleep(NAP);
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

/// Keeps `knock` for the next batch when fewer than [`MAX_IN_FLIGHT`] knocks of its interface
/// are pending or in flight (handed on, not yet decided); false: no room, it is dropped.
fn admit(pending: &mut Vec<CapturedKnock>, in_flight: usize, knock: CapturedKnock) -> bool {
    if in_flight + pending.len() < MAX_IN_FLIGHT {
        pending.push(knock);
        true
    } else {
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
    use std::path::Path;
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
        assert!(knocks.iter().all(|k| *k.interface == *file.0.display().to_string()));
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

    fn worker(tx: SyncSender<KnockBatch>) -> Worker {
        Worker::new("test0", "", tx, Arc::new(AtomicBool::new(false)), Waker::default())
    }

    fn a_knock() -> CapturedKnock {
        let l3 = tf::ipv4(V4_SRC, V4_DST, 17, &tf::udp(40001, b""));
        knock_of(LinkType::Raw, &l3, Instant::now(), &Arc::from("test0")).expect("a knock")
    }

    #[test]
    fn a_full_channel_keeps_the_knocks_for_the_next_batch_without_blocking() {
        let (tx, rx) = sync_channel(1);
        let mut w = worker(tx);
        w.pending.push(a_knock());
        assert!(w.hand_on());
        w.pending.extend([a_knock(), a_knock()]);
        assert!(w.hand_on(), "a full channel does not block");
        assert_eq!((w.pending.len(), w.in_flight.load(Ordering::Relaxed)), (2, 1));
        let first = rx.try_recv().expect("the first batch");
        assert_eq!(first.len(), 1);
        drop(first);
        assert_eq!(w.in_flight.load(Ordering::Relaxed), 0, "a decided batch makes room");
        assert!(w.hand_on());
        assert_eq!(rx.try_recv().expect("the kept knocks, as one batch").len(), 2);
        assert_eq!(w.in_flight.load(Ordering::Relaxed), 0);
        drop(rx);
        w.pending.push(a_knock());
        assert!(!w.hand_on(), "a gone consumer ends the capture");
    }

    #[test]
    fn knocks_in_flight_and_pending_are_bounded_together() {
        let mut pending = Vec::new();
        assert!(admit(&mut pending, MAX_IN_FLIGHT - 3, a_knock()));
        assert!(admit(&mut pending, MAX_IN_FLIGHT - 3, a_knock()));
        assert!(admit(&mut pending, MAX_IN_FLIGHT - 3, a_knock()));
        assert!(!admit(&mut pending, MAX_IN_FLIGHT - 3, a_knock()), "full: dropped");
        assert_eq!(pending.len(), 3);
        // Nothing in flight: every pending knock up to the bound is kept.
        let mut pending = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            assert!(admit(&mut pending, 0, a_knock()));
        }
        assert!(!admit(&mut pending, 0, a_knock()));
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
