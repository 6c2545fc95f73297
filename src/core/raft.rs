//! The Raft node state machine: roles, election, replication, commit.

use super::config::{Config, ConfigError};
use super::log::{AppendOutcome, LogReadError, LogStorage, RaftLog, RecoverError};
use super::membership::{ConfChangeError, Membership, VoteResult};
use super::progress::{Progress, ProgressState};
use super::rng::Rng;
use super::types::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    /// The state of a brand-new cluster whose voters are `voters`: a log
    /// whose first entry (term 1, committed) puts that membership in force.
    /// Every founding member must bootstrap with the same voters. Keeping
    /// the membership in the log lets a node that joins later learn it by
    /// replaying the log. A joining node starts from
    /// `InitialState::default()` instead.
    pub fn bootstrap(voters: &[NodeId]) -> InitialState {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        let founding = ConfChange::EnterJoint {
            voters,
            learners: Vec::new(),
        };
        InitialState {
            hard_state: HardState {
                term: 1,
                vote: NO_NODE,
                commit: 1,
            },
            entries: vec![Entry {
                index: 1,
                term: 1,
                kind: EntryKind::ConfChange,
                data: founding.encode().into(),
            }],
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

/// The outcome of a read request made with [`Raft::read_index`]: on
/// success, the read may be served once the host has applied through the
/// index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub context: u64,
    pub result: Result<Index, ReadError>,
}

/// Why a read request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// No leader is known to serve it.
    NoLeader,
    /// Leadership changed before the read was confirmed; retry.
    LeadershipLost,
    /// The leader refused it (it was no longer the leader).
    Refused,
    /// Too many reads are in progress (see [`MAX_READS_IN_PROGRESS`]);
    /// retry once some have completed.
    Busy,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NoLeader => write!(f, "no leader is known"),
            ReadError::LeadershipLost => {
                write!(f, "leadership changed before the read was confirmed")
            }
            ReadError::Refused => write!(f, "the leader refused the read"),
            ReadError::Busy => write!(f, "too many reads are in progress"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why a snapshot could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactError {
    /// A snapshot may only cover applied entries.
    NotApplied { index: Index, applied: Index },
    /// The log is already compacted through a later index.
    AlreadyCompacted { snapshot_index: Index },
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::NotApplied { index, applied } => {
                write!(f, "cannot snapshot at {index}: only {applied} is applied")
            }
            CompactError::AlreadyCompacted { snapshot_index } => {
                write!(f, "already compacted through {snapshot_index}")
            }
        }
    }
}

impl std::error::Error for CompactError {}

/// Why a leadership transfer could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can hand leadership over.
    NotLeader { leader: NodeId },
    /// The target is not a voter of the current membership.
    NotVoter(NodeId),
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { leader } => {
                write!(f, "not the leader (leader is node {leader})")
            }
            TransferError::NotVoter(id) => write!(f, "node {id} is not a voter"),
        }
    }
}

impl std::error::Error for TransferError {}

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
    /// The batch's writes must be synced before `persisted_messages` leave
    /// and `on_persisted` is called: it carries entries, a snapshot, or a
    /// new term or vote. False when its only write is a hard state that
    /// advances the commit index, which Raft does not need durable (it is
    /// learned again from the leader); such a write may wait for the next
    /// sync.
    pub must_sync: bool,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// The membership now in force, when committed entries of this batch
    /// changed it (the core puts committed membership changes into force
    /// itself; the host need not act on them).
    pub conf_state: Option<ConfState>,
    /// A snapshot installed by [`Raft::restore`]: the host records it
    /// durably with this batch, discards its log, and restores its state
    /// machine from the snapshot's data.
    pub snapshot: Option<SnapshotMeta>,
    /// Leader: send the latest snapshot (described here) to these peers,
    /// in chunks, then call [`Raft::report_snapshot`].
    pub snapshots_to_send: Vec<(NodeId, SnapshotMeta)>,
    /// Follower: chunks of a snapshot the leader is sending, for the host
    /// to store; once it holds the whole snapshot durably it calls
    /// [`Raft::restore`].
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Leader: answers to snapshot chunks, from followers of this term, for
    /// whoever streams the chunks (flow control and resumption are theirs;
    /// the core has already checked the term and the sender).
    pub snapshot_responses: Vec<SnapshotResponse>,
}

/// A follower's answer to a snapshot chunk, as it reached the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotResponse {
    pub from: NodeId,
    /// The snapshot's index.
    pub index: Index,
    /// The offset the follower expects next.
    pub next_offset: u64,
    pub reject: bool,
}

/// One received chunk of a snapshot, as the leader sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub from: NodeId,
    pub term: Term,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub total_len: u64,
    pub checksum: u32,
    pub data: Vec<u8>,
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
            && self.conf_state.is_none()
            && self.snapshot.is_none()
            && self.snapshots_to_send.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.snapshot_responses.is_empty()
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
    /// An earlier membership change is not applied yet.
    ConfChangePending,
    /// The membership change cannot be made from the current membership.
    ConfChange(ConfChangeError),
    /// The learner to promote has not caught up with the commit index.
    LearnerBehind { matched: Index, commit: Index },
    /// This leader's log holds a membership change that leaves it a voter
    /// of no configuration (its removal or demotion); it takes nothing more
    /// and steps down once the change is in force. Propose on the next
    /// leader.
    LeaderLeaving,
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
            ProposeError::ConfChangePending => {
                write!(f, "an earlier membership change is still pending")
            }
            ProposeError::ConfChange(e) => write!(f, "{e}"),
            ProposeError::LearnerBehind { matched, commit } => write!(
                f,
                "learner has replicated through {matched}, behind the commit index {commit}"
            ),
            ProposeError::LeaderLeaving => {
                write!(f, "this leader is being removed from the voters")
            }
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
    /// Index covered by the latest snapshot (0 if none).
    pub snapshot_index: Index,
    /// The membership in force.
    pub conf_state: ConfState,
    /// The target of a leadership transfer under way, or [`NO_NODE`].
    pub lead_transferee: NodeId,
    /// The group is quiet: a leader that stopped heartbeating, or a
    /// follower that stopped its election timer (see `Config::quiesce_tick`).
    pub quiescent: bool,
    /// Per-peer progress; empty unless leader.
    pub peers: Vec<PeerStatus>,
    /// Bytes of entries cached in memory (see [`Raft::cached_entry_bytes`]).
    pub cached_entry_bytes: u64,
    /// Reads of evicted entries through the [`LogStorage`] that failed so
    /// far; [`Raft::last_log_read_error`] says why the latest did.
    pub log_read_failures: u64,
}

/// What must happen once a ready batch is durable.
struct PendingPersist {
    number: u64,
    /// The last entry the batch carried.
    last_entry: Option<(Index, Term)>,
    /// The batch carried this node's vote for itself in this term; the vote
    /// counts only once it is durable, or a crash could let the node vote
    /// twice in one term.
    self_vote_term: Option<Term>,
}

/// A read request: from the host of this node (`requester` is this node)
/// or forwarded by a follower.
#[derive(Clone, Copy, Debug)]
struct ReadRequest {
    context: u64,
    requester: NodeId,
}

/// A quiescent follower checks in with its leader (a `WakeUp`) after this
/// many of its randomized election timeouts without a word from it: the
/// bound on how long a group whose leader died quietly goes unnoticed,
/// when the host's transport does not report the leader unreachable.
pub const QUIESCENT_CHECK_TIMEOUTS: u32 = 50;

/// The most reads a node keeps in progress: a leader's reads waiting for a
/// commit of its term or for a heartbeat round, a follower's reads
/// forwarded to the leader. While a quorum is silent nothing completes
/// them, so beyond this a read fails at once with [`ReadError::Busy`]
/// rather than growing the queue without bound.
pub const MAX_READS_IN_PROGRESS: usize = 16 * 1024;

/// A read waiting for a quorum to confirm this node still leads.
struct PendingRead {
    /// The heartbeat round that confirms it (and every read before it), or
    /// 0 until that round is sent.
    round: u64,
    request: ReadRequest,
    index: Index,
    acks: BTreeSet<NodeId>,
}

/// One node's Raft state machine. See the module docs of [`crate::core`].
pub struct Raft {
    id: NodeId,
    config: Config,
    rng: Rng,

    term: Term,
    vote: NodeId,
    leader: NodeId,
    role: Role,
    log: RaftLog,
    membership: Membership,

    /// Replication state of every other member; meaningful while leader.
    progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current (pre-)election.
    votes: BTreeMap<NodeId, bool>,
    /// Set when this node voted for itself and that vote is not yet handed
    /// out for persisting.
    self_vote_unsent: bool,

