//! The Raft node state machine: roles, election, replication, commit.

use super::config::{Config, ConfigError};
use super::log::{AppendOutcome, RaftLog};
use super::membership::{Membership, VoteResult};
use super::progress::{Progress, ProgressState};
use super::rng::Rng;
use super::types::*;
use std::collections::{BTreeMap, VecDeque};
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

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,

    /// Proposals arrived since the last ready; appends go out in one batch.
    broadcast_pending: bool,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,

    ready_number: u64,
    pending_persists: VecDeque<PendingPersist>,
    last_soft: SoftState,
    last_hard: HardState,
}

impl Raft {
    /// Creates a node from its configuration and its recovered (or
    /// bootstrap) state. Deterministic given `config.seed`.
    pub fn new(config: Config, initial: InitialState) -> Result<Raft, ConfigError> {
        config.validate()?;
        let membership = Membership::from_conf_state(&initial.conf_state)?;
        let (offset_index, offset_term) = initial
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.index, s.term));
        check_entry_sequence(
            offset_index,
            offset_term,
            initial.hard_state.term,
            &initial.entries,
        )
        .map_err(ConfigError::InvalidLog)?;
        let hs = initial.hard_state;
        let log = RaftLog::new(
            offset_index,
            offset_term,
            initial.entries,
            hs.commit,
            initial.applied,
        );
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
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            broadcast_pending: false,
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
        let peers = if self.role == Role::Leader {
            self.progress
                .iter()
                .map(|(&id, pr)| PeerStatus {
                    id,
                    match_index: pr.matched,
                    next_index: pr.next,
                    replicating: pr.state == ProgressState::Replicate,
                    inflight_msgs: pr.inflights.len(),
                    recent_active: pr.recent_active,
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            persisted: self.log.persisted,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            peers,
        }
    }

    /// The in-memory log (persisted or not), oldest first.
    pub fn log_entries(&self) -> &[Entry] {
        self.log.entries()
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_timeout && self.promotable() {
            self.campaign();
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, NO_NODE);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
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
    pub fn campaign(&mut self) {
        if !self.promotable() || self.role == Role::Leader {
            return;
        }
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    fn become_pre_candidate(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = NO_NODE;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    fn become_candidate(&mut self, transfer: bool) {
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
            self.messages.push(Message {
                from: self.id,
                to,
                term,
                body,
            });
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
        self.reset_election_timer();
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = self.id;
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
        // Entries of earlier terms commit only through an entry of this
        // term; the no-op lets them commit without waiting for a proposal.
        self.append_entry(EntryKind::Noop, Vec::new());
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
            MessageBody::HeartbeatResponse { .. } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(msg.from);
                }
            }
            MessageBody::TimeoutNow => {
                if self.promotable() && self.role != Role::Leader {
                    self.become_candidate(true);
                }
            }
            MessageBody::ReadIndex { context } => {
                // Served by the leader once read requests are supported;
                // refusing is always safe.
                self.send(
                    msg.from,
                    MessageBody::ReadIndexResponse {
                        index: 0,
                        context,
                        reject: true,
                    },
                );
            }
            MessageBody::ReadIndexResponse { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::InstallSnapshotResponse { .. } => {}
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
        // A node outside any membership (joining) hears only from whoever
        // leads; once it knows its membership, strangers are refused.
        if !self.membership.is_empty() && !self.membership.contains(msg.from) {
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

    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader != NO_NODE
            && self.election_elapsed < self.config.election_tick
    }

    /// A message from an earlier term is dropped, but a stale leader or a
    /// stale pre-candidate is told the current term so it stands down
    /// instead of being stuck forever.
    fn answer_stale_term(&mut self, msg: &Message) {
        match msg.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
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
        let grant = can_vote
            && self.membership.is_voter(from)
            && self.log.is_up_to_date(last_index, last_term);
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
                self.send_append(from, true);
            }
            return Ok(());
        }
        if pr.acknowledge(index) {
            if pr.state == ProgressState::Probe {
                pr.become_replicate();
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
            // Send even when nothing lies past `next`: in replicate state the
            // appends up to `next` may have been lost, and only an append at
            // `next - 1` draws the rejection that makes the leader resend.
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
        self.log.maybe_commit(quorum_index, self.term)
    }

    /// Sends `to` the next append its progress allows. An empty append
    /// goes out only when `send_if_empty` (to probe or carry the commit
    /// index). Returns true when a message with entries was sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let last_index = self.log.last_index();
        let committed = self.log.committed;
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
            return false;
        };
        let entries = if pr.next <= last_index {
            self.log
                .slice(pr.next, last_index + 1, self.config.max_msg_bytes)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let bytes: u64 = entries.iter().map(Entry::size).sum();
        let has_entries = !entries.is_empty();
        pr.sent_append(prev_index + entries.len() as Index, bytes, entries.len());
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

    fn broadcast_append(&mut self) {
        self.broadcast_pending = false;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to, true);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed;
        let beats: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(&id, pr)| (id, pr.matched.min(committed)))
            .collect();
        for (to, commit) in beats {
            self.send(to, MessageBody::Heartbeat { commit, context: 0 });
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

    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> (Index, Term) {
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
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Index, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        let size = data.len() as u64;
        if size > self.config.max_entry_bytes {
            return Err(ProposeError::TooLarge {
                size,
                limit: self.config.max_entry_bytes,
            });
        }
        let placed = self.append_entry(EntryKind::Normal, data);
        // Appends for every proposal since the last ready go out together.
        self.broadcast_pending = true;
        Ok(placed)
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
            || self.log.has_committed_to_apply()
    }

    /// Takes the pending batch of work (see [`Ready`]).
    pub fn ready(&mut self) -> Ready {
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
        let ready = Ready {
            number: self.ready_number,
            soft_state: (soft != self.last_soft).then_some(soft),
            hard_state: (hard != self.last_hard).then_some(hard),
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries: self.log.take_committed(self.config.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
        };
        self.last_soft = soft;
        self.last_hard = hard;
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
    }

    /// The host applied every committed entry through `index`.
    pub fn on_applied(&mut self, index: Index) {
        self.log.applied_to(index);
    }
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
