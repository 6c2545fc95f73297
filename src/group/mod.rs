//! A thread-free Raft group: one core, its proposals, its snapshot
//! transfers and the batch it fills for the host (the shape of etcd's
//! rawnode under its node). Inputs are method calls; what must be made
//! durable comes out as numbered writes ([`Group::take_writes`]) and goes
//! back in as [`Group::durable`]; what the host must see accumulates in
//! the group's [`Pending`] batch until the owner moves it out
//! ([`Group::flush_output`]). No threads, locks or channels inside: the
//! runtime (a worker, or an inline caller) owns the group and decides
//! where the writes go and when the outputs are published, and a
//! simulator or a unit test can drive it directly.
//!
//! Persist-before-send holds within the group: vote and append responses
//! of a core `Ready` leave only once the group is told that the writes of
//! that ready, and of every earlier one, are durable.

mod batch;
mod proposals;
mod snapshot_recv;
mod snapshot_send;
mod start;
pub(crate) mod wire;
mod write;
mod writer;

pub(crate) use batch::Pending;
pub use batch::{
    CommittedEntry, DropReason, LogLevel, LogLine, NodeState, OutboundMessage, ProposalOutcome,
    ProposalResult, ReadyBatch, SnapshotRestore,
};
pub(crate) use start::{initial_state, random_seed, restore_at_start, StartError};
pub use write::{oversized_prefixes, SEGMENT_MEMBERSHIP_IDS};
pub(crate) use write::{sync_everything_written, JobWriter, PersistJob};
pub use writer::SnapshotWriter;

use crate::core::NO_NODE;
use crate::core::{
    CompactError, ConfChange, ConfState, Entry, Index, Message, MessageBody, NodeId, Payload,
    ProposeError, Raft, ReadState, Role, SnapshotChunk, SnapshotMeta, SnapshotResponse, Status,
    Term,
};
use crate::metrics::{GroupMetrics, UNKNOWN_OUTCOME};
use crate::snapshot::{PartialSnapshot, SnapshotError, SnapshotFile, SnapshotId, SnapshotStore};
use proposals::ProposalTracker;
use snapshot_recv::{ChunkAction, SnapshotReceiver};
use snapshot_send::{Answer, SnapshotSender};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;

/// When to ask the host for a snapshot, and how to send one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Ask for a snapshot once this many entries were applied since the
    /// last one (0: never on this account).
    pub entries_threshold: u64,
    /// Ask for a snapshot once this many bytes of entries (payload plus
    /// [`crate::core::ENTRY_OVERHEAD_BYTES`] each) were delivered since the
    /// last one (0: never on this account).
    pub bytes_threshold: u64,
    /// Bytes of snapshot data per message, at most
    /// [`MAX_SNAPSHOT_CHUNK_BYTES`].
    pub chunk_size: u64,
    /// Chunks in flight per follower, unacknowledged: the memory one
    /// transfer may hold is about this many chunks, encoded.
    pub window_chunks: u64,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            entries_threshold: 0,
            bytes_threshold: 0,
            chunk_size: MAX_SNAPSHOT_CHUNK_BYTES,
            window_chunks: 4,
        }
    }
}

/// The largest snapshot chunk: the stream transport (docs/WIRE.md) carries
/// chunks of at most 1 MiB.
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Election timeouts after which a snapshot asked for and not taken is
/// asked for again: long enough for a large state machine to write one,
/// short enough that a failed one does not leave the WAL growing.
const SNAPSHOT_REASK_ELECTION_TIMEOUTS: u64 = 10;

/// What an owner hands a group, in the order it arrived.
pub(crate) enum Input {
    /// `n` ticks of logical time at once (a quiet group is ticked in
    /// bulk, see the runtime).
    Ticks(u32),
    Step(Message),
    Propose {
        proposal_id: u64,
        data: Payload,
    },
    ProposeConfChange {
        proposal_id: u64,
        change: ConfChange,
    },
    ReadIndex {
        context: u64,
    },
    TransferLeader {
        to: NodeId,
    },
    Unreachable {
        peer: NodeId,
    },
    Applied(Index),
    /// The group's oldest entries keep old segments of a shared WAL from
    /// being deleted: its host is asked for a snapshot, after which the
    /// log before it is compacted away.
    CompactionWanted,
}

/// Why a snapshot cannot be started or recorded at an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotRefusal {
    /// The host has not acknowledged applying through the index.
    NotApplied { index: Index, applied: Index },
    /// The group already has a snapshot at or beyond the index.
    Stale { index: Index, snapshot_index: Index },
}

