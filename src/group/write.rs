//! A group's writes: what the owner must make durable, in order, before
//! the group may release what waits on it, and how they go into a WAL
//! that many groups may share.

use crate::core::{Entry, HardState, Index, SnapshotMeta};
use crate::snapshot::{SnapshotFile, SnapshotStore};
use crate::wal::{GroupWrite, Wal, WalError};

/// The writes of one core `Ready` (or of one compaction), numbered in the
/// order they were taken.
#[derive(Default)]
pub(crate) struct PersistJob {
    pub(crate) seq: u64,
    /// Snapshot metadata to record before the entries: a snapshot installed
    /// from the leader (the WAL then drops the log it replaces) or one the
    /// host took (the log stays).
    pub(crate) snapshot: Option<SnapshotMeta>,
    /// The file `snapshot` describes: once the metadata is durable, it
    /// becomes the store's current snapshot and older files are deleted.
    pub(crate) snapshot_file: Option<SnapshotFile>,
    /// Delete the segments holding only entries through this index (after
    /// recording `snapshot`, if any).
    pub(crate) compact_through: Option<Index>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
    /// The core's `Ready::must_sync`: entries, a snapshot, a term or a vote.
    pub(crate) must_sync: bool,
}

impl PersistJob {
    /// Whether anything may wait for this job to be durable. A hard state
    /// that only advances the commit index is written but not synced for
    /// its own sake (`Ready::must_sync`): the next sync covers it, and a
    /// crash before that recovers an older commit index, which recovery
    /// raises to what the host applied (see `initial_state` in the node).
    /// A ready's writes the core says must sync, a snapshot the host took
    /// and a compaction must survive a crash before anything that depends
    /// on them leaves the node.
    pub(crate) fn needs_sync(&self) -> bool {
        self.must_sync || self.snapshot.is_some() || self.compact_through.is_some()
    }
}

/// Node ids the snapshot metadata restated at the start of every WAL
/// segment is assumed to name (all four membership lists together: a joint
/// configuration between two memberships of up to 32 nodes each) when a
/// segment is checked against the largest entry
/// ([`crate::wal::segment_bytes_for_entry`]).
pub const SEGMENT_MEMBERSHIP_IDS: usize = 64;

/// At shutdown: a commit index written without a sync of its own is made
/// durable too, so a node or runtime stopped cleanly restarts where it
/// stood. A
/// failure was reported with the write that caused it, or is harmless.
pub(crate) fn sync_everything_written(wal: &Wal) {
    let _ = wal.write(&[], None).and_then(|last| wal.wait_durable(last));
}

/// The entries and hard state of one group's consecutive jobs, written
/// with one append and so one sync (shared with other groups' writes,
/// [`JobWriter::final_write`]), unless they would not fit in one segment.
pub(crate) struct JobWriter {
    group: u64,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    /// Where recorded snapshot files are made current.
    snapshots: Option<SnapshotStore>,
    /// What went wrong without stopping the writes (older snapshot files
    /// left behind), for the owner to log.
    notes: Vec<String>,
    /// Bytes of entries (estimated) one append may carry: half a segment,
    /// which leaves room for the segment header and the state restated at
    /// the start of each segment.
    max_append_bytes: u64,
}

/// An upper bound on the bytes one entry takes in the WAL: its data, the
/// record header (32 bytes), index, term and kind, and alignment padding.
fn estimated_record_bytes(entry: &Entry) -> u64 {
    entry.data.len() as u64 + 64
}

/// The appends to make now of `entries`, queued with `hard_state`, when
/// one append may carry `max_append_bytes` of them (estimated): whole
/// prefixes while the rest would not fit, each as its number of entries
/// and the hard state written with it. What is left goes with the final
/// append. A prefix is synced before the next append, so a crash can keep
/// it without what follows: each carries the term and vote (entries of a
/// term above the durable one make the log unusable at restart) and the
/// commit index as far as the prefix reaches (a committed membership
/// change would otherwise recover as pending). Public for the simulator,
/// whose disk writes as the node does.
#[doc(hidden)]
pub fn oversized_prefixes(
    entries: &[Entry],
    hard_state: Option<&HardState>,
    max_append_bytes: u64,
) -> Vec<(usize, Option<HardState>)> {
    let mut prefixes = Vec::new();
    let mut rest = entries;
    loop {
        let mut bytes = 0;
        let mut fit = 0;
        for entry in rest {
            bytes += estimated_record_bytes(entry);
            if fit > 0 && bytes > max_append_bytes {
                break;
            }
            fit += 1;
        }
        if fit == rest.len() {
            return prefixes;
        }
        // The commit index may name entries this prefix does not hold:
        // the record vouches only for what the log holds once it lands.
        let last = rest[fit - 1].index;
        let covered = hard_state.map(|hs| HardState {
            commit: hs.commit.min(last),
            ..*hs
        });
        prefixes.push((fit, covered));
        rest = &rest[fit..];
    }
}

