//! WAL operations: append/read/reopen, byte limits, truncation, snapshots
//! and compaction, the directory lock, bad inputs, group commit, rotation
//! under load, poisoning and running out of space.

mod wal_support;

use embraft::core::{Entry, SnapshotMeta};
use embraft::wal::{
    AdvancedOptions, FaultyFiles, FileLayer, SyncMode, Wal, WalError, WalOptions, WriteMethod,
};
use memmap2::MmapMut;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wal_support::*;

fn snapshot(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf_state: Default::default(),
    }
}

fn all(wal: &Wal) -> Vec<Entry> {
    wal.entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
        .unwrap()
}

#[test]
fn a_wal_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Wal>();
}

#[test]
fn append_read_and_reopen_across_segments() {
    let dir = TempDir::new("ops-basic");
    let mut expected = Vec::new();
    let mut last_hs = hs(0, 0);
    {
        let (wal, rec) = open(dir.path(), 8192);
        assert_eq!(rec, Default::default());
        assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
        assert_eq!(wal.term(0).unwrap(), Some(0));
        let mut next = 1;
        for batch in 0..120u64 {
            let n = batch % 7 + 1;
            let es = entries(next, n, 1 + batch / 40);
            last_hs = hs(1 + batch / 40, next);
            wal.append(&es, Some(&last_hs)).unwrap();
            expected.extend(es);
            next += n;
        }
        assert_eq!(all(&wal), expected);
        assert!(
            segment_files(dir.path()).len() > 3,
            "the workload should rotate"
        );
    }
    let (wal, rec) = open(dir.path(), 8192);
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.hard_state, last_hs);
    assert_eq!(rec.snapshot, None);
    assert_eq!(all(&wal), expected);
    let last = expected.last().unwrap();
    assert_eq!(wal.term(last.index).unwrap(), Some(last.term));
    assert_eq!(wal.term(last.index + 1).unwrap(), None);
}

#[test]
fn segments_keep_their_size_when_the_option_changes() {
    let dir = TempDir::new("ops-resize");
    {
        let (wal, _) = open(dir.path(), 8192);
        wal.append(&entries(1, 100, 1), None).unwrap_err(); // larger than a segment
        for i in (1..=100).step_by(10) {
            wal.append(&entries(i, 10, 1), None).unwrap();
        }
    }
    {
        let (wal, rec) = open(dir.path(), 16384);
        assert_eq!(rec.entries, entries(1, 100, 1));
        for i in (101..=300).step_by(10) {
            wal.append(&entries(i, 10, 1), None).unwrap();
        }
    }
    let sizes: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .collect();
    assert!(sizes.contains(&8192) && sizes.contains(&16384), "{sizes:?}");
    let (_, rec) = open(dir.path(), 4096);
    assert_eq!(rec.entries, entries(1, 300, 1));
}

#[test]
fn reads_stop_at_the_byte_limit() {
    let dir = TempDir::new("ops-limit");
    let (wal, _) = open(dir.path(), 1 << 16);
    let es = entries(1, 100, 1);
    wal.append(&es, None).unwrap();
    for limit in [0, 1, 50, 100, 1000, 5000, u64::MAX] {
        let got = wal.entries(10, 90, limit).unwrap();
        assert!(!got.is_empty(), "at least one entry");
        assert_eq!(got[..], es[9..9 + got.len()]);
        let size: u64 = got.iter().map(Entry::size).sum();
        if got.len() > 1 {
            assert!(size <= limit, "limit {limit}: {size} bytes returned");
        }
        if got.len() < 80 {
            assert!(
                size + es[9 + got.len()].size() > limit,
                "stopped early at limit {limit}"
            );
        }
    }
    assert!(wal.entries(5, 5, 10).unwrap().is_empty());
}