impl fmt::Display for SnapshotRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotRefusal::NotApplied { index, applied } => write!(
                f,
                "cannot snapshot at index {index}: the host acknowledged applying only through {applied}"
            ),
            SnapshotRefusal::Stale {
                index,
                snapshot_index,
            } => write!(
                f,
                "cannot snapshot at index {index}: the node already has a snapshot at {snapshot_index}"
            ),
        }
    }
}

/// A received snapshot, complete, to be checksummed and synced by the
/// owner off its round (it takes a while for a large file); the result
/// comes back through [`Group::on_verified`].
pub(crate) struct Verification {
    pub(crate) id: SnapshotId,
    pub(crate) partial: PartialSnapshot,
}

/// The outcome of verifying a received snapshot.
pub(crate) struct Verified {
    pub(crate) id: SnapshotId,
    pub(crate) result: Result<SnapshotFile, SnapshotError>,
}

/// What a transfer reads from: the current snapshot's file, open.
struct OpenSnapshot {
    meta: SnapshotMeta,
    file: SnapshotFile,
    handle: File,
}

/// When to ask the host for a snapshot (`SnapshotOptions`).
struct SnapshotHint {
    entries_threshold: u64,
    bytes_threshold: u64,
    /// Bytes of entries delivered since the last snapshot.
    bytes_since: u64,
    /// The core's tick count when the group asked for a snapshot, since the last
    /// one recorded: asked once per crossing, and again only if no snapshot
    /// came within `reask_ticks`. A host whose snapshot failed (a full
    /// disk, say) or that missed the ask would otherwise never be asked
    /// again, and the shared WAL would keep the group's log for good.
    asked_at: Option<u64>,
    reask_ticks: u64,
    /// The shared WAL wants this group's oldest records gone: the next
    /// snapshot recorded keeps no entries behind it, since entries kept
    /// for lagging followers would pin the oldest segment for good.
    free_wal: bool,
}

/// A core `Ready` whose vote and append responses may leave only once its
/// writes (and every earlier batch's) are durable.
struct AwaitingPersist {
    /// The write carrying this batch's state; `None` when it had none, or
    /// one nothing waits for, and it only waits for the batches before it.
    seq: Option<u64>,
    /// The core's number for the batch, acknowledged with `on_persisted` so
    /// a leader counts itself toward the quorum only once durable.
    ready_number: u64,
    persisted_messages: Vec<Message>,
    /// A snapshot installed from the leader, handed to the host only once
    /// its metadata is durable.
    restore: Option<(SnapshotMeta, SnapshotFile)>,
}

/// The batch the group fills for the host, and the verbosity of the log
/// lines it adds to it.
struct Output {
    pending: Pending,
    log_level: LogLevel,
}

impl Output {
    /// Adds a log line when `level` is enabled; `text` runs only then.
    fn log(&mut self, level: LogLevel, text: impl FnOnce() -> String) {
        if level != LogLevel::Off && level <= self.log_level {
            self.pending.push_log(LogLine {
                level,
                text: text(),
            });
        }
    }
}

pub(crate) struct Group {
    raft: Raft,
    out: Output,
    proposals: ProposalTracker,
    awaiting_persist: VecDeque<AwaitingPersist>,
    /// Writes taken from the core, numbered, for the owner to persist in
    /// order.
    writes: Vec<PersistJob>,
    next_seq: u64,
    /// Highest write number the owner reported durable.
    durable_seq: u64,
    applied: Index,
    state: NodeState,
    store: SnapshotStore,
    sender: SnapshotSender<OpenSnapshot>,
    receiver: SnapshotReceiver,
    /// Received snapshots complete and waiting for the owner to verify.
    verifications: Vec<Verification>,
    /// A received snapshot the core installed, waiting for the ready batch
    /// that records it, and the leader it came from.
    installing: Option<(SnapshotFile, NodeId)>,
    /// Snapshots the host took, queued for recording: (write, meta).
    taken: VecDeque<(u64, SnapshotMeta)>,
    /// Index of the latest snapshot recorded.
    snapshot_index: Index,
    hint: SnapshotHint,
    /// What the group counted; the commit latencies are the proposal
    /// tracker's and the cache counts the core's (see [`Group::metrics`]).
    metrics: GroupMetrics,
}

