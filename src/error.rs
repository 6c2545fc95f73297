//! The one error type of node and runtime calls.

use crate::codec::DecodeError;
use crate::core::{Index, NodeId};
use crate::group::SnapshotRefusal;
use crate::snapshot::SnapshotError;
use crate::wal::WalError;
use std::fmt;
use std::path::PathBuf;

/// Why a call on a node or a runtime (and its groups) failed.
#[derive(Debug)]
pub enum NodeError {
    /// The configuration, or its combination with the recovered state, is
    /// unusable.
    InvalidConfig(String),
    /// Another node (in this or another process) holds the data directory.
    DirectoryLocked(PathBuf),
    /// Opening or recovering the WAL failed.
    Storage(WalError),
    /// A system resource (thread, file descriptor) could not be had.
    Resource(String),
    /// The input queue is full; retry after polling.
    Busy,
    /// Bytes given to `step` are not a message.
    MalformedMessage(DecodeError),
    /// Bytes given to `step` decode, but to a message no peer can send: a
    /// term or a log index beyond the largest a cluster can reach.
    InvalidMessage(&'static str),
    /// The message is addressed to another node.
    WrongRecipient { to: NodeId, this_node: NodeId },
    /// The proposal exceeds the configured maximum entry size.
    ProposalTooLarge { size: u64, limit: u64 },
    /// `ack_applied` named an index the host has not been given yet.
    NotDelivered { index: Index, delivered: Index },
    /// A snapshot was asked for at an index the host has not acknowledged
    /// as applied.
    NotApplied { index: Index, applied: Index },
    /// A snapshot was asked for (or finished) at an index at or below the
    /// node's latest snapshot.
    StaleSnapshot { index: Index, snapshot_index: Index },
    /// Reading or writing a snapshot file failed, or a stored snapshot is
    /// missing or damaged ([`SnapshotError::Corrupt`]).
    Snapshot(SnapshotError),
    /// The node stopped after a storage failure or an internal error; free
    /// it and create it again from its data directory.
    Failed(String),
    /// The runtime hosts no group by this id.
    UnknownGroup(u64),
    /// The group is already running on this runtime.
    GroupExists(u64),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            NodeError::DirectoryLocked(dir) => {
                write!(
                    f,
                    "data directory {} is in use by another node",
                    dir.display()
                )
            }
            NodeError::Storage(err) => write!(f, "storage: {err}"),
            NodeError::Resource(why) => write!(f, "out of resources: {why}"),
            NodeError::Busy => write!(f, "input queue full; poll the node and retry"),
            NodeError::MalformedMessage(err) => write!(f, "malformed message: {err}"),
            NodeError::InvalidMessage(why) => write!(f, "invalid message: {why}"),
            NodeError::WrongRecipient { to, this_node } => {
                write!(
                    f,
                    "message addressed to node {to}, this is node {this_node}"
                )
            }
            NodeError::ProposalTooLarge { size, limit } => {
                write!(f, "proposal of {size} bytes exceeds the limit of {limit}")
            }
            NodeError::NotDelivered { index, delivered } => write!(
                f,
                "cannot acknowledge index {index}: only entries through {delivered} were delivered"
            ),
            NodeError::NotApplied { index, applied } => write!(
                f,
                "cannot snapshot at index {index}: the host acknowledged applying only through {applied}"
            ),
            NodeError::StaleSnapshot {
                index,
                snapshot_index,
            } => write!(
                f,
                "cannot snapshot at index {index}: the node already has a snapshot at {snapshot_index}"
            ),
            NodeError::Snapshot(err) => write!(f, "snapshot: {err}"),
            NodeError::Failed(why) => write!(f, "node stopped: {why}"),
            NodeError::UnknownGroup(id) => write!(f, "no group {id} runs here"),
            NodeError::GroupExists(id) => write!(f, "group {id} is already running"),
        }
    }
}

impl std::error::Error for NodeError {}

impl From<SnapshotRefusal> for NodeError {
    fn from(refusal: SnapshotRefusal) -> NodeError {
        match refusal {
            SnapshotRefusal::NotApplied { index, applied } => {
                NodeError::NotApplied { index, applied }
            }
            SnapshotRefusal::Stale {
                index,
                snapshot_index,
            } => NodeError::StaleSnapshot {
                index,
                snapshot_index,
            },
        }
    }
}
