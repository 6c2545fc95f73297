//! A real crash: a child process (this test binary, re-executed) appends,
//! syncs, snapshots and compacts in a loop, printing every index it has
//! synced; the parent kills it with SIGKILL at random moments and checks
//! that recovery holds every entry the child reported synced.

mod wal_support;

use embraft::core::SnapshotMeta;
use embraft::wal::Wal;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use wal_support::*;

const CHILD_DIR_ENV: &str = "EMBRAFT_WAL_CRASH_CHILD_DIR";
const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_synced_entry";
/// Small segments so that kills often land in a rotation or a compaction.
const SEGMENT: u64 = 16 << 10;

/// The child: append until killed.
fn child(dir: &Path) -> ! {
    let (wal, _) = open(dir, SEGMENT);
    let mut rng = TestRng(std::process::id() as u64 | 1);
    let out = std::io::stdout();
    loop {
        let first = wal.last_index() + 1;
        let n = 1 + rng.below(8);
        wal.append(&entries(first, n, 1), Some(&hs(1, first)))
            .unwrap();
        let last = first + n - 1;
        let mut out = out.lock();
        writeln!(out, "synced {last}").unwrap();
        out.flush().unwrap();
        drop(out);
        if last / 100 != (first - 1) / 100 && last > 40 {
            let upto = last - 40;
            wal.save_snapshot(&SnapshotMeta {
                index: upto,
                term: 1,
                conf_state: Default::default(),
            })
            .unwrap();
            wal.compact(upto).unwrap();
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_synced_entry() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
    }
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut rng = TestRng(0xc4a5_4001);
    let mut synced = 0u64;
    let rounds = 60;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut note = |line: &str| {
            if let Some(n) = line.strip_prefix("synced ") {
                synced = synced.max(n.parse().unwrap());
            }
        };
        // Let it report a random number of syncs, then kill it after a
        // random pause: mid-append, mid-sync, mid-rotation, mid-compaction.
        let reports = 1 + rng.below(30);
        let mut seen = 0;
        while seen < reports {
            let Some(line) = lines.next() else { break };
            let line = line.unwrap();
            seen += line.starts_with("synced ") as u64;
            note(&line);
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever it printed before dying was reported too.
        for line in lines {
            note(&line.unwrap());
        }
        assert!(seen > 0, "round {round}: the child reported nothing");

        let (wal, rec) = Wal::open(dir.path(), small(SEGMENT)).unwrap();
        let snapshot_index = rec.snapshot.as_ref().map_or(0, |s| s.index);
        assert!(
            wal.last_index() >= synced,
            "round {round}: synced through {synced}, recovered through {}",
            wal.last_index()
        );
        assert_eq!(
            rec.entries.first().map(|e| e.index),
            Some(snapshot_index + 1)
        );
        for (i, e) in rec.entries.iter().enumerate() {
            assert_eq!(*e, entry(snapshot_index + 1 + i as u64, 1), "round {round}");
        }
        let read = wal
            .entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
            .unwrap();
        assert_eq!(read[read.len() - rec.entries.len()..], rec.entries[..]);
    }
    assert!(
        synced > 100,
        "only {synced} entries synced over {rounds} rounds"
    );
    // The kills had rotations and compactions to land in.
    let (wal, rec) = Wal::open(dir.path(), small(SEGMENT)).unwrap();
    assert!(rec.snapshot.is_some(), "the child never compacted");
    assert!(wal.write_position().0 > 5, "the child rarely rotated");
    assert!(wal.first_index() > 1, "compaction never deleted a segment");
}
