//! The values the core exchanges with the layers above it: log entries, hard
//! state, membership, snapshot metadata and peer messages.
//!
//! These types are plain data. The codec gives every one of them a versioned
//! binary form; the WAL stores entries, hard state and snapshot metadata.

/// Identifies a node of a cluster. `0` is reserved and means "no node".
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log. The first entry has index 1; index 0
/// stands for "before the log".
pub type Index = u64;

/// The reserved node id meaning "none" (no vote cast, no known leader).
pub const NO_NODE: NodeId = 0;

/// The largest term a message may carry. Terms grow by one per election,
/// so a real cluster never comes near it; a larger term can only be
/// garbage or hostile, and adopting one could leave no room for the next
/// election.
pub const MAX_TERM: Term = 1 << 62;

/// The largest log index a message may name. A log grows by one index per
/// entry, so no cluster reaches it; a larger index can only be garbage or
/// hostile, and accepting one would overflow the `index + 1` arithmetic of
/// the log (a snapshot at `u64::MAX` wraps its first index to 0).
pub const MAX_INDEX: Index = 1 << 62;

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// Host data, proposed through `propose`.
    Normal = 0,
    /// The empty entry every new leader appends so that entries of earlier
    /// terms can commit through it.
    Noop = 1,
    /// A membership change; its data is an encoded configuration change.
    ConfChange = 2,
}

impl EntryKind {
    /// The kind for a wire/disk tag, or `None` for an unknown tag.
    pub fn from_u8(tag: u8) -> Option<EntryKind> {
        match tag {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfChange),
            _ => None,
        }
    }
}

/// The bytes an entry carries. Shared, not copied, between the log, the
/// append messages to each follower and the ready batches: cloning an entry
/// costs a reference count, whatever its size.
pub type Payload = std::sync::Arc<[u8]>;

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub data: Payload,
}

impl Entry {
    /// Bytes this entry counts for in flow control and size limits: its
    /// payload plus a fixed allowance for the header.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The per-entry header allowance used by [`Entry::size`].
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The state Raft must make durable before it acts on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    /// The node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    pub commit: Index,
}

/// A cluster membership. Outside a joint configuration `voters_outgoing`
/// is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    /// Voters of the (incoming) configuration.
    pub voters: Vec<NodeId>,
    /// Learners: receive the log, never vote.
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing configuration while in a joint configuration.
    pub voters_outgoing: Vec<NodeId>,
    /// Voters of the outgoing configuration that become learners when the
    /// joint configuration is left.
    pub learners_next: Vec<NodeId>,
    /// Leave the joint configuration automatically once it commits.
    pub auto_leave: bool,
}

/// What a snapshot stands for: the log up to `index` (whose entry had
/// `term`) and the membership in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A message between two nodes of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term; for a pre-vote request, the term the sender would
    /// campaign in.
    pub term: Term,
    pub body: MessageBody,
}

/// The kinds of message and what each carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Would you vote for me in `term`? Changes no state on the receiver.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        reject: bool,
    },
    /// Request for a vote in `term`. `transfer` is set when the election was
    /// started by a leadership transfer, which lets it through leases.
    Vote {
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        reject: bool,
    },
    /// Replicate `entries` after `(prev_index, prev_term)`.
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Answer to `Append`. Accepted: `index` is the last index now known to
    /// match. Rejected: `index` is the rejected `prev_index`, and
    /// `(hint_index, hint_term)` is where the leader should look next: the
    /// largest index `<= hint_index` whose term may match.
    AppendResponse {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Leader liveness and commit propagation. `context` is non-zero when
    /// the heartbeat round also confirms leadership for read requests.
    Heartbeat {
        commit: Index,
        context: u64,
    },
    HeartbeatResponse {
        context: u64,
    },
    /// Start an election now (leadership transfer).
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its host.
    ReadIndex {
        context: u64,
    },
    /// The read index for `context`; `reject` when the leader could not
    /// serve it (it lost leadership or has not committed in its term yet).
    ReadIndexResponse {
        index: Index,
        context: u64,
        reject: bool,
    },
    /// One chunk of a snapshot: bytes `[offset, offset + data.len())` of a
    /// snapshot of `total_len` bytes whose CRC32 is `checksum`.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        total_len: u64,
        checksum: u32,
        data: Vec<u8>,
    },
    /// Answer to a snapshot chunk: the offset the receiver expects next, or
    /// `reject` when it cannot take this snapshot.
    InstallSnapshotResponse {
        index: Index,
        next_offset: u64,
        reject: bool,
    },
    /// The leader goes quiet: every member holds its whole log, committed
    /// through `commit`. The follower stops its election timer until it
    /// hears from the leader again.
    Quiesce {
        commit: Index,
    },
    /// A quiescent follower checks that its leader is still there: a quiet
    /// leader answers with `Quiesce`, an awake one heartbeats anyway (a
    /// follower that hears nothing campaigns after an election timeout).
    WakeUp,
}