    /// Set when this node, a voter of no configuration, refused its vote to
    /// a candidate for lacking entries this node holds: it campaigns for
    /// them once its election timeout passes with no leader heard (see
    /// `holds_what_voters_lack`).
    campaign_for_log: bool,
    /// The group is quiet (see `Config::quiesce_tick`): a leader sends no
    /// heartbeat and checks no quorum; a follower runs no election timer,
    /// only the slow check-in of `QUIESCENT_CHECK_TIMEOUTS`.
    quiescent: bool,
    /// Leader: ticks in a row with nothing to do.
    idle_ticks: u32,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,

    /// Proposals arrived since the last ready; appends go out in one batch.
    broadcast_pending: bool,
    /// Index of the latest membership change proposed by this leader (or
    /// the last index when it took over); no other change is accepted until
    /// it is applied.
    pending_conf_index: Index,
    /// Membership changes through this index are in force.
    conf_applied: Index,
    /// Leader: the index of a membership change in its log that leaves it
    /// a voter of no configuration (its removal, its demotion, or leaving
    /// a joint configuration it votes in only as an outgoing voter), or 0.
    /// Until that change is in force, and this node steps down, it takes
    /// no proposal: its log then ends at the change, which a quorum of the
    /// remaining voters holds once it commits, so those voters win this
    /// node's vote by the ordinary up-to-date rule should they still need
    /// it (they may not know yet that the change committed). Entries it
    /// took beyond the change could commit without it, or not at all, and
    /// in either case make it refuse its vote to every remaining voter
    /// that lacks them, forever.
    leaving_at: Index,
    /// The membership after each change in force since the snapshot (the
    /// first item is the snapshot's), to give a snapshot its membership.
    conf_history: Vec<(Index, Membership)>,
    /// Term of the latest snapshot's last entry.
    snapshot_term: Term,
    /// Leader: followers that need the latest snapshot.
    snapshots_to_send: Vec<(NodeId, SnapshotMeta)>,
    /// Follower: snapshot chunks from the leader, for the host to store.
    snapshot_chunks: Vec<SnapshotChunk>,
    /// Leader: followers' answers to snapshot chunks.
    snapshot_responses: Vec<SnapshotResponse>,
    /// Follower: a snapshot installed by `restore`, not yet handed out.
    installed_snapshot: Option<SnapshotMeta>,
    /// Target of a leadership transfer under way, and its age in ticks.
    lead_transferee: NodeId,
    transfer_ticks: u32,
    /// Leader: reads waiting for the first commit of this term, and reads
    /// waiting for a heartbeat round to confirm leadership.
    reads_awaiting_commit: Vec<ReadRequest>,
    pending_reads: VecDeque<PendingRead>,
    read_round: u64,
    /// Ticks since this node started: the clock leases are measured on.
    ticks: u64,
    /// Leader with lease reads: heartbeat rounds not yet acknowledged by a
    /// quorum, as (round, tick sent, peers that acknowledged).
    lease_rounds: VecDeque<(u64, u64, BTreeSet<NodeId>)>,
    /// Leader with lease reads: reads may be served locally while `ticks`
    /// is below this.
    lease_until: u64,
    /// Leader: this term's lease is void. Set once `TimeoutNow` leaves:
    /// voters grant a transfer's votes inside any lease, so from then on a
    /// successor can win and commit while this node still holds what looks
    /// like a lease (the transfer's `TimeoutNow` may land long after the
    /// transfer was abandoned, too).
    lease_revoked: bool,
    /// Follower: contexts of reads forwarded to the leader.
    forwarded_reads: Vec<u64>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,

    ready_number: u64,
    pending_persists: VecDeque<PendingPersist>,
    last_soft: SoftState,
    last_hard: HardState,

    /// Failed reads through the log storage, and why the latest failed.
    log_read_failures: u64,
    last_log_read_error: Option<LogReadError>,
    /// Applying waits for the next tick: the committed entries to hand out
    /// could not be read back, and retrying at once would spin the host.
    apply_read_failed: bool,
}

impl Raft {
    /// Creates a node from its configuration and its recovered (or
    /// bootstrap) state. Deterministic given `config.seed`.
    pub fn new(config: Config, initial: InitialState) -> Result<Raft, ConfigError> {
        Raft::recover(config, initial, None)
    }

    /// [`Raft::new`] for a host that keeps its log in storage the core can
    /// read (see [`Raft::set_log_storage`]): `initial.entries` may be only
    /// the newest entries of the durable log (at least its last one, unless
    /// the log ends at the snapshot). The core reads the entries from the
    /// snapshot on up to them through `storage`, `max_apply_bytes` at a
    /// time, to recover terms and memberships, and caches only those after
    /// the recovered commit index, whatever `max_cached_bytes` says: the
    /// committed ones still to hand out are read back as they go. A failed
    /// read fails the start ([`ConfigError::LogRead`]).
    pub fn with_log_storage(
        config: Config,
        initial: InitialState,
        storage: Box<dyn LogStorage>,
    ) -> Result<Raft, ConfigError> {
        Raft::recover(config, initial, Some(storage))
    }

