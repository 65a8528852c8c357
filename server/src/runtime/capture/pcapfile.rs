//! Reading a classic pcap file (what `tcpdump -w` writes) directly, for `knockd replay`: the
//! format is a 24-byte file header and a 16-byte header before each frame, so reading it in
//! large chunks and handing out frames borrowed from the buffer costs no allocation and no
//! callback per packet. Microsecond and nanosecond files, in either byte order, are read; every
//! damaged or cut-short file is an error naming the file and the byte where it went wrong,
//! never a panic. The frames go to the live capture's own parser ([`super::frame_knock`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use knock_core::packet::LinkType;

/// Magic number of a file with microsecond timestamps.
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// Magic number of a file with nanosecond timestamps.
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// The first block type of a pcapng file.
const PCAPNG: u32 = 0x0a0d_0d0a;
const FILE_HEADER: usize = 24;
const RECORD_HEADER: usize = 16;
/// libpcap's largest snap length: a record claiming more is damage, not a frame.
const MAX_RECORD: u32 = 262_144;
/// Bytes read at once (more than one record of the largest size).
const CHUNK: usize = 1 << 20;

/// Why a capture file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file cannot be opened or read.
    #[error("cannot read capture file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file does not start with a pcap magic number.
    #[error("{}: not a pcap file (it starts with {magic:#010x}); knockd replay reads the classic pcap format that `tcpdump -w` writes", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first four bytes, little-endian.
        magic: u32,
    },
    /// A pcapng file.
    #[error("{}: a pcapng file; convert it to classic pcap first: `tcpdump -r {} -w OUT.pcap` (or `editcap -F pcap`)", path.display(), path.display())]
    Pcapng {
        /// The file.
        path: PathBuf,
    },
    /// The file ends inside a header or a frame.
    #[error("{}: cut short at byte {offset}, inside {what} (after {frames} complete frames): a capture still being written, or a partial copy", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the incomplete part starts.
        offset: u64,
        /// What is incomplete.
        what: &'static str,
        /// Complete frames before it.
        frames: u64,
    },
    /// A record header claims a frame longer than any capture keeps.
    #[error("{}: the frame at byte {offset} claims {len} bytes (at most {MAX_RECORD}): the file is damaged", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// The length it claims.
        len: u32,
    },
    /// The frames are of a link type knocks cannot be parsed from.
    #[error("{}: link type {dlt}, which knockd cannot parse (Ethernet, Linux cooked, loopback and raw IP are supported)", path.display())]
    LinkType {
        /// The file.
        path: PathBuf,
        /// The pcap link type number.
        dlt: u32,
    },
}

/// One frame of the file, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// When it was captured: nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The bytes kept of it.
    pub data: &'a [u8],
}

/// A classic pcap file, read frame by frame.
#[derive(Debug)]
pub struct PcapReader {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The file offset of `buf[start]`.
    offset: u64,
    swapped: bool,
    nanos: bool,
    link: LinkType,
    frames: u64,
}

impl PcapReader {
    /// Opens `path` and reads its file header.
    pub fn open(path: &Path) -> Result<PcapReader, PcapError> {
        let io = |source| PcapError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let mut r = PcapReader {
            path: path.to_path_buf(),
            file,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            swapped: false,
            nanos: false,
            link: LinkType::Raw,
            frames: 0,
        };
        if !r.fill(4)? {
            return Err(r.truncated("the file header"));
        }
        let magic = u32::from_le_bytes([r.buf[0], r.buf[1], r.buf[2], r.buf[3]]);
        (r.swapped, r.nanos) = match magic {
            MAGIC_MICROS => (false, false),
            MAGIC_NANOS => (false, true),
            m if m.swap_bytes() == MAGIC_MICROS => (true, false),
            m if m.swap_bytes() == MAGIC_NANOS => (true, true),
            PCAPNG => return Err(PcapError::Pcapng { path: r.path }),
            magic => return Err(PcapError::BadMagic { path: r.path, magic }),
        };
        if !r.fill(FILE_HEADER)? {
            return Err(r.truncated("the file header"));
        }
        // The link type is the low 16 bits of the last field (the upper ones describe the FCS).
        let dlt = r.u32_at(20) & 0xffff;
        r.link = i32::try_from(dlt)
            .ok()
            .and_then(LinkType::from_dlt)
            .ok_or_else(|| PcapError::LinkType { path: r.path.clone(), dlt })?;
        r.consume(FILE_HEADER);
        Ok(r)
    }

