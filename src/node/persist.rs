//! The persistence thread: takes every write queued while the previous sync
//! ran and makes them durable with one WAL append (group commit), in the
//! order the driver queued them.

use crate::core::{Entry, HardState, Index, SnapshotMeta};
use crate::wal::{Wal, WalError};
use crossbeam_channel::{Receiver, Sender};

/// The writes of one core `Ready` (or of one compaction), numbered in the
/// order they were taken.
#[derive(Default)]
pub(crate) struct PersistJob {
    pub(crate) seq: u64,
    /// Snapshot metadata to record before the entries: a snapshot installed
    /// from the leader (the WAL then drops the log it replaces) or one the
    /// host took (the log stays).
    pub(crate) snapshot: Option<SnapshotMeta>,
    /// After recording `snapshot`, delete the segments holding only entries
    /// through this index.
    pub(crate) compact_through: Option<Index>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) hard_state: Option<HardState>,
}

pub(crate) enum PersistDone {
    /// Every job up to and including this sequence number is durable.
    Through(u64),
    /// The WAL refused or failed a write; it is poisoned and this thread has
    /// stopped.
    Failed(String),
}

/// Runs until the driver drops its end of `jobs`; every queued job is
/// written before it returns, so a node stops with its writes durable.
pub(crate) fn run(wal: Wal, jobs: Receiver<PersistJob>, done: Sender<PersistDone>) {
    while let Ok(first) = jobs.recv() {
        let mut last_seq = first.seq;
        let mut group = GroupWrite::default();
        let mut result = group.add(&wal, first);
        for job in jobs.try_iter() {
            if result.is_err() {
                break;
            }
            last_seq = job.seq;
            result = group.add(&wal, job);
        }
        let outcome = match result.and_then(|()| group.flush(&wal)) {
            Ok(()) => PersistDone::Through(last_seq),
            Err(err) => PersistDone::Failed(err.to_string()),
        };
        let failed = matches!(outcome, PersistDone::Failed(_));
        // The driver may be gone already (node shutting down): nothing to tell.
        let _ = done.send(outcome);
        if failed {
            return;
        }
    }
}

/// The entries and hard state of consecutive jobs, written with one append
/// and so one sync.
#[derive(Default)]
struct GroupWrite {
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl GroupWrite {
    fn add(&mut self, wal: &Wal, job: PersistJob) -> Result<(), WalError> {
        if let Some(meta) = &job.snapshot {
            // Snapshot records are ordered with the entries around them.
            self.flush(wal)?;
            wal.save_snapshot(meta)?;
            if let Some(through) = job.compact_through {
                wal.compact(through)?;
            }
        }
        append_replacing(&mut self.entries, job.entries);
        // A later hard state supersedes an earlier one: only the newest
        // needs to be durable, and it travels with the same sync.
        self.hard_state = job.hard_state.or(self.hard_state);
        Ok(())
    }

    fn flush(&mut self, wal: &Wal) -> Result<(), WalError> {
        if self.entries.is_empty() && self.hard_state.is_none() {
            return Ok(());
        }
        wal.append(&self.entries, self.hard_state.as_ref())?;
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
    use crate::core::EntryKind;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                index,
                term,
                kind: EntryKind::Normal,
                data: Vec::new(),
            })
            .collect()
    }

    fn ids(list: &[Entry]) -> Vec<(u64, u64)> {
        list.iter().map(|e| (e.index, e.term)).collect()
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