    fn recover(
        config: Config,
        initial: InitialState,
        storage: Option<Box<dyn LogStorage>>,
    ) -> Result<Raft, ConfigError> {
        config.validate()?;
        let snapshot = initial.snapshot.unwrap_or_else(|| SnapshotMeta {
            conf_state: initial.conf_state,
            ..SnapshotMeta::default()
        });
        let mut membership = Membership::from_conf_state(&snapshot.conf_state)?;
        let mut hs = initial.hard_state;
        let last_term = initial.entries.last().map_or(0, |e| e.term);
        if last_term.max(snapshot.term) > hs.term {
            // Entries durable before the term that goes with them: this
            // node never voted in the later term, since a vote is durable
            // before it is sent (docs/ARCHITECTURE.md, Restart).
            hs.term = last_term.max(snapshot.term);
            hs.vote = NO_NODE;
        }
        // The membership changes after the snapshot, and the last entry
        // checked, as the log goes by (read from storage in parts).
        let mut changes: Vec<Entry> = Vec::new();
        let mut previous: Option<(Index, Term)> = None;
        let visit = |entries: &[Entry]| {
            let Some(first) = entries.first() else {
                return Ok(());
            };
            let (prev_index, prev_term) = previous.unwrap_or((first.index - 1, 0));
            check_entry_sequence(prev_index, prev_term, hs.term, entries)?;
            previous = entries.last().map(|e| (e.index, e.term));
            changes.extend(
                entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::ConfChange && e.index > snapshot.index)
                    .cloned(),
            );
            Ok(())
        };
        let log = match storage {
            None => {
                let mut visit = visit;
                visit(&initial.entries).map_err(ConfigError::InvalidLog)?;
                RaftLog::new(
                    snapshot.index,
                    snapshot.term,
                    initial.entries,
                    hs.commit,
                    initial.applied,
                )
                .map_err(ConfigError::InvalidLog)?
            }
            Some(storage) => RaftLog::recover(
                (snapshot.index, snapshot.term),
                initial.entries,
                hs.commit,
                initial.applied,
                storage,
                config.max_apply_bytes,
                visit,
            )
            .map_err(|e| match e {
                RecoverError::Invalid(why) => ConfigError::InvalidLog(why),
                RecoverError::Read(error) => ConfigError::LogRead(error),
            })?,
        };
        // Every committed change is in force from the start; later ones
        // take effect as they are handed out (see `conf_applied`).
        let mut conf_history = vec![(snapshot.index, membership.clone())];
        for entry in changes.iter().take_while(|e| e.index <= log.committed) {
            if let Some(next) = membership_after(&membership, entry) {
                membership = next;
                conf_history.push((entry.index, membership.clone()));
            }
        }
        let conf_applied = log.committed;
        let mut raft = Raft {
            id: config.id,
            rng: Rng::new(config.seed),
            config,
            term: hs.term,
            vote: hs.vote,
            leader: NO_NODE,
            role: Role::Follower,
            log,
            membership,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            self_vote_unsent: false,
            campaign_for_log: false,
            quiescent: false,
            idle_ticks: 0,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            broadcast_pending: false,
            pending_conf_index: 0,
            conf_applied,
            leaving_at: 0,
            conf_history,
            snapshot_term: snapshot.term,
            snapshots_to_send: Vec::new(),
            snapshot_chunks: Vec::new(),
            snapshot_responses: Vec::new(),
            installed_snapshot: None,
            lead_transferee: NO_NODE,
            transfer_ticks: 0,
            reads_awaiting_commit: Vec::new(),
            pending_reads: VecDeque::new(),
            read_round: 0,
            ticks: 0,
            lease_rounds: VecDeque::new(),
            lease_until: 0,
            lease_revoked: false,
            forwarded_reads: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            ready_number: 0,
            pending_persists: VecDeque::new(),
            last_soft: SoftState {
                role: Role::Follower,
                leader: NO_NODE,
            },
            last_hard: HardState::default(),
            log_read_failures: 0,
            last_log_read_error: None,
            apply_read_failed: false,
        };
        raft.last_hard = raft.hard_state();
        raft.reset_election_timer();
        Ok(raft)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader this node knows of, or [`NO_NODE`].
    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn commit_index(&self) -> Index {
        self.log.committed
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub fn status(&self) -> Status {
        let mut status = Status {
            id: self.id,
            role: self.role,
            term: 0,
            vote: NO_NODE,
            leader: NO_NODE,
            commit: 0,
            applied: 0,
            persisted: 0,
            first_index: 0,
            last_index: 0,
            snapshot_index: 0,
            conf_state: ConfState::default(),
            lead_transferee: NO_NODE,
            quiescent: false,
            peers: Vec::new(),
            cached_entry_bytes: 0,
            log_read_failures: 0,
        };
        self.fill_status(&mut status);
        status
    }

    /// [`Raft::status`] into `out`, reusing its vectors: the node publishes
    /// its status several times per round.
    pub fn fill_status(&self, out: &mut Status) {
        out.id = self.id;
        out.role = self.role;
        out.term = self.term;
        out.vote = self.vote;
        out.leader = self.leader;
        out.commit = self.log.committed;
        out.applied = self.log.applied;
        out.persisted = self.log.persisted;
        out.first_index = self.log.first_index();
        out.last_index = self.log.last_index();
        out.snapshot_index = self.log.snapshot_index();
        self.membership.fill_conf_state(&mut out.conf_state);
        out.lead_transferee = self.lead_transferee;
        out.quiescent = self.quiescent;
        out.cached_entry_bytes = self.log.cached_bytes();
        out.log_read_failures = self.log_read_failures;
        out.peers.clear();
        if self.role == Role::Leader {
            out.peers
                .extend(self.progress.iter().map(|(&id, pr)| PeerStatus {
                    id,
                    match_index: pr.matched,
                    next_index: pr.next,
                    replicating: pr.state == ProgressState::Replicate,
                    inflight_msgs: pr.inflights.len(),
                    recent_active: pr.recent_active,
                }));
        }
    }

    /// The in-memory log (persisted or not), oldest first: entries from
    /// [`Raft::first_index`] on, except those evicted (see
    /// [`Raft::evict_cached_entries`]).
    pub fn log_entries(&self) -> &[Entry] {
        self.log.entries()
    }

    /// Ticks since this node started.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Whether the group is quiet: a leader sends no heartbeats and a
    /// follower runs no election timer (see `Config::quiesce_tick`).
    pub fn is_quiescent(&self) -> bool {
        self.quiescent
    }

    /// How many ticks a quiescent node can be left without a tick before
    /// one would change anything (its owner may give them all at once
    /// then); 0 when it is not quiescent. A quiet follower's next event is
    /// its check-in; a quiet leader has none, but is still ticked every
    /// check-in period so that ticks owed to it stay few.
    pub fn quiet_ticks_allowed(&self) -> u32 {
        if !self.quiescent {
            return 0;
        }
        let check_in = self
            .randomized_election_timeout
            .saturating_mul(QUIESCENT_CHECK_TIMEOUTS);
        if self.role == Role::Leader {
            return check_in.max(1);
        }
        check_in.saturating_sub(self.election_elapsed).max(1)
    }

    /// The term of the entry at `index`, cached or evicted, or of the
    /// snapshot's last entry; `None` for an index the log does not hold.
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// Installs the read-only view of the durable log through which the
    /// core reads back entries it evicted from its cache. Without one,
    /// nothing is evicted and the whole log stays in memory.
    pub fn set_log_storage(&mut self, storage: Box<dyn LogStorage>) {
        self.log.set_storage(storage);
        self.evict_beyond_cap();
    }

    /// Drops cached entries through `through` from memory, as far as they
    /// may go: only with a [`LogStorage`] installed, and only entries that
    /// are durable and already handed out for applying. Returns the bytes
    /// freed. For a host that shares one memory budget among many groups.
    pub fn evict_cached_entries(&mut self, through: Index) -> u64 {
        self.log.evict(through)
    }

    /// Bytes of entries held in memory (their [`Entry::size`]).
    pub fn cached_entry_bytes(&self) -> u64 {
        self.log.cached_bytes()
    }

    /// Entries read from the cache and entries read back through the
    /// [`LogStorage`], so far (the entry cache's hits and misses).
    pub fn cache_read_counts(&self) -> (u64, u64) {
        self.log.cache_read_counts()
    }

    /// Why the latest read through the [`LogStorage`] failed, if one did.
    pub fn last_log_read_error(&self) -> Option<&LogReadError> {
        self.last_log_read_error.as_ref()
    }

    fn record_log_read_error(&mut self, error: LogReadError) {
        self.log_read_failures += 1;
        self.last_log_read_error = Some(error);
    }

    /// Keeps the cache within `Config::max_cached_bytes`, as far as entries
    /// may leave it.
    fn evict_beyond_cap(&mut self) {
        if self.config.max_cached_bytes > 0 {
            self.log.evict_beyond(self.config.max_cached_bytes);
        }
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.apply_read_failed = false;
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.quiescent {
            self.tick_quiescent();
            return;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_timeout {
            if self.promotable() {
                self.campaign();
            } else if std::mem::take(&mut self.campaign_for_log) {
                self.start_election();
            } else if self.role != Role::Follower {
                // A campaign for this node's log that got no answer (see
                // `holds_what_voters_lack`): it does not try again by itself.
                self.become_follower(self.term, NO_NODE);
            }
        }
    }

    /// A quiescent leader waits for work; a quiescent follower checks in
    /// with its leader now and then, and runs its election timer again
    /// from then on: a leader that is there answers with a heartbeat.
    fn tick_quiescent(&mut self) {
        if self.role == Role::Leader {
            return;
        }
        let check_in = self
            .randomized_election_timeout
            .saturating_mul(QUIESCENT_CHECK_TIMEOUTS);
        if self.election_elapsed >= check_in {
            self.quiescent = false;
            self.reset_election_timer();
            if self.leader != NO_NODE {
                self.send(self.leader, MessageBody::WakeUp);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.lead_transferee != NO_NODE {
            self.transfer_ticks += 1;
            if self.transfer_ticks >= self.config.election_tick {
                // The target did not take over in time; lead on.
                self.lead_transferee = NO_NODE;
            }
        }
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, NO_NODE);
                return;
            }
        }
        if self.config.quiesce_tick > 0 {
            self.idle_ticks = if self.idle() { self.idle_ticks + 1 } else { 0 };
            if self.idle_ticks >= self.config.quiesce_tick {
                self.quiesce();
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.heartbeat();
        }
    }

    fn heartbeat(&mut self) {
        if self.config.lease_reads {
            self.broadcast_lease_round();
        } else if !self.pending_reads.is_empty() {
            // A read round a quorum has not confirmed yet (its messages may
            // be lost), and the reads held back behind it, are confirmed
            // by this one.
            self.broadcast_read_round();
        } else {
            self.broadcast_heartbeat(0);
        }
    }

    /// Leader: nothing to replicate, commit, read, transfer or change, and
    /// every member holds the whole log in a steady stream.
    fn idle(&self) -> bool {
        let last = self.log.last_index();
        self.log.committed == last
            && !self.broadcast_pending
            && self.lead_transferee == NO_NODE
            && self.pending_reads.is_empty()
            && self.reads_awaiting_commit.is_empty()
            && !self.membership.is_joint()
            && self.pending_conf_index <= self.conf_applied
            && self
                .progress
                .values()
                .all(|pr| pr.matched == last && pr.state == ProgressState::Replicate)
    }

    /// Leader: goes quiet and tells the followers. No lease outlives this:
    /// nobody renews it while the group is quiet, and a quiescent follower
    /// refuses votes for as long as it is quiet, which is no lease's bound.
    fn quiesce(&mut self) {
        self.quiescent = true;
        self.idle_ticks = 0;
        self.drop_lease();
        // The last commit index goes with it: a follower may not have
        // heard it (`skip_commit_broadcast`), and no heartbeat follows.
        let commit = self.log.committed;
        let followers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in followers {
            self.send(to, MessageBody::Quiesce { commit });
        }
    }

    /// Leader: leaves quiescence and heartbeats at once, which wakes the
    /// followers. They were silent because it was, so they count as active
    /// for the check-quorum period that starts now.
    fn wake(&mut self) {
        if !self.quiescent || self.role != Role::Leader {
            return;
        }
        self.quiescent = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        for pr in self.progress.values_mut() {
            pr.recent_active = true;
        }
        self.heartbeat();
    }

    /// Sends a heartbeat round whose acknowledgement by a quorum extends the
    /// lease. A follower refuses votes for `election_tick` ticks after it
    /// hears from the leader, so once a quorum acknowledges a round sent at
    /// tick `t`, no other leader can be elected before about `t +
    /// election_tick` (one tick is kept as margin for clocks out of phase).
    /// The lease runs from when the round was sent, never from when the
    /// answers arrived: answers can be late.
    fn broadcast_lease_round(&mut self) {
        let horizon = u64::from(self.config.election_tick);
        while let Some(&(_, sent, _)) = self.lease_rounds.front() {
            if sent + horizon > self.ticks {
                break;
            }
            self.lease_rounds.pop_front();
        }
        let round = self.broadcast_read_round();
        self.lease_rounds
            .push_back((round, self.ticks, BTreeSet::new()));
    }

    /// Sends a heartbeat round whose acknowledgement by a quorum confirms
    /// every read not yet sent in a round. Returns its number.
    fn broadcast_read_round(&mut self) -> u64 {
        self.read_round += 1;
        let round = self.read_round;
        for read in self.pending_reads.iter_mut().rev() {
            if read.round != 0 {
                break;
            }
            read.round = round;
        }
        self.broadcast_heartbeat(round);
        round
    }

    /// Forgets the lease and the rounds that would extend it.
    fn drop_lease(&mut self) {
        self.lease_rounds.clear();
        self.lease_until = 0;
    }

    /// An answer to heartbeat round `round` acknowledges every lease round
    /// up to it.
    fn renew_lease(&mut self, from: NodeId, round: u64) {
        if self.lease_revoked {
            return;
        }
        let mut confirmed = None;
        for (index, (r, sent, acks)) in self.lease_rounds.iter_mut().enumerate() {
            if *r > round {
                break;
            }
            acks.insert(from);
            let id = self.id;
            if self
                .membership
                .has_quorum(|peer| peer == id || acks.contains(&peer))
            {
                confirmed = Some((index, *sent));
            }
        }
        if let Some((index, sent)) = confirmed {
            self.lease_rounds.drain(..=index);
            let until = (sent + u64::from(self.config.election_tick)).saturating_sub(1);
            self.lease_until = self.lease_until.max(until);
        }
    }

    /// Whether a quorum was heard from since the last check; starts the
    /// next check period.
    fn quorum_recently_active(&mut self) -> bool {
        let id = self.id;
        let progress = &self.progress;
        let active = self
            .membership
            .has_quorum(|peer| peer == id || progress.get(&peer).is_some_and(|p| p.recent_active));
        for pr in self.progress.values_mut() {
            pr.recent_active = false;
        }
        active
    }

    /// A node campaigns only while it is a voter of its own membership.
    fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// Starts an election now, as if the election timeout had fired.
    /// Does nothing inside a leader's lease (check-quorum on and a leader
    /// heard from within the election timeout): this node may have
    /// acknowledged that lease, a promise to vote for nobody, itself
    /// included, until it runs out. Moving leadership away from a live
    /// leader is `transfer_leader`'s job, which voids the lease first.
    pub fn campaign(&mut self) {
        if !self.promotable() || self.role == Role::Leader || self.in_leader_lease() {
            return;
        }
        self.start_election();
    }

    fn start_election(&mut self) {
        if !self.membership_settled() {
            return;
        }
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Whether every committed membership change is in force here. A change
    /// takes effect when it is handed out, which waits for this node's own
    /// copy to be durable; until then the membership in force may be one
    /// the cluster has left, and an election counted by it could find a
    /// majority disjoint from the one that now decides.
    fn membership_settled(&self) -> bool {
        (self.conf_applied + 1..=self.log.committed).all(|index| {
            self.log
                .entry(index)
                .map_or(true, |entry| entry.kind != EntryKind::ConfChange)
        })
    }

    fn become_pre_candidate(&mut self) {
        self.fail_reads();
        self.quiescent = false;
        self.role = Role::PreCandidate;
        self.leader = NO_NODE;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.fail_reads();
        self.quiescent = false;
        self.term += 1;
        self.vote = self.id;
        self.role = Role::Candidate;
        self.leader = NO_NODE;
        self.votes.clear();
        self.self_vote_unsent = true;
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    /// Asks every other voter for its (pre-)vote. A pre-candidate counts its
    /// own pre-vote at once (it changes no state); a candidate's own vote
    /// counts when it is durable (see [`PendingPersist`]).
    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .membership
            .members()
            .filter(|&id| id != self.id && self.membership.is_voter(id))
            .collect();
        let term = if pre_vote { self.term + 1 } else { self.term };
        for to in voters {
            let body = if pre_vote {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            };
            let msg = Message {
                from: self.id,
                to,
                term,
                body,
            };
            if pre_vote {
                // A pre-vote changes no state, so nothing needs to be durable.
                self.messages.push(msg);
            } else {
                // The request commits this node to `term`: if it left before
                // the term was durable, the node could win, crash, forget the
                // term, win it again and append different entries at the
                // same (index, term) as its first leadership did.
                self.persisted_messages.push(msg);
            }
        }
        if pre_vote {
            self.record_vote(self.id, true);
        }
    }

    /// Counts one (pre-)vote and acts on the outcome.
    fn record_vote(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
        match self.membership.vote_result(&self.votes) {
            VoteResult::Won if self.role == Role::PreCandidate => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => {}
        }
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        self.fail_reads();
        self.quiescent = false;
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.self_vote_unsent = false;
        self.broadcast_pending = false;
        self.lead_transferee = NO_NODE;
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.quiescent = false;
        self.idle_ticks = 0;
        self.leader = self.id;
        self.drop_lease();
        self.lease_revoked = false;
        self.votes.clear();
        self.reset_election_timer();
        let next = self.log.last_index() + 1;
        let (max_msgs, max_bytes) = (
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        );
        self.progress = self
            .membership
            .members()
            .filter(|&id| id != self.id)
            .map(|id| (id, Progress::new(next, max_msgs, max_bytes)))
            .collect();
        // Uncommitted entries may hold a membership change this leader
        // cannot see yet; no new change until all of them are applied.
        self.pending_conf_index = self.log.last_index();
        self.leaving_at = self.own_removal_in_log();
        // Entries of earlier terms commit only through an entry of this
        // term; the no-op lets them commit without waiting for a proposal.
        self.append_entry(EntryKind::Noop, Payload::default());
        self.broadcast_append();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = u64::from(self.config.election_tick);
        self.randomized_election_timeout = self.rng.range(base, 2 * base) as u32;
    }

    /// Takes one message received from a peer.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        self.validate(&msg)?;
        // Anything but a late acknowledgement or a check-in means there is
        // work (or a candidate that must hear from its leader).
        if !matches!(
            msg.body,
            MessageBody::HeartbeatResponse { .. }
                | MessageBody::AppendResponse { reject: false, .. }
                | MessageBody::WakeUp
        ) {
            self.wake();
        }
        if msg.term > self.term {
            if !self.adopt_higher_term(&msg) {
                return Ok(());
            }
        } else if msg.term < self.term {
            self.answer_stale_term(&msg);
            return Ok(());
        }
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(msg.from, msg.term, last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(msg.from, msg.term, last_index, last_term, false),
            MessageBody::PreVoteResponse { reject } => {
                if self.role == Role::PreCandidate && msg.term == self.term + 1 {
                    self.record_vote(msg.from, !reject);
                }
            }
            MessageBody::VoteResponse { reject } => {
                if self.role == Role::Candidate {
                    self.record_vote(msg.from, !reject);
                }
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.follow(msg.from)?;
                self.handle_append(msg.from, prev_index, prev_term, entries, commit)?;
            }
            MessageBody::Heartbeat { commit, context } => {
                self.follow(msg.from)?;
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(msg.from, MessageBody::HeartbeatResponse { context });
            }
            MessageBody::Quiesce { commit } => {
                self.follow(msg.from)?;
                self.log.commit_to(commit.min(self.log.last_index()));
                self.quiescent = true;
            }
            MessageBody::WakeUp => {
                // A quiet leader answers a follower's check-in with its
                // `Quiesce` again: that shows it is there, and puts the
                // follower back to sleep without waking the group.
                if self.role == Role::Leader && self.quiescent {
                    let commit = self.log.committed;
                    self.send(msg.from, MessageBody::Quiesce { commit });
                }
            }
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } => {
                if self.role == Role::Leader {
                    self.handle_append_response(msg.from, reject, index, hint_index, hint_term)?;
                }
            }
            MessageBody::HeartbeatResponse { context } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(msg.from);
                    self.renew_lease(msg.from, context);
                    self.confirm_reads(msg.from, context);
                }
            }
            MessageBody::TimeoutNow => {
                if self.promotable() && self.role != Role::Leader && self.membership_settled() {
                    self.become_candidate(true);
                }
            }
            MessageBody::ReadIndex { context } => {
                let request = ReadRequest {
                    context,
                    requester: msg.from,
                };
                if self.role == Role::Leader {
                    self.start_read(request);
                } else {
                    self.refuse_read(request);
                }
            }
            MessageBody::ReadIndexResponse {
                index,
                context,
                reject,
            } => {
                if let Some(at) = self.forwarded_reads.iter().position(|&c| c == context) {
                    self.forwarded_reads.swap_remove(at);
                    let result = if reject {
                        Err(ReadError::Refused)
                    } else {
                        Ok(index)
                    };
                    self.read_states.push(ReadState { context, result });
                }
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                total_len,
                checksum,
                data,
            } => {
                self.follow(msg.from)?;
                if meta.index <= self.log.committed {
                    // Nothing to install: tell the leader how far we are.
                    let committed = self.log.committed;
                    self.reply_append(msg.from, false, committed, 0, 0);
                } else {
                    self.snapshot_chunks.push(SnapshotChunk {
                        from: msg.from,
                        term: msg.term,
                        meta,
                        offset,
                        total_len,
                        checksum,
                        data,
                    });
                }
            }
            // Chunk flow control belongs to whoever streams the snapshot;
            // the core only checks the term (above) and the role.
            MessageBody::InstallSnapshotResponse {
                index,
                next_offset,
                reject,
            } => {
                if self.role == Role::Leader {
                    self.snapshot_responses.push(SnapshotResponse {
                        from: msg.from,
                        index,
                        next_offset,
                        reject,
                    });
                }
            }
        }
        Ok(())
    }

    /// Structural checks that do not depend on the node's state.
    fn validate(&self, msg: &Message) -> Result<(), StepError> {
        if msg.to != self.id {
            return Err(StepError::WrongRecipient(msg.to));
        }
        if msg.from == NO_NODE || msg.from == self.id {
            return Err(StepError::Invalid("sender is node 0 or this node itself"));
        }
        if msg.term == 0 {
            return Err(StepError::Invalid("term 0"));
        }
        msg.check_ceilings().map_err(StepError::Invalid)?;
        // A node hears from whoever leads, and answers whoever campaigns,
        // member or not: a joining node knows no membership yet, and one
        // that lags behind may not know of a leader or a candidate added
        // since (and may be needed for their quorum). Who asks does not
        // matter for safety; pre-vote and check-quorum keep a removed node
        // from disturbing the cluster. Anything else from a stranger is
        // refused once the node knows a membership.
        let from_leader_or_candidate = matches!(
            msg.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Quiesce { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::PreVote { .. }
                | MessageBody::Vote { .. }
        );
        if !from_leader_or_candidate
            && !self.membership.is_empty()
            && !self.membership.contains(msg.from)
        {
            return Err(StepError::UnknownSender(msg.from));
        }
        if let MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            ..
        } = &msg.body
        {
            check_entry_sequence(*prev_index, *prev_term, msg.term, entries)
                .map_err(StepError::Invalid)?;
        }
        if let MessageBody::InstallSnapshot {
            meta,
            offset,
            total_len,
            data,
            ..
        } = &msg.body
        {
            check_snapshot_chunk(meta, *offset, *total_len, data.len(), msg.term)
                .map_err(StepError::Invalid)?;
        }
        Ok(())
    }

    /// Handles a message from a higher term. Returns false when the message
    /// must be dropped instead.
    fn adopt_higher_term(&mut self, msg: &Message) -> bool {
        match msg.body {
            MessageBody::PreVote { .. }
            | MessageBody::Vote {
                transfer: false, ..
            } if self.in_leader_lease() => {
                // A leader was heard from within the election timeout: this
                // candidate is disruptive (check-quorum makes that a lease).
                false
            }
            // A pre-vote request changes nothing; a granted pre-vote carries
            // the term the candidate would campaign in.
            MessageBody::PreVote { .. } => true,
            MessageBody::PreVoteResponse { reject: false } => true,
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(msg.term, msg.from);
                true
            }
            _ => {
                self.become_follower(msg.term, NO_NODE);
                true
            }
        }
    }

    /// A quiescent node counts its leader as heard from for as long as it
    /// is quiet (see `quiesce`).
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader != NO_NODE
            && (self.quiescent || self.election_elapsed < self.config.election_tick)
    }

    /// A message from an earlier term is dropped, but a stale leader or a
    /// stale pre-candidate is told the current term so it stands down
    /// instead of being stuck forever.
    fn answer_stale_term(&mut self, msg: &Message) {
        match msg.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Quiesce { .. }
                if self.config.check_quorum || self.config.pre_vote =>
            {
                self.send(
                    msg.from,
                    MessageBody::AppendResponse {
                        reject: false,
                        index: 0,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(msg.from, MessageBody::PreVoteResponse { reject: true });
            }
            _ => {}
        }
    }

    /// A leader of the current term was heard from.
    fn follow(&mut self, leader: NodeId) -> Result<(), StepError> {
        if self.role == Role::Leader {
            return Err(StepError::Invalid("another leader claims this node's term"));
        }
        if self.role != Role::Follower || self.leader != leader {
            self.become_follower(self.term, leader);
        }
        self.election_elapsed = 0;
        self.campaign_for_log = false;
        self.quiescent = false;
        Ok(())
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: Term,
        last_index: Index,
        last_term: Term,
        pre_vote: bool,
    ) {
        let can_vote = self.vote == from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre_vote && msg_term > self.term);
        // Who asks does not matter for safety (the candidate counts only its
        // own voters' answers), and a node that has not caught up with the
        // membership yet, a joining one above all, must still be able to
        // vote, or a cluster whose quorum needs it could never elect.
        let grant = can_vote && self.log.is_up_to_date(last_index, last_term);
        if grant && !pre_vote {
            self.vote = from;
            self.election_elapsed = 0;
        }
        // A granted pre-vote answers in the candidate's future term; a
        // refusal tells it ours.
        let term = if grant { msg_term } else { self.term };
        let body = if pre_vote {
            MessageBody::PreVoteResponse { reject: !grant }
        } else {
            MessageBody::VoteResponse { reject: !grant }
        };
        self.persisted_messages.push(Message {
            from: self.id,
            to: from,
            term,
            body,
        });
        if can_vote && !grant && self.holds_what_voters_lack() {
            // See `holds_what_voters_lack`. Not at once: the election timer
            // runs from this request (a higher term resets it), as for
            // any campaign.
            self.campaign_for_log = true;
        }
    }

    /// Whether this node should campaign because it just refused its vote
    /// to a candidate for lacking entries this node holds, while this node
    /// is a voter of no configuration in force here (it was removed, or
    /// made a learner) and has heard from no leader for an election
    /// timeout. That candidate still decides by a membership in
    /// which this node votes (it has not applied the change that removed
    /// it), so it may need this node's vote to win; and this node must
    /// refuse it: a leader deciding by that membership may have counted
    /// this node's acknowledgement of those entries. If no voter holds
    /// them (their leader lost them in a crash, say), only a node that does
    /// can still get that candidate's membership moving.
    ///
    /// So it campaigns in the membership in force here, though it is not
    /// one of its voters: it wins only with a quorum of those voters, as
    /// any candidate deciding by that membership would. As leader it takes
    /// no proposal, counts only those voters toward commits, and steps down
    /// once an entry of its term commits (see `ready`), having sent the
    /// commit index, and with it the change that removed this node, to the
    /// voters that had not learned it.
    fn holds_what_voters_lack(&self) -> bool {
        !self.promotable()
            && !self.membership.is_empty()
            && self.role == Role::Follower
            && (self.leader == NO_NODE || self.election_elapsed >= self.config.election_tick)
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<(), StepError> {
        if prev_index < self.log.committed {
            // Everything up to the commit point already matches.
            let index = self.log.committed;
            self.reply_append(from, false, index, 0, 0);
            return Ok(());
        }
        match self.log.maybe_append(prev_index, prev_term, entries) {
            AppendOutcome::Matched(last_new) => {
                self.log.commit_to(commit.min(last_new));
                self.reply_append(from, false, last_new, 0, 0);
            }
            AppendOutcome::Mismatch => {
                let probe = prev_index.min(self.log.last_index());
                let (hint_index, hint_term) = self.log.find_conflict_by_term(probe, prev_term);
                self.reply_append(from, true, prev_index, hint_index, hint_term);
            }
            AppendOutcome::ConflictsWithCommitted => {
                return Err(StepError::Invalid("append contradicts a committed entry"));
            }
        }
        Ok(())
    }

    /// Append responses promise durability, so they leave after the persist.
    fn reply_append(
        &mut self,
        to: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        self.persisted_messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body: MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            },
        });
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) -> Result<(), StepError> {
        if index > self.log.last_index() {
            return Err(StepError::Invalid("response names an index beyond the log"));
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        if reject {
            let (conflict, _) = self.log.find_conflict_by_term(hint_index, hint_term);
            if pr.refuse(index, conflict + 1) {
                self.send_append(from, false);
            }
            return Ok(());
        }
        if pr.acknowledge(index) {
            let snapshot_done =
                matches!(pr.state, ProgressState::Snapshot { pending } if pr.matched >= pending);
            if pr.state == ProgressState::Probe || snapshot_done {
                pr.become_replicate();
            }
            if from == self.lead_transferee && pr.matched == self.log.last_index() {
                self.send_timeout_now(from);
            }
            if self.maybe_commit() {
                self.broadcast_append();
                return Ok(());
            }
        }
        // Keep the pipeline full.
        while self.send_append(from, false) {}
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, from: NodeId) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.matched < last_index {
            // Even with nothing new to send: if the appends in flight were
            // lost, the follower refuses this one and probing starts over.
            self.send_append(from, true);
        }
    }

    /// Advances the commit index to what a quorum has made durable, if that
    /// entry is of this term. Returns true when it moved.
    fn maybe_commit(&mut self) -> bool {
        let (id, persisted) = (self.id, self.log.persisted);
        let progress = &self.progress;
        let quorum_index = self.membership.committed_index(|peer| {
            if peer == id {
                persisted
            } else {
                progress.get(&peer).map_or(0, |p| p.matched)
            }
        });
        if !self.log.maybe_commit(quorum_index, self.term) {
            return false;
        }
        // The first commit of this term makes read indexes trustworthy.
        for request in std::mem::take(&mut self.reads_awaiting_commit) {
            self.start_read(request);
        }
        true
    }

    /// Sends `to` the next append its progress allows. An append without
    /// entries goes out only to probe for the match point, to carry a commit
    /// index the follower can use (see `commit_broadcast_bound`), or when
    /// `send_if_empty`. Returns true when a message with entries was sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let last_index = self.log.last_index();
        let committed = self.log.committed;
        let commit_bound = self.commit_broadcast_bound();
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            // The entries this follower needs were compacted away; it must
            // catch up from a snapshot.
            let snapshot_index = self.log.snapshot_index();
            pr.become_snapshot(snapshot_index);
            let meta = self.snapshot_meta();
            self.snapshots_to_send.push((to, meta));
            return false;
        };
        let entries = if pr.next <= last_index {
            match self
                .log
                .slice(pr.next, last_index + 1, self.config.max_msg_bytes)
            {
                Ok(entries) => entries,
                Err(error) => {
                    // Nothing goes to this follower now; the next heartbeat
                    // response or acknowledgement tries again.
                    self.record_log_read_error(error);
                    return false;
                }
            }
        } else {
            Vec::new()
        };
        let worth_sending = !entries.is_empty()
            || send_if_empty
            || pr.state == ProgressState::Probe
            || (pr.sent_commit < commit_bound && pr.can_bump_commit(committed));
        if !worth_sending {
            return false;
        }
        let bytes: u64 = entries.iter().map(Entry::size).sum();
        let has_entries = !entries.is_empty();
        let last_sent = prev_index + entries.len() as Index;
        pr.sent_append(last_sent, bytes, entries.len());
        pr.sent_commit = pr.sent_commit.max(committed.min(last_sent));
        let term = self.term;
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body: MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit: committed,
            },
        });
        has_entries
    }

    /// A follower last told a commit index below this one is sent a new
    /// one in an append of its own: every follower, unless the config
    /// skips commit broadcasts (`Config::skip_commit_broadcast`). Even
    /// then, followers must learn promptly that a membership change
    /// committed, to put it in force too: all of them while a change is
    /// not in force here (a leader removing itself steps down once it is,
    /// and heartbeats no more), and afterwards those told less than the
    /// latest change in force (or the snapshot, which may hold one), such
    /// as a follower that received the change only after it committed.
    /// And a leader that votes in no configuration steps down as soon as
    /// an entry of its term commits, so its appends are the voters' only
    /// news of the commit it was elected to make (see
    /// `holds_what_voters_lack`).
    fn commit_broadcast_bound(&self) -> Index {
        if !self.config.skip_commit_broadcast
            || self.pending_conf_index > self.conf_applied
            || !self.membership.is_voter(self.id)
        {
            return Index::MAX;
        }
        self.conf_history.last().map_or(0, |&(at, _)| at)
    }

    fn broadcast_append(&mut self) {
        self.broadcast_pending = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to, false);
        }
    }

    fn broadcast_heartbeat(&mut self, context: u64) {
        let committed = self.log.committed;
        let beats: Vec<(NodeId, Index)> = self
            .progress
            .iter_mut()
            .map(|(&id, pr)| {
                let commit = pr.matched.min(committed);
                pr.sent_commit = pr.sent_commit.max(commit);
                (id, commit)
            })
            .collect();
        for (to, commit) in beats {
            self.send(to, MessageBody::Heartbeat { commit, context });
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    fn append_entry(&mut self, kind: EntryKind, data: Payload) -> (Index, Term) {
        let index = self.log.last_index() + 1;
        self.log.append(vec![Entry {
            index,
            term: self.term,
            kind,
            data,
        }]);
        (index, self.term)
    }

    /// Appends `data` to the log if this node is the leader; returns the
    /// index and term it was given. It is committed once it is applied with
    /// that same term at that index.
    pub fn propose(&mut self, data: impl Into<Payload>) -> Result<(Index, Term), ProposeError> {
        self.wake();
        let data = data.into();
        self.check_proposal(data.len())?;
        Ok(self.append_proposal(EntryKind::Normal, data))
    }

    /// Proposes a membership change; it is put into force on each node
    /// when it commits there. Only one change may be pending at a time.
    pub fn propose_conf_change(
        &mut self,
        change: &ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        self.wake();
        let encoded = change.encode();
        self.check_proposal(encoded.len())?;
        if self.pending_conf_index > self.conf_applied {
            return Err(ProposeError::ConfChangePending);
        }
        self.membership
            .apply(change)
            .map_err(ProposeError::ConfChange)?;
        if let ConfChange::AddVoter(id) | ConfChange::PromoteLearner(id) = *change {
            let matched = self.progress.get(&id).map_or(0, |p| p.matched);
            if self.membership.is_learner(id) && matched < self.log.committed {
                return Err(ProposeError::LearnerBehind {
                    matched,
                    commit: self.log.committed,
                });
            }
        }
        let placed = self.append_proposal(EntryKind::ConfChange, encoded.into());
        self.pending_conf_index = placed.0;
        self.leaving_at = self.own_removal_in_log();
        Ok(placed)
    }

    fn check_proposal(&self, size: usize) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee != NO_NODE {
            return Err(ProposeError::TransferInProgress);
        }
        if self.leaving_at > self.conf_applied || !self.membership.is_voter(self.id) {
            return Err(ProposeError::LeaderLeaving);
        }
        let size = size as u64;
        if size > self.config.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                size,
                limit: self.config.max_entry_bytes,
            });
        }
        Ok(())
    }

    /// The index of the first membership change not yet in force whose
    /// membership has this node as a voter of no configuration, or 0 (see
    /// `leaving_at`).
    fn own_removal_in_log(&self) -> Index {
        let mut membership = self.membership.clone();
        for index in self.conf_applied + 1..=self.log.last_index() {
            let entry = self
                .log
                .entry(index)
                .expect("entries not in force are held");
            if let Some(next) = membership_after(&membership, entry) {
                if !next.is_voter(self.id) {
                    return index;
                }
                membership = next;
            }
        }
        0
    }

    fn append_proposal(&mut self, kind: EntryKind, data: Payload) -> (Index, Term) {
        let placed = self.append_entry(kind, data);
        // Appends for every proposal since the last ready go out together.
        self.broadcast_pending = true;
        placed
    }

    /// Puts the membership changes among `committed` into force. Returns
    /// true when the membership changed.
    fn apply_committed_conf_changes(&mut self, committed: &[Entry]) -> bool {
        let in_force = self.conf_applied;
        let mut changed = false;
        for e in committed.iter().filter(|e| e.index > in_force) {
            if let Some(next) = membership_after(&self.membership, e) {
                self.membership = next;
                self.conf_history.push((e.index, self.membership.clone()));
                changed = true;
            }
            self.conf_applied = e.index;
        }
        if !changed {
            return false;
        }
        if self.role == Role::Leader {
            if !self.membership.is_voter(self.id) {
                // Removed: the change is committed, so the cluster can go on
                // without this node.
                self.become_follower(self.term, NO_NODE);
            } else {
                self.track_members();
                self.maybe_commit();
                // New members hear from the leader at once; everyone learns
                // a commit index that the new quorum may have moved.
                self.broadcast_pending = true;
            }
        }
        true
    }

    /// Brings the leader's progress table in line with the membership.
    fn track_members(&mut self) {
        let next = self.log.last_index() + 1;
        let (max_msgs, max_bytes) = (
            self.config.max_inflight_msgs,
            self.config.max_inflight_bytes,
        );
        let members: BTreeSet<NodeId> = self
            .membership
            .members()
            .filter(|&id| id != self.id)
            .collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            self.progress.entry(id).or_insert_with(|| {
                // A new member counts as active until the next check-quorum
                // pass, or a leader whose quorum now needs it could step
                // down before it had a chance to answer.
                let mut pr = Progress::new(next, max_msgs, max_bytes);
                pr.recent_active = true;
                pr
            });
        }
        if !self.membership.is_voter(self.lead_transferee) {
            self.lead_transferee = NO_NODE;
        }
    }

    /// A joint configuration with auto-leave is left as soon as it is
    /// applied; a new leader leaves once every entry it inherited is.
    fn leave_joint_due(&self) -> bool {
        // A leader that votes in neither half (see `holds_what_voters_lack`)
        // takes no proposal, this one included.
        self.role == Role::Leader
            && self.promotable()
            && self.membership.is_joint()
            && self.membership.auto_leave()
            && self.pending_conf_index <= self.conf_applied
    }

    fn maybe_leave_joint(&mut self) {
        if self.leave_joint_due() {
            let (index, _) = self.append_proposal(EntryKind::ConfChange, Payload::default());
            self.pending_conf_index = index;
            self.leaving_at = self.own_removal_in_log();
        }
    }

    /// The metadata of the latest snapshot: its index, term and the
    /// membership in force at that index.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.meta_at(self.log.snapshot_index())
    }

    /// The term and membership at `index` (at or after the snapshot, at or
    /// before `conf_applied`).
    fn meta_at(&self, index: Index) -> SnapshotMeta {
        SnapshotMeta {
            index,
            term: self.log.term(index).unwrap_or(self.snapshot_term),
            conf_state: self.membership_at(index).conf_state(),
        }
    }

    /// The membership in force right after `index` (which is at or after
    /// the snapshot and at or before `conf_applied`).
    fn membership_at(&self, index: Index) -> &Membership {
        self.conf_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or(&self.membership, |(_, m)| m)
    }

    /// The metadata a snapshot of the state machine at `index` would have:
    /// its term and the membership in force there. `index` must be applied
    /// (a snapshot covers only applied entries) and later than the latest
    /// snapshot.
    pub fn snapshot_meta_at(&self, index: Index) -> Result<SnapshotMeta, CompactError> {
        if index > self.log.applied {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        if index <= self.log.snapshot_index() {
            return Err(CompactError::AlreadyCompacted {
                snapshot_index: self.log.snapshot_index(),
            });
        }
        Ok(self.meta_at(index))
    }

    /// The host saved a snapshot of its state machine covering every entry
    /// through `index`, which it has applied. Returns the snapshot's
    /// metadata, for the host to record durably. Entries before
    /// `index - compact_keep_entries` are dropped from memory; those are
    /// the entries the host may drop from its log too.
    pub fn compact(&mut self, index: Index) -> Result<SnapshotMeta, CompactError> {
        self.snapshot_meta_at(index)?;
        let keep_from = (index + 1).saturating_sub(self.config.compact_keep_entries);
        self.log.compact(index, keep_from);
        let meta = self.snapshot_meta();
        self.snapshot_term = meta.term;
        // The history before the snapshot is no longer needed, except the
        // membership in force at the snapshot itself.
        let keep = self
            .conf_history
            .iter()
            .rposition(|(at, _)| *at <= index)
            .unwrap_or(0);
        self.conf_history.drain(..keep);
        Ok(meta)
    }

    /// Drops the entries the last compaction kept behind the snapshot
    /// (`compact_keep_entries`), as if it had kept none; returns how many
    /// went. A follower that needed them is sent the snapshot instead.
    pub fn drop_kept_entries(&mut self) -> u64 {
        let index = self.log.snapshot_index();
        let first = self.log.first_index();
        if index == 0 || first > index {
            return 0;
        }
        self.log.compact(index, index + 1);
        index + 1 - first
    }

    /// The first index the host still needs in its durable log: entries
    /// before it are covered by the snapshot and no longer kept in memory.
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The host holds, durably and verified, the whole snapshot `meta`
    /// that the leader streamed (see [`Ready::snapshot_chunks`]). Returns
    /// true when it was installed: the next ready batch carries it in
    /// [`Ready::snapshot`]. Returns false when it is not needed (stale, or
    /// this node's log already holds its last entry, in which case the log
    /// is kept and just committed through it).
    pub fn restore(&mut self, meta: SnapshotMeta) -> bool {
        if self.role == Role::Leader || meta.index <= self.log.committed {
            return false;
        }
        // A snapshot without voters would leave this node unable ever to
        // campaign or count a quorum; it cannot come from a real cluster.
        if meta.conf_state.voters.is_empty() {
            return false;
        }
        if self.log.matches(meta.index, meta.term) {
            self.log.commit_to(meta.index);
            return false;
        }
        let Ok(membership) = Membership::from_conf_state(&meta.conf_state) else {
            return false;
        };
        if self.role != Role::Follower {
            // A campaign's votes were asked for the log and counted by the
            // membership this node had: both are gone. It follows instead,
            // and the leader that sent the snapshot is heard from next.
            self.become_follower(self.term, NO_NODE);
        }
        self.log.restore(meta.index, meta.term);
        self.membership = membership.clone();
        self.conf_applied = meta.index;
        self.conf_history = vec![(meta.index, membership)];
        self.snapshot_term = meta.term;
        if self.leader != NO_NODE {
            let leader = self.leader;
            self.reply_append(leader, false, meta.index, 0, 0);
        }
        self.installed_snapshot = Some(meta);
        true
    }

    /// The host finished (or gave up) sending a snapshot to `peer`. Either
    /// way the leader then probes the peer right after the snapshot, once a
    /// heartbeat response shows the peer is there: a peer that installed it
    /// accepts, one that did not refuses and is sent a snapshot anew. So a
    /// transfer that silently failed never leaves the peer waiting forever.
    pub fn report_snapshot(&mut self, peer: NodeId, success: bool) {
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if let ProgressState::Snapshot { pending } = pr.state {
            pr.become_probe();
            if success {
                pr.next = pending + 1;
            }
            pr.probe_sent = true;
        }
    }

    /// Leader: the snapshot index `peer` waits for, while it must catch up
    /// from a snapshot (between the core asking for the transfer in
    /// [`Ready::snapshots_to_send`] and the peer installing it or the
    /// transfer being reported).
    pub fn snapshot_pending(&self, peer: NodeId) -> Option<Index> {
        match self.progress.get(&peer)?.state {
            ProgressState::Snapshot { pending } if self.role == Role::Leader => Some(pending),
            _ => None,
        }
    }

    /// The transport could not deliver to `peer`. A leader stops streaming
    /// to it and probes instead, so that nothing piles up for a peer that
    /// is down.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if self.quiescent && self.role == Role::Follower && peer == self.leader {
            // The leader may be gone: run the election timer again rather
            // than wait for the slow check-in.
            self.quiescent = false;
            self.reset_election_timer();
            return;
        }
        if let Some(pr) = self.progress.get_mut(&peer) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// Hands leadership to `to`: proposals are refused meanwhile; `to` is
    /// brought up to date and told to campaign at once. The transfer is
    /// abandoned if `to` has not taken over within an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), TransferError> {
        self.wake();
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || to == self.lead_transferee {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        self.lead_transferee = to;
        self.transfer_ticks = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.matched == self.log.last_index());
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.send_append(to, false);
        }
        Ok(())
    }

    /// Tells the transfer's target to campaign now. Its votes pass through
    /// every lease, so this node's lease is void for the rest of its term.
    fn send_timeout_now(&mut self, to: NodeId) {
        self.lease_revoked = true;
        self.drop_lease();
        self.send(to, MessageBody::TimeoutNow);
    }

    /// Asks for a linearizable read point for `context` (chosen by the
    /// host, unique among its outstanding reads). The outcome arrives as a
    /// [`ReadState`] in a later ready batch. A follower forwards the request
    /// to the leader.
    pub fn read_index(&mut self, context: u64) -> Result<(), ReadError> {
        self.wake();
        let request = ReadRequest {
            context,
            requester: self.id,
        };
        match self.role {
            Role::Leader => self.start_read(request),
            Role::Follower if self.leader != NO_NODE => {
                if self.forwarded_reads.len() >= MAX_READS_IN_PROGRESS {
                    return Err(ReadError::Busy);
                }
                self.forwarded_reads.push(context);
                self.send(self.leader, MessageBody::ReadIndex { context });
            }
            _ => return Err(ReadError::NoLeader),
        }
        Ok(())
    }

    /// Leader: the read is served at the current commit index once a quorum
    /// confirms, after the request arrived, that this node still leads.
    /// One heartbeat round is in flight for reads at a time: reads that
    /// arrive meanwhile share the next round, sent once that one is
    /// confirmed or with the next heartbeat, so a burst of reads costs a
    /// round per round trip rather than a heartbeat to every peer per read.
    fn start_read(&mut self, request: ReadRequest) {
        if self.reads_awaiting_commit.len() + self.pending_reads.len() >= MAX_READS_IN_PROGRESS {
            self.complete_read(request, Err(ReadError::Busy));
            return;
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            // Until an entry of this term commits, the commit index may lag
            // behind what earlier leaders committed.
            self.reads_awaiting_commit.push(request);
            return;
        }
        let index = self.log.committed;
        if self.config.lease_reads && self.ticks < self.lease_until {
            self.complete_read(request, Ok(index));
            return;
        }
        self.pending_reads.push_back(PendingRead {
            round: 0,
            request,
            index,
            acks: BTreeSet::new(),
        });
        self.release_confirmed_reads();
    }

    /// A heartbeat response to round `round` confirms every read of that
    /// round and earlier ones.
    fn confirm_reads(&mut self, from: NodeId, round: u64) {
        if round == 0 {
            return;
        }
        for read in self.pending_reads.iter_mut() {
            if read.round == 0 || read.round > round {
                break;
            }
            read.acks.insert(from);
        }
        self.release_confirmed_reads();
    }

    /// Completes the reads a quorum confirmed, and sends the round for
    /// those that waited for one once none is in flight.
    fn release_confirmed_reads(&mut self) {
        let id = self.id;
        while let Some(read) = self.pending_reads.front() {
            if read.round == 0 {
                // None in flight: send one (a lone voter is its own quorum
                // and confirms it at once, below).
                self.broadcast_read_round();
                continue;
            }
            if !self
                .membership
                .has_quorum(|peer| peer == id || read.acks.contains(&peer))
            {
                break;
            }
            let read = self.pending_reads.pop_front().expect("front exists");
            self.complete_read(read.request, Ok(read.index));
        }
    }

    fn complete_read(&mut self, request: ReadRequest, result: Result<Index, ReadError>) {
        if request.requester == self.id {
            self.read_states.push(ReadState {
                context: request.context,
                result,
            });
        } else {
            self.send(
                request.requester,
                MessageBody::ReadIndexResponse {
                    index: result.unwrap_or(0),
                    context: request.context,
                    reject: result.is_err(),
                },
            );
        }
    }

    fn refuse_read(&mut self, request: ReadRequest) {
        self.complete_read(request, Err(ReadError::Refused));
    }

    /// Fails every read in progress: leadership (or the leader this node
    /// forwards to) is changing.
    fn fail_reads(&mut self) {
        let pending: Vec<ReadRequest> = self
            .reads_awaiting_commit
            .drain(..)
            .chain(self.pending_reads.drain(..).map(|r| r.request))
            .collect();
        for request in pending {
            self.complete_read(request, Err(ReadError::LeadershipLost));
        }
        for context in std::mem::take(&mut self.forwarded_reads) {
            self.read_states.push(ReadState {
                context,
                result: Err(ReadError::LeadershipLost),
            });
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
        }
    }

    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft
            || self.hard_state() != self.last_hard
            || self.broadcast_pending
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || self.log.has_unstable()
            || (self.log.has_committed_to_apply() && !self.apply_read_failed)
            || self.leave_joint_due()
            || self.installed_snapshot.is_some()
            || !self.snapshots_to_send.is_empty()
            || !self.snapshot_chunks.is_empty()
            || !self.snapshot_responses.is_empty()
    }

    /// Takes the pending batch of work (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
        self.maybe_leave_joint();
        if self.role == Role::Leader
            && !self.membership.is_voter(self.id)
            && self.log.term(self.log.committed) == Some(self.term)
        {
            // A leader that votes in no configuration (see
            // `holds_what_voters_lack`) has done its job once an entry of
            // its term commits: the appends carrying that commit index
            // leave with this batch.
            if self.broadcast_pending {
                self.broadcast_append();
            }
            self.become_follower(self.term, NO_NODE);
        }
        let committed_entries = if self.apply_read_failed {
            Vec::new()
        } else {
            match self.log.take_committed(self.config.max_apply_bytes) {
                Ok(entries) => entries,
                Err(error) => {
                    self.record_log_read_error(error);
                    self.apply_read_failed = true;
                    Vec::new()
                }
            }
        };
        let conf_changed = self.apply_committed_conf_changes(&committed_entries);
        if self.broadcast_pending {
            self.broadcast_append();
        }
        self.ready_number += 1;
        let soft = self.soft_state();
        let hard = self.hard_state();
        let entries = self.log.take_unstable();
        let pending = PendingPersist {
            number: self.ready_number,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            self_vote_term: std::mem::take(&mut self.self_vote_unsent).then_some(self.term),
        };
        if pending.last_entry.is_some() || pending.self_vote_term.is_some() {
            self.pending_persists.push_back(pending);
        }
        let snapshot = self.installed_snapshot.take();
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || (hard.term, hard.vote) != (self.last_hard.term, self.last_hard.vote);
        let ready = Ready {
            number: self.ready_number,
            soft_state: (soft != self.last_soft).then_some(soft),
            hard_state: (hard != self.last_hard).then_some(hard),
            must_sync,
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            conf_state: conf_changed.then(|| self.membership.conf_state()),
            snapshot,
            snapshots_to_send: std::mem::take(&mut self.snapshots_to_send),
            snapshot_chunks: std::mem::take(&mut self.snapshot_chunks),
            snapshot_responses: std::mem::take(&mut self.snapshot_responses),
        };
        self.last_soft = soft;
        self.last_hard = hard;
        self.evict_beyond_cap();
        ready
    }

    /// The host made batch `ready_number` (and every batch before it)
    /// durable. Unknown or repeated numbers are ignored.
    pub fn on_persisted(&mut self, ready_number: u64) {
        while let Some(front) = self.pending_persists.front() {
            if front.number > ready_number {
                break;
            }
            let done = self.pending_persists.pop_front().expect("front exists");
            if let Some((index, term)) = done.last_entry {
                self.log.persisted_to(index, term);
            }
            if done.self_vote_term == Some(self.term) && self.role == Role::Candidate {
                self.record_vote(self.id, true);
            }
        }
        if self.role == Role::Leader && self.maybe_commit() {
            self.broadcast_append();
        }
        self.evict_beyond_cap();
    }

    /// The host applied every committed entry through `index`.
    pub fn on_applied(&mut self, index: Index) {
        self.log.applied_to(index);
    }
}