impl Message {
    /// Refuses a term or an index no real cluster reaches ([`MAX_TERM`],
    /// [`MAX_INDEX`]): only garbage or a hostile peer sends one.
    pub fn check_ceilings(&self) -> Result<(), &'static str> {
        if self.term > MAX_TERM {
            return Err("term beyond the largest a cluster can reach");
        }
        if self.body.max_index() > MAX_INDEX {
            return Err("index beyond the largest a log can reach");
        }
        Ok(())
    }
}

impl MessageBody {
    /// The largest log index the message names (0 when it names none).
    pub fn max_index(&self) -> Index {
        match self {
            MessageBody::PreVote { last_index, .. } | MessageBody::Vote { last_index, .. } => {
                *last_index
            }
            MessageBody::Append {
                prev_index,
                entries,
                commit,
                ..
            } => (*prev_index)
                .max(*commit)
                .max(entries.last().map_or(0, |e| e.index)),
            MessageBody::AppendResponse {
                index, hint_index, ..
            } => (*index).max(*hint_index),
            MessageBody::Heartbeat { commit, .. } | MessageBody::Quiesce { commit } => *commit,
            MessageBody::ReadIndexResponse { index, .. }
            | MessageBody::InstallSnapshotResponse { index, .. } => *index,
            MessageBody::InstallSnapshot { meta, .. } => meta.index,
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::WakeUp
            | MessageBody::ReadIndex { .. } => 0,
        }
    }

    /// A short name for logs and errors.
    /// The kind's position among the kinds, in declaration order (as
    /// `crate::metrics::MESSAGE_KINDS` lists them).
    pub fn kind_index(&self) -> usize {
        match self {
            MessageBody::PreVote { .. } => 0,
            MessageBody::PreVoteResponse { .. } => 1,
            MessageBody::Vote { .. } => 2,
            MessageBody::VoteResponse { .. } => 3,
            MessageBody::Append { .. } => 4,
            MessageBody::AppendResponse { .. } => 5,
            MessageBody::Heartbeat { .. } => 6,
            MessageBody::HeartbeatResponse { .. } => 7,
            MessageBody::TimeoutNow => 8,
            MessageBody::ReadIndex { .. } => 9,
            MessageBody::ReadIndexResponse { .. } => 10,
            MessageBody::InstallSnapshot { .. } => 11,
            MessageBody::InstallSnapshotResponse { .. } => 12,
            MessageBody::Quiesce { .. } => 13,
            MessageBody::WakeUp => 14,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::Quiesce { .. } => "Quiesce",
            MessageBody::WakeUp => "WakeUp",
        }
    }
}

/// A membership change, carried by a [`EntryKind::ConfChange`] entry.
///
/// Single-step changes move the voter set by at most one node. A joint
/// change names the complete target membership; the cluster passes through
/// a joint configuration (decisions need majorities of both the old and the
/// new voters) and leaves it automatically once it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a voter (a node that is a learner is promoted).
    AddVoter(NodeId),
    /// Promote a learner to voter; refused when the node is not a learner.
    PromoteLearner(NodeId),
    /// Add a learner: it receives the log but never votes.
    AddLearner(NodeId),
    /// Remove a voter or a learner.
    RemoveNode(NodeId),
    /// Move to exactly these voters and learners through a joint
    /// configuration.
    EnterJoint {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    /// Leave the joint configuration. Its encoding is the empty byte string,
    /// so the core can append it without an encoder.
    LeaveJoint,
}
