//! The persistence thread: takes every write queued while the previous sync
//! ran and makes them durable with one WAL append (group commit), in the
//! order the driver queued them. An inline node (`Threading::Inline`)
//! runs [`write_group_unsynced`] on the caller's thread instead.

use super::Shared;
pub(crate) use crate::group::sync_everything_written;
use crate::group::{JobWriter, LogLevel, PersistJob};
use crate::snapshot::SnapshotStore;
use crate::wal::{Wal, WalError, WriteTicket, DEFAULT_GROUP};
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
    let mut writer = JobWriter::new(DEFAULT_GROUP, segment_size, Some(store.clone()));
    let mut last_seq = 0;
    let mut needs_sync = false;
    let added: Result<(), WalError> = jobs.into_iter().try_for_each(|job| {
        last_seq = job.seq;
        needs_sync |= job.needs_sync();
        writer.add(wal, job)
    });
    for note in writer.take_notes() {
        shared.log(LogLevel::Info, || note);
    }
    added?;
    let ticket = wal.write_groups(&[writer.final_write()])?;
    Ok(GroupWritten {
        seq: last_seq,
        sync: needs_sync.then_some(ticket),
    })
}