impl Group {
    /// A group around `raft`, whose host has applied through `applied`;
    /// `election_tick` paces snapshot chunk resends.
    pub(crate) fn new(
        raft: Raft,
        store: SnapshotStore,
        options: &SnapshotOptions,
        election_tick: u32,
        applied: Index,
        log_level: LogLevel,
    ) -> Group {
        let state = NodeState {
            role: raft.role(),
            leader: raft.leader(),
            term: raft.term(),
        };
        // A chunk or an answer unheard of for half an election timeout is
        // taken as lost.
        let resend_ticks = (election_tick / 2).max(3);
        let snapshot_index = raft.snapshot_meta().index;
        Group {
            raft,
            out: Output {
                pending: Pending::new(state),
                log_level,
            },
            proposals: ProposalTracker::default(),
            awaiting_persist: VecDeque::new(),
            writes: Vec::new(),
            next_seq: 0,
            durable_seq: 0,
            applied,
            state,
            receiver: SnapshotReceiver::new(store.clone()),
            store,
            sender: SnapshotSender::new(options.chunk_size, options.window_chunks, resend_ticks),
            verifications: Vec::new(),
            installing: None,
            taken: VecDeque::new(),
            snapshot_index,
            hint: SnapshotHint {
                entries_threshold: options.entries_threshold,
                bytes_threshold: options.bytes_threshold,
                bytes_since: 0,
                asked_at: None,
                reask_ticks: u64::from(election_tick) * SNAPSHOT_REASK_ELECTION_TIMEOUTS,
                free_wal: false,
            },
            metrics: GroupMetrics::default(),
        }
    }

    /// What the group measured since it started.
    pub(crate) fn metrics(&self) -> GroupMetrics {
        let (hits, misses) = self.raft.cache_read_counts();
        GroupMetrics {
            proposal_commit_latency: self.proposals.commit_latency,
            cache_hit_entries: hits,
            cache_miss_entries: misses,
            ..self.metrics
        }
    }

    /// Hands a proposal's outcome to the host, counting it.
    fn settle(&mut self, outcome: ProposalOutcome) {
        match &outcome.result {
            ProposalResult::Committed { .. } => self.metrics.proposals_committed += 1,
            ProposalResult::Dropped(reason) => {
                self.metrics.proposals_dropped[reason.metric_index()] += 1;
            }
            ProposalResult::Unknown { .. } => {
                self.metrics.proposals_dropped[UNKNOWN_OUTCOME] += 1;
            }
        }
        self.out.pending.push_outcome(outcome);
    }

    pub(crate) fn set_log_level(&mut self, level: LogLevel) {
        self.out.log_level = level;
    }

    /// Bytes of log entries the core holds in memory.
    pub(crate) fn cached_entry_bytes(&self) -> u64 {
        self.raft.cached_entry_bytes()
    }

    /// Drops from memory the entries through `through` that the core may
    /// read back later; returns the bytes freed.
    pub(crate) fn evict_cached_entries(&mut self, through: Index) -> u64 {
        self.raft.evict_cached_entries(through)
    }

    pub(crate) fn fill_status(&self, status: &mut Status) {
        self.raft.fill_status(status);
    }

    /// Moves what the group has for the host into `batch` (the owner's
    /// batch the host polls), in order: a restore before the committed
    /// entries it precedes.
    pub(crate) fn flush_output(&mut self, batch: &mut Pending) {
        batch.absorb(&mut self.out.pending);
    }

    /// The writes taken since the last call, numbered in order: the owner
    /// persists them in this order and reports with [`Group::durable`].
    pub(crate) fn take_writes(&mut self) -> Vec<PersistJob> {
        std::mem::take(&mut self.writes)
    }

    /// Received snapshots to verify off the round.
    pub(crate) fn take_verifications(&mut self) -> Vec<Verification> {
        std::mem::take(&mut self.verifications)
    }

    pub(crate) fn handle(&mut self, input: Input) {
        match input {
            Input::Ticks(n) => (0..n).for_each(|_| self.tick()),
            Input::Step(msg) => self.step(msg),
            Input::Propose { proposal_id, data } => self.propose(proposal_id, data),
            Input::ProposeConfChange {
                proposal_id,
                change,
            } => self.propose_conf_change(proposal_id, &change),
            Input::ReadIndex { context } => self.read_index(context),
            Input::TransferLeader { to } => self.transfer_leader(to),
            Input::Unreachable { peer } => self.unreachable(peer),
            Input::Applied(index) => self.applied(index),
            Input::CompactionWanted => self.compaction_wanted(),
        }
    }

    /// How many ticks the group can go without before they matter (see
    /// `Raft::quiet_ticks_allowed`): its owner may then give them in bulk.
    /// 0 when the group is not quiet, or sends a snapshot, whose resends
    /// run on ticks.
    pub(crate) fn quiet_ticks_allowed(&self) -> u32 {
        if self.sender.is_idle() {
            self.raft.quiet_ticks_allowed()
        } else {
            0
        }
    }

    pub(crate) fn tick(&mut self) {
        self.raft.tick();
        self.sender.tick();
    }