#[test]
fn conflicting_suffix_is_replaced_and_stays_replaced() {
    let dir = TempDir::new("ops-truncate");
    let mut expected = entries(1, 200, 1);
    {
        let (wal, _) = open(dir.path(), 4096);
        for chunk in expected.chunks(10) {
            wal.append(chunk, None).unwrap();
        }
        // Replace from index 30 (in an older segment) with a term-2 suffix.
        let replacement = entries(30, 15, 2);
        wal.append(&replacement, None).unwrap();
        expected.truncate(29);
        expected.extend(replacement);
        assert_eq!(wal.last_index(), 44);
        assert_eq!(wal.term(30).unwrap(), Some(2));
        assert_eq!(wal.term(29).unwrap(), Some(1));
        assert_eq!(all(&wal), expected);
        // And once more within the newest segment.
        let again = entries(44, 3, 3);
        wal.append(&again, None).unwrap();
        expected.truncate(43);
        expected.extend(again);
        assert_eq!(all(&wal), expected);
    }
    let (wal, rec) = open(dir.path(), 4096);
    assert_eq!(rec.entries, expected);
    assert_eq!(all(&wal), expected);
}

#[test]
fn compaction_deletes_whole_segments_and_survives_restart() {
    let dir = TempDir::new("ops-compact");
    let expected = entries(1, 600, 1);
    {
        let (wal, _) = open(dir.path(), 4096);
        wal.append(&[], Some(&hs(1, 0))).unwrap();
        for chunk in expected.chunks(5) {
            wal.append(chunk, None).unwrap();
        }
        let before = segment_files(dir.path()).len();
        assert!(
            matches!(wal.compact(10), Err(WalError::Invalid(_))),
            "no snapshot yet"
        );
        wal.save_snapshot(&snapshot(400, 1)).unwrap();
        wal.compact(400).unwrap();
        let after = segment_files(dir.path()).len();
        assert!(after < before, "{after} segments left of {before}");
        assert!(wal.first_index() > 1 && wal.first_index() <= 401);
        assert_eq!(wal.term(400).unwrap(), Some(1));
        assert_eq!(all(&wal)[..], expected[wal.first_index() as usize - 1..]);
        assert!(matches!(wal.compact(401), Err(WalError::Invalid(_))));
    }
    let (wal, rec) = open(dir.path(), 4096);
    assert_eq!(rec.snapshot, Some(snapshot(400, 1)));
    assert_eq!(
        rec.hard_state,
        hs(1, 0),
        "hard state written before the deleted segments"
    );
    assert_eq!(rec.entries[..], expected[400..]);
    assert_eq!(all(&wal)[..], expected[wal.first_index() as usize - 1..]);
    // Appending continues after a compacted restart.
    wal.append(&entries(601, 3, 2), None).unwrap();
    assert_eq!(wal.last_index(), 603);
}

