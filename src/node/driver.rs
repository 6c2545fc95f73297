//! The driver: the only owner of the Raft core. It takes inputs from the
//! host's threads, hands the core's writes to the persister, and releases
//! each batch's outputs as soon as the contract in [`crate::core::Ready`]
//! allows.
//!
//! Threaded mode runs it on its own thread ([`Driver::run`]) with the
//! persistence thread behind it. Inline mode keeps it behind the node's
//! lock and runs one round per host call ([`Driver::drive`]) on the
//! caller's thread, writing the WAL there: the same handling and release
//! code, without the thread hand-offs.

use super::batch::{
    CommittedEntry, DropReason, LogLevel, NodeState, OutboundMessage, ProposalOutcome,
    ProposalResult, SnapshotRestore,
};
use super::persist::{self, GroupWritten, PersistDone, PersistJob};
use super::proposals::ProposalTracker;
use super::snapshot_recv::{ChunkAction, SnapshotReceiver};
use super::snapshot_send::{Answer, SnapshotSender};
use super::{spawn_guarded, wire, Inputs, NodeConfig, NodeError, Shared};
use crate::core::{
    CompactError, ConfChange, ConfState, Entry, Index, Message, MessageBody, NodeId, Payload,
    ProposeError, Raft, ReadState, Role, SnapshotChunk, SnapshotMeta, SnapshotResponse, Term,
};
use crate::snapshot::{SnapshotError, SnapshotFile, SnapshotId, SnapshotStore};
use crate::wal::{Wal, WalError, WriteTicket};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

/// What host threads send to the driver.
pub(crate) enum Input {
    Tick,
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
    /// The host starts a snapshot at `index`: answer its metadata, or why
    /// not.
    BeginSnapshot {
        index: Index,
        reply: Sender<Result<SnapshotMeta, NodeError>>,
    },
    /// The host's snapshot is stored (durable, under its final name):
    /// record it, or refuse it as stale.
    SnapshotTaken {
        meta: SnapshotMeta,
        file: SnapshotFile,
        reply: Sender<Result<(), NodeError>>,
    },
}

/// The driver's channels to the host's threads, and where its writes go.
pub(crate) struct Channels {
    pub(crate) inputs: Receiver<Input>,
    pub(crate) persister: Persister,
}

/// Where the driver's writes are made durable.
pub(crate) enum Persister {
    /// Threaded mode: the persistence thread takes jobs and reports them
    /// durable; `jobs` is dropped at shutdown so that it drains and ends.
    Thread {
        jobs: Option<Sender<PersistJob>>,
        done: Receiver<PersistDone>,
    },
    /// Inline mode: the jobs of one call are queued, then written together
    /// (one append, one sync) on the caller's thread before it returns.
    Inline {
        wal: Arc<Wal>,
        segment_size: u64,
        store: SnapshotStore,
        queued: Vec<PersistJob>,
    },
}

/// The outcome of verifying a received snapshot off the driver thread.
struct Verified {
    id: SnapshotId,
    result: Result<SnapshotFile, SnapshotError>,
}

/// What a transfer reads from: the current snapshot's file, open.
struct OpenSnapshot {
    meta: SnapshotMeta,
    file: SnapshotFile,
    handle: File,
}

/// When to ask the host for a snapshot (`NodeConfig::snapshot`).
struct SnapshotHint {
    entries_threshold: u64,
    bytes_threshold: u64,
    /// Bytes of entries delivered since the last snapshot.
    bytes_since: u64,
    /// Asked since the last snapshot: asked once per crossing.
    asked: bool,
}

/// Inputs handled before the core's ready is taken, so that one batch (and
/// one sync) covers many proposals while the loop stays responsive.
const MAX_INPUTS_PER_ROUND: usize = 1024;

/// Where an inline round stands.
pub(crate) enum Round {
    /// Everything released: the batch is in the outbox.
    Done,
    /// Written: once `ticket` is durable (waited for without the node's
    /// lock), report round `seq` with [`Driver::durable`].
    Wait {
        wal: Arc<Wal>,
        seq: u64,
        ticket: WriteTicket,
    },
    /// The node has failed.
    Failed,
}

