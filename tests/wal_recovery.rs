//! Recovery: torn tails cut at every byte, random bit flips, stale records
//! from an earlier life of a segment file, crashes during rotation and
//! prefix deletion, and the hard errors for sealed segments.

mod wal_support;

use embraft::core::{Entry, HardState, SnapshotMeta};
use embraft::wal::{Recovered, RecoveryReport, Wal, WalError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use wal_support::*;

fn reopen(dir: &Path, segment_size: u64) -> Result<(Wal, Recovered), WalError> {
    Wal::open_with(dir, small(segment_size), fast_reopen_options())
}

/// One appended batch and where it landed.
struct Written {
    entries: Vec<Entry>,
    hard_state: HardState,
    seq: u64,
    start: u64,
    end: u64,
}

/// Appends `count` entries in batches of 1 to `max_batch`, each with a hard
/// state, recording where every batch lies.
fn workload(wal: &Wal, count: u64, max_batch: u64, rng: &mut TestRng) -> Vec<Written> {
    let mut out = Vec::new();
    let mut next = wal.last_index() + 1;
    let end = next + count;
    while next < end {
        let n = (1 + rng.below(max_batch)).min(end - next);
        let es = entries(next, n, 1);
        let hard_state = hs(1, next);
        wal.append(&es, Some(&hard_state)).unwrap();
        let (seq, end) = wal.write_position();
        // The first batch in a segment starts right after its header, with
        // the group's start record.
        let start = match out.last() {
            Some(Written { seq: s, end: e, .. }) if *s == seq => *e,
            _ => SEGMENT_HEADER,
        };
        assert!(end - start >= batch_len(&es));
        out.push(Written {
            entries: es,
            hard_state,
            seq,
            start,
            end,
        });
        next += n;
    }
    out
}

/// Bytes of a segment header, and of a record header (docs/DISK-FORMAT.md).
const SEGMENT_HEADER: u64 = 64;
const RECORD_HEADER: usize = 40;

/// Bytes a batch of `es` plus a hard state occupies (docs/DISK-FORMAT.md),
/// without the group's start record that opens its first batch in a
/// segment.
fn batch_len(es: &[Entry]) -> u64 {
    let record = |payload: usize| RECORD_HEADER + payload.div_ceil(8) * 8;
    let entries: usize = es.iter().map(|e| record(e.data.len())).sum();
    (entries + record(25) + record(8)) as u64
}

/// How many entries the leading batches that pass `keep` hold, and the
/// last hard state among them.
fn expected_up_to(batches: &[Written], keep: impl Fn(&Written) -> bool) -> (usize, HardState) {
    let kept = batches.iter().take_while(|b| keep(b));
    let count = kept.clone().map(|b| b.entries.len()).sum();
    (
        count,
        kept.last()
            .map_or_else(HardState::default, |b| b.hard_state),
    )
}

#[test]
fn torn_tail_recovers_exactly_the_whole_batches_at_every_cut() {
    let dir = TempDir::new("rec-torn");
    let segment = 64 << 10;
    let batches = {
        let (wal, _) = open(dir.path(), segment);
        workload(&wal, 1200, 8, &mut TestRng(7))
    };
    let tail_seq = batches.last().unwrap().seq;
    assert!(tail_seq > 1, "the workload spans segments");
    let tail_path = segment_path(dir.path(), tail_seq);
    let original = std::fs::read(&tail_path).unwrap();
    let last_batches = &batches[batches.len() - 3..];

    assert!(last_batches.iter().all(|b| b.seq == tail_seq));
    let (from, to) = (last_batches[0].start, last_batches[2].end);
    let all_entries: Vec<Entry> = batches.iter().flat_map(|b| b.entries.clone()).collect();
    let first_tail_start = batches.iter().find(|b| b.seq == tail_seq).unwrap().start;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&tail_path)
        .unwrap();
    let mut recoveries = 0;
    for cut in from..=to {
        for truncate in [true, false] {
            if truncate {
                file.set_len(cut).unwrap();
            } else {
                file.write_all_at(&vec![0; (to - cut) as usize], cut)
                    .unwrap();
            }
            let (wal, rec) = reopen(dir.path(), segment).unwrap();
            recoveries += 1;
            let (count, hard_state) =
                expected_up_to(&batches, |b| b.seq < tail_seq || b.end <= cut);
            assert_eq!(
                rec.entries.len(),
                count,
                "cut at {cut}, truncate {truncate}"
            );
            assert!(rec.entries[..] == all_entries[..count], "cut at {cut}");
            assert_eq!(rec.hard_state, hard_state, "cut at {cut}");
            let last_whole_end = batches
                .iter()
                .rfind(|b| b.seq == tail_seq && b.end <= cut)
                .map_or(first_tail_start, |b| b.end);
            if let Some(tc) = &wal.recovery_report().tail_cut {
                assert_eq!(tc.offset, last_whole_end, "cut at {cut}");
            }
            assert_eq!(wal.write_position(), (tail_seq, last_whole_end));
            drop(wal);
            // Put the original bytes back (recovery zeroed them).
            file.write_all_at(&original[last_whole_end as usize..], last_whole_end)
                .unwrap();
        }
    }
    drop(file);
    assert!(recoveries > 2000, "{recoveries} recoveries");
    // After the last cut, the log takes appends again and keeps them.
    std::fs::write(&tail_path, &original).unwrap();
    let (wal, rec) = open(dir.path(), segment);
    assert_eq!(rec.entries.len(), 1200);
    wal.append(&entries(1201, 2, 2), None).unwrap();
}

