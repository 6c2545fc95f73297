//! The driver thread: the only owner of the Raft core. It takes inputs from
//! the host's threads, hands the core's writes to the persistence thread,
//! and releases each batch's outputs as soon as the contract in
//! [`crate::core::Ready`] allows.

use super::batch::{
    CommittedEntry, DropReason, LogLevel, NodeState, OutboundMessage, ProposalOutcome,
    ProposalResult,
};
use super::persist::{PersistDone, PersistJob};
use super::proposals::ProposalTracker;
use super::{wire, Shared};
use crate::core::{
    ConfChange, Entry, Index, Message, MessageBody, NodeId, ProposeError, Raft, ReadState, Role,
    SnapshotMeta, Term,
};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::VecDeque;
use std::sync::Arc;

/// What host threads send to the driver.
pub(crate) enum Input {
    Tick,
    Step(Message),
    Propose {
        proposal_id: u64,
        data: Vec<u8>,
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
    Compact {
        index: Index,
    },
    SendSnapshotChunk {
        peer: NodeId,
        snapshot_index: Index,
        offset: u64,
        total_len: u64,
        checksum: u32,
        data: Vec<u8>,
    },
    ReportSnapshot {
        peer: NodeId,
        success: bool,
    },
    RestoreSnapshot {
        index: Index,
    },
}

/// Inputs handled before the core's ready is taken, so that one batch (and
/// one sync) covers many proposals while the loop stays responsive.
const MAX_INPUTS_PER_ROUND: usize = 1024;

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
}

pub(crate) struct Driver {
    raft: Raft,
    shared: Arc<Shared>,
    inputs: Receiver<Input>,
    persist_jobs: Sender<PersistJob>,
    persist_done: Receiver<PersistDone>,
    proposals: ProposalTracker,
    awaiting_persist: VecDeque<AwaitingPersist>,
    next_seq: u64,
    /// Highest job sequence number the persistence thread reported durable.
    durable_seq: u64,
    applied: Index,
    state: NodeState,
    /// The snapshot whose chunks the leader is streaming to this node, so
    /// the host can name it by index when it asks to restore it.
    incoming_snapshot: Option<SnapshotMeta>,
}

impl Driver {
    pub(crate) fn new(
        raft: Raft,
        shared: Arc<Shared>,
        inputs: Receiver<Input>,
        persist_jobs: Sender<PersistJob>,
        persist_done: Receiver<PersistDone>,
        applied: Index,
    ) -> Driver {
        let state = NodeState {
            role: raft.role(),
            leader: raft.leader(),
            term: raft.term(),
        };
        Driver {
            raft,
            shared,
            inputs,
            persist_jobs,
            persist_done,
            proposals: ProposalTracker::default(),
            awaiting_persist: VecDeque::new(),
            next_seq: 0,
            durable_seq: 0,
            applied,
            state,
            incoming_snapshot: None,
        }
    }

