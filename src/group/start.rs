//! How a group starts: from what the WAL recovered for it, or as a new
//! cluster's founding member, or empty to join one.

use super::SnapshotRestore;
use crate::core::{Index, InitialState, NodeId, NO_NODE};
use crate::snapshot::{SnapshotFile, SnapshotStore};
use crate::wal::{GroupWrite, Recovered, Wal, WalError};

/// Why a group cannot start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The start parameters do not fit the recovered state.
    Invalid(String),
    /// Writing the founding membership failed.
    Storage(WalError),
}

/// Builds the core's starting state from what the WAL recovered. In an
/// empty directory, configured peers found a new cluster: the founding
/// membership entry the core prescribes is made durable before the node
/// starts, so every later start recovers it like any other entry. With no
/// peers the node joins an existing cluster and learns the membership from
/// the log the leader sends.
/// `group` is the group's id in the WAL (which may be shared with other
/// groups); `id` this replica's node id. A refusal says why.
pub(crate) fn initial_state(
    id: NodeId,
    peers: &[NodeId],
    applied: Index,
    wal: &Wal,
    group: u64,
    recovered: Recovered,
) -> Result<InitialState, StartError> {
    if recovered == Recovered::default() {
        if applied > 0 {
            return Err(StartError::Invalid(format!(
                "applied index {} given for an empty data directory",
                applied
            )));
        }
        if peers.is_empty() {
            return Ok(InitialState::default());
        }
        if peers.contains(&NO_NODE) {
            return Err(StartError::Invalid("peer id 0 is reserved".into()));
        }
        if !peers.contains(&id) {
            return Err(StartError::Invalid(format!(
                "peers must include this node ({id})"
            )));
        }
        let initial = InitialState::bootstrap(peers);
        wal.append_groups(&[GroupWrite {
            group,
            snapshot: None,
            entries: &initial.entries,
            hard_state: Some(&initial.hard_state),
        }])
        .map_err(StartError::Storage)?;
        return Ok(initial);
    }
    let recovered_last = recovered.entries.last().map_or_else(
        || recovered.snapshot.as_ref().map_or(0, |meta| meta.index),
        |entry| entry.index,
    );
    if applied > recovered_last {
        return Err(StartError::Invalid(format!(
            "applied index {} is beyond the recovered log, which ends at {recovered_last}",
            applied
        )));
    }
    let mut hard_state = recovered.hard_state;
    // A commit index is written without a sync of its own
    // (`PersistJob::needs_sync`), so a crash may recover an older one than
    // the host applied. Every entry handed to the host was committed, and
    // durable here before it was handed out: the host's applied index is
    // a commit index too.
    hard_state.commit = hard_state.commit.max(applied);
    // Entries the snapshot covers are gone from the log: the host restores
    // them from its snapshot (see `restore` in Node::new).
    let applied = recovered
        .snapshot
        .as_ref()
        .map_or(applied, |meta| meta.index.max(applied));
    Ok(InitialState {
        hard_state,
        // Membership changes after the snapshot are replayed from the log.
        conf_state: recovered
            .snapshot
            .as_ref()
            .map(|meta| meta.conf_state.clone())
            .unwrap_or_default(),
        snapshot: recovered.snapshot,
        entries: recovered.entries,
        applied,
    })
}

/// A seed that differs between nodes and between runs, so that nodes never
/// share election timeouts.
pub(crate) fn random_seed(id: NodeId) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(id);
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish() | 1
}

/// The snapshot a starting group's host must restore its state machine
/// from first: the one the log was compacted to, when it lies beyond what
/// the host applied (`current` is the store's file for it).
pub(crate) fn restore_at_start(
    initial: &InitialState,
    host_applied: Index,
    store: &SnapshotStore,
    current: Option<SnapshotFile>,
) -> Option<SnapshotRestore> {
    initial
        .snapshot
        .clone()
        .filter(|meta| meta.index > host_applied)
        .zip(current)
        .map(|(meta, file)| SnapshotRestore {
            meta,
            path: file.path.clone(),
            pin: store.pin(&file),
        })
}
