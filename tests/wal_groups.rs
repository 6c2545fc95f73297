//! Many Raft groups in one WAL: interleaved multi-group batches recovered
//! exactly, one sync per multi-group batch, crashes that keep or lose a
//! batch for all its groups together, per-group truncation, compaction
//! that deletes a segment only once no group needs it, idle groups whose
//! state outlives many rotations, the pinning report, removal, and the
//! refusal of old-format segments.

mod wal_support;

use embraft::core::{Entry, HardState, SnapshotMeta};
use embraft::wal::{
    AdvancedOptions, FaultyFiles, GroupWrite, Recovered, RecoveredGroups, Wal, WalError,
    WalOptions, WriteMethod, DEFAULT_GROUP,
};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use wal_support::*;

fn snapshot(index: u64, term: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term,
        conf_state: Default::default(),
    }
}

/// What a group should hold: its live entries, hard state and snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    entries: BTreeMap<u64, Entry>,
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .copied()
            .or(self.snapshot.as_ref().map(|s| s.index))
            .unwrap_or(0)
    }

    fn last_term(&self) -> u64 {
        self.entries.values().next_back().map_or(1, |e| e.term)
    }

    fn apply(&mut self, w: &Owned) {
        if let Some(s) = &w.snapshot {
            // The workload only saves snapshots of entries the log holds.
            self.snapshot = Some(s.clone());
        }
        if let Some(first) = w.entries.first() {
            self.entries.split_off(&first.index);
            self.entries
                .extend(w.entries.iter().map(|e| (e.index, e.clone())));
        }
        if let Some(hs) = w.hard_state {
            self.hard_state = hs;
        }
    }

    /// What recovery hands back for this group.
    fn recovered(&self) -> Recovered {
        let after = self.snapshot.as_ref().map_or(0, |s| s.index);
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self
                .entries
                .range(after + 1..)
                .map(|(_, e)| e.clone())
                .collect(),
        }
    }
}

/// One group's writes, owned.
#[derive(Clone, Debug)]
struct Owned {
    group: u64,
    snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl Owned {
    fn view(&self) -> GroupWrite<'_> {
        GroupWrite {
            group: self.group,
            snapshot: self.snapshot.as_ref(),
            entries: &self.entries,
            hard_state: self.hard_state.as_ref(),
        }
    }
}

/// A random batch over some of `groups`: appends, suffix overwrites with
/// a higher term, hard states, and snapshots of entries the log holds.
fn random_batch(rng: &mut TestRng, models: &BTreeMap<u64, Model>) -> Vec<Owned> {
    let ids: Vec<u64> = models.keys().copied().collect();
    let mut picked: Vec<u64> = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let id = ids[rng.below(ids.len() as u64) as usize];
        if !picked.contains(&id) {
            picked.push(id);
        }
    }
    picked
        .into_iter()
        .map(|group| {
            let m = &models[&group];
            let last = m.last_index();
            let snap_at = m.snapshot.as_ref().map_or(0, |s| s.index);
            let mut w = Owned {
                group,
                snapshot: None,
                entries: Vec::new(),
                hard_state: None,
            };
            match rng.below(10) {
                0 if last > snap_at && !m.entries.is_empty() => {
                    let at = snap_at + 1 + rng.below(last - snap_at);
                    let term = m.entries[&at].term;
                    w.snapshot = Some(snapshot(at, term));
                }
                1 | 2 if last > snap_at + 1 => {
                    // Overwrite a suffix with a new term.
                    let from = last - rng.below((last - snap_at).min(5));
                    let term = m.last_term() + 1;
                    w.entries = entries(from.max(snap_at + 1), 1 + rng.below(4), term);
                }
                _ => w.entries = entries(last + 1, 1 + rng.below(6), m.last_term()),
            }
            if rng.below(2) == 0 {
                w.hard_state = Some(hs(m.last_term() + 1, last));
            }
            w
        })
        .collect()
}

fn write_all(wal: &Wal, batch: &[Owned]) -> embraft::wal::WriteTicket {
    let views: Vec<GroupWrite<'_>> = batch.iter().map(Owned::view).collect();
    wal.write_groups(&views).unwrap()
}