    fn step(&mut self, msg: Message) {
        self.metrics.messages_received[msg.body.kind_index()] += 1;
        if let MessageBody::InstallSnapshot { data, .. } = &msg.body {
            self.metrics.snapshot_bytes_received += data.len() as u64;
        }
        self.out.log(LogLevel::Trace, || {
            format!(
                "recv {} from {} term {}",
                msg.body.name(),
                msg.from,
                msg.term
            )
        });
        if let Err(err) = self.raft.step(msg) {
            self.out
                .log(LogLevel::Debug, || format!("message refused: {err}"));
        }
    }

    fn propose(&mut self, proposal_id: u64, data: Payload) {
        let placed = self.raft.propose(data);
        self.track_proposal(proposal_id, placed);
    }

    fn propose_conf_change(&mut self, proposal_id: u64, change: &ConfChange) {
        let placed = self.raft.propose_conf_change(change);
        self.track_proposal(proposal_id, placed);
    }

    fn read_index(&mut self, context: u64) {
        if let Err(err) = self.raft.read_index(context) {
            self.out.pending.push_read(ReadState {
                context,
                result: Err(err),
            });
        }
    }

    fn transfer_leader(&mut self, to: NodeId) {
        if let Err(err) = self.raft.transfer_leader(to) {
            self.out.log(LogLevel::Info, || {
                format!("leadership transfer to {to} refused: {err}")
            });
        }
    }

    fn unreachable(&mut self, peer: NodeId) {
        self.raft.report_unreachable(peer);
        self.sender.unreachable(peer);
    }

    fn applied(&mut self, index: Index) {
        if index > self.applied {
            self.applied = index;
            self.raft.on_applied(index);
            self.check_snapshot_hint();
        }
    }

    /// Writes through `seq` are durable: releases the responses waiting on
    /// them and tells the core, which may then have more to hand out (a
    /// leader's commit) at the next [`Group::process`].
    pub(crate) fn durable(&mut self, seq: u64) {
        // Reports may come out of order; a later one covers the earlier.
        self.durable_seq = self.durable_seq.max(seq);
        self.record_taken();
        self.release_durable();
    }

    /// Stops receiving snapshots (the owner is shutting down).
    pub(crate) fn stop_receiving(&mut self) {
        self.receiver.abort();
    }

    /// The latest snapshot: recorded, queued for recording, or installed
    /// in the core from the leader and not yet durable. The WAL refuses a
    /// snapshot record older than the last one, so a snapshot must be
    /// newer than all of these.
    fn latest_snapshot_index(&self) -> Index {
        let queued = self.taken.back().map_or(0, |(_, meta)| meta.index);
        self.snapshot_index
            .max(queued)
            .max(self.raft.snapshot_meta().index)
    }

    /// The metadata of a snapshot the host may take at `index`.
    pub(crate) fn snapshot_meta_at(&self, index: Index) -> Result<SnapshotMeta, SnapshotRefusal> {
        let latest = self.latest_snapshot_index();
        if index <= latest {
            return Err(SnapshotRefusal::Stale {
                index,
                snapshot_index: latest,
            });
        }
        self.raft.snapshot_meta_at(index).map_err(|err| match err {
            CompactError::NotApplied { index, applied } => {
                SnapshotRefusal::NotApplied { index, applied }
            }
            CompactError::AlreadyCompacted { snapshot_index } => SnapshotRefusal::Stale {
                index,
                snapshot_index,
            },
        })
    }

    /// The host stored a snapshot: its metadata goes to the WAL; once that
    /// is durable, the log is compacted (see `record_taken`). A snapshot
    /// overtaken meanwhile (by a later one, or one from the leader) is
    /// deleted instead.
    pub(crate) fn snapshot_taken(
        &mut self,
        meta: SnapshotMeta,
        file: SnapshotFile,
    ) -> Result<(), SnapshotRefusal> {
        let latest = self.latest_snapshot_index();
        if meta.index <= latest {
            if let Err(err) = self.store.discard(&file) {
                self.out.log(LogLevel::Info, || {
                    format!("stale snapshot file not deleted: {err}")
                });
            }
            return Err(SnapshotRefusal::Stale {
                index: meta.index,
                snapshot_index: latest,
            });
        }
        self.out.log(LogLevel::Info, || {
            format!("snapshot taken: {}; recording it", file.id)
        });
        self.next_seq += 1;
        self.taken.push_back((self.next_seq, meta.clone()));
        let job = PersistJob {
            seq: self.next_seq,
            snapshot: Some(meta),
            snapshot_file: Some(file),
            ..PersistJob::default()
        };
        self.writes.push(job);
        Ok(())
    }

