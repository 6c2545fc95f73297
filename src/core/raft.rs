//! The Raft node state machine: roles, election, replication, commit.

use super::config::{Config, ConfigError};
use super::types::*;
use std::fmt;

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// What a node starts from: nothing (a new cluster) or what its storage
/// recovered.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The membership in force. For a new cluster: its voters.
    pub conf_state: ConfState,
    /// The latest snapshot; the log starts right after it.
    pub snapshot: Option<SnapshotMeta>,
    /// The durable log after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// What the host had already applied (entries up to here are not
    /// handed out again).
    pub applied: Index,
}

impl InitialState {
    /// The state of a brand-new cluster whose voters are `voters`.
    pub fn bootstrap(voters: &[NodeId]) -> InitialState {
        InitialState {
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..ConfState::default()
            },
            ..InitialState::default()
        }
    }
}

/// Role and leader, reported when either changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub leader: NodeId,
}

/// The answer to a read request: the read may be served once the host has
/// applied through `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub index: Index,
}

/// One batch of work for the host.
///
/// The host must: persist `hard_state` and `entries` (entries whose index
/// is at or below an already persisted index replace the persisted suffix
/// from there); send `messages` at any time (they do not depend on this
/// batch's persistence); once the persist is durable (at once if there was
/// nothing to persist), send `persisted_messages` and call
/// [`Raft::on_persisted`] with `number`; apply `committed_entries` and report
/// with [`Raft::on_applied`]. Batches are persisted in the order they were
/// taken; acknowledging batch `n` acknowledges every batch before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Sequence number of this batch, starting at 1.
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True when the batch holds nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }
}

/// Why a message was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The sender is not a member this node knows.
    UnknownSender(NodeId),
    /// The message is addressed to another node.
    WrongRecipient(NodeId),
    /// The message is self-contradictory (impossible indexes, entries out
    /// of order, a term of zero where one is required).
    Invalid(&'static str),
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::UnknownSender(id) => write!(f, "message from unknown node {id}"),
            StepError::WrongRecipient(id) => write!(f, "message addressed to node {id}"),
            StepError::Invalid(why) => write!(f, "invalid message: {why}"),
        }
    }
}

impl std::error::Error for StepError {}

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader takes proposals; `leader` is the one this node knows
    /// of, or [`NO_NODE`].
    NotLeader { leader: NodeId },
    /// The payload exceeds `max_entry_bytes`.
    TooLarge { size: u64, limit: u64 },
    /// A leadership transfer is under way.
    TransferInProgress,
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader: NO_NODE } => {
                write!(f, "not the leader, and no leader is known")
            }
            ProposeError::NotLeader { leader } => write!(f, "not the leader; node {leader} is"),
            ProposeError::TooLarge { size, limit } => {
                write!(f, "proposal of {size} bytes exceeds the limit of {limit}")
            }
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// Replication state of one peer, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    /// True while the leader streams appends (replicate state); false while
    /// it probes for the match point.
    pub replicating: bool,
    pub inflight_msgs: usize,
    pub recent_active: bool,
}

/// A snapshot of a node's state for monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: NodeId,
    pub leader: NodeId,
    pub commit: Index,
    pub applied: Index,
    pub persisted: Index,
    pub first_index: Index,
    pub last_index: Index,
    /// Per-peer progress; empty unless leader.
    pub peers: Vec<PeerStatus>,
}

/// One node's Raft state machine. See the module docs of [`crate::core`].
pub struct Raft {
    _private: (),
}

#[allow(unused_variables)]
impl Raft {
    /// Creates a node from its configuration and its recovered (or
    /// bootstrap) state. Deterministic given `config.seed`.
    pub fn new(config: Config, initial: InitialState) -> Result<Raft, ConfigError> {
        todo!()
    }
    pub fn id(&self) -> NodeId {
        todo!()
    }
    pub fn role(&self) -> Role {
        todo!()
    }
    pub fn term(&self) -> Term {
        todo!()
    }
    /// The leader this node knows of, or [`NO_NODE`].
    pub fn leader(&self) -> NodeId {
        todo!()
    }
    pub fn commit_index(&self) -> Index {
        todo!()
    }
    pub fn hard_state(&self) -> HardState {
        todo!()
    }
    pub fn status(&self) -> Status {
        todo!()
    }
    /// The in-memory log (persisted or not), oldest first.
    pub fn log_entries(&self) -> &[Entry] {
        todo!()
    }
    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        todo!()
    }
    /// Starts an election now, as if the election timeout had fired.
    pub fn campaign(&mut self) {
        todo!()
    }
    /// Takes one message received from a peer.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        todo!()
    }
    /// Appends `data` to the log if this node is the leader; returns the
    /// index and term it was given. It is committed once it is applied with
    /// that same term at that index.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        todo!()
    }
    pub fn has_ready(&self) -> bool {
        todo!()
    }
    /// Takes the pending batch of work (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        todo!()
    }
    /// The host made batch `ready_number` (and every batch before it)
    /// durable. Unknown or repeated numbers are ignored.
    pub fn on_persisted(&mut self, ready_number: u64) {
        todo!()
    }
    /// The host applied every committed entry through `index`.
    pub fn on_applied(&mut self, index: Index) {
        todo!()
    }
}
