//! What the host pulls from a node: [`ReadyBatch`], and the pending batch the
//! node's threads fill until the host takes it.

use crate::core::{
    Entry, Index, NodeId, ProposeError, ReadState, Role, SnapshotMeta, Term, NO_NODE,
};
use crate::snapshot::SnapshotPin;
use std::fmt;
use std::path::PathBuf;

/// An encoded message the host must deliver to node `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    pub to: NodeId,
    pub bytes: Vec<u8>,
}

/// A committed entry the host must apply, in index order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    pub entry: Entry,
    /// The id [`crate::node::Node::propose`] returned when this entry was
    /// proposed on this node, or 0.
    pub proposal_id: u64,
}

/// Why a proposal will never commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// This node was not the leader when the proposal reached the core.
    NotLeader { leader: NodeId },
    /// A leadership transfer was under way.
    TransferInProgress,
    /// The payload exceeded the core's entry size limit.
    TooLarge,
    /// The entry was appended, but the entry committed at its index came
    /// from another term: a new leader overwrote it.
    Superseded,
    /// A membership change: an earlier one is not applied yet.
    ConfChangePending,
    /// A membership change that the current membership does not allow.
    ConfChangeInvalid,
    /// A learner to promote has not caught up yet.
    LearnerBehind,
}

impl DropReason {
    /// The reason's position in `crate::metrics::DROP_REASONS`.
    pub fn metric_index(&self) -> usize {
        match self {
            DropReason::NotLeader { .. } => 0,
            DropReason::TransferInProgress => 1,
            DropReason::TooLarge => 2,
            DropReason::Superseded => 3,
            DropReason::ConfChangePending => 4,
            DropReason::ConfChangeInvalid => 5,
            DropReason::LearnerBehind => 6,
        }
    }
}

impl From<ProposeError> for DropReason {
    fn from(err: ProposeError) -> DropReason {
        match err {
            ProposeError::NotLeader { leader } => DropReason::NotLeader { leader },
            ProposeError::TooLarge { .. } => DropReason::TooLarge,
            ProposeError::TransferInProgress => DropReason::TransferInProgress,
            ProposeError::ConfChangePending => DropReason::ConfChangePending,
            ProposeError::ConfChange(_) => DropReason::ConfChangeInvalid,
            ProposeError::LearnerBehind { .. } => DropReason::LearnerBehind,
            // The leader steps down once its removal is in force: propose
            // on the next one, as for any node that does not lead.
            ProposeError::LeaderLeaving => DropReason::NotLeader { leader: NO_NODE },
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NotLeader { leader: 0 } => write!(f, "not the leader, no leader known"),
            DropReason::NotLeader { leader } => write!(f, "not the leader; node {leader} is"),
            DropReason::TransferInProgress => write!(f, "leadership transfer in progress"),
            DropReason::TooLarge => write!(f, "entry too large"),
            DropReason::Superseded => write!(f, "overwritten by another leader's entry"),
            DropReason::ConfChangePending => write!(f, "an earlier membership change is pending"),
            DropReason::ConfChangeInvalid => write!(f, "membership change not allowed"),
            DropReason::LearnerBehind => write!(f, "learner has not caught up"),
        }
    }
}

/// What became of one proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalResult {
    /// Committed at this index; the entry is in the same batch's committed
    /// entries.
    Committed {
        index: Index,
    },
    Dropped(DropReason),
    /// The node will never learn whether the proposal committed: a
    /// snapshot installed from the leader covers its index (the host can
    /// tell from its restored state), or this node was removed from the
    /// membership before learning how far the log commits.
    Unknown {
        index: Index,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposalOutcome {
    pub proposal_id: u64,
    pub result: ProposalResult,
}

/// Role, leader and term as the node last knew them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub role: Role,
    pub leader: NodeId,
    pub term: Term,
}

/// Verbosity of the log lines a node hands out in its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum LogLevel {
    Off = 0,
    /// Role changes, storage failures, lifecycle.
    Info = 1,
    /// Refused inputs and rejected messages.
    Debug = 2,
    /// Every message in and out.
    Trace = 3,
}