impl JobWriter {
    pub(crate) fn new(
        group: u64,
        segment_size: u64,
        snapshots: Option<SnapshotStore>,
    ) -> JobWriter {
        JobWriter {
            group,
            entries: Vec::new(),
            hard_state: None,
            snapshots,
            notes: Vec::new(),
            max_append_bytes: segment_size / 2,
        }
    }

    /// What is left to write after the jobs added: for one
    /// [`Wal::write_groups`] call with other groups' final writes.
    pub(crate) fn final_write(&self) -> GroupWrite<'_> {
        GroupWrite {
            group: self.group,
            snapshot: None,
            entries: &self.entries,
            hard_state: self.hard_state.as_ref(),
        }
    }

    pub(crate) fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Writes and syncs one group's entries and hard state now.
    fn append(
        &self,
        wal: &Wal,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        wal.append_groups(&[GroupWrite {
            group: self.group,
            snapshot: None,
            entries,
            hard_state,
        }])
    }

    /// The WAL refuses a batch larger than a segment, and a follower
    /// catching up or a burst of proposals can queue more than that while
    /// a sync runs: write whole prefixes that fit (see
    /// [`oversized_prefixes`]), keeping the rest for the group's final
    /// append.
    fn write_oversized_prefixes(&mut self, wal: &Wal) -> Result<(), WalError> {
        let prefixes = oversized_prefixes(
            &self.entries,
            self.hard_state.as_ref(),
            self.max_append_bytes,
        );
        for (len, hard_state) in prefixes {
            self.append(wal, &self.entries[..len], hard_state.as_ref())?;
            self.entries.drain(..len);
        }
        Ok(())
    }

    /// Takes one job: its snapshot record and compaction are written and
    /// synced at once (they are rare), its entries and hard state join
    /// what is pending, and whole prefixes that would not fit in one
    /// append are written ahead.
    pub(crate) fn add(&mut self, wal: &Wal, job: PersistJob) -> Result<(), WalError> {
        if let Some(meta) = &job.snapshot {
            // Snapshot records are ordered with the entries around them.
            self.flush(wal)?;
            wal.save_snapshot_of(self.group, meta)?;
            // The metadata is durable: recovery now needs this file and no
            // older one.
            if let (Some(file), Some(store)) = (&job.snapshot_file, &self.snapshots) {
                if let Err(err) = store.record(file) {
                    // Older files left behind are deleted at the next start.
                    self.notes
                        .push(format!("older snapshot files not deleted: {err}"));
                }
            }
        }
        if let Some(through) = job.compact_through {
            self.flush(wal)?;
            wal.compact_group(self.group, through)?;
        }
        append_replacing(&mut self.entries, job.entries);
        // A later hard state supersedes an earlier one: only the newest
        // needs to be durable. It travels with the final append's sync,
        // and with every prefix written ahead of it.
        self.hard_state = job.hard_state.or(self.hard_state);
        self.write_oversized_prefixes(wal)
    }

    fn flush(&mut self, wal: &Wal) -> Result<(), WalError> {
        if self.entries.is_empty() && self.hard_state.is_none() {
            return Ok(());
        }
        self.append(wal, &self.entries, self.hard_state.as_ref())?;
        self.entries.clear();
        self.hard_state = None;
        Ok(())
    }
}