/// A core `Ready` whose vote and append responses may leave only once its
/// writes (and every earlier batch's) are durable.
struct AwaitingPersist {
    /// The persist job carrying this batch's writes; `None` when it had none
    /// and only waits for the batches before it.
    seq: Option<u64>,
    /// The core's number for the batch, acknowledged with `on_persisted` so
    /// a leader counts itself toward the quorum only once durable.
    ready_number: u64,
    persisted_messages: Vec<Message>,
    /// A snapshot installed from the leader, handed to the host only once
    /// its metadata is durable.
    restore: Option<(SnapshotMeta, SnapshotFile)>,
}

pub(crate) struct Driver {
    raft: Raft,
    shared: Arc<Shared>,
    inputs: Receiver<Input>,
    persister: Persister,
    proposals: ProposalTracker,
    awaiting_persist: VecDeque<AwaitingPersist>,
    next_seq: u64,
    /// Highest job sequence number the persistence thread reported durable.
    durable_seq: u64,
    applied: Index,
    state: NodeState,
    store: SnapshotStore,
    sender: SnapshotSender<OpenSnapshot>,
    receiver: SnapshotReceiver,
    verified_tx: Sender<Verified>,
    verified_rx: Receiver<Verified>,
    /// Threads verifying received snapshots; joined at shutdown so none
    /// outlives the node.
    workers: Vec<JoinHandle<()>>,
    /// Inline mode: the node's inputs, through which a verification worker
    /// runs a round once done, so its result is taken in without waiting
    /// for the host's next call. Empty in threaded mode.
    inline_inputs: Weak<Inputs>,
    /// A received snapshot the core installed, waiting for the ready batch
    /// that records it, and the leader it came from.
    installing: Option<(SnapshotFile, NodeId)>,
    /// Snapshots the host took, queued for recording: (persist job, meta).
    taken: VecDeque<(u64, SnapshotMeta)>,
    /// Index of the latest snapshot recorded.
    snapshot_index: Index,
    hint: SnapshotHint,
}

impl Driver {
    pub(crate) fn new(
        raft: Raft,
        shared: Arc<Shared>,
        channels: Channels,
        store: SnapshotStore,
        config: &NodeConfig,
        applied: Index,
    ) -> Driver {
        let state = NodeState {
            role: raft.role(),
            leader: raft.leader(),
            term: raft.term(),
        };
        let options = &config.snapshot;
        // A chunk or an answer unheard of for half an election timeout is
        // taken as lost.
        let resend_ticks = (config.raft.election_tick / 2).max(3);
        let (verified_tx, verified_rx) = crossbeam_channel::unbounded();
        let snapshot_index = raft.snapshot_meta().index;
        Driver {
            raft,
            shared,
            inputs: channels.inputs,
            persister: channels.persister,
            proposals: ProposalTracker::default(),
            awaiting_persist: VecDeque::new(),
            next_seq: 0,
            durable_seq: 0,
            applied,
            state,
            receiver: SnapshotReceiver::new(store.clone()),
            store,
            sender: SnapshotSender::new(options.chunk_size, options.window_chunks, resend_ticks),
            verified_tx,
            verified_rx,
            workers: Vec::new(),
            inline_inputs: Weak::new(),
            installing: None,
            taken: VecDeque::new(),
            snapshot_index,
            hint: SnapshotHint {
                entries_threshold: options.entries_threshold,
                bytes_threshold: options.bytes_threshold,
                bytes_since: 0,
                asked: false,
            },
        }
    }