    /// Snapshots whose metadata is now durable: the core and the WAL drop
    /// the log they cover (keeping the configured trailing entries), and
    /// transfers of older snapshots make way for the new one.
    fn record_taken(&mut self) {
        while let Some((seq, meta)) = self.taken.front() {
            if *seq > self.durable_seq {
                break;
            }
            let index = meta.index;
            self.taken.pop_front();
            match self.raft.compact(index) {
                Ok(meta) => {
                    self.out.log(LogLevel::Info, || {
                        format!("compacted through {index} (term {})", meta.term)
                    });
                    for peer in self.sender.supersede(index) {
                        self.raft.report_snapshot(peer, false);
                    }
                    if std::mem::take(&mut self.hint.free_wal) {
                        self.drop_kept_entries();
                    }
                    self.snapshot_recorded(index);
                    self.compact_wal_to_core_log();
                }
                // A snapshot from the leader got further meanwhile.
                Err(err) => self.out.log(LogLevel::Info, || {
                    format!("snapshot at {index} recorded, log not compacted: {err}")
                }),
            }
        }
    }

    /// The shared WAL's oldest segments hold this group's oldest records.
    /// With entries applied since the latest snapshot, a new snapshot
    /// frees them (and keeps nothing behind it); without, the snapshot is
    /// there already and only the entries it kept behind it are in the way.
    fn compaction_wanted(&mut self) {
        if self.applied > self.snapshot_index {
            self.hint.free_wal = true;
            self.ask_for_snapshot(|| {
                "its oldest entries hold the oldest segments of the shared WAL".to_string()
            });
        } else if self.drop_kept_entries() {
            self.compact_wal_to_core_log();
        }
    }

    /// Drops the entries kept behind the latest snapshot; a follower that
    /// still needs them gets the snapshot instead.
    fn drop_kept_entries(&mut self) -> bool {
        let dropped = self.raft.drop_kept_entries();
        if dropped > 0 {
            self.out.log(LogLevel::Info, || {
                format!("dropped the {dropped} entries kept behind the snapshot to free the WAL")
            });
        }
        dropped > 0
    }

    /// Deletes the WAL segments holding only entries the core's log no
    /// longer keeps; queued behind the durable record of the snapshot that
    /// covers them, so a crash never finds entries gone but no snapshot.
    fn compact_wal_to_core_log(&mut self) {
        self.next_seq += 1;
        let job = PersistJob {
            seq: self.next_seq,
            compact_through: Some(self.raft.first_index() - 1),
            ..PersistJob::default()
        };
        self.writes.push(job);
    }

    fn snapshot_recorded(&mut self, index: Index) {
        self.snapshot_index = self.snapshot_index.max(index);
        self.hint.asked_at = None;
        self.hint.bytes_since = 0;
        // The log may have grown past the threshold again while the host
        // wrote this snapshot: ask now rather than after the next entry.
        self.check_snapshot_hint();
    }

    /// Asks the host for a snapshot once the log has grown past a threshold
    /// since the last one.
    fn check_snapshot_hint(&mut self) {
        let hint = &self.hint;
        let entries = self.applied.saturating_sub(self.snapshot_index);
        let by_entries = hint.entries_threshold > 0 && entries >= hint.entries_threshold;
        let by_bytes = hint.bytes_threshold > 0 && hint.bytes_since >= hint.bytes_threshold;
        if by_entries || by_bytes {
            let bytes = hint.bytes_since;
            self.ask_for_snapshot(|| format!("{entries} entries, {bytes} bytes since the last"));
        }
    }

    /// Asks the host for a snapshot at its applied index, once until the
    /// next snapshot is recorded (again if none came for a while, see
    /// `SnapshotHint::asked_at`), and only when it would cover something
    /// new; `why` says what prompted it, for the log line.
    fn ask_for_snapshot(&mut self, why: impl FnOnce() -> String) {
        if self.applied <= self.snapshot_index {
            return;
        }
        let now = self.raft.ticks();
        let again = match self.hint.asked_at {
            Some(at) if now - at < self.hint.reask_ticks => return,
            Some(_) => " (asked again: no snapshot came)",
            None => "",
        };
        self.hint.asked_at = Some(now);
        let applied = self.applied;
        self.out.log(LogLevel::Info, || {
            format!("snapshot wanted at {applied}: {}{again}", why())
        });
        self.out.pending.set_snapshot_wanted(applied);
    }

