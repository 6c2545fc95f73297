//! A group's writes: what the owner must make durable, in order, before
//! the group may release what waits on it.

use crate::core::{Entry, HardState, Index, SnapshotMeta};
use crate::snapshot::SnapshotFile;

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