/// The membership a committed entry puts in force, or `None` when it
/// changes nothing: any entry but a membership change, a change that
/// leaves the membership as it is, and a change that does not decode or
/// cannot apply (every node skips the same committed entries, so they stay
/// in agreement).
fn membership_after(membership: &Membership, entry: &Entry) -> Option<Membership> {
    if entry.kind != EntryKind::ConfChange {
        return None;
    }
    ConfChange::decode(&entry.data)
        .and_then(|change| membership.apply(&change).ok())
        .filter(|next| next != membership)
}

/// Checks that a snapshot chunk describes itself consistently: the bytes it
/// carries lie within the snapshot, and the snapshot is a real point of the
/// log (index and term above zero, term no later than the sender's) with
/// at least one voter.
fn check_snapshot_chunk(
    meta: &SnapshotMeta,
    offset: u64,
    total_len: u64,
    chunk_len: usize,
    sender_term: Term,
) -> Result<(), &'static str> {
    let end = offset.checked_add(chunk_len as u64);
    if !matches!(end, Some(end) if end <= total_len) {
        return Err("snapshot chunk lies outside the snapshot");
    }
    if meta.index == 0 || meta.term == 0 || meta.term > sender_term {
        return Err("snapshot point is not a real log position");
    }
    if meta.conf_state.voters.is_empty() {
        return Err("snapshot membership has no voter");
    }
    Ok(())
}

/// Checks that `entries` follow `(prev_index, prev_term)` one by one with
/// terms that never decrease and never exceed `max_term`.
fn check_entry_sequence(
    prev_index: Index,
    prev_term: Term,
    max_term: Term,
    entries: &[Entry],
) -> Result<(), &'static str> {
    let mut previous = (prev_index, prev_term);
    for e in entries {
        if Some(e.index) != previous.0.checked_add(1) {
            return Err("entries are not contiguous");
        }
        if e.term < previous.1 || e.term > max_term {
            return Err("entry terms out of order");
        }
        previous = (e.index, e.term);
    }
    Ok(())
}

#[cfg(test)]
#[path = "raft_tests.rs"]
mod tests;