    /// Remembers where a proposal landed, or reports at once why the core
    /// refused it.
    fn track_proposal(&mut self, proposal_id: u64, placed: Result<(Index, Term), ProposeError>) {
        let outcome = match placed {
            Ok((index, term)) => self.proposals.appended(proposal_id, index, term),
            Err(err) => {
                self.out.log(LogLevel::Debug, || {
                    format!("proposal {proposal_id} refused: {err}")
                });
                Some(ProposalOutcome {
                    proposal_id,
                    result: ProposalResult::Dropped(DropReason::from(err)),
                })
            }
        };
        if let Some(outcome) = outcome {
            self.settle(outcome);
        }
    }

    pub(crate) fn process(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            // Published before this batch's outputs become visible, so a
            // host never sees a status older than a batch it holds.
            self.publish_state();

            // Appends and heartbeats do not depend on this batch's writes: a
            // leader replicates while its own sync runs (thesis 10.2.1).
            if !ready.messages.is_empty() {
                let outbound = self.encode_all(&ready.messages);
                self.out.pending.push_messages(outbound);
            }

            // The core hands out only entries that are committed and already
            // durable here, so they go to the host at once; so do read
            // results, which promise nothing about this node's disk.
            let mut persisted_messages = ready.persisted_messages;
            let mut snapshot_file = None;
            let mut restore = None;
            if let Some(meta) = &ready.snapshot {
                // Installed from the leader: recorded with this batch,
                // handed to the host once that is durable, and then
                // confirmed to the leader.
                if let Some((file, leader)) = self.installing.take() {
                    persisted_messages.push(self.snapshot_answer(
                        leader,
                        meta.index,
                        file.id.len,
                        false,
                    ));
                    snapshot_file = Some(file.clone());
                    restore = Some((meta.clone(), file));
                }
            }
            self.release_committed(ready.committed_entries);
            if let Some(conf_state) = &ready.conf_state {
                self.settle_if_removed(conf_state);
            }
            self.start_transfers(ready.snapshots_to_send);
            for chunk in ready.snapshot_chunks {
                self.receive_chunk(chunk);
            }
            for answer in ready.snapshot_responses {
                self.on_snapshot_answer(answer);
            }
            if !ready.read_states.is_empty() {
                for read in ready.read_states {
                    self.out.pending.push_read(read);
                }
            }

            let seq = if ready.entries.is_empty()
                && ready.hard_state.is_none()
                && ready.snapshot.is_none()
            {
                None
            } else {
                self.next_seq += 1;
                Some(self.next_seq)
            };
            let mut awaited_seq = seq;
            if let Some(seq) = seq {
                let job = PersistJob {
                    seq,
                    snapshot: ready.snapshot,
                    snapshot_file,
                    compact_through: None,
                    entries: ready.entries,
                    hard_state: ready.hard_state,
                    must_sync: ready.must_sync,
                };
                if !job.needs_sync() {
                    // Written in order, but nothing here waits for it.
                    awaited_seq = None;
                }
                self.writes.push(job);
            }
            self.awaiting_persist.push_back(AwaitingPersist {
                seq: awaited_seq,
                ready_number: ready.number,
                persisted_messages,
                restore,
            });
            self.release_durable();
        }
        self.pump_snapshots();
    }

    fn release_committed(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.hint.bytes_since += entries.iter().map(Entry::size).sum::<u64>();
        for entry in entries {
            let (proposal_id, outcome) = self.proposals.committed(&entry);
            self.out
                .pending
                .push_committed(CommittedEntry { entry, proposal_id });
            if let Some(outcome) = outcome {
                self.settle(outcome);
            }
        }
        self.check_snapshot_hint();
    }

    /// A node removed from the membership learns nothing more from the
    /// cluster: its proposals beyond its commit index would wait forever
    /// (a leader that removed itself may have appended some after the
    /// change, which the remaining members may yet commit), so their
    /// outcome is unknown now.
    fn settle_if_removed(&mut self, conf_state: &ConfState) {
        let id = self.raft.id();
        let member = [
            &conf_state.voters,
            &conf_state.learners,
            &conf_state.voters_outgoing,
            &conf_state.learners_next,
        ]
        .iter()
        .any(|ids| ids.contains(&id));
        if member {
            return;
        }
        let unknown = self.proposals.beyond_removal(self.raft.commit_index());
        if !unknown.is_empty() {
            for outcome in unknown {
                self.settle(outcome);
            }
        }
    }

    /// Releases, in order, every batch whose writes are durable: tells the
    /// core, then lets its vote and append responses leave.
    fn release_durable(&mut self) {
        while let Some(front) = self.awaiting_persist.front() {
            if front.seq.is_some_and(|seq| seq > self.durable_seq) {
                break;
            }
            let Some(batch) = self.awaiting_persist.pop_front() else {
                break;
            };
            self.raft.on_persisted(batch.ready_number);
            if let Some((meta, file)) = batch.restore {
                self.hand_out_restore(meta, file);
            }
            if !batch.persisted_messages.is_empty() {
                let outbound = self.encode_all(&batch.persisted_messages);
                self.out.pending.push_messages(outbound);
            }
        }
    }

    /// A snapshot installed from the leader is durable: the host restores
    /// its state machine from the file before applying what follows.
    fn hand_out_restore(&mut self, meta: SnapshotMeta, file: SnapshotFile) {
        self.snapshot_recorded(meta.index);
        // The log the snapshot replaced is of no more use here.
        self.compact_wal_to_core_log();
        let unknown = self.proposals.covered_by_snapshot(meta.index);
        let restore = SnapshotRestore {
            pin: self.store.pin(&file),
            path: file.path,
            meta,
        };
        self.out.pending.set_restore(restore);
        for outcome in unknown {
            self.settle(outcome);
        }
    }

    /// An answer to a snapshot chunk, for the leader `to`.
    fn snapshot_answer(&self, to: NodeId, index: Index, next_offset: u64, reject: bool) -> Message {
        Message {
            from: self.raft.id(),
            to,
            term: self.raft.term(),
            body: MessageBody::InstallSnapshotResponse {
                index,
                next_offset,
                reject,
            },
        }
    }

    fn send_now(&mut self, messages: &[Message]) {
        if !messages.is_empty() {
            let outbound = self.encode_all(messages);
            self.out.pending.push_messages(outbound);
        }
    }

    /// Follower: a chunk the core accepted.
    fn receive_chunk(&mut self, chunk: SnapshotChunk) {
        let index = chunk.meta.index;
        match self.receiver.on_chunk(&chunk) {
            ChunkAction::Answer {
                to,
                next_offset,
                started,
            } => {
                if started {
                    self.out.log(LogLevel::Info, || {
                        format!(
                            "receiving the snapshot at {index} ({} bytes) from node {to}",
                            chunk.total_len
                        )
                    });
                }
                self.send_now(&[self.snapshot_answer(to, index, next_offset, false)]);
            }
            ChunkAction::Reject { to, why } => {
                self.out.log(LogLevel::Info, || why.clone());
                self.send_now(&[self.snapshot_answer(to, index, 0, true)]);
            }
            ChunkAction::Verify(partial) => {
                // Checksumming and syncing a large file takes a while: the
                // owner does it off its round, which keeps ticking and
                // answering meanwhile.
                self.verifications.push(Verification {
                    id: partial.id(),
                    partial,
                });
            }
            ChunkAction::Ignore => {}
        }
    }

    /// Follower: a complete received snapshot was verified (or failed).
    pub(crate) fn on_verified(&mut self, verified: Verified) {
        let Verified { id, result } = verified;
        let leader = self.receiver.leader();
        let Some(meta) = self.receiver.on_verified(id) else {
            // A newer transfer replaced it meanwhile.
            if let Ok(file) = result {
                let _ = self.store.discard(&file);
            }
            return;
        };
        let file = match result {
            Ok(file) => file,
            Err(err) => {
                self.out.log(LogLevel::Info, || {
                    format!(
                        "refused the {id} from node {leader}: {err}; the previous state is kept"
                    )
                });
                self.send_now(&[self.snapshot_answer(leader, id.index, 0, true)]);
                return;
            }
        };
        if self.raft.restore(meta.clone()) {
            self.out.log(LogLevel::Info, || {
                format!("installed the {id} from node {leader}")
            });
            self.installing = Some((file, leader));
            self.metrics.snapshots_received += 1;
            return;
        }
        // Not needed after all (this node's log got there meanwhile), or
        // not installable (this node leads now).
        let _ = self.store.discard(&file);
        let have_it = self.raft.commit_index() >= meta.index;
        self.out.log(LogLevel::Info, || {
            format!("the {id} from node {leader} was not installed: not needed or not installable")
        });
        self.send_now(&[self.snapshot_answer(leader, id.index, id.len, !have_it)]);
    }

    /// Leader: the core asks for its latest snapshot to be sent to peers.
    fn start_transfers(&mut self, requests: Vec<(NodeId, SnapshotMeta)>) {
        for (peer, meta) in requests {
            let current = self
                .store
                .current()
                .filter(|f| (f.id.index, f.id.term) == (meta.index, meta.term));
            let opened = match current {
                Some(file) => file.open().map(|handle| (file, handle)),
                None => Err(SnapshotError::Invalid(format!(
                    "no stored file for the snapshot at {} (term {}) yet",
                    meta.index, meta.term
                ))),
            };
            match opened {
                Ok((file, handle)) => {
                    if self.sender.index(peer) != Some(meta.index) {
                        self.out.log(LogLevel::Info, || {
                            format!("sending the {} to node {peer}", file.id)
                        });
                    }
                    let len = file.id.len;
                    let source = OpenSnapshot { meta, file, handle };
                    self.sender.start(peer, source.meta.index, len, source);
                }
                Err(err) => {
                    self.out.log(LogLevel::Info, || {
                        format!("cannot send a snapshot to node {peer}: {err}")
                    });
                    self.raft.report_snapshot(peer, false);
                }
            }
        }
    }

    /// Leader: a follower's answer to a chunk.
    fn on_snapshot_answer(&mut self, answer: SnapshotResponse) {
        let peer = answer.from;
        let (outcome, stats) =
            self.sender
                .on_answer(peer, answer.index, answer.next_offset, answer.reject);
        match outcome {
            Answer::Installed => {
                self.out.log(LogLevel::Info, || {
                    format!(
                        "node {peer} installed the snapshot at {}: {} bytes sent for {} \
                         (resumed at {}, went back {} times)",
                        answer.index,
                        stats.bytes_sent,
                        stats.total_len,
                        stats.resumed_at,
                        stats.rewinds
                    )
                });
                self.metrics.snapshots_sent += 1;
                self.raft.report_snapshot(peer, true);
            }
            Answer::Rejected => {
                self.out.log(LogLevel::Info, || {
                    format!("node {peer} refused the snapshot at {}", answer.index)
                });
                self.raft.report_snapshot(peer, false);
            }
            Answer::Progress | Answer::Ignored => {}
        }
    }

    /// Ends transfers the core no longer wants (the peer caught up another
    /// way, or this node stopped leading), then sends what the windows
    /// allow.
    fn pump_snapshots(&mut self) {
        if self.raft.role() == Role::Leader {
            self.receiver.abort();
        }
        for peer in self.sender.peers() {
            if self.raft.role() != Role::Leader || self.raft.snapshot_pending(peer).is_none() {
                self.sender.remove(peer);
            }
        }
        let mut messages = Vec::new();
        for chunk in self.sender.poll() {
            let Some(source) = self.sender.source(chunk.peer) else {
                continue;
            };
            let read = source
                .file
                .read_chunk(&source.handle, chunk.offset, chunk.len);
            let data = match read {
                Ok(data) if data.len() == chunk.len => data,
                other => {
                    let why = match other {
                        Err(err) => err.to_string(),
                        Ok(_) => format!("{} ended early", source.file.path.display()),
                    };
                    self.out.log(LogLevel::Info, || {
                        format!("snapshot transfer to node {} stopped: {why}", chunk.peer)
                    });
                    self.sender.remove(chunk.peer);
                    self.raft.report_snapshot(chunk.peer, false);
                    continue;
                }
            };
            messages.push(Message {
                from: self.raft.id(),
                to: chunk.peer,
                term: self.raft.term(),
                body: MessageBody::InstallSnapshot {
                    meta: source.meta.clone(),
                    offset: chunk.offset,
                    total_len: source.file.id.len,
                    checksum: source.file.id.crc,
                    data,
                },
            });
        }
        self.send_now(&messages);
    }

    fn encode_all(&mut self, messages: &[Message]) -> Vec<OutboundMessage> {
        messages
            .iter()
            .map(|msg| {
                self.metrics.messages_sent[msg.body.kind_index()] += 1;
                if let MessageBody::InstallSnapshot { data, .. } = &msg.body {
                    self.metrics.snapshot_bytes_sent += data.len() as u64;
                }
                self.out.log(LogLevel::Trace, || {
                    format!("send {} to {} term {}", msg.body.name(), msg.to, msg.term)
                });
                OutboundMessage {
                    to: msg.to,
                    bytes: wire::encode(msg),
                }
            })
            .collect()
    }

    fn publish_state(&mut self) {
        let state = NodeState {
            role: self.raft.role(),
            leader: self.raft.leader(),
            term: self.raft.term(),
        };
        if state != self.state {
            if state.role != self.state.role {
                match state.role {
                    Role::Candidate => self.metrics.elections_started += 1,
                    Role::PreCandidate => self.metrics.pre_votes_started += 1,
                    _ => {}
                }
            }
            if state.leader != self.state.leader && state.leader != NO_NODE {
                self.metrics.leader_changes += 1;
            }
            self.out.log(LogLevel::Info, || {
                format!(
                    "now {:?} in term {}, leader {}",
                    state.role, state.term, state.leader
                )
            });
            self.state = state;
            self.out.pending.set_state(state);
        }
    }
}

#[cfg(test)]
mod tests;
