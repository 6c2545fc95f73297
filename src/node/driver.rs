//! The driver: owns the node's [`Group`] and moves work in and out of it.
//! It takes inputs from the host's threads, hands the group's writes to
//! the persister, verifies received snapshots on worker threads, and
//! publishes each round's outputs and status to the host.
//!
//! Threaded mode runs it on its own thread ([`Driver::run`]) with the
//! persistence thread behind it. Inline mode keeps it behind the node's
//! lock and runs one round per host call ([`Driver::drive`]) on the
//! caller's thread, writing the WAL there: the same group and release
//! code, without the thread hand-offs.

use super::persist::{self, GroupWritten, PersistDone};
use super::{spawn_guarded, Inputs, NodeConfig, NodeError, Shared};
use crate::core::{Index, Raft, SnapshotMeta};
use crate::group::{Group, Input as GroupInput, PersistJob, Verification, Verified};
use crate::snapshot::{SnapshotError, SnapshotFile, SnapshotStore};
use crate::wal::{Wal, WalError, WriteTicket};
use crossbeam_channel::{select, Receiver, Sender};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

/// What host threads send to the driver.
pub(crate) enum Input {
    /// An input the group takes as it is.
    Group(GroupInput),
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

pub(crate) struct Driver {
    group: Group,
    shared: Arc<Shared>,
    inputs: Receiver<Input>,
    persister: Persister,
    verified_tx: Sender<Verified>,
    verified_rx: Receiver<Verified>,
    /// Threads verifying received snapshots; joined at shutdown so none
    /// outlives the node.
    workers: Vec<JoinHandle<()>>,
    /// Inline mode: the node's inputs, through which a verification worker
    /// runs a round once done, so its result is taken in without waiting
    /// for the host's next call. Empty in threaded mode.
    inline_inputs: Weak<Inputs>,
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
        let group = Group::new(
            raft,
            store,
            &config.snapshot,
            config.raft.election_tick,
            applied,
            config.log_level,
        );
        let (verified_tx, verified_rx) = crossbeam_channel::unbounded();
        Driver {
            group,
            shared,
            inputs: channels.inputs,
            persister: channels.persister,
            verified_tx,
            verified_rx,
            workers: Vec::new(),
            inline_inputs: Weak::new(),
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
                        self.group.on_verified(verified);
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
            self.group.process();
            self.end_round();
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
    /// write), takes the group's work and writes what it queued. A
    /// verified snapshot is taken in first. The caller then waits for the
    /// write outside the lock (see [`Round::Wait`]) and reports it with
    /// [`Driver::durable`].
    pub(crate) fn drive(&mut self) -> Round {
        if self.shared.failed.load(Ordering::Acquire) {
            return Round::Failed;
        }
        while let Ok(verified) = self.verified_rx.try_recv() {
            self.group.on_verified(verified);
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

    /// Inline mode: takes the group's work and writes it, without waiting
    /// for the sync. The round's outputs are published first: a leader's
    /// appends do not depend on its own write (thesis 10.2.1).
    fn settle(&mut self) -> Round {
        self.group.process();
        self.end_round();
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

    /// Ends a round of the group: its writes go to the persister, received
    /// snapshots to verification workers, and its outputs, behind a status
    /// at least as new, to the host.
    fn end_round(&mut self) {
        for job in self.group.take_writes() {
            // A refusal means the persistence thread stopped after a
            // failure it reported; the main loop stops on that report.
            self.persist(job);
        }
        for verification in self.group.take_verifications() {
            self.verify(verification);
        }
        self.publish();
    }

    /// Publishes the group's status, then its outputs: a host never sees
    /// a status older than a batch it holds.
    fn publish(&mut self) {
        self.shared.publish_status(&self.group);
        let group = &mut self.group;
        self.shared.update(|pending| group.flush_output(pending));
        self.group.set_log_level(self.shared.log_level());
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

    /// Checksums and syncs a received snapshot on a worker thread; its
    /// result comes back through `verified_rx`.
    fn verify(&mut self, verification: Verification) {
        let Verification { id, partial } = verification;
        let done = self.verified_tx.clone();
        let inline_inputs = self.inline_inputs.clone();
        let worker = spawn_guarded(
            format!("embraft-snap-{}", self.group.id()),
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
            Err(err) => self.group.on_verified(Verified {
                id,
                result: Err(SnapshotError::Invalid(err.to_string())),
            }),
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Group(input) => self.group.handle(input),
            Input::BeginSnapshot { index, reply } => {
                // The requester waits for this answer; it may have given up.
                let _ = reply.send(self.group.snapshot_meta_at(index).map_err(NodeError::from));
            }
            Input::SnapshotTaken { meta, file, reply } => {
                let _ = reply.send(
                    self.group
                        .snapshot_taken(meta, file)
                        .map_err(NodeError::from),
                );
            }
        }
    }

    /// Returns false when the node must stop (storage failed).
    fn on_persist_done(&mut self, done: Option<PersistDone>) -> bool {
        match done {
            Some(PersistDone::Through(seq)) => {
                self.group.durable(seq);
                true
            }
            Some(PersistDone::Failed(why)) => {
                // What the group had for the host goes out before the
                // failure, as it would have in a round that completed.
                self.publish();
                self.shared.fail(format!("storage failed: {why}"));
                false
            }
            None => {
                self.publish();
                self.shared
                    .fail("the persistence thread stopped".to_string());
                false
            }
        }
    }

    /// Stops receiving snapshots; returns the verification workers, to be
    /// joined (by an inline node, outside its lock, which they may take).
    pub(crate) fn stop_workers(&mut self) -> Vec<JoinHandle<()>> {
        self.group.stop_receiving();
        std::mem::take(&mut self.workers)
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