/// Extends `acc` with `later`, whose first entry replaces the suffix of
/// `acc` from its index on (a new leader overwrote uncommitted entries), the
/// same rule the WAL applies to what it already stores.
fn append_replacing(acc: &mut Vec<Entry>, later: Vec<Entry>) {
    if let (Some(first_acc), Some(first_later)) = (acc.first(), later.first()) {
        if first_later.index <= first_acc.index {
            acc.clear();
        } else {
            let keep = (first_later.index - first_acc.index) as usize;
            acc.truncate(keep);
        }
    }
    acc.extend(later);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{EntryKind, Payload, SnapshotMeta};

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                kind: EntryKind::Normal,
                data: Payload::default(),
            })
            .collect()
    }

    fn ids(list: &[Entry]) -> Vec<(u64, u64)> {
        list.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn a_group_larger_than_a_segment_is_written_in_parts() {
        use crate::wal::WalOptions;
        let dir = std::env::temp_dir().join(format!("embraft-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = WalOptions {
            segment_size: 64 << 10,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir, options.clone()).unwrap();
        // 1,000 entries of 200 bytes: about four segments' worth, queued
        // in two jobs as a follower catching up would.
        let big = |range: std::ops::RangeInclusive<u64>| -> Vec<Entry> {
            range
                .map(|index| Entry {
                    index,
                    term: 1,
                    kind: EntryKind::Normal,
                    data: Payload::from(&[7u8; 200][..]),
                })
                .collect()
        };
        let hard_state = HardState {
            term: 1,
            vote: 1,
            commit: 900,
        };
        let mut group = JobWriter::new(crate::wal::DEFAULT_GROUP, options.segment_size, None);
        for (seq, range, hs) in [(1, 1..=600, None), (2, 601..=1000, Some(hard_state))] {
            let job = PersistJob {
                seq,
                entries: big(range),
                hard_state: hs,
                ..PersistJob::default()
            };
            group.add(&wal, job).unwrap();
        }
        group.flush(&wal).unwrap();
        drop(wal);
        let (_, recovered) = Wal::open(&dir, options).unwrap();
        assert_eq!(recovered.entries.len(), 1000);
        assert_eq!(recovered.entries.last().unwrap().index, 1000);
        assert_eq!(recovered.hard_state, hard_state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_prefix_carries_the_hard_state_as_far_as_it_reaches() {
        let hard_state = HardState {
            term: 2,
            vote: 0,
            commit: 9,
        };
        // Empty entries take 64 bytes each: three fit in 200.
        let queued = entries(2..=12, 2);
        let prefixes = oversized_prefixes(&queued, Some(&hard_state), 200);
        let commit_at = |commit| {
            Some(HardState {
                commit,
                ..hard_state
            })
        };
        assert_eq!(
            prefixes,
            vec![(3, commit_at(4)), (3, commit_at(7)), (3, commit_at(9))]
        );
        assert!(oversized_prefixes(&queued[..3], Some(&hard_state), 200).is_empty());
    }

    #[test]
    fn only_a_commit_index_needs_no_sync() {
        let hard_state = Some(HardState {
            term: 3,
            vote: 1,
            commit: 9,
        });
        let commit_only = PersistJob {
            hard_state,
            ..PersistJob::default()
        };
        assert!(!commit_only.needs_sync());
        let durable_first = [
            PersistJob {
                entries: entries(10..=10, 3),
                hard_state,
                must_sync: true,
                ..PersistJob::default()
            },
            PersistJob {
                compact_through: Some(5),
                ..PersistJob::default()
            },
            PersistJob {
                snapshot: Some(SnapshotMeta::default()),
                ..PersistJob::default()
            },
        ];
        assert!(durable_first.iter().all(PersistJob::needs_sync));
    }

    #[test]
    fn contiguous_batches_concatenate() {
        let mut acc = entries(1..=3, 1);
        append_replacing(&mut acc, entries(4..=5, 1));
        assert_eq!(ids(&acc), ids(&entries(1..=5, 1)));
    }

    #[test]
    fn an_overlapping_batch_replaces_the_suffix() {
        let mut acc = entries(3..=6, 1);
        append_replacing(&mut acc, entries(5..=7, 2));
        let mut expected = entries(3..=4, 1);
        expected.extend(entries(5..=7, 2));
        assert_eq!(ids(&acc), ids(&expected));

        append_replacing(&mut acc, entries(2..=2, 3));
        assert_eq!(ids(&acc), vec![(2, 3)]);
    }

    #[test]
    fn empty_sides_are_fine() {
        let mut acc = Vec::new();
        append_replacing(&mut acc, entries(1..=2, 1));
        append_replacing(&mut acc, Vec::new());
        assert_eq!(ids(&acc), ids(&entries(1..=2, 1)));
    }
}