#[test]
fn every_random_bit_flip_is_detected_and_no_wrong_byte_is_returned() {
    let dir = TempDir::new("rec-flip");
    let segment = 4096;
    let batches = {
        let (wal, _) = open(dir.path(), segment);
        workload(&wal, 150, 4, &mut TestRng(11))
    };
    settle(dir.path(), segment);
    let all_entries: Vec<Entry> = batches.iter().flat_map(|b| b.entries.clone()).collect();
    let files = segment_files(dir.path());
    assert!(files.len() >= 6, "{} segments", files.len());
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let tail = files.len() - 1;
    let mut rng = TestRng(0x5eed_f11b);
    let (mut hard_errors, mut cuts) = (0, 0);
    for flip in 0..10_000 {
        let which = rng.below(files.len() as u64) as usize;
        let bit = rng.below(originals[which].len() as u64 * 8);
        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&files[which])
            .unwrap();
        file.write_all_at(&[originals[which][byte as usize] ^ mask], byte)
            .unwrap();
        drop(file);
        match reopen(dir.path(), segment) {
            Err(WalError::Corrupt { path, offset, .. }) => {
                assert_eq!(
                    path, files[which],
                    "flip {flip}: the error names the flipped file"
                );
                assert!(
                    offset <= byte,
                    "flip {flip}: error at {offset}, flip at {byte}"
                );
                hard_errors += 1;
            }
            Err(e) => panic!("flip {flip}: unexpected error {e}"),
            Ok((wal, rec)) => {
                assert_eq!(
                    which, tail,
                    "flip {flip} in sealed segment {which} at {byte} went unnoticed"
                );
                let cut = wal
                    .recovery_report()
                    .tail_cut
                    .clone()
                    .expect("a flip in the tail is cut away");
                assert!(
                    cut.offset <= byte,
                    "flip {flip}: cut at {} after the flip at {byte}",
                    cut.offset
                );
                assert_eq!(
                    rec.entries[..],
                    all_entries[..rec.entries.len()],
                    "flip {flip}"
                );
                let read = wal
                    .entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
                    .unwrap();
                assert_eq!(read, rec.entries, "flip {flip}");
                cuts += 1;
                drop(wal);
                let start = cut.offset as usize;
                let tail_file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&files[tail])
                    .unwrap();
                tail_file
                    .write_all_at(&originals[tail][start..], start as u64)
                    .unwrap();
            }
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&files[which])
            .unwrap();
        file.write_all_at(&originals[which][byte as usize..byte as usize + 1], byte)
            .unwrap();
    }
    assert!(
        hard_errors > 0 && cuts > 0,
        "{hard_errors} errors, {cuts} cuts"
    );
    let (_, rec) = open(dir.path(), segment);
    assert_eq!(rec.entries, all_entries, "the originals are back");
}