#[test]
fn snapshot_beyond_the_log_resets_it() {
    let dir = TempDir::new("ops-snap-reset");
    {
        let (wal, _) = open(dir.path(), 16384);
        wal.append(&entries(1, 20, 1), None).unwrap();
        wal.save_snapshot(&snapshot(1000, 5)).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (1001, 1000));
        assert_eq!(wal.term(1000).unwrap(), Some(5));
        assert!(matches!(
            wal.append(&entries(21, 1, 1), None),
            Err(WalError::Invalid(_))
        ));
        wal.append(&entries(1001, 30, 5), None).unwrap();
        // A snapshot the log contains keeps the log.
        wal.save_snapshot(&snapshot(1010, 5)).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (1001, 1030));
        assert!(matches!(
            wal.save_snapshot(&snapshot(1005, 5)),
            Err(WalError::Invalid(_))
        ));
        wal.compact(1010).unwrap();
    }
    let (wal, rec) = open(dir.path(), 16384);
    assert_eq!(rec.snapshot, Some(snapshot(1010, 5)));
    assert_eq!(rec.entries, entries(1011, 20, 5));
    assert_eq!(wal.last_index(), 1030);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new("ops-lock");
    let (wal, _) = open(dir.path(), 4096);
    match Wal::open(dir.path(), small(4096)) {
        Err(WalError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    drop(wal);
    open(dir.path(), 4096);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = TempDir::new("ops-bad");
    for size in [0, 100, 4097, 1 << 40] {
        let r = Wal::open(dir.path(), small(size));
        assert!(
            matches!(r, Err(WalError::Invalid(_))),
            "segment size {size}"
        );
    }
    let (wal, _) = open(dir.path(), 4096);
    let invalid =
        |r: Result<(), WalError>| assert!(matches!(r, Err(WalError::Invalid(_))), "{r:?}");
    invalid(wal.append(&[entry(1, 1), entry(3, 1)], None));
    invalid(wal.append(&[entry(0, 1)], None));
    invalid(wal.append(&[entry(2, 1)], None));
    invalid(wal.append(&[entry(1, 2), entry(2, 1)], None));
    wal.append(&entries(1, 10, 2), None).unwrap();
    invalid(wal.append(&[entry(11, 1)], None));
    let huge = Entry {
        data: vec![0; 5000].into(),
        ..entry(11, 2)
    };
    invalid(wal.append(&[huge], None));
    let too_big_batch: Vec<Entry> = (11..20)
        .map(|i| Entry {
            data: vec![1; 1000].into(),
            ..entry(i, 2)
        })
        .collect();
    invalid(wal.append(&too_big_batch, None));
    assert!(matches!(wal.entries(0, 5, 10), Err(WalError::Invalid(_))));
    assert!(matches!(wal.entries(5, 4, 10), Err(WalError::Invalid(_))));
    assert!(matches!(wal.entries(5, 12, 10), Err(WalError::Invalid(_))));
    invalid(wal.compact(5));
    // Nothing above broke the log.
    wal.append(&entries(11, 2, 2), None).unwrap();
    assert_eq!(all(&wal), entries(1, 12, 2));
}

/// A file layer whose data syncs take a while, so writers pile up behind
/// them the way they do on a slow disk.
#[derive(Debug, Default)]
struct SlowSyncs {
    syncs: AtomicU64,
}

impl FileLayer for SlowSyncs {
    fn sync_mapped(
        &self,
        map: &MmapMut,
        _path: &Path,
        offset: usize,
        len: usize,
    ) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        map.flush_range(offset, len)
    }
}

/// `threads` writers append `per_thread` single-entry batches each, taking
/// the next index under a lock and waiting for durability outside it.
fn concurrent_appends(wal: &Wal, threads: u64, per_thread: u64) {
    let next = Mutex::new(wal.last_index() + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    let ticket = {
                        let mut next = next.lock();
                        let t = wal.write(&[entry(*next, 1)], None).unwrap();
                        *next += 1;
                        t
                    };
                    wal.wait_durable(ticket).unwrap();
                }
            });
        }
    });
}

#[test]
fn group_commit_shares_syncs_between_threads() {
    let dir = TempDir::new("ops-group");
    let layer = Arc::new(SlowSyncs::default());
    let advanced = AdvancedOptions {
        files: layer.clone(),
        ..AdvancedOptions::default()
    };
    let (wal, _) = Wal::open_with(dir.path(), small(1 << 20), advanced).unwrap();
    let (threads, per_thread) = (8, 40);
    concurrent_appends(&wal, threads, per_thread);
    let syncs = layer.syncs.load(Ordering::SeqCst);
    let appends = threads * per_thread;
    // At least two batches per sync on average, even on a starved machine.
    assert!(syncs * 2 < appends, "{syncs} syncs for {appends} appends");
    drop(wal);
    let (_, rec) = open(dir.path(), 1 << 20);
    assert_eq!(rec.entries, entries(1, appends, 1));
}