    /// Runs until the node is dropped (the input channel disconnects) or its
    /// storage fails.
    pub(crate) fn run(mut self) {
        loop {
            select! {
                recv(self.inputs) -> input => match input {
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                },
                recv(self.persist_done) -> done => {
                    if !self.on_persist_done(done.ok()) {
                        return;
                    }
                }
            }
            for _ in 0..MAX_INPUTS_PER_ROUND {
                match self.inputs.try_recv() {
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            while let Ok(done) = self.persist_done.try_recv() {
                if !self.on_persist_done(Some(done)) {
                    return;
                }
            }
            self.process_ready();
            self.shared.publish_status(self.raft.status());
        }
        self.shutdown();
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Tick => self.raft.tick(),
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
            Input::Unreachable { peer } => self.raft.report_unreachable(peer),
            Input::Compact { index } => self.compact(index),
            Input::SendSnapshotChunk {
                peer,
                snapshot_index,
                offset,
                total_len,
                checksum,
                data,
            } => {
                let meta = self.raft.snapshot_meta();
                if meta.index != snapshot_index || self.raft.role() != Role::Leader {
                    // The host streams a snapshot the core has since
                    // replaced, or leadership moved: the core asks again.
                    self.shared.log(LogLevel::Debug, || {
                        format!("snapshot chunk for {peer} at {snapshot_index} dropped: stale")
                    });
                    return;
                }
                let msg = Message {
                    from: self.raft.id(),
                    to: peer,
                    term: self.raft.term(),
                    body: MessageBody::InstallSnapshot {
                        meta,
                        offset,
                        total_len,
                        checksum,
                        data,
                    },
                };
                let outbound = self.encode_all(std::slice::from_ref(&msg));
                self.shared.update(|p| p.push_messages(outbound));
            }
            Input::ReportSnapshot { peer, success } => self.raft.report_snapshot(peer, success),
            Input::RestoreSnapshot { index } => {
                let meta = self.incoming_snapshot.take_if(|meta| meta.index == index);
                let installed = meta.is_some_and(|meta| self.raft.restore(meta));
                if !installed {
                    self.shared.log(LogLevel::Info, || {
                        format!(
                            "snapshot at {index} not installed: not received, stale or not needed"
                        )
                    });
                }
            }
            Input::Applied(index) => {
                if index > self.applied {
                    self.applied = index;
                    self.raft.on_applied(index);
                }
            }
        }
    }

    /// The host saved a snapshot of its state machine through `index`: the
    /// core drops the entries it covers and the WAL records the snapshot
    /// and deletes the segments it makes unnecessary.
    fn compact(&mut self, index: Index) {
        match self.raft.compact(index) {
            Ok(meta) => {
                self.shared.log(LogLevel::Info, || {
                    format!("compacted through {index} (term {})", meta.term)
                });
                self.next_seq += 1;
                let job = PersistJob {
                    seq: self.next_seq,
                    snapshot: Some(meta),
                    compact_through: Some(self.raft.first_index() - 1),
                    ..PersistJob::default()
                };
                // A send failure means the persistence thread stopped after
                // a failure it reported; the main loop stops on that.
                let _ = self.persist_jobs.send(job);
            }
            Err(err) => self.shared.log(LogLevel::Info, || {
                format!("compaction through {index} refused: {err}")
            }),
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
                self.durable_seq = seq;
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
            self.shared.publish_status(self.raft.status());
            self.publish_state();

            // Appends and heartbeats do not depend on this batch's writes: a
            // leader replicates while its own sync runs (thesis 10.2.1).
            if !ready.messages.is_empty() {
                let outbound = self.encode_all(&ready.messages);
                self.shared.update(|p| p.push_messages(outbound));
            }

            // The core hands out only entries that are committed and already
            // durable here, so they go to the host at once; so do read
            // results and snapshot work, which promise nothing about this
            // node's disk.
            if let Some(meta) = &ready.snapshot {
                // Installed from the leader: the host restores its state
                // machine from the snapshot it just stored.
                let meta = meta.clone();
                let unknown = self.proposals.covered_by_snapshot(meta.index);
                self.shared.update(|p| {
                    p.set_restore(meta);
                    unknown.into_iter().for_each(|o| p.push_outcome(o));
                });
            }
            self.release_committed(ready.committed_entries);
            if !ready.snapshots_to_send.is_empty() || !ready.snapshot_chunks.is_empty() {
                if let Some(chunk) = ready.snapshot_chunks.last() {
                    self.incoming_snapshot = Some(chunk.meta.clone());
                }
                self.shared.update(|p| {
                    for (peer, meta) in ready.snapshots_to_send {
                        p.push_snapshot_to_send(peer, meta);
                    }
                    for chunk in ready.snapshot_chunks {
                        p.push_snapshot_chunk(chunk);
                    }
                });
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
            if let Some(seq) = seq {
                let job = PersistJob {
                    seq,
                    snapshot: ready.snapshot,
                    compact_through: None,
                    entries: ready.entries,
                    hard_state: ready.hard_state,
                };
                if self.persist_jobs.send(job).is_err() {
                    // The persistence thread has exited after a failure it
                    // has reported; the main loop stops on that report.
                    return;
                }
            }
            self.awaiting_persist.push_back(AwaitingPersist {
                seq,
                ready_number: ready.number,
                persisted_messages: ready.persisted_messages,
            });
            self.release_durable();
        }
    }

    fn release_committed(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
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
            self.shared.publish_status(self.raft.status());
            if !batch.persisted_messages.is_empty() {
                let outbound = self.encode_all(&batch.persisted_messages);
                self.shared.update(|p| p.push_messages(outbound));
            }
        }
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

    /// Lets the persistence thread finish every queued write, so a freed
    /// node leaves its directory synced.
    fn shutdown(self) {
        drop(self.persist_jobs);
        // Completion reports are of no use any more; wait for the thread to
        // drain its queue and hang up.
        for _ in self.persist_done.iter() {}
    }
}