    /// Runs until the node is dropped (the input channel disconnects) or its
    /// storage fails.
    pub(crate) fn run(mut self) {
        let persist_done = match &self.persister {
            Persister::Thread { done, .. } => done.clone(),
            // Not reached: an inline node never starts this loop.
            Persister::Inline { .. } => crossbeam_channel::never(),
        };
        loop {
            select! {
                recv(self.inputs) -> input => match input {
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                },
                recv(persist_done) -> done => {
                    if !self.on_persist_done(done.ok()) {
                        return;
                    }
                }
                recv(self.verified_rx) -> verified => {
                    if let Ok(verified) = verified {
                        self.on_verified(verified);
                    }
                }
            }
            for _ in 0..MAX_INPUTS_PER_ROUND {
                match self.inputs.try_recv() {
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            while let Ok(done) = persist_done.try_recv() {
                if !self.on_persist_done(Some(done)) {
                    return;
                }
            }
            self.process_ready();
            self.shared.publish_status(&self.raft);
        }
        self.shutdown();
    }

    /// Inline mode: where a verification worker runs its round.
    pub(crate) fn set_inline_inputs(&mut self, inputs: Weak<Inputs>) {
        self.inline_inputs = inputs;
    }

    /// Inline mode: one round of the loop in [`Driver::run`], on the
    /// caller's thread under the node's lock. Handles every input queued
    /// before the call took the lock (the caller's own among them, so a
    /// round may serve other callers' inputs too and they share its
    /// write), takes the core's ready and writes what it queued. A
    /// verified snapshot is taken in first. The caller then waits for the
    /// write outside the lock (see [`Round::Wait`]) and reports it with
    /// [`Driver::durable`].
    pub(crate) fn drive(&mut self) -> Round {
        if self.shared.failed.load(Ordering::Acquire) {
            return Round::Failed;
        }
        while let Ok(verified) = self.verified_rx.try_recv() {
            self.on_verified(verified);
        }
        // Only the inputs already queued: callers arriving meanwhile run
        // their own round, so this one always ends.
        for _ in 0..self.inputs.len() {
            match self.inputs.try_recv() {
                Ok(input) => self.handle(input),
                Err(_) => break,
            }
        }
        self.settle()
    }

    /// Inline mode: the write of round `seq` is durable (or failed):
    /// releases the responses waiting on it and tells the core, which may
    /// then have more to hand out (a leader's commit).
    pub(crate) fn durable(&mut self, seq: u64, result: Result<(), WalError>) -> Round {
        let done = match result {
            Ok(()) => PersistDone::Through(seq),
            Err(err) => PersistDone::Failed(err.to_string()),
        };
        if !self.on_persist_done(Some(done)) {
            return Round::Failed;
        }
        self.settle()
    }

    /// Inline mode: takes the core's ready until a write is needed.
    fn settle(&mut self) -> Round {
        self.process_ready();
        let written = match &mut self.persister {
            Persister::Inline {
                wal,
                segment_size,
                store,
                queued,
            } if !queued.is_empty() => {
                let written = persist::write_group_unsynced(
                    wal,
                    *segment_size,
                    store,
                    &self.shared,
                    queued.drain(..),
                );
                Some((wal.clone(), written))
            }
            _ => None,
        };
        self.shared.publish_status(&self.raft);
        match written {
            None | Some((_, Ok(GroupWritten { sync: None, .. }))) => Round::Done,
            Some((
                wal,
                Ok(GroupWritten {
                    seq,
                    sync: Some(ticket),
                }),
            )) => Round::Wait { wal, seq, ticket },
            Some((_, Err(err))) => {
                self.on_persist_done(Some(PersistDone::Failed(err.to_string())));
                Round::Failed
            }
        }
    }

    /// Hands a job to the persister. False when the persistence thread is
    /// gone (after a failure it has reported; the main loop stops on that).
    fn persist(&mut self, job: PersistJob) -> bool {
        match &mut self.persister {
            Persister::Thread { jobs, .. } => jobs.as_ref().is_some_and(|j| j.send(job).is_ok()),
            Persister::Inline { queued, .. } => {
                queued.push(job);
                true
            }
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Tick => {
                self.raft.tick();
                self.sender.tick();
            }
            Input::Step(msg) => {
                self.shared.log(LogLevel::Trace, || {
                    format!(
                        "recv {} from {} term {}",
                        msg.body.name(),
                        msg.from,
                        msg.term
                    )
                });
                if let Err(err) = self.raft.step(msg) {
                    self.shared
                        .log(LogLevel::Debug, || format!("message refused: {err}"));
                }
            }
            Input::Propose { proposal_id, data } => {
                let placed = self.raft.propose(data);
                self.track_proposal(proposal_id, placed);
            }
            Input::ProposeConfChange {
                proposal_id,
                change,
            } => {
                let placed = self.raft.propose_conf_change(&change);
                self.track_proposal(proposal_id, placed);
            }
            Input::ReadIndex { context } => {
                if let Err(err) = self.raft.read_index(context) {
                    self.shared.update(|p| {
                        p.push_read(ReadState {
                            context,
                            result: Err(err),
                        })
                    });
                }
            }
            Input::TransferLeader { to } => {
                if let Err(err) = self.raft.transfer_leader(to) {
                    self.shared.log(LogLevel::Info, || {
                        format!("leadership transfer to {to} refused: {err}")
                    });
                }
            }
            Input::Unreachable { peer } => {
                self.raft.report_unreachable(peer);
                self.sender.unreachable(peer);
            }
            Input::BeginSnapshot { index, reply } => {
                // The requester waits for this answer; it may have given up.
                let _ = reply.send(self.snapshot_meta_at(index));
            }
            Input::SnapshotTaken { meta, file, reply } => {
                let _ = reply.send(self.snapshot_taken(meta, file));
            }
            Input::Applied(index) => {
                if index > self.applied {
                    self.applied = index;
                    self.raft.on_applied(index);
                    self.check_snapshot_hint();
                }
            }
        }
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
    fn snapshot_meta_at(&self, index: Index) -> Result<SnapshotMeta, NodeError> {
        let latest = self.latest_snapshot_index();
        if index <= latest {
            return Err(NodeError::StaleSnapshot {
                index,
                snapshot_index: latest,
            });
        }
        self.raft.snapshot_meta_at(index).map_err(|err| match err {
            CompactError::NotApplied { index, applied } => NodeError::NotApplied { index, applied },
            CompactError::AlreadyCompacted { snapshot_index } => NodeError::StaleSnapshot {
                index,
                snapshot_index,
            },
        })
    }

    /// The host stored a snapshot: its metadata goes to the WAL; once that
    /// is durable, the log is compacted (see `record_taken`). A snapshot
    /// overtaken meanwhile (by a later one, or one from the leader) is
    /// deleted instead.
    fn snapshot_taken(&mut self, meta: SnapshotMeta, file: SnapshotFile) -> Result<(), NodeError> {
        let latest = self.latest_snapshot_index();
        if meta.index <= latest {
            if let Err(err) = self.store.discard(&file) {
                self.shared.log(LogLevel::Info, || {
                    format!("stale snapshot file not deleted: {err}")
                });
            }
            return Err(NodeError::StaleSnapshot {
                index: meta.index,
                snapshot_index: latest,
            });
        }
        self.shared.log(LogLevel::Info, || {
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
        // A send failure means the persistence thread stopped after a
        // failure it reported; the main loop stops on that.
        self.persist(job);
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
                    self.shared.log(LogLevel::Info, || {
                        format!("compacted through {index} (term {})", meta.term)
                    });
                    for peer in self.sender.supersede(index) {
                        self.raft.report_snapshot(peer, false);
                    }
                    self.snapshot_recorded(index);
                    self.compact_wal_to_core_log();
                }
                // A snapshot from the leader got further meanwhile.
                Err(err) => self.shared.log(LogLevel::Info, || {
                    format!("snapshot at {index} recorded, log not compacted: {err}")
                }),
            }
        }
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
        // A refusal means the persistence thread stopped after a failure it
        // reported; the main loop stops on that.
        self.persist(job);
    }

    fn snapshot_recorded(&mut self, index: Index) {
        self.snapshot_index = self.snapshot_index.max(index);
        self.hint.asked = false;
        self.hint.bytes_since = 0;
        // The log may have grown past the threshold again while the host
        // wrote this snapshot: ask now rather than after the next entry.
        self.check_snapshot_hint();
    }

    /// Asks the host for a snapshot once the log has grown past a threshold
    /// since the last one.
    fn check_snapshot_hint(&mut self) {
        let hint = &mut self.hint;
        if hint.asked || self.applied <= self.snapshot_index {
            return;
        }
        let entries = self.applied - self.snapshot_index;
        let by_entries = hint.entries_threshold > 0 && entries >= hint.entries_threshold;
        let by_bytes = hint.bytes_threshold > 0 && hint.bytes_since >= hint.bytes_threshold;
        if by_entries || by_bytes {
            hint.asked = true;
            let (applied, bytes) = (self.applied, hint.bytes_since);
            self.shared.log(LogLevel::Info, || {
                format!(
                    "snapshot wanted at {applied}: {entries} entries, {bytes} bytes since the last"
                )
            });
            self.shared.update(|p| p.set_snapshot_wanted(applied));
        }
    }

    /// Remembers where a proposal landed, or reports at once why the core
    /// refused it.
    fn track_proposal(&mut self, proposal_id: u64, placed: Result<(Index, Term), ProposeError>) {
        let outcome = match placed {
            Ok((index, term)) => self.proposals.appended(proposal_id, index, term),
            Err(err) => {
                self.shared.log(LogLevel::Debug, || {
                    format!("proposal {proposal_id} refused: {err}")
                });
                Some(ProposalOutcome {
                    proposal_id,
                    result: ProposalResult::Dropped(DropReason::from(err)),
                })
            }
        };
        if let Some(outcome) = outcome {
            self.shared.update(|p| p.push_outcome(outcome));
        }
    }

    /// Returns false when the node must stop (storage failed).
    fn on_persist_done(&mut self, done: Option<PersistDone>) -> bool {
        match done {
            Some(PersistDone::Through(seq)) => {
                // Inline rounds may report out of order; a later ticket
                // covers the earlier ones.
                self.durable_seq = self.durable_seq.max(seq);
                self.record_taken();
                self.release_durable();
                true
            }
            Some(PersistDone::Failed(why)) => {
                self.shared.fail(format!("storage failed: {why}"));
                false
            }
            None => {
                self.shared
                    .fail("the persistence thread stopped".to_string());
                false
            }
        }
    }

    fn process_ready(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            // Published before this batch's outputs become visible, so a
            // host never sees a status older than a batch it holds.
            self.shared.publish_status(&self.raft);
            self.publish_state();

            // Appends and heartbeats do not depend on this batch's writes: a
            // leader replicates while its own sync runs (thesis 10.2.1).
            if !ready.messages.is_empty() {
                let outbound = self.encode_all(&ready.messages);
                self.shared.update(|p| p.push_messages(outbound));
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
                self.shared
                    .update(|p| ready.read_states.into_iter().for_each(|r| p.push_read(r)));
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
                if !self.persist(job) {
                    // The persistence thread has exited after a failure it
                    // has reported; the main loop stops on that report.
                    return;
                }
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
        let mut outcomes = Vec::new();
        let committed: Vec<CommittedEntry> = entries
            .into_iter()
            .map(|entry| {
                let (proposal_id, outcome) = self.proposals.committed(&entry);
                outcomes.extend(outcome);
                CommittedEntry { entry, proposal_id }
            })
            .collect();
        self.shared.update(|p| {
            committed.into_iter().for_each(|c| p.push_committed(c));
            outcomes.into_iter().for_each(|o| p.push_outcome(o));
        });
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
            self.shared
                .update(|p| unknown.into_iter().for_each(|o| p.push_outcome(o)));
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
            self.shared.publish_status(&self.raft);
            if let Some((meta, file)) = batch.restore {
                self.hand_out_restore(meta, file);
            }
            if !batch.persisted_messages.is_empty() {
                let outbound = self.encode_all(&batch.persisted_messages);
                self.shared.update(|p| p.push_messages(outbound));
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
        self.shared.update(|p| {
            p.set_restore(restore);
            unknown.into_iter().for_each(|o| p.push_outcome(o));
        });
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

    fn send_now(&self, messages: &[Message]) {
        if !messages.is_empty() {
            let outbound = self.encode_all(messages);
            self.shared.update(|p| p.push_messages(outbound));
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
                    self.shared.log(LogLevel::Info, || {
                        format!(
                            "receiving the snapshot at {index} ({} bytes) from node {to}",
                            chunk.total_len
                        )
                    });
                }
                self.send_now(&[self.snapshot_answer(to, index, next_offset, false)]);
            }
            ChunkAction::Reject { to, why } => {
                self.shared.log(LogLevel::Info, || why.clone());
                self.send_now(&[self.snapshot_answer(to, index, 0, true)]);
            }
            ChunkAction::Verify(partial) => {
                let id = partial.id();
                let done = self.verified_tx.clone();
                let inline_inputs = self.inline_inputs.clone();
                // Checksumming and syncing a large file takes a while: off
                // the driver thread, which keeps ticking and answering.
                let worker = spawn_guarded(
                    format!("embraft-snap-{}", self.raft.id()),
                    &self.shared,
                    move || {
                        let result = partial.finish();
                        let _ = done.send(Verified { id, result });
                        // An inline node has no thread waiting on `done`.
                        if let Some(inputs) = inline_inputs.upgrade() {
                            inputs.drive(super::Busy::Wait);
                        }
                    },
                );
                match worker {
                    Ok(worker) => {
                        self.workers.retain(|w| !w.is_finished());
                        self.workers.push(worker);
                    }
                    Err(err) => self.on_verified(Verified {
                        id,
                        result: Err(SnapshotError::Invalid(err.to_string())),
                    }),
                }
            }
            ChunkAction::Ignore => {}
        }
    }

    /// Follower: a complete received snapshot was verified (or failed).
    fn on_verified(&mut self, verified: Verified) {
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
                self.shared.log(LogLevel::Info, || {
                    format!(
                        "refused the {id} from node {leader}: {err}; the previous state is kept"
                    )
                });
                self.send_now(&[self.snapshot_answer(leader, id.index, 0, true)]);
                return;
            }
        };
        if self.raft.restore(meta.clone()) {
            self.shared.log(LogLevel::Info, || {
                format!("installed the {id} from node {leader}")
            });
            self.installing = Some((file, leader));
            return;
        }
        // Not needed after all (this node's log got there meanwhile), or
        // not installable (this node leads now).
        let _ = self.store.discard(&file);
        let have_it = self.raft.commit_index() >= meta.index;
        self.shared.log(LogLevel::Info, || {
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
                        self.shared.log(LogLevel::Info, || {
                            format!("sending the {} to node {peer}", file.id)
                        });
                    }
                    let len = file.id.len;
                    let source = OpenSnapshot { meta, file, handle };
                    self.sender.start(peer, source.meta.index, len, source);
                }
                Err(err) => {
                    self.shared.log(LogLevel::Info, || {
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
                self.shared.log(LogLevel::Info, || {
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
                self.raft.report_snapshot(peer, true);
            }
            Answer::Rejected => {
                self.shared.log(LogLevel::Info, || {
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
                    self.shared.log(LogLevel::Info, || {
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

    /// Stops receiving snapshots; returns the verification workers, to be
    /// joined (by an inline node, outside its lock, which they may take).
    pub(crate) fn stop_workers(&mut self) -> Vec<JoinHandle<()>> {
        self.receiver.abort();
        std::mem::take(&mut self.workers)
    }

    fn encode_all(&self, messages: &[Message]) -> Vec<OutboundMessage> {
        messages
            .iter()
            .map(|msg| {
                self.shared.log(LogLevel::Trace, || {
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
            self.shared.log(LogLevel::Info, || {
                format!(
                    "now {:?} in term {}, leader {}",
                    state.role, state.term, state.leader
                )
            });
            self.state = state;
            self.shared.update(|p| p.set_state(state));
        }
    }

    /// Inline mode: makes every write durable, those that needed no sync
    /// of their own included, so that a node stopped cleanly restarts
    /// where it stood.
    pub(crate) fn sync_everything_written(&self) {
        if let Persister::Inline { wal, .. } = &self.persister {
            persist::sync_everything_written(wal);
        }
    }

    /// Lets the persistence thread finish every queued write, so a freed
    /// node leaves its directory synced. (An inline node's calls wrote
    /// their jobs before returning: only the sync may be left.)
    pub(crate) fn shutdown(&mut self) {
        for worker in self.stop_workers() {
            // Panics were caught inside the thread (spawn_guarded).
            let _ = worker.join();
        }
        match &mut self.persister {
            Persister::Thread { jobs, done } => {
                drop(jobs.take());
                // Completion reports are of no use any more; wait for the
                // thread to drain its queue, sync and hang up.
                for _ in done.iter() {}
            }
            Persister::Inline { .. } => self.sync_everything_written(),
        }
    }
}