#[test]
fn rotation_under_concurrent_load_with_readers() {
    let dir = TempDir::new("ops-rotate");
    let (wal, _) = open(dir.path(), 4096);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let (first, last) = (wal.first_index(), wal.last_index());
                if last >= first {
                    let lo = first.max(last.saturating_sub(20));
                    for e in wal.entries(lo, last + 1, u64::MAX).unwrap() {
                        assert_eq!(e, entry(e.index, 1));
                    }
                }
            }
        });
        concurrent_appends(&wal, 4, 250);
        done.store(true, Ordering::Relaxed);
    });
    assert!(segment_files(dir.path()).len() > 10);
    drop(wal);
    let (_, rec) = open(dir.path(), 4096);
    assert_eq!(rec.entries, entries(1, 1000, 1));
}

#[test]
fn a_failed_sync_poisons_the_log_until_reopened() {
    let dir = TempDir::new("ops-poison");
    let faults = Arc::new(FaultyFiles::new());
    // No background preparation: its file syncs would race with the count
    // of data syncs below.
    let advanced = AdvancedOptions {
        files: faults.clone(),
        prepare_ahead: false,
    };
    let (wal, _) = Wal::open_with(dir.path(), small(1 << 16), advanced).unwrap();
    wal.append(&entries(1, 10, 1), Some(&hs(1, 5))).unwrap();
    faults.fail_syncs(true);
    let syncs_before = faults.sync_count();
    assert!(matches!(
        wal.append(&entries(11, 1, 1), None),
        Err(WalError::Poisoned)
    ));
    assert!(wal.poison_reason().unwrap().contains("sync"));
    faults.fail_syncs(false);
    // Every later call fails, and no sync is ever retried.
    assert!(matches!(
        wal.append(&entries(12, 1, 1), None),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(
        wal.save_snapshot(&snapshot(5, 1)),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.entries(1, 2, 100), Err(WalError::Poisoned)));
    assert!(matches!(wal.term(1), Err(WalError::Poisoned)));
    assert!(matches!(wal.compact(1), Err(WalError::Poisoned)));
    assert_eq!(faults.sync_count(), syncs_before + 1);
    drop(wal);
    let (wal, rec) = open(dir.path(), 1 << 16);
    assert_eq!(rec.entries[..10], entries(1, 10, 1)[..]);
    assert_eq!(rec.hard_state, hs(1, 5));
    wal.append(&entries(wal.last_index() + 1, 1, 1), None)
        .unwrap();
}

#[test]
fn waiters_queued_behind_a_failed_sync_are_poisoned_too() {
    let dir = TempDir::new("ops-poison-many");
    let faults = Arc::new(FaultyFiles::new());
    let advanced = AdvancedOptions {
        files: faults.clone(),
        ..AdvancedOptions::default()
    };
    let (wal, _) = Wal::open_with(dir.path(), small(1 << 16), advanced).unwrap();
    let tickets: Vec<_> = (1..=5)
        .map(|i| wal.write(&[entry(i, 1)], None).unwrap())
        .collect();
    faults.fail_syncs(true);
    std::thread::scope(|s| {
        for t in tickets {
            let wal = &wal;
            s.spawn(move || assert!(matches!(wal.wait_durable(t), Err(WalError::Poisoned))));
        }
    });
}

#[test]
fn running_out_of_space_is_an_error_not_a_crash() {
    let dir = TempDir::new("ops-nospace");
    let faults = Arc::new(FaultyFiles::new());
    faults.set_no_space(true);
    for prepare_ahead in [false, true] {
        let advanced = AdvancedOptions {
            files: faults.clone(),
            prepare_ahead,
        };
        let r = Wal::open_with(dir.path(), small(4096), advanced);
        assert!(
            matches!(r, Err(WalError::NoSpace(_))),
            "fresh open on a full disk"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no temporary file left behind"
    );
    faults.set_no_space(false);
    for prepare_ahead in [false, true] {
        let d = TempDir::new("ops-nospace-rot");
        let advanced = AdvancedOptions {
            files: faults.clone(),
            prepare_ahead,
        };
        let (wal, _) = Wal::open_with(d.path(), small(4096), advanced).unwrap();
        // Let a background preparation (which has space) finish, then run
        // out of space for the one after it.
        let mut next = 1;
        wal.append(&entries(next, 1, 1), None).unwrap();
        next += 1;
        std::thread::sleep(Duration::from_millis(50));
        faults.set_no_space(true);
        let failure = loop {
            match wal.append(&entries(next, 4, 1), None) {
                Ok(()) => next += 4,
                Err(e) => break e,
            }
            assert!(next < 2000, "never ran out of space");
        };
        assert!(matches!(failure, WalError::NoSpace(_)), "{failure:?}");
        // Not poisoned: once there is room again, appends go on.
        faults.set_no_space(false);
        wal.append(&entries(next, 4, 1), None).unwrap();
        let expected = entries(1, next + 3, 1);
        assert_eq!(all(&wal), expected);
        drop(wal);
        let (_, rec) = open(d.path(), 4096);
        assert_eq!(rec.entries, expected);
    }
}

#[test]
fn each_write_method_and_unsynced_mode_round_trip() {
    // The other tests take the default method: this one keeps the other
    // covered, synced and not.
    for (method, sync) in [
        (WriteMethod::Pwrite, SyncMode::Always),
        (WriteMethod::Mmap, SyncMode::Always),
        (WriteMethod::Mmap, SyncMode::Never),
    ] {
        let dir = TempDir::new("ops-methods");
        let options = WalOptions {
            segment_size: 4096,
            sync,
            write_method: method,
        };
        let expected = entries(1, 300, 1);
        {
            let (wal, _) = Wal::open(dir.path(), options.clone()).unwrap();
            for chunk in expected.chunks(3) {
                wal.append(chunk, Some(&hs(1, chunk[0].index))).unwrap();
            }
            assert_eq!(all(&wal), expected);
        }
        let (_, rec) = Wal::open(dir.path(), options).unwrap();
        assert_eq!(rec.entries, expected, "{method:?} {sync:?}");
        assert_eq!(rec.hard_state, hs(1, 298));
    }
}

/// Bytes this thread has caused to be written to storage so far, as the
/// kernel counts them when pages are dirtied (Linux task I/O accounting);
/// None where the kernel does not say.
fn thread_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn synced_appends_write_back_about_what_they_append() {
    // Many small synced batches filling most of a default-sized segment:
    // the pattern under which the kernel's readahead for the mapping once
    // grew its folios until each msync wrote back 35 times the batch.
    const BATCH: usize = 16 << 10;
    const BATCHES: u64 = 3000;
    let dir = TempDir::new("ops-write-amplification");
    // Only stores through the mapping can be written back in whole folios.
    let options = WalOptions {
        write_method: WriteMethod::Mmap,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    let Some(before) = thread_write_bytes() else {
        eprintln!("no per-thread I/O accounting here: nothing to measure");
        return;
    };
    let data: Arc<[u8]> = vec![0x5au8; BATCH].into();
    for index in 1..=BATCHES {
        let entry = Entry {
            index,
            term: 1,
            kind: embraft::core::EntryKind::Normal,
            data: data.clone(),
        };
        wal.append(&[entry], Some(&hs(1, index))).unwrap();
    }
    let written = thread_write_bytes().unwrap() - before;
    let appended = BATCHES * BATCH as u64;
    let ratio = written as f64 / appended as f64;
    eprintln!("{written} bytes written back for {appended} appended ({ratio:.2}x)");
    // A batch and its record headers share pages with the ones before and
    // after, so a page can be written back twice; more than that means
    // syncs write back far more than what changed.
    assert!(
        ratio < 3.0,
        "{written} bytes written back for {appended} appended ({ratio:.1}x)"
    );
}