impl LogLevel {
    pub fn from_u8(level: u8) -> Option<LogLevel> {
        match level {
            0 => Some(LogLevel::Off),
            1 => Some(LogLevel::Info),
            2 => Some(LogLevel::Debug),
            3 => Some(LogLevel::Trace),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

/// A snapshot the host must restore its state machine from: the snapshot
/// file at `path` (written by a host with [`crate::node::SnapshotWriter`],
/// here or on the leader) stands for the log through `meta.index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRestore {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    /// Keeps the file from being deleted (by a newer snapshot) while the
    /// batch holding this restore exists.
    pub(crate) pin: SnapshotPin,
}

/// One batch of work for the host. Everything in it may be acted on at
/// once: messages that depend on durable state are only put in a batch
/// after that state is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyBatch {
    pub messages: Vec<OutboundMessage>,
    pub committed: Vec<CommittedEntry>,
    pub outcomes: Vec<ProposalOutcome>,
    /// Results of `read_index` requests.
    pub reads: Vec<ReadState>,
    /// The host must restore its state machine from the snapshot file
    /// named here before applying `committed` (whose entries all follow
    /// it): the node installed a snapshot from the leader, or restarted
    /// from a compacted log past the host's applied index. The file stays
    /// in place at least as long as this batch.
    pub restore: Option<SnapshotRestore>,
    /// The log has grown past the configured thresholds since the last
    /// snapshot (or, on a runtime, its entries keep the oldest segments of
    /// the shared WAL): the host should take one at this applied index
    /// (with [`crate::node::Node::begin_snapshot`] or
    /// [`crate::runtime::Runtime::begin_snapshot`]). Said once until the
    /// next snapshot is recorded.
    pub snapshot_wanted: Option<Index>,
    /// True when role, leader or term changed since the previous batch.
    pub state_changed: bool,
    /// Role, leader and term as of this batch (whether or not they changed).
    pub state: NodeState,
    pub logs: Vec<LogLine>,
}

/// Log lines kept while the host does not poll; beyond this, lines are
/// counted and replaced by one summary line so memory stays bounded.
const MAX_PENDING_LOG_LINES: usize = 4096;

/// Messages kept while the host does not poll (it may keep ticking).
/// Beyond this, new messages are dropped, which Raft tolerates as it does
/// any lost message, and the loss is reported in a log line.
const MAX_PENDING_MESSAGES: usize = 1 << 16;

/// The batch being filled between two polls.
pub(crate) struct Pending {
    messages: Vec<OutboundMessage>,
    committed: Vec<CommittedEntry>,
    outcomes: Vec<ProposalOutcome>,
    reads: Vec<ReadState>,
    restore: Option<SnapshotRestore>,
    snapshot_wanted: Option<Index>,
    state_changed: bool,
    state: NodeState,
    logs: Vec<LogLine>,
    dropped_log_lines: u64,
    dropped_messages: u64,
}

impl Pending {
    pub(crate) fn new(state: NodeState) -> Pending {
        Pending {
            messages: Vec::new(),
            committed: Vec::new(),
            outcomes: Vec::new(),
            reads: Vec::new(),
            restore: None,
            snapshot_wanted: None,
            state_changed: false,
            state,
            logs: Vec::new(),
            dropped_log_lines: 0,
            dropped_messages: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.committed.is_empty()
            && self.outcomes.is_empty()
            && self.reads.is_empty()
            && self.restore.is_none()
            && self.snapshot_wanted.is_none()
            && !self.state_changed
            && self.logs.is_empty()
            && self.dropped_log_lines == 0
    }

    pub(crate) fn push_messages(&mut self, messages: impl IntoIterator<Item = OutboundMessage>) {
        for message in messages {
            if self.messages.len() < MAX_PENDING_MESSAGES {
                self.messages.push(message);
            } else {
                self.dropped_messages += 1;
            }
        }
    }

    pub(crate) fn push_committed(&mut self, entry: CommittedEntry) {
        self.committed.push(entry);
    }

    pub(crate) fn push_outcome(&mut self, outcome: ProposalOutcome) {
        self.outcomes.push(outcome);
    }

    pub(crate) fn push_read(&mut self, read: ReadState) {
        self.reads.push(read);
    }

    /// The host's state machine must be restored from a snapshot; it
    /// supersedes committed entries not yet handed out that it covers, and
    /// a request for a snapshot at an index it covers.
    pub(crate) fn set_restore(&mut self, restore: SnapshotRestore) {
        let index = restore.meta.index;
        self.committed.retain(|c| c.entry.index > index);
        self.snapshot_wanted = self.snapshot_wanted.filter(|&wanted| wanted > index);
        self.restore = Some(restore);
    }

    pub(crate) fn set_snapshot_wanted(&mut self, index: Index) {
        self.snapshot_wanted = Some(index);
    }

    pub(crate) fn set_state(&mut self, state: NodeState) {
        if state != self.state {
            self.state = state;
            self.state_changed = true;
        }
    }

    pub(crate) fn push_log(&mut self, line: LogLine) {
        if self.logs.len() < MAX_PENDING_LOG_LINES {
            self.logs.push(line);
        } else {
            self.dropped_log_lines += 1;
        }
    }

    /// Moves everything in `other` behind what this batch holds, leaving
    /// `other` empty: a restore first (it supersedes committed entries and
    /// a snapshot request here that it covers), then the lists in order,
    /// then the newer state and snapshot request.
    pub(crate) fn absorb(&mut self, other: &mut Pending) {
        if let Some(restore) = other.restore.take() {
            self.set_restore(restore);
        }
        self.push_messages(other.messages.drain(..));
        self.committed.append(&mut other.committed);
        self.outcomes.append(&mut other.outcomes);
        self.reads.append(&mut other.reads);
        if let Some(index) = other.snapshot_wanted.take() {
            self.set_snapshot_wanted(index);
        }
        if other.state_changed {
            self.set_state(other.state);
            other.state_changed = false;
        }
        for line in other.logs.drain(..) {
            self.push_log(line);
        }
        self.dropped_log_lines += std::mem::take(&mut other.dropped_log_lines);
        self.dropped_messages += std::mem::take(&mut other.dropped_messages);
    }

    /// Hands the batch out and starts an empty one that remembers the state.
    pub(crate) fn take(&mut self) -> ReadyBatch {
        let mut logs = std::mem::take(&mut self.logs);
        if self.dropped_log_lines > 0 {
            logs.push(LogLine {
                level: LogLevel::Info,
                text: format!(
                    "{} log lines dropped because the host did not poll",
                    self.dropped_log_lines
                ),
            });
            self.dropped_log_lines = 0;
        }
        if self.dropped_messages > 0 {
            // Reported whatever the log level: it explains a stalled peer.
            logs.push(LogLine {
                level: LogLevel::Info,
                text: format!(
                    "{} outbound messages dropped because the host did not poll",
                    self.dropped_messages
                ),
            });
            self.dropped_messages = 0;
        }
        let batch = ReadyBatch {
            messages: std::mem::take(&mut self.messages),
            committed: std::mem::take(&mut self.committed),
            outcomes: std::mem::take(&mut self.outcomes),
            reads: std::mem::take(&mut self.reads),
            restore: self.restore.take(),
            snapshot_wanted: self.snapshot_wanted.take(),
            state_changed: self.state_changed,
            state: self.state,
            logs,
        };
        self.state_changed = false;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> NodeState {
        NodeState {
            role: Role::Follower,
            leader: 0,
            term: 0,
        }
    }

    #[test]
    fn unchanged_state_alone_is_not_work() {
        let mut pending = Pending::new(follower());
        pending.set_state(follower());
        assert!(pending.is_empty());
        pending.set_state(NodeState {
            term: 1,
            ..follower()
        });
        assert!(!pending.is_empty());
        let batch = pending.take();
        assert!(batch.state_changed);
        assert_eq!(batch.state.term, 1);
        assert!(pending.is_empty());
        assert_eq!(pending.take().state.term, 1, "state is remembered");
    }

    #[test]
    fn log_lines_are_bounded_and_the_loss_reported() {
        let mut pending = Pending::new(follower());
        for i in 0..MAX_PENDING_LOG_LINES + 10 {
            pending.push_log(LogLine {
                level: LogLevel::Debug,
                text: i.to_string(),
            });
        }
        let batch = pending.take();
        assert_eq!(batch.logs.len(), MAX_PENDING_LOG_LINES + 1);
        assert!(batch
            .logs
            .last()
            .unwrap()
            .text
            .starts_with("10 log lines dropped"));
    }
}
