//! The persistence thread: takes every write queued while the previous sync
//! ran and makes them durable with one WAL append (group commit), in the
//! order the driver queued them. An inline node (`Threading::Inline`)
//! runs [`write_group`] on the caller's thread instead.

use super::Shared;
use crate::core::{Entry, HardState};
use crate::group::{LogLevel, PersistJob};
use crate::snapshot::SnapshotStore;
use crate::wal::{Wal, WalError, WriteTicket};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

pub(crate) enum PersistDone {
    /// Every job up to and including this sequence number is durable.
    Through(u64),
    /// The WAL refused or failed a write; it is poisoned and this thread has
    /// stopped.
    Failed(String),
}

/// Runs until the driver drops its end of `jobs`; every queued job is
/// written before it returns, so a node stops with its writes durable.
/// `segment_size` is the WAL's: no single append may exceed a segment.
pub(crate) fn run(
    wal: Wal,
    segment_size: u64,
    store: SnapshotStore,
    shared: Arc<Shared>,
    jobs: Receiver<PersistJob>,
    done: Sender<PersistDone>,
) {
    while let Ok(first) = jobs.recv() {
        let written = write_group_unsynced(
            &wal,
            segment_size,
            &store,
            &shared,
            std::iter::once(first).chain(jobs.try_iter()),
        );
        let durable = match written {
            // Nothing waits for this group (see PersistJob::needs_sync):
            // the next synced group reports it durable with its own.
            Ok(GroupWritten { sync: None, .. }) => continue,
            Ok(GroupWritten {
                seq,
                sync: Some(ticket),
            }) => wal.wait_durable(ticket).map(|()| seq),
            Err(err) => Err(err),
        };
        let outcome = durable.map_or_else(
            |err| PersistDone::Failed(err.to_string()),
            PersistDone::Through,
        );
        let failed = matches!(outcome, PersistDone::Failed(_));
        // The driver may be gone already (node shutting down): nothing to tell.
        let _ = done.send(outcome);
        if failed {
            return;
        }
    }
    sync_everything_written(&wal);
}

/// At shutdown: a commit index written without a sync of its own is made
/// durable too, so a node stopped cleanly restarts where it stood. A
/// failure was reported with the write that caused it, or is harmless.
pub(crate) fn sync_everything_written(wal: &Wal) {
    let _ = wal.write(&[], None).and_then(|last| wal.wait_durable(last));
}

/// What [`write_group_unsynced`] wrote.
pub(crate) struct GroupWritten {
    /// The last job's number.
    pub(crate) seq: u64,
    /// The ticket that is durable once every job of the group is; `None`
    /// when no job needs to be synced.
    pub(crate) sync: Option<WriteTicket>,
}

/// Writes `jobs` in order with as few appends (and so syncs) as they fit
/// in, without the final wait. The persistence thread waits for the
/// ticket itself; an inline node waits for it outside its lock, so that
/// calls on other threads meanwhile share the sync (the WAL's group
/// commit). Snapshot records and compactions, which are rare, are synced
/// here. Stops at the first failure: the WAL is poisoned then.
pub(crate) fn write_group_unsynced(
    wal: &Wal,
    segment_size: u64,
    store: &SnapshotStore,
    shared: &Arc<Shared>,
    jobs: impl IntoIterator<Item = PersistJob>,
) -> Result<GroupWritten, WalError> {
    let mut group = GroupWrite::new(segment_size);
    group.snapshots = Some((store.clone(), shared.clone()));
    let mut last_seq = 0;
    let mut needs_sync = false;
    for job in jobs {
        last_seq = job.seq;
        needs_sync |= job.needs_sync();
        group.add(wal, job)?;
    }
    let ticket = wal.write(&group.entries, group.hard_state.as_ref())?;
    Ok(GroupWritten {
        seq: last_seq,
        sync: needs_sync.then_some(ticket),
    })
}

/// The entries and hard state of consecutive jobs, written with one append
/// and so one sync, unless they would not fit in one segment.
struct GroupWrite {
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    /// Where recorded snapshot files are made current, and where a failure
    /// to delete older ones is reported.
    snapshots: Option<(SnapshotStore, Arc<Shared>)>,
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

impl GroupWrite {
    fn new(segment_size: u64) -> GroupWrite {
        GroupWrite {
            entries: Vec::new(),
            hard_state: None,
            snapshots: None,
            max_append_bytes: segment_size / 2,
        }
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
            wal.append(&self.entries[..len], hard_state.as_ref())?;
            self.entries.drain(..len);
        }
        Ok(())
    }

    fn add(&mut self, wal: &Wal, job: PersistJob) -> Result<(), WalError> {
        if let Some(meta) = &job.snapshot {
            // Snapshot records are ordered with the entries around them.
            self.flush(wal)?;
            wal.save_snapshot(meta)?;
            // The metadata is durable: recovery now needs this file and no
            // older one.
            if let (Some(file), Some((store, shared))) = (&job.snapshot_file, &self.snapshots) {
                if let Err(err) = store.record(file) {
                    // Older files left behind are deleted at the next start.
                    shared.log(LogLevel::Info, || {
                        format!("older snapshot files not deleted: {err}")
                    });
                }
            }
        }
        if let Some(through) = job.compact_through {
            self.flush(wal)?;
            wal.compact(through)?;
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
        let mut group = GroupWrite::new(options.segment_size);
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