#[test]
fn a_damaged_record_followed_by_synced_records_is_corruption_not_a_tear() {
    let dir = TempDir::new("rec-synced-after");
    let batches = {
        let (wal, _) = open(dir.path(), 1 << 16);
        workload(&wal, 100, 3, &mut TestRng(3))
    };
    let victim = &batches[batches.len() / 2];
    let path = segment_path(dir.path(), victim.seq);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xff, 0xff], victim.start + 40).unwrap();
    match reopen(dir.path(), 1 << 16) {
        Err(WalError::Corrupt {
            path: p,
            offset,
            reason,
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, victim.start);
            assert!(reason.contains("synced"), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn damage_inside_one_unsynced_group_commit_is_a_tear_not_corruption() {
    // Pages written since the last completed sync reach the disk in any
    // order: a later batch of the same group commit may survive while an
    // earlier one is lost. That is a torn write, to be cut, not corruption.
    let dir = TempDir::new("rec-unsynced-window");
    let synced_end = {
        let (wal, _) = open(dir.path(), 1 << 16);
        wal.append(&entries(1, 5, 1), None).unwrap();
        let synced_end = wal.write_position().1;
        for first in [6, 11, 16] {
            wal.write(&entries(first, 5, 1), None).unwrap(); // never waited for
        }
        synced_end
    };
    settle(dir.path(), 1 << 16);
    let path = segment_path(dir.path(), 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // The first unsynced batch's page never made it; the next two did.
    file.write_all_at(&[0u8; 40], synced_end).unwrap();
    drop(file);
    let (wal, rec) = reopen(dir.path(), 1 << 16).expect("a tear, not corruption");
    assert_eq!(rec.entries, entries(1, 5, 1));
    assert_eq!(
        wal.recovery_report().tail_cut.as_ref().map(|c| c.offset),
        Some(synced_end)
    );
}

#[test]
fn a_bad_checksum_in_a_sealed_segment_is_a_hard_error_naming_file_and_offset() {
    let dir = TempDir::new("rec-sealed");
    let batches = {
        let (wal, _) = open(dir.path(), 4096);
        workload(&wal, 100, 3, &mut TestRng(5))
    };
    assert!(batches.last().unwrap().seq > 2);
    let first = batches.iter().find(|b| b.seq == 1).unwrap();
    let path = segment_path(dir.path(), 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // A byte of the first record's index field (the group's start record).
    file.write_all_at(&[0x80], first.start + 24).unwrap();
    let err = reopen(dir.path(), 4096).map(|_| ()).unwrap_err();
    match &err {
        WalError::Corrupt {
            path: p, offset, ..
        } => assert_eq!((p, *offset), (&path, first.start)),
        other => panic!("expected corruption, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("0000000000000001.seg") && text.contains(&format!("offset {}", first.start)),
        "{text}"
    );
}

#[test]
fn stale_records_from_an_earlier_life_of_a_segment_never_come_back() {
    // Two logs with identical content up to index 50: their records sit at
    // the same offsets and differ only by salt. Laying the longer log's
    // later records behind the shorter log's end imitates a recycled file.
    let old = TempDir::new("rec-stale-old");
    let new = TempDir::new("rec-stale-new");
    let segment = 1 << 16;
    {
        let (wal, _) = open(old.path(), segment);
        for i in (1..=200).step_by(5) {
            wal.append(&entries(i, 5, 1), None).unwrap();
        }
    }
    let new_end = {
        let (wal, _) = open(new.path(), segment);
        for i in (1..=50).step_by(5) {
            wal.append(&entries(i, 5, 1), None).unwrap();
        }
        wal.write_position().1
    };
    let old_bytes = std::fs::read(segment_path(old.path(), 1)).unwrap();
    let new_path = segment_path(new.path(), 1);
    let new_bytes = std::fs::read(&new_path).unwrap();
    assert_eq!(old_bytes[64..96].len(), 32);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&new_path)
        .unwrap();
    file.write_all_at(&old_bytes[new_end as usize..], new_end)
        .unwrap();
    drop(file);
    let (wal, rec) = reopen(new.path(), segment).unwrap();
    assert_eq!(rec.entries, entries(1, 50, 1), "no stale entry");
    assert_eq!(wal.last_index(), 50);
    assert!(wal.recovery_report().tail_cut.is_some());
    // The stale bytes were zeroed; new appends land there cleanly.
    wal.append(&entries(51, 5, 2), None).unwrap();
    drop(wal);
    let (_, rec) = open(new.path(), segment);
    assert_eq!(rec.entries.len(), 55);
    assert_eq!(rec.entries[50..], entries(51, 5, 2)[..]);
    assert_ne!(new_bytes, old_bytes);
}

/// Opens and closes the log once without preparing ahead, so the only
/// segment files left are the used ones.
fn settle(dir: &Path, segment_size: u64) {
    drop(reopen(dir, segment_size).unwrap());
}

/// A closed log of several small segments with a snapshot at 200.
fn closed_log(name: &str) -> (TempDir, Vec<PathBuf>) {
    let dir = TempDir::new(name);
    {
        let (wal, _) = open(dir.path(), 4096);
        for i in (1..=300).step_by(4) {
            wal.append(&entries(i, 4, 1), Some(&hs(1, i))).unwrap();
        }
        wal.save_snapshot(&SnapshotMeta {
            index: 200,
            term: 1,
            conf_state: Default::default(),
        })
        .unwrap();
    }
    settle(dir.path(), 4096);
    let files = segment_files(dir.path());
    assert!(files.len() > 4);
    (dir, files)
}

fn report_of(dir: &Path) -> (RecoveryReport, Recovered) {
    let (wal, rec) = reopen(dir, 4096).unwrap();
    (wal.recovery_report().clone(), rec)
}

#[test]
fn leftovers_of_an_interrupted_rotation_are_removed() {
    let (dir, files) = closed_log("rec-rotation");
    let next = files.len() as u64 + 1;
    let temp = dir.path().join(format!("{next:016x}.seg.tmp"));
    std::fs::write(&temp, b"half-prepared").unwrap();
    let prepared = segment_path(dir.path(), next);
    std::fs::write(&prepared, vec![0u8; 4096]).unwrap();
    let (report, rec) = report_of(dir.path());
    assert!(report.removed_files.contains(&temp), "{report:?}");
    assert!(report.removed_files.contains(&prepared), "{report:?}");
    assert!(!temp.exists() && !prepared.exists());
    assert_eq!(rec.entries, entries(201, 100, 1));
    // A prepared-but-unused segment may only trail the used ones.
    let middle = &files[1];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(middle)
        .unwrap();
    file.write_all_at(&[0u8; 64], 0).unwrap();
    match reopen(dir.path(), 4096).map(|_| ()) {
        Err(WalError::Corrupt { path, .. }) => assert_eq!(&path, middle),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_crash_part_way_through_prefix_deletion_recovers() {
    let (dir, files) = closed_log("rec-prefix");
    // Deleting the oldest segments one by one, as compaction does: every
    // intermediate state is a valid log.
    for deleted in 1..=2 {
        std::fs::remove_file(&files[deleted - 1]).unwrap();
        let (report, rec) = report_of(dir.path());
        assert_eq!(report.segments, files.len() - deleted);
        assert_eq!(rec.entries, entries(201, 100, 1));
        assert_eq!(rec.hard_state, hs(1, 297));
    }
    // A hole in the middle is not.
    std::fs::remove_file(&files[3]).unwrap();
    match reopen(dir.path(), 4096).map(|_| ()) {
        Err(WalError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, files[3]);
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn index_discontinuity_between_segments_is_detected() {
    let (dir, files) = closed_log("rec-continuity");
    // Segment 3 opens with the group's start record, whose index (bytes
    // 24..32 of the record) says where the group's log ended before it.
    // Move it on by one and give the record a valid checksum: CRC-32 of
    // the segment's salt (header bytes 24..32), then the record from its
    // byte 4 to its padded end.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&files[2])
        .unwrap();
    let mut bytes = vec![0u8; 4096];
    file.read_exact_at(&mut bytes, 0).unwrap();
    let at = SEGMENT_HEADER as usize;
    assert_eq!(bytes[at + 8], 5, "a group start record");
    let payload_len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let end = at + RECORD_HEADER + payload_len.div_ceil(8) * 8;
    let index = u64::from_le_bytes(bytes[at + 24..at + 32].try_into().unwrap());
    bytes[at + 24..at + 32].copy_from_slice(&(index + 1).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[24..32]);
    crc.update(&bytes[at + 4..end]);
    bytes[at..at + 4].copy_from_slice(&crc.finalize().to_le_bytes());
    file.write_all_at(&bytes[at..end], at as u64).unwrap();
    match reopen(dir.path(), 4096).map(|_| ()) {
        Err(WalError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, files[2]);
            assert!(reason.contains("starts after index"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn random_garbage_and_truncation_never_panic_and_never_yield_wrong_entries() {
    let dir = TempDir::new("rec-garbage");
    let batches = {
        let (wal, _) = open(dir.path(), 4096);
        workload(&wal, 120, 4, &mut TestRng(13))
    };
    settle(dir.path(), 4096);
    let all_entries: Vec<Entry> = batches.iter().flat_map(|b| b.entries.clone()).collect();
    let files = segment_files(dir.path());
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mut rng = TestRng(0x6a5b_a6e1);
    for round in 0..1000 {
        let which = rng.below(files.len() as u64) as usize;
        let len = originals[which].len() as u64;
        let mut damaged = originals[which].clone();
        if rng.below(4) == 0 {
            damaged.truncate(rng.below(len) as usize);
        } else {
            let at = rng.below(len) as usize;
            let span = (1 + rng.below(64) as usize).min(damaged.len() - at);
            for b in &mut damaged[at..at + span] {
                *b = rng.next() as u8;
            }
        }
        std::fs::write(&files[which], &damaged).unwrap();
        match reopen(dir.path(), 4096) {
            Ok((wal, rec)) => {
                assert_eq!(
                    rec.entries[..],
                    all_entries[..rec.entries.len()],
                    "round {round}"
                );
                drop(wal);
            }
            Err(WalError::Corrupt { .. }) => {}
            Err(e) => panic!("round {round}: unexpected error {e}"),
        }
        // Recovery may have cut the tail or deleted a headerless segment.
        for (f, original) in files.iter().zip(&originals) {
            if std::fs::read(f).ok().as_ref() != Some(original) {
                std::fs::write(f, original).unwrap();
            }
        }
    }
}