    /// The link type of every frame of the file.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Whether the timestamps count nanoseconds (else microseconds).
    pub fn nanosecond(&self) -> bool {
        self.nanos
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, PcapError> {
        if !self.fill(RECORD_HEADER)? {
            if self.start == self.end {
                return Ok(None);
            }
            return Err(self.truncated("a frame's header"));
        }
        let (secs, frac, len) = (self.u32_at(0), self.u32_at(4), self.u32_at(8));
        if len > MAX_RECORD {
            return Err(PcapError::BadRecord { path: self.path.clone(), offset: self.offset, len });
        }
        let total = RECORD_HEADER + len as usize;
        if !self.fill(total)? {
            return Err(self.truncated("a frame"));
        }
        let data_at = self.start + RECORD_HEADER;
        self.consume(total);
        self.frames += 1;
        let frac_ns = if self.nanos { u64::from(frac) } else { u64::from(frac) * 1_000 };
        let ts_ns = u64::from(secs) * 1_000_000_000 + frac_ns;
        Ok(Some(Frame { ts_ns, data: &self.buf[data_at..data_at + len as usize] }))
    }

    /// The u32 at `at` bytes past the unread start, in the file's byte order.
    fn u32_at(&self, at: usize) -> u32 {
        let i = self.start + at;
        let b = [self.buf[i], self.buf[i + 1], self.buf[i + 2], self.buf[i + 3]];
        if self.swapped {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }

    /// Makes at least `need` (≤ [`CHUNK`]) unread bytes available; false at the end of the file.
    fn fill(&mut self, need: usize) -> Result<bool, PcapError> {
        if self.end - self.start >= need {
            return Ok(true);
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < need {
            let n = match self.file.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(PcapError::Io { path: self.path.clone(), source }),
            };
            if n == 0 {
                return Ok(false);
            }
            self.end += n;
        }
        Ok(true)
    }

    fn truncated(&self, what: &'static str) -> PcapError {
        PcapError::Truncated { path: self.path.clone(), offset: self.offset, what, frames: self.frames }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::runtime::capture::testframes::{self as tf, Link};

    /// A file in the temp directory unique to this process and call, removed on drop.
    pub(crate) struct TempFile(pub PathBuf);

    impl TempFile {
        pub fn with(stem: &str, bytes: &[u8]) -> TempFile {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let f = TempFile(std::env::temp_dir().join(format!("{stem}-{}-{n}.pcap", std::process::id())));
            std::fs::write(&f.0, bytes).expect("write the test file");
            f
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn frames_of(path: &Path) -> Result<Vec<(u64, Vec<u8>)>, PcapError> {
        let mut r = PcapReader::open(path)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push((f.ts_ns, f.data.to_vec()));
        }
        Ok(out)
    }

    fn two_frames() -> Vec<(u32, Vec<u8>)> {
        let a = tf::frame(Link::Ethernet, &tf::ipv4(tf::V4_SRC, tf::V4_DST, 6, &tf::tcp(40001, tf::SYN)));
        let b = tf::frame(Link::Ethernet, &tf::ipv6(tf::V6_SRC, tf::V6_DST, 17, &tf::udp(40002, b"x")));
        vec![(1_250, a), (2_500, b)]
    }

    #[test]
    fn microsecond_files_in_both_byte_orders_give_frames_and_times() {
        let frames = two_frames();
        let bytes = tf::pcap_file(Link::Ethernet, &frames);
        let le = TempFile::with("le", &bytes);
        let got = frames_of(&le.0).expect("a good file reads");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 1_700_000_001_250_000_000);
        assert_eq!(got[1].0, 1_700_000_002_500_000_000);
        assert_eq!(got[1].1, frames[1].1);
        // The same file written on a big-endian machine: every header field swapped.
        let mut be = bytes.clone();
        swap_fields(&mut be);
        let be = TempFile::with("be", &be);
        assert_eq!(frames_of(&be.0).expect("big-endian reads"), got);
    }

    /// Swaps every 32-bit header field of a little-endian pcap file (16-bit ones too).
    fn swap_fields(b: &mut [u8]) {
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        for at in [8, 12, 16, 20] {
            b[at..at + 4].reverse();
        }
        let mut at = FILE_HEADER;
        while at < b.len() {
            let len = u32::from_le_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]) as usize;
            for f in 0..4 {
                b[at + 4 * f..at + 4 * f + 4].reverse();
            }
            at += RECORD_HEADER + len;
        }
    }

    #[test]
    fn nanosecond_files_keep_the_nanoseconds() {
        let mut bytes = tf::pcap_file(Link::Ethernet, &two_frames());
        bytes[0..4].copy_from_slice(&MAGIC_NANOS.to_le_bytes());
        // The first frame's fraction, now in nanoseconds: 123456789.
        bytes[FILE_HEADER + 4..FILE_HEADER + 8].copy_from_slice(&123_456_789u32.to_le_bytes());
        let f = TempFile::with("ns", &bytes);
        let got = frames_of(&f.0).expect("a nanosecond file reads");
        assert_eq!(got[0].0, 1_700_000_001_123_456_789);
        assert!(PcapReader::open(&f.0).unwrap().nanosecond());
    }

    #[test]
    fn damaged_files_are_errors_naming_the_file_and_the_place() {
        let bytes = tf::pcap_file(Link::Ethernet, &two_frames());
        // Cut at every length: an error or the frames before the cut, never a panic.
        for cut in 0..bytes.len() {
            let f = TempFile::with("cut", &bytes[..cut]);
            match frames_of(&f.0) {
                Ok(frames) => assert!(cut == FILE_HEADER || cut == FILE_HEADER + 16 + 54, "cut {cut}: {frames:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&f.0.display().to_string()), "{msg}");
                    assert!(matches!(e, PcapError::Truncated { .. }), "cut {cut}: {msg}");
                }
            }
        }
        let f = TempFile::with("cut", &bytes[..bytes.len() - 3]);
        let msg = frames_of(&f.0).unwrap_err().to_string();
        assert!(msg.contains("cut short at byte 94, inside a frame (after 1 complete frames)"), "{msg}");

        let f = TempFile::with("magic", b"GIF89a not a capture at all, but long enough");
        let msg = frames_of(&f.0).unwrap_err().to_string();
        assert!(msg.contains("not a pcap file (it starts with 0x38464947)") && msg.contains("tcpdump -w"), "{msg}");

        let mut ng = bytes.clone();
        ng[0..4].copy_from_slice(&PCAPNG.to_le_bytes());
        let f = TempFile::with("ng", &ng);
        assert!(frames_of(&f.0).unwrap_err().to_string().contains("pcapng"));

        let mut huge = bytes.clone();
        huge[FILE_HEADER + 8..FILE_HEADER + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let f = TempFile::with("huge", &huge);
        let msg = frames_of(&f.0).unwrap_err().to_string();
        assert!(msg.contains("the frame at byte 24 claims 4294967295 bytes"), "{msg}");

        let mut usb = bytes;
        usb[20..24].copy_from_slice(&189u32.to_le_bytes());
        let f = TempFile::with("dlt", &usb);
        assert!(frames_of(&f.0).unwrap_err().to_string().contains("link type 189"));

        let gone = std::env::temp_dir().join(format!("no-such-capture-{}.pcap", std::process::id()));
        let msg = frames_of(&gone).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("cannot read capture file {}", gone.display())), "{msg}");
    }

    #[test]
    fn frames_larger_than_a_chunk_in_total_are_read_across_refills() {
        // Enough frames to need several reads of CHUNK bytes; each frame must come back whole.
        let frames: Vec<(u32, Vec<u8>)> = (0..40_000u32)
            .map(|i| {
                let l4 = tf::udp(40000 + (i % 1000) as u16, &vec![i as u8; (i % 61) as usize]);
                (i, tf::frame(Link::Ethernet, &tf::ipv4(tf::V4_SRC, tf::V4_DST, 17, &l4)))
            })
            .collect();
        let f = TempFile::with("many", &tf::pcap_file(Link::Ethernet, &frames));
        let got = frames_of(&f.0).expect("reads");
        assert_eq!(got.len(), frames.len());
        assert!(got.iter().zip(&frames).all(|(g, w)| g.1 == w.1));
    }
}
