//! Group commit without a disk: 1 and 8 writers appending single 64-byte
//! entries for one second each, with every sync replaced by a busy wait of
//! a fixed duration. Shows how many batches one sync covers, free of the
//! disk's noise.
//!
//!     cargo run --release --example group_commit_probe -- [SYNC_MICROS...]
//!
//! (default: 100 300 1000)

use embraft::core::{Entry, EntryKind};
use embraft::wal::{AdvancedOptions, FileLayer, Wal, WalOptions};
use memmap2::MmapMut;
use parking_lot::Mutex;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Syncs that take a fixed time and write nothing.
#[derive(Debug)]
struct FixedSyncs(Duration);

impl FixedSyncs {
    fn pretend(&self) -> std::io::Result<()> {
        let started = Instant::now();
        while started.elapsed() < self.0 {
            std::thread::yield_now();
        }
        Ok(())
    }
}

impl FileLayer for FixedSyncs {
    fn sync_mapped(&self, _: &MmapMut, _: &Path, _: usize, _: usize) -> std::io::Result<()> {
        self.pretend()
    }
    fn sync_file(&self, _: &File, _: &Path) -> std::io::Result<()> {
        self.pretend()
    }
}

fn appends_per_second(sync: Duration, writers: usize) -> usize {
    let dir = std::env::temp_dir().join(format!("embraft-gc-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let advanced = AdvancedOptions {
        files: Arc::new(FixedSyncs(sync)),
        ..AdvancedOptions::default()
    };
    let (wal, _) = Wal::open_with(&dir, WalOptions::default(), advanced).expect("open WAL");
    let next = Mutex::new(1u64);
    let start = Instant::now();
    let appends = std::thread::scope(|s| {
        let workers: Vec<_> = (0..writers)
            .map(|_| {
                s.spawn(|| {
                    let mut appends = 0;
                    while start.elapsed() < Duration::from_secs(1) {
                        let ticket = {
                            let mut next = next.lock();
                            let entry = Entry {
                                index: *next,
                                term: 1,
                                kind: EntryKind::Normal,
                                data: vec![1; 64],
                            };
                            *next += 1;
                            wal.write(&[entry], None).expect("write")
                        };
                        wal.wait_durable(ticket).expect("sync");
                        appends += 1;
                    }
                    appends
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("writer")).sum()
    });
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    appends
}

fn main() {
    let mut micros: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if micros.is_empty() {
        micros = vec![100, 300, 1000];
    }
    for us in micros {
        let sync = Duration::from_micros(us);
        let one = appends_per_second(sync, 1);
        let eight = appends_per_second(sync, 8);
        println!(
            "sync {us:>5} us: 1 writer {one:>6}/s, 8 writers {eight:>6}/s, {:.1}x",
            eight as f64 / one.max(1) as f64
        );
    }
}
