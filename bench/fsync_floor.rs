//! The floor under a grant's durable writes (issue 12, target 1): what one append + fdatasync
//! costs on a directory's filesystem, two at once on two files, and writes in place within a
//! file's size (pre-sized with zeros), whose fdatasync needs no journal commit. (A fallocated
//! file measured the same as a pre-sized one: bench/RESULTS.md, 2026-12-01.)
//!
//! ```text
//! FSYNC_FLOOR_DIR=/var/lib/knockd FSYNC_FLOOR_ROUNDS=3 cargo bench -p knock-e2e --bench fsync_floor
//! ```
//!
//! FSYNC_FLOOR_DIR (default: the temporary directory): a directory on the state directory's filesystem (two scratch files `floor-a`, `floor-b`
//! are made there and removed at the end). Each case: 400 writes of a 300-byte record (the
//! size of a grant's audit record; the second file gets 64 bytes, a ledger record).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::channel;
use std::time::Instant;

const N: usize = 400;
const REC: usize = 300;
const LEDGER_REC: usize = 64;

fn row(what: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    println!("| {what:<46} | {:>5} | {:>5} | {:>6} |", v[v.len() / 2], v[v.len() * 95 / 100], v[v.len() - 1]);
}

fn appending(path: &std::path::Path) -> File {
    let _ = std::fs::remove_file(path);
    OpenOptions::new().create(true).append(true).open(path).expect("scratch file")
}

fn presized(path: &std::path::Path, len: usize) -> File {
    let _ = std::fs::remove_file(path);
    let mut f = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path).expect("scratch file");
    f.write_all(&vec![0u8; len]).expect("zeros");
    f.sync_all().expect("sync");
    f
}

fn time(mut one: impl FnMut(usize)) -> Vec<u64> {
    (0..N)
        .map(|i| {
            let start = Instant::now();
            one(i);
            start.elapsed().as_micros() as u64
        })
        .collect()
}

/// Runs `second` on its own thread for each write `i`, at the same time as `first` on this one.
fn concurrently(first: impl Fn(usize), second: impl Fn(usize) + Send + 'static) -> Vec<u64> {
    let (go, jobs) = channel::<usize>();
    let (done, finished) = channel::<()>();
    let worker = std::thread::spawn(move || {
        for i in jobs {
            second(i);
            done.send(()).expect("main thread");
        }
    });
    let t = time(|i| {
        go.send(i).expect("worker");
        first(i);
        finished.recv().expect("worker");
    });
    drop(go);
    worker.join().expect("worker");
    t
}

fn main() {
    let dir = std::env::var_os("FSYNC_FLOOR_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let rounds: usize = std::env::var("FSYNC_FLOOR_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    println!("fsync floor in {}", dir.display());
    let (a, b) = (dir.join("floor-a"), dir.join("floor-b"));
    let (rec, small) = (vec![b'x'; REC], vec![b'y'; LEDGER_REC]);
    for round in 1..=rounds {
        println!("\nround {round}: µs\n\n| case | p50 | p95 | max |\n|---|--:|--:|--:|");
        let mut f = appending(&a);
        row(
            "append + fdatasync, one file",
            time(|_| {
                f.write_all(&rec).unwrap();
                f.sync_data().unwrap();
            }),
        );
        let (mut fa, mut fb) = (appending(&a), appending(&b));
        row(
            "two appends + fdatasync, in turn",
            time(|_| {
                fa.write_all(&rec).unwrap();
                fa.sync_data().unwrap();
                fb.write_all(&small).unwrap();
                fb.sync_data().unwrap();
            }),
        );
        let (fa, fb) = (appending(&a), appending(&b));
        let s = small.clone();
        let r = rec.clone();
        row(
            "two appends + fdatasync, two threads",
            concurrently(
                move |_| {
                    (&fa).write_all(&r).unwrap();
                    fa.sync_data().unwrap();
                },
                move |_| {
                    (&fb).write_all(&s).unwrap();
                    fb.sync_data().unwrap();
                },
            ),
        );
        let (fa, fb) = (appending(&a), appending(&b));
        let fb_sync = fb.try_clone().unwrap();
        let r = rec.clone();
        let s = small.clone();
        // Both appends written first, then the two syncs at once (what the daemon does).
        let t = {
            let (go, jobs) = channel::<()>();
            let (done, finished) = channel::<()>();
            let worker = std::thread::spawn(move || {
                for () in jobs {
                    fb_sync.sync_data().unwrap();
                    done.send(()).unwrap();
                }
            });
            let t = time(|_| {
                (&fb).write_all(&s).unwrap();
                (&fa).write_all(&r).unwrap();
                go.send(()).unwrap();
                fa.sync_data().unwrap();
                finished.recv().unwrap();
            });
            drop(go);
            worker.join().unwrap();
            t
        };
        row("both appended, then the two syncs at once", t);
        let f = presized(&a, N * REC + 4096);
        row(
            "in place within a pre-sized file (zeros)",
            time(|i| {
                f.write_all_at(&rec, (i * REC) as u64).unwrap();
                f.sync_data().unwrap();
            }),
        );
        let (fa, fb) = (presized(&a, N * REC + 4096), presized(&b, N * LEDGER_REC + 4096));
        let r = rec.clone();
        let s = small.clone();
        row(
            "in place, two pre-sized files, two threads",
            concurrently(
                move |i| {
                    fa.write_all_at(&r, (i * REC) as u64).unwrap();
                    fa.sync_data().unwrap();
                },
                move |i| {
                    fb.write_all_at(&s, (i * LEDGER_REC) as u64).unwrap();
                    fb.sync_data().unwrap();
                },
            ),
        );
    }
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
}