/// Every group of `models` as the WAL reads it, and as recovery returned it.
fn check(wal: &Wal, recovered: &RecoveredGroups, models: &BTreeMap<u64, Model>) {
    let live: Vec<u64> = models.keys().copied().collect();
    assert_eq!(wal.groups(), live);
    assert_eq!(recovered.keys().copied().collect::<Vec<_>>(), live);
    for (&g, m) in models {
        assert_eq!(recovered[&g], m.recovered(), "group {g}");
        assert_eq!(wal.hard_state_of(g), m.hard_state, "group {g}");
        assert_eq!(wal.snapshot_of(g), m.snapshot, "group {g}");
        assert_eq!(wal.last_index_of(g), m.last_index(), "group {g}");
        let stored = wal
            .entries_of(g, wal.first_index_of(g), wal.last_index_of(g) + 1, u64::MAX)
            .unwrap();
        let expected: Vec<Entry> = m
            .entries
            .range(wal.first_index_of(g)..)
            .map(|(_, e)| e.clone())
            .collect();
        assert_eq!(stored, expected, "group {g}");
        if let Some(e) = expected.last() {
            assert_eq!(wal.term_of(g, e.index).unwrap(), Some(e.term));
        }
    }
}

fn models_of(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, Model> {
    ids.into_iter().map(|g| (g, Model::default())).collect()
}

fn open_groups(dir: &Path, segment_size: u64) -> (Wal, RecoveredGroups) {
    Wal::open_groups_with(dir, small(segment_size), no_prepare()).unwrap()
}

#[test]
fn interleaved_groups_are_recovered_exactly() {
    let dir = TempDir::new("groups-interleaved");
    let mut models = models_of([0, 1, 2, 7, 1 << 40, u64::MAX]);
    let mut rng = TestRng(11);
    {
        let (wal, rec) = open_groups(dir.path(), 16 << 10);
        assert!(rec.is_empty());
        for _ in 0..600 {
            let batch = random_batch(&mut rng, &models);
            let ticket = write_all(&wal, &batch);
            wal.wait_durable(ticket).unwrap();
            for w in &batch {
                models.get_mut(&w.group).unwrap().apply(w);
            }
        }
        assert!(segment_files(dir.path()).len() > 5, "the workload rotates");
        // Groups never written were not invented.
        models.retain(|_, m| *m != Model::default());
    }
    for _ in 0..2 {
        let (wal, rec) = open_groups(dir.path(), 16 << 10);
        check(&wal, &rec, &models);
    }
    // The one-group view of the same directory is the default group.
    let (_, rec) = Wal::open(dir.path(), small(16 << 10)).unwrap();
    assert_eq!(rec, models[&DEFAULT_GROUP].recovered());
}

#[test]
fn a_multi_group_batch_takes_one_sync() {
    let dir = TempDir::new("groups-one-sync");
    let files = Arc::new(FaultyFiles::new());
    let advanced = AdvancedOptions {
        files: files.clone(),
        prepare_ahead: false,
    };
    let (wal, _) = Wal::open_groups_with(dir.path(), small(1 << 20), advanced).unwrap();
    let es = entries(1, 3, 1);
    let hard = hs(1, 0);
    let writes: Vec<GroupWrite<'_>> = (0..50)
        .map(|group| GroupWrite {
            group,
            entries: &es,
            hard_state: Some(&hard),
            ..GroupWrite::default()
        })
        .collect();
    let before = files.sync_count();
    wal.append_groups(&writes).unwrap();
    assert_eq!(files.sync_count() - before, 1);
    assert_eq!(wal.groups().len(), 50);
}

#[test]
fn a_torn_tail_keeps_or_loses_each_batch_for_all_its_groups() {
    let dir = TempDir::new("groups-torn");
    let segment = 1 << 20;
    let mut models = models_of(1..=8);
    let mut rng = TestRng(3);
    let (synced_models, synced_end, unsynced, tail) = {
        let (wal, _) = open_groups(dir.path(), segment);
        for _ in 0..50 {
            let batch = random_batch(&mut rng, &models);
            wal.wait_durable(write_all(&wal, &batch)).unwrap();
            for w in &batch {
                models.get_mut(&w.group).unwrap().apply(w);
            }
        }
        let synced_models = models.clone();
        let (seq, synced_end) = wal.write_position();
        // Batches written and never synced, each over several groups, and
        // where each one ends.
        let mut unsynced = Vec::new();
        for _ in 0..6 {
            let mut batch = random_batch(&mut rng, &models);
            while batch.len() < 2 {
                batch = random_batch(&mut rng, &models);
            }
            write_all(&wal, &batch);
            for w in &batch {
                models.get_mut(&w.group).unwrap().apply(w);
            }
            let (s, end) = wal.write_position();
            assert_eq!(s, seq, "no rotation in this test");
            unsynced.push((end, models.clone()));
        }
        (
            synced_models,
            synced_end,
            unsynced,
            segment_path(dir.path(), seq),
        )
    };
    let original = std::fs::read(&tail).unwrap();
    let written_end = unsynced.last().unwrap().0;
    let file = std::fs::OpenOptions::new().write(true).open(&tail).unwrap();
    let mut cuts = 0;
    for cut in (synced_end..=written_end).step_by(8) {
        // What never reached the disk is zeros.
        file.write_all_at(&vec![0; (written_end - cut) as usize], cut)
            .unwrap();
        let expected = unsynced
            .iter()
            .rfind(|(end, _)| *end <= cut)
            .map_or(&synced_models, |(_, m)| m);
        let mut expected = expected.clone();
        expected.retain(|_, m| *m != Model::default());
        let (wal, rec) =
            Wal::open_groups_with(dir.path(), small(segment), fast_reopen_options()).unwrap();
        check(&wal, &rec, &expected);
        drop(wal);
        file.write_all_at(&original[synced_end as usize..], synced_end)
            .unwrap();
        cuts += 1;
    }
    assert!(cuts > 50);
}

#[test]
fn a_crash_keeps_every_synced_batch_of_every_group() {
    // Four threads each write two groups in every batch, entry i to both;
    // power goes after some syncs. Every acknowledged batch must be back,
    // and both groups of a thread always end at the same index.
    for crash_after in [1, 3, 7, 20] {
        let dir = TempDir::new("groups-crash");
        let files = Arc::new(CrashFiles::default());
        let options = WalOptions {
            write_method: WriteMethod::Pwrite,
            ..small(32 << 10)
        };
        let advanced = AdvancedOptions {
            files: files.clone(),
            prepare_ahead: false,
        };
        let acked: Vec<u64> = {
            let (wal, _) = Wal::open_groups_with(dir.path(), options.clone(), advanced).unwrap();
            files.crash_after_syncs(crash_after);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..4u64)
                    .map(|t| {
                        let wal = &wal;
                        s.spawn(move || {
                            let mut acked = 0;
                            for i in 1..=400 {
                                let es = entries(i, 1, 1);
                                let hard = hs(1, i);
                                let writes = [2 * t, 2 * t + 1].map(|group| GroupWrite {
                                    group,
                                    entries: &es,
                                    hard_state: Some(&hard),
                                    ..GroupWrite::default()
                                });
                                if wal.append_groups(&writes).is_err() {
                                    break;
                                }
                                acked = i;
                            }
                            acked
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            })
        };
        assert!(files.crashed());
        let (wal, rec) = Wal::open_groups(dir.path(), options).unwrap();
        for (t, &acked) in acked.iter().enumerate() {
            let (a, b) = (2 * t as u64, 2 * t as u64 + 1);
            let last = wal.last_index_of(a);
            assert_eq!(last, wal.last_index_of(b), "thread {t}'s groups differ");
            assert!(last >= acked, "group {a} lost acknowledged entries");
            for g in [a, b] {
                let got = rec.get(&g).map_or(&[][..], |r| &r.entries[..]);
                assert_eq!(got, &entries(1, last, 1)[..], "group {g}");
                if last > 0 {
                    assert_eq!(rec[&g].hard_state, hs(1, last));
                }
            }
        }
    }
}

#[test]
fn truncating_one_group_leaves_the_others_alone() {
    let dir = TempDir::new("groups-truncate");
    let (a, b) = (1, 2);
    {
        let (wal, _) = open_groups(dir.path(), 8192);
        for i in (1..=60).step_by(6) {
            let es = entries(i, 6, 1);
            wal.append_groups(&[
                GroupWrite {
                    group: a,
                    entries: &es,
                    ..GroupWrite::default()
                },
                GroupWrite {
                    group: b,
                    entries: &es,
                    ..GroupWrite::default()
                },
            ])
            .unwrap();
        }
        // Group a replaces 30.. with term 2 while b appends in the same batch.
        let replaced = entries(30, 3, 2);
        let more = entries(61, 2, 1);
        wal.append_groups(&[
            GroupWrite {
                group: a,
                entries: &replaced,
                ..GroupWrite::default()
            },
            GroupWrite {
                group: b,
                entries: &more,
                ..GroupWrite::default()
            },
        ])
        .unwrap();
        assert_eq!(wal.last_index_of(a), 32);
        assert_eq!(wal.last_index_of(b), 62);
    }
    let (wal, rec) = open_groups(dir.path(), 8192);
    let mut expected_a = entries(1, 29, 1);
    expected_a.extend(entries(30, 3, 2));
    assert_eq!(rec[&a].entries, expected_a);
    assert_eq!(rec[&b].entries, entries(1, 62, 1));
    assert_eq!(wal.term_of(a, 31).unwrap(), Some(2));
    assert_eq!(wal.term_of(b, 31).unwrap(), Some(1));
    // A bad write of one group rejects the whole batch.
    let gap = entries(40, 1, 2);
    let fine = entries(63, 1, 1);
    let err = wal
        .append_groups(&[
            GroupWrite {
                group: b,
                entries: &fine,
                ..GroupWrite::default()
            },
            GroupWrite {
                group: a,
                entries: &gap,
                ..GroupWrite::default()
            },
        ])
        .unwrap_err();
    assert!(matches!(err, WalError::Invalid(_)), "{err}");
    assert_eq!(wal.last_index_of(b), 62);
    // So does a group named twice.
    let twice = GroupWrite {
        group: b,
        entries: &fine,
        ..GroupWrite::default()
    };
    assert!(matches!(
        wal.append_groups(&[twice, twice]),
        Err(WalError::Invalid(_))
    ));
    assert_eq!(wal.last_index_of(b), 62);
}

/// Appends `count` entries to `group` in batches of 5, with hard states.
fn fill(wal: &Wal, group: u64, count: u64) {
    let first = wal.last_index_of(group) + 1;
    for i in (first..first + count).step_by(5) {
        let es = entries(i, 5.min(first + count - i), 1);
        let hard = hs(1, i);
        wal.append_groups(&[GroupWrite {
            group,
            entries: &es,
            hard_state: Some(&hard),
            ..GroupWrite::default()
        }])
        .unwrap();
    }
}

/// Saves a snapshot of `group` at its last index and compacts up to it.
fn snapshot_and_compact(wal: &Wal, group: u64) {
    let last = wal.last_index_of(group);
    let term = wal.term_of(group, last).unwrap().unwrap();
    wal.save_snapshot_of(group, &snapshot(last, term)).unwrap();
    wal.compact_group(group, last).unwrap();
}

fn oldest_segment(dir: &Path) -> u64 {
    let first = segment_files(dir)[0].clone();
    u64::from_str_radix(first.file_stem().unwrap().to_str().unwrap(), 16).unwrap()
}

#[test]
fn a_segment_goes_only_when_no_group_needs_it() {
    let dir = TempDir::new("groups-compact");
    let (busy, lagging) = (1, 2);
    {
        let (wal, _) = open_groups(dir.path(), 8192);
        fill(&wal, lagging, 10);
        fill(&wal, busy, 300);
        assert!(segment_files(dir.path()).len() > 4);
        snapshot_and_compact(&wal, busy);
        // The lagging group's entries hold segment 1.
        assert_eq!(oldest_segment(dir.path()), 1);
        assert_eq!(wal.groups_pinning_oldest(10), vec![(lagging, 1)]);
        // Compacting only part of its entries still holds it.
        wal.save_snapshot_of(lagging, &snapshot(5, 1)).unwrap();
        wal.compact_group(lagging, 5).unwrap();
        assert_eq!(oldest_segment(dir.path()), 1);
        assert_eq!(wal.groups_pinning_oldest(10), vec![(lagging, 6)]);
        assert_eq!(wal.entries_of(lagging, 6, 11, u64::MAX).unwrap().len(), 5);
        // Compaction beyond the group's snapshot is refused.
        assert!(matches!(
            wal.compact_group(lagging, 6),
            Err(WalError::Invalid(_))
        ));
        snapshot_and_compact(&wal, lagging);
        assert!(oldest_segment(dir.path()) > 1);
        assert!(segment_files(dir.path()).len() <= 2);
        assert_eq!(wal.groups_pinning_oldest(10), vec![]);
        // The lagging group's state was restated forward.
        assert_eq!(wal.hard_state_of(lagging), hs(1, 6));
        assert_eq!(wal.snapshot_of(lagging), Some(snapshot(10, 1)));
        assert_eq!(wal.first_index_of(lagging), 11);
    }
    let (wal, rec) = open_groups(dir.path(), 8192);
    assert_eq!(rec[&lagging].hard_state, hs(1, 6));
    assert_eq!(rec[&lagging].snapshot, Some(snapshot(10, 1)));
    assert!(rec[&lagging].entries.is_empty());
    assert_eq!(rec[&busy].snapshot, Some(snapshot(300, 1)));
    assert_eq!(wal.last_index_of(busy), 300);
    // Both go on where they were.
    fill(&wal, lagging, 5);
    fill(&wal, busy, 5);
    assert_eq!(wal.last_index_of(lagging), 15);
}

#[test]
fn an_idle_groups_state_survives_many_rotations_and_compactions() {
    let dir = TempDir::new("groups-idle");
    let (busy, idle, idle_snap) = (5, 6, 7);
    let idle_hs = hs(9, 0);
    let (mut wal, _) = open_groups(dir.path(), 4096);
    wal.append_groups(&[
        GroupWrite {
            group: idle,
            hard_state: Some(&idle_hs),
            ..GroupWrite::default()
        },
        GroupWrite {
            group: idle_snap,
            snapshot: Some(&snapshot(40, 3)),
            hard_state: Some(&hs(3, 40)),
            ..GroupWrite::default()
        },
    ])
    .unwrap();
    for round in 0..40 {
        fill(&wal, busy, 40);
        snapshot_and_compact(&wal, busy);
        let files = segment_files(dir.path());
        assert!(files.len() <= 3, "round {round}: {files:?}");
        if round % 10 == 9 {
            drop(wal);
            let (reopened, rec) = open_groups(dir.path(), 4096);
            assert_eq!(rec[&idle].hard_state, idle_hs, "round {round}");
            assert_eq!(rec[&idle_snap].snapshot, Some(snapshot(40, 3)));
            wal = reopened;
        }
    }
    drop(wal);
    assert!(
        oldest_segment(dir.path()) > 20,
        "many segments came and went"
    );
    let (wal, rec) = open_groups(dir.path(), 4096);
    assert_eq!(rec[&idle].hard_state, idle_hs);
    assert_eq!(rec[&idle].snapshot, None);
    assert_eq!(rec[&idle_snap].snapshot, Some(snapshot(40, 3)));
    assert_eq!(rec[&idle_snap].hard_state, hs(3, 40));
    assert_eq!(wal.first_index_of(idle_snap), 41);
    assert_eq!(wal.last_index_of(busy), 1600);
}

#[test]
fn the_pinning_report_names_the_groups_holding_old_segments() {
    let dir = TempDir::new("groups-pins");
    let (wal, _) = open_groups(dir.path(), 4096);
    // Group 3 lags from the start, group 4 from later, group 5 is idle
    // with only a hard state, group 6 compacts as it goes.
    fill(&wal, 3, 10);
    wal.append_groups(&[GroupWrite {
        group: 5,
        hard_state: Some(&hs(2, 0)),
        ..GroupWrite::default()
    }])
    .unwrap();
    fill(&wal, 6, 100);
    fill(&wal, 4, 10);
    fill(&wal, 6, 100);
    snapshot_and_compact(&wal, 6);
    assert_eq!(wal.groups_pinning_oldest(10), vec![(3, 1), (4, 1)]);
    assert_eq!(wal.groups_pinning_oldest(1), vec![(3, 1)]);
    assert_eq!(oldest_segment(dir.path()), 1);
    snapshot_and_compact(&wal, 3);
    // Now group 4 holds the segment its entries are in.
    assert_eq!(wal.groups_pinning_oldest(10), vec![(4, 1)]);
    let oldest = oldest_segment(dir.path());
    assert!(oldest > 1);
    assert_eq!(
        wal.entries_of(4, 1, 11, u64::MAX).unwrap(),
        entries(1, 10, 1)
    );
    snapshot_and_compact(&wal, 4);
    assert_eq!(wal.groups_pinning_oldest(10), vec![]);
    assert!(oldest_segment(dir.path()) > oldest);
    assert_eq!(wal.hard_state_of(5), hs(2, 0));
}

#[test]
fn a_removed_group_stays_removed_and_lets_its_segments_go() {
    let dir = TempDir::new("groups-remove");
    let (keep, gone) = (1, 2);
    {
        let (wal, _) = open_groups(dir.path(), 4096);
        fill(&wal, gone, 20);
        fill(&wal, keep, 200);
        snapshot_and_compact(&wal, keep);
        assert_eq!(oldest_segment(dir.path()), 1, "group {gone} holds it");
        wal.remove_group(gone).unwrap();
        assert!(oldest_segment(dir.path()) > 1);
        assert_eq!(wal.groups(), vec![keep]);
        assert_eq!(wal.last_index_of(gone), 0);
        assert_eq!(wal.hard_state_of(gone), HardState::default());
        // Removing what is not there is no error.
        wal.remove_group(gone).unwrap();
    }
    {
        let (wal, rec) = open_groups(dir.path(), 4096);
        assert_eq!(rec.keys().copied().collect::<Vec<_>>(), vec![keep]);
        assert_eq!(wal.groups(), vec![keep]);
        // A group written again after removal starts anew.
        fill(&wal, gone, 3);
        assert_eq!(wal.first_index_of(gone), 1);
    }
    // Removal while the group's records are still on disk: recovery must
    // honour the tombstone, not replay the records before it.
    {
        let (wal, _) = open_groups(dir.path(), 4096);
        fill(&wal, 9, 30);
        wal.remove_group(9).unwrap();
        fill(&wal, 9, 2);
    }
    let (wal, rec) = open_groups(dir.path(), 4096);
    assert_eq!(wal.groups(), vec![keep, gone, 9]);
    assert_eq!(rec[&gone].entries, entries(1, 3, 1));
    assert_eq!(rec[&9].entries, entries(1, 2, 1));
}

#[test]
fn segments_of_the_previous_format_are_refused_naming_the_version() {
    let dir = TempDir::new("groups-old-format");
    {
        let (wal, _) = open_groups(dir.path(), 4096);
        fill(&wal, 1, 5);
    }
    // Turn the header into a version 1 header with a valid checksum.
    let path = segment_path(dir.path(), 1);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).unwrap();
    assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 2);
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..60]);
    header[60..].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&header, 0).unwrap();
    match Wal::open(dir.path(), small(4096)).map(|_| ()) {
        Err(WalError::Corrupt {
            path: p, reason, ..
        }) => {
            assert_eq!(p, path);
            assert!(reason.contains("version 1"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn the_one_group_methods_address_the_default_group() {
    let dir = TempDir::new("groups-default");
    let (wal, _) = open_groups(dir.path(), 8192);
    wal.append(&entries(1, 5, 1), Some(&hs(1, 2))).unwrap();
    fill(&wal, 3, 7);
    assert_eq!(wal.groups(), vec![DEFAULT_GROUP, 3]);
    assert_eq!(
        wal.entries(1, 6, u64::MAX).unwrap(),
        wal.entries_of(DEFAULT_GROUP, 1, 6, u64::MAX).unwrap()
    );
    assert_eq!(wal.last_index(), 5);
    assert_eq!(wal.hard_state_of(DEFAULT_GROUP), hs(1, 2));
    assert_eq!(wal.last_index_of(3), 7);
    wal.save_snapshot(&snapshot(5, 1)).unwrap();
    assert_eq!(wal.snapshot_of(DEFAULT_GROUP), Some(snapshot(5, 1)));
    assert_eq!(wal.snapshot_of(3), None);
}
