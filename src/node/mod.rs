//! The thread-based runtime: one [`Node`] owns one Raft core and one WAL.
//!
//! Threads ([`Threading::Node`], the default):
//! - the caller's threads: [`Node::tick`], [`Node::step`], [`Node::propose`]
//!   and [`Node::ack_applied`] validate their input, then queue it on a
//!   bounded channel without blocking ([`NodeError::Busy`] when it is full);
//!   [`Node::poll_ready`] takes the pending batch;
//! - the driver thread owns the core (see `driver.rs`);
//! - the persistence thread owns the WAL and syncs queued writes together
//!   (see `persist.rs`).
//!
//! With [`Threading::Inline`] each input call queues its input the same
//! way, then takes the node's lock and runs the driver for one round on
//! the caller's thread, WAL write included, so the batch it produced is
//! ready to poll when the call returns. With a synced WAL the node's sync
//! thread (`syncer.rs`) waits for the writes and releases what waited on
//! them; a short-lived thread verifies a received snapshot.
//!
//! The node never calls into the host: log lines travel in the batches.

mod driver;
mod persist;
mod readiness;
mod syncer;

pub use crate::error::NodeError;
#[doc(hidden)]
pub use crate::group::oversized_prefixes;
pub use crate::group::{
    CommittedEntry, DropReason, LogLevel, LogLine, NodeState, OutboundMessage, ProposalOutcome,
    ProposalResult, ReadyBatch, SnapshotOptions, SnapshotRestore, SnapshotWriter,
    MAX_SNAPSHOT_CHUNK_BYTES, SEGMENT_MEMBERSHIP_IDS,
};
pub(crate) use crate::threads::panic_message;

use crate::core::{ConfChange, Config, Index, NodeId, Payload, Raft, Status};
use crate::group::{
    initial_state, random_seed, restore_at_start, wire, Group, Input as GroupInput, Pending,
    StartError,
};
use crate::snapshot::SnapshotStore;
use crate::wal::{
    segment_bytes_for_entry, AdvancedOptions, FileLayer, SyncMode, Wal, WalError, WalOptions,
    DEFAULT_GROUP,
};
use crossbeam_channel::Sender;
use driver::{Driver, Input, Round};
use parking_lot::{Condvar, Mutex};
use readiness::Readiness;
use std::os::fd::RawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use syncer::SyncWait;

/// Everything needed to start (or restart) a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The core's tunables; `raft.id` is this node's id. A `raft.seed` of 0
    /// asks the node to pick a random seed.
    pub raft: Config,
    /// Voters of a new cluster, this node included. Only read when the data
    /// directory holds no state yet; a restarted node recovers its
    /// membership from its WAL. Empty for a node that joins an existing
    /// cluster (it learns the membership from the leader's log).
    pub peers: Vec<NodeId>,
    pub data_dir: PathBuf,
    pub wal: WalOptions,
    /// The file layer the WAL goes through: the operating system's, or a
    /// fault injector for tests.
    pub wal_files: Arc<dyn FileLayer>,
    /// What the host has already applied: committed entries up to here are
    /// not delivered again after a restart (0: deliver from the start). At
    /// most the last index in the data directory; it may exceed the
    /// recovered commit index, which a crash can set back (see
    /// `PersistJob::needs_sync`).
    pub applied: Index,
    /// Inputs queued before [`NodeError::Busy`] is answered.
    pub input_capacity: usize,
    pub log_level: LogLevel,
    pub snapshot: SnapshotOptions,
    pub threading: Threading,
}

/// Where a node does its work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// A driver thread and a persistence thread per node; input calls only
    /// queue and return at once.
    #[default]
    Node,
    /// Each input call runs the node's work (WAL write included) on the
    /// caller's thread under the node's lock, and returns with the
    /// resulting batch ready to poll. With a synced WAL the node's one
    /// thread waits for the syncs and releases what waited on them.
    /// Spares the thread wake-ups a threaded node pays per hand-off, for
    /// hosts that drive many nodes or cheap green threads.
    Inline,
}

impl NodeConfig {
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            raft: Config {
                id,
                ..Config::default()
            },
            peers: Vec::new(),
            data_dir: data_dir.into(),
            wal: WalOptions::default(),
            wal_files: AdvancedOptions::default().files,
            applied: 0,
            input_capacity: DEFAULT_INPUT_CAPACITY,
            log_level: LogLevel::Off,
            snapshot: SnapshotOptions::default(),
            threading: Threading::default(),
        }
    }
}

pub const DEFAULT_INPUT_CAPACITY: usize = 4096;

/// The largest input queue capacity a node accepts. The queue takes memory
/// only for the inputs waiting in it, so the bound is about how much work a
/// host may pile up before it hears `Busy`, not about an allocation.
pub const MAX_INPUT_CAPACITY: usize = 1 << 20;

/// What the host sees, filled by the node's threads, taken by `poll_ready`.
struct Outbox {
    pending: Pending,
    /// Set once when the node stops for good; the pending batch is still
    /// handed out first.
    failure: Option<String>,
}

/// State shared by the host-facing [`Node`] and its threads.
pub(crate) struct Shared {
    outbox: Mutex<Outbox>,
    batch_ready: Condvar,
    readiness: Readiness,
    status: Mutex<Status>,
    log_level: AtomicU8,
    /// Highest committed index handed to the host: the bound for acks.
    delivered: AtomicU64,
    /// Set with `Outbox::failure`, read without the lock so that inputs
    /// are refused as soon as the node has failed.
    failed: AtomicBool,
}

impl Shared {
    /// Changes the pending batch and wakes pollers (condvar and fd) when it
    /// turns non-empty.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Pending)) {
        let mut outbox = self.outbox.lock();
        let was_empty = outbox.pending.is_empty();
        change(&mut outbox.pending);
        if was_empty && !outbox.pending.is_empty() {
            self.readiness.signal();
            self.batch_ready.notify_all();
        }
    }

    /// Adds a log line when `level` is enabled; `text` runs only then.
    pub(crate) fn log(&self, level: LogLevel, text: impl FnOnce() -> String) {
        if level != LogLevel::Off && level as u8 <= self.log_level.load(Ordering::Relaxed) {
            let line = LogLine {
                level,
                text: text(),
            };
            self.update(|p| p.push_log(line));
        }
    }

    /// Stops the node for good: every later input is refused with `why`.
    pub(crate) fn fail(&self, why: String) {
        self.log(LogLevel::Info, || why.clone());
        let mut outbox = self.outbox.lock();
        if outbox.failure.is_none() {
            outbox.failure = Some(why);
            self.failed.store(true, Ordering::Release);
            // Wake the host so it polls and learns of the failure.
            self.readiness.signal();
            self.batch_ready.notify_all();
        }
    }

    fn failure(&self) -> Option<String> {
        self.outbox.lock().failure.clone()
    }

    fn failure_error(&self) -> NodeError {
        NodeError::Failed(
            self.failure()
                .unwrap_or_else(|| "the node's thread stopped".into()),
        )
    }

    pub(crate) fn publish_status(&self, group: &Group) {
        group.fill_status(&mut self.status.lock());
    }

    pub(crate) fn log_level(&self) -> LogLevel {
        LogLevel::from_u8(self.log_level.load(Ordering::Relaxed)).unwrap_or(LogLevel::Off)
    }
}

/// How inputs reach the driver: its queue and, in inline mode, the driver
/// itself, run by whoever queued an input.
pub(crate) struct Inputs {
    /// Unbounded, so that a node allocates nothing per slot up front: the
    /// bound is `capacity`, checked before each send.
    queue: Sender<Input>,
    capacity: usize,
    inline: Option<Mutex<Driver>>,
    /// Inline mode with a synced WAL: where a round's write goes to be
    /// waited for (see `syncer`). Without it the caller waits itself.
    syncs: Option<Sender<SyncWait>>,
    shared: Arc<Shared>,
}

/// How an inline round begins.
enum RoundStart {
    /// With the inputs queued so far.
    Inputs,
    /// With what waited for the write of round `seq`, now durable (or
    /// failed).
    Durable(u64, Result<(), WalError>),
}

/// How an inline call that finds another thread running the node's round
/// proceeds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Waits for the lock and runs a round itself: its batch is ready when
    /// it returns.
    Wait,
    /// Leaves its input to the thread in the round, which looks at the
    /// queue again once it unlocks and runs it before its own call
    /// returns; this call returns at once. For proposals and messages,
    /// whose results are asynchronous anyway: many proposers (or a
    /// transport) then never queue up on the lock, and their inputs share
    /// one round, as a threaded node's queue lets them.
    HandOff,
}

impl Inputs {
    /// Queues `input` without blocking; an inline node then runs it.
    fn send(&self, input: Input, busy: Busy) -> Result<(), NodeError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(self.shared.failure_error());
        }
        // Callers passing this check at the same moment may each queue one
        // input beyond the capacity; the queue stays bounded by the
        // capacity plus the number of calling threads.
        if self.queue.len() >= self.capacity {
            return Err(NodeError::Busy);
        }
        self.queue
            .send(input)
            .map_err(|_| self.shared.failure_error())?;
        self.run_inline(busy)
    }

    /// Queues `input` even when the queue is full: for the rare input whose
    /// caller has already done work it cannot undo (a finished snapshot's
    /// file is in place).
    pub(crate) fn send_blocking(&self, input: Input) -> Result<(), NodeError> {
        if self.inline.is_some() {
            // Nobody else empties the queue: run rounds until there is
            // room, then one for this input.
            while self.queue.len() >= self.capacity {
                self.run_inline(Busy::Wait)?;
            }
        }
        self.queue
            .send(input)
            .map_err(|_| self.shared.failure_error())?;
        if self.inline.is_some() {
            return self.run_inline(Busy::Wait);
        }
        Ok(())
    }

    /// Inline mode: runs a driver round, which handles every queued input,
    /// the caller's included. Threaded mode: nothing to do.
    fn run_inline(&self, busy: Busy) -> Result<(), NodeError> {
        if self.drive(busy) {
            Ok(())
        } else {
            Err(self.shared.failure_error())
        }
    }

    /// Runs an inline driver round; false once the node has failed. A
    /// panic inside stops the node, as one on a threaded node's thread
    /// does (`spawn_guarded`), rather than leaving a half-handled round
    /// behind the lock.
    pub(crate) fn drive(&self, busy: Busy) -> bool {
        self.guarded_round(busy, RoundStart::Inputs)
    }

    /// Inline mode: the sync thread's report that round `seq`'s write is
    /// durable (or failed); runs the round that releases what waited.
    pub(crate) fn durable(&self, seq: u64, result: Result<(), WalError>) -> bool {
        self.guarded_round(Busy::Wait, RoundStart::Durable(seq, result))
    }

    fn guarded_round(&self, busy: Busy, start: RoundStart) -> bool {
        let Some(driver) = &self.inline else {
            return true;
        };
        match panic::catch_unwind(AssertUnwindSafe(|| self.drive_inline(driver, busy, start))) {
            Ok(alive) => alive,
            Err(payload) => {
                self.shared.fail(format!(
                    "internal error in an inline round: {}",
                    panic_message(&*payload)
                ));
                false
            }
        }
    }

    /// The round's sync is waited for by the sync thread, or, without one,
    /// by the caller without the lock: calls on other threads meanwhile
    /// take their turn and share the sync. After a round, inputs handed
    /// off meanwhile get one too.
    fn drive_inline(&self, driver: &Mutex<Driver>, busy: Busy, start: RoundStart) -> bool {
        // Pairs with the fence after unlocking below: either this caller
        // gets the lock, or the holder sees its input once it unlocks.
        fence(Ordering::SeqCst);
        let mut guard = match busy {
            Busy::Wait => driver.lock(),
            Busy::HandOff => match driver.try_lock() {
                Some(guard) => guard,
                None => return true,
            },
        };
        let mut start = Some(start);
        loop {
            let mut round = match start.take() {
                Some(RoundStart::Durable(seq, result)) => guard.durable(seq, result),
                Some(RoundStart::Inputs) | None => guard.drive(),
            };
            loop {
                match round {
                    Round::Done => break,
                    Round::Failed => return false,
                    Round::Wait { wal, seq, ticket } => {
                        // Queued under the lock, so waits reach the sync
                        // thread in the order of their writes.
                        let wait = SyncWait { wal, seq, ticket };
                        let wait = match &self.syncs {
                            Some(syncs) => match syncs.send(wait) {
                                Ok(()) => break,
                                Err(back) => back.into_inner(),
                            },
                            None => wait,
                        };
                        let SyncWait { wal, seq, ticket } = wait;
                        drop(guard);
                        let result = wal.wait_durable(ticket);
                        guard = driver.lock();
                        round = guard.durable(seq, result);
                    }
                }
            }
            drop(guard);
            fence(Ordering::SeqCst);
            if self.queue.is_empty() {
                return true;
            }
            // Inputs handed off while this round ran; a thread holding the
            // lock now runs them itself.
            guard = match driver.try_lock() {
                Some(guard) => guard,
                None => return true,
            };
        }
    }
}

/// A running Raft node. Every method takes `&self` and may be called from
/// any thread; dropping it stops its threads after its writes are durable.
pub struct Node {
    id: NodeId,
    max_entry_bytes: u64,
    /// Shared with snapshot writers through weak references, so that a
    /// writer outliving its node does not keep the driver running.
    inputs: Option<Arc<Inputs>>,
    store: SnapshotStore,
    shared: Arc<Shared>,
    next_proposal_id: AtomicU64,
    /// Joined in this order when the node is dropped: a threaded node's
    /// driver (which drains its inputs) and persistence thread, or an
    /// inline node's sync thread.
    threads: Vec<JoinHandle<()>>,
}

impl Node {
    /// Opens (or creates) the data directory, recovers the WAL and starts the
    /// node's threads. A new cluster needs `config.peers`; a restart takes
    /// membership, term, vote and log from the directory.
    pub fn new(config: NodeConfig) -> Result<Node, NodeError> {
        let id = config.raft.id;
        if config.input_capacity == 0 || config.input_capacity > MAX_INPUT_CAPACITY {
            return Err(NodeError::InvalidConfig(format!(
                "input queue capacity {} must be between 1 and {MAX_INPUT_CAPACITY}",
                config.input_capacity
            )));
        }
        config
            .raft
            .validate()
            .map_err(|err| NodeError::InvalidConfig(err.to_string()))?;
        // Checked here, not by the WAL: the WAL only learns that a segment
        // is too small when an entry arrives, and refusing it then stops
        // the node.
        let max_entry = config.raft.max_entry_bytes;
        let needed = segment_bytes_for_entry(max_entry, SEGMENT_MEMBERSHIP_IDS);
        if config.wal.segment_size < needed {
            return Err(NodeError::InvalidConfig(format!(
                "segment size {} cannot hold an entry of max_entry_bytes ({max_entry}): that \
                 takes at least {needed} bytes (the entry and its records, the segment header \
                 and the state restated at the segment's start); raise the segment size or \
                 lower max_entry_bytes",
                config.wal.segment_size
            )));
        }
        let chunk = config.snapshot.chunk_size;
        if chunk == 0 || chunk > MAX_SNAPSHOT_CHUNK_BYTES || config.snapshot.window_chunks == 0 {
            return Err(NodeError::InvalidConfig(format!(
                "snapshot chunk size {chunk} must be between 1 and {MAX_SNAPSHOT_CHUNK_BYTES}, \
                 and the window at least one chunk"
            )));
        }
        let advanced = AdvancedOptions {
            files: config.wal_files.clone(),
            ..AdvancedOptions::default()
        };
        let (wal, recovered) = Wal::open_with(&config.data_dir, config.wal.clone(), advanced)
            .map_err(|err| match err {
                WalError::Locked(dir) => NodeError::DirectoryLocked(dir),
                // Only the options can be refused before anything is read.
                WalError::Invalid(why) => NodeError::InvalidConfig(why),
                err => NodeError::Storage(err),
            })?;
        // The snapshot the WAL records must be there, intact; everything
        // else in the folder is a leftover of an interrupted transfer or
        // snapshot, or one a newer snapshot made useless.
        let expected = recovered.snapshot.as_ref().map(|m| (m.index, m.term));
        let (store, found) =
            SnapshotStore::open(&config.data_dir, expected).map_err(NodeError::Snapshot)?;
        let initial = initial_state(
            id,
            &config.peers,
            config.applied,
            &wal,
            DEFAULT_GROUP,
            recovered,
        )
        .map_err(|err| match err {
            StartError::Invalid(why) => NodeError::InvalidConfig(why),
            StartError::Storage(err) => NodeError::Storage(err),
        })?;
        let applied = initial.applied;
        // Restarting from a compacted log beyond what the host applied: the
        // host first restores its state machine from the snapshot file.
        let restore = restore_at_start(&initial, config.applied, &store, found.current);
        let mut raft_config = config.raft.clone();
        if raft_config.seed == 0 {
            raft_config.seed = random_seed(id);
        }
        let raft = Raft::new(raft_config, initial)
            .map_err(|err| NodeError::InvalidConfig(err.to_string()))?;
        let readiness =
            Readiness::new().map_err(|err| NodeError::Resource(format!("readiness fd: {err}")))?;
        let state = NodeState {
            role: raft.role(),
            leader: raft.leader(),
            term: raft.term(),
        };
        let shared = Arc::new(Shared {
            outbox: Mutex::new(Outbox {
                pending: Pending::new(state),
                failure: None,
            }),
            batch_ready: Condvar::new(),
            readiness,
            status: Mutex::new(raft.status()),
            log_level: AtomicU8::new(config.log_level as u8),
            delivered: AtomicU64::new(applied),
            failed: AtomicBool::new(false),
        });

        for path in &found.removed {
            shared.log(LogLevel::Info, || {
                format!("removed leftover snapshot file {}", path.display())
            });
        }
        if let Some(restore) = restore {
            shared.update(|p| p.set_restore(restore));
        }

        let (input_tx, input_rx) = crossbeam_channel::unbounded();
        let segment_size = config.wal.segment_size;
        let (persister, persister_thread) = match config.threading {
            Threading::Node => {
                // Unbounded, but never long: the driver takes one ready per
                // round and the persistence thread drains the queue on
                // every sync.
                let (job_tx, job_rx) = crossbeam_channel::unbounded();
                let (done_tx, done_rx) = crossbeam_channel::unbounded();
                let persist_store = store.clone();
                let persist_shared = shared.clone();
                let thread = spawn_guarded(format!("embraft-wal-{id}"), &shared, move || {
                    persist::run(
                        wal,
                        segment_size,
                        persist_store,
                        persist_shared,
                        job_rx,
                        done_tx,
                    )
                })?;
                let persister = driver::Persister::Thread {
                    jobs: Some(job_tx),
                    done: done_rx,
                };
                (persister, Some(thread))
            }
            Threading::Inline => {
                let persister = driver::Persister::Inline {
                    wal: Arc::new(wal),
                    segment_size,
                    store: store.clone(),
                    queued: Vec::new(),
                };
                (persister, None)
            }
        };
        let mut driver = Driver::new(
            raft,
            shared.clone(),
            driver::Channels {
                inputs: input_rx,
                persister,
            },
            store.clone(),
            &config,
            applied,
        );
        let (inputs, own_thread) = match config.threading {
            Threading::Node => {
                let thread =
                    spawn_guarded(format!("embraft-node-{id}"), &shared, move || driver.run())?;
                let inputs = Inputs {
                    queue: input_tx,
                    capacity: config.input_capacity,
                    inline: None,
                    syncs: None,
                    shared: shared.clone(),
                };
                (Arc::new(inputs), Some(thread))
            }
            Threading::Inline => {
                let (syncs, sync_waits) = match config.wal.sync {
                    SyncMode::Always => {
                        let (tx, rx) = crossbeam_channel::unbounded();
                        (Some(tx), Some(rx))
                    }
                    // Nothing to wait for: the caller takes the write's
                    // report at once.
                    SyncMode::Never => (None, None),
                };
                let inputs = Arc::new_cyclic(|weak| {
                    driver.set_inline_inputs(weak.clone());
                    Inputs {
                        queue: input_tx,
                        capacity: config.input_capacity,
                        inline: Some(Mutex::new(driver)),
                        syncs,
                        shared: shared.clone(),
                    }
                });
                let sync_thread = match sync_waits {
                    Some(waits) => {
                        let weak = Arc::downgrade(&inputs);
                        Some(spawn_guarded(
                            format!("embraft-sync-{id}"),
                            &shared,
                            move || syncer::run(weak, waits),
                        )?)
                    }
                    None => None,
                };
                // The threaded driver publishes a first status and state
                // on its first round; an inline one does it now.
                inputs.drive(Busy::Wait);
                (inputs, sync_thread)
            }
        };
        shared.log(LogLevel::Info, || {
            format!(
                "node {id} started on {} (applied {applied}, {:?} threading)",
                config.data_dir.display(),
                config.threading
            )
        });
        Ok(Node {
            id,
            max_entry_bytes: config.raft.max_entry_bytes,
            inputs: Some(inputs),
            store,
            shared,
            next_proposal_id: AtomicU64::new(1),
            threads: [own_thread, persister_thread]
                .into_iter()
                .flatten()
                .collect(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Advances the node's logical clock by one tick.
    pub fn tick(&self) -> Result<(), NodeError> {
        self.send(Input::Group(GroupInput::Ticks(1)))
    }

    /// Takes a message received from a peer, as bytes the peer's node
    /// produced. Malformed bytes and misaddressed messages are refused here;
    /// messages the core refuses are logged at debug level.
    pub fn step(&self, bytes: &[u8]) -> Result<(), NodeError> {
        let msg = wire::decode(bytes).map_err(NodeError::MalformedMessage)?;
        // The core refuses these as well, but on the driver's thread, where
        // only a debug log line tells of it; the ceilings are the core's.
        msg.check_ceilings().map_err(NodeError::InvalidMessage)?;
        if msg.to != self.id {
            return Err(NodeError::WrongRecipient {
                to: msg.to,
                this_node: self.id,
            });
        }
        self.send_async(Input::Group(GroupInput::Step(msg)))
    }

    /// Queues a proposal and returns its id (never 0). Its outcome arrives
    /// in a later batch: committed at an index, or dropped with a reason.
    pub fn propose(&self, data: &[u8]) -> Result<u64, NodeError> {
        let size = data.len() as u64;
        // The core applies the same limit; checking it here as well answers
        // the host at once and keeps oversized payloads out of the queue.
        if size > self.max_entry_bytes {
            return Err(NodeError::ProposalTooLarge {
                size,
                limit: self.max_entry_bytes,
            });
        }
        let proposal_id = self.next_proposal_id.fetch_add(1, Ordering::Relaxed);
        self.send_async(Input::Group(GroupInput::Propose {
            proposal_id,
            data: Payload::from(data),
        }))?;
        Ok(proposal_id)
    }

    /// Queues a membership change and returns its proposal id; its outcome
    /// arrives like that of [`Node::propose`], and the change is in force on
    /// each node once its entry is applied there.
    pub fn propose_conf_change(&self, change: ConfChange) -> Result<u64, NodeError> {
        let proposal_id = self.next_proposal_id.fetch_add(1, Ordering::Relaxed);
        self.send(Input::Group(GroupInput::ProposeConfChange {
            proposal_id,
            change,
        }))?;
        Ok(proposal_id)
    }

    /// Asks for a linearizable read point; the result, tagged with
    /// `context`, arrives in a later batch.
    pub fn read_index(&self, context: u64) -> Result<(), NodeError> {
        self.send(Input::Group(GroupInput::ReadIndex { context }))
    }

    /// Asks the leader to hand leadership to `to`; a refusal is logged.
    pub fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        self.send(Input::Group(GroupInput::TransferLeader { to }))
    }

    /// The host's transport could not reach `peer`: a leader stops
    /// streaming to it until it answers again.
    pub fn report_unreachable(&self, peer: NodeId) -> Result<(), NodeError> {
        self.send(Input::Group(GroupInput::Unreachable { peer }))
    }

    /// Starts a snapshot of the host's state machine at `index`, which the
    /// host must have applied and acknowledged ([`Node::ack_applied`]) and
    /// which must be later than the node's latest snapshot. The host fills
    /// the returned writer's file, then calls [`SnapshotWriter::finish`]:
    /// the node records the snapshot and compacts its log. Waits briefly
    /// for the node's thread (to learn the term and membership at `index`).
    pub fn begin_snapshot(&self, index: Index) -> Result<SnapshotWriter, NodeError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Input::BeginSnapshot { index, reply })?;
        // An inline node answered during `send`; a threaded one soon.
        let meta = answer.recv().map_err(|_| self.failure_error())??;
        let temp = self
            .store
            .create(meta.index, meta.term)
            .map_err(NodeError::Snapshot)?;
        let inputs = self.inputs.as_ref().map_or_else(Weak::new, Arc::downgrade);
        let shared = self.shared.clone();
        let deliver = Box::new(move |meta, file| {
            let (reply, answer) = crossbeam_channel::bounded(1);
            let input = Input::SnapshotTaken { meta, file, reply };
            // Blocking: the file is already in place, and the driver
            // drains its queue promptly (an inline node has answered when
            // this returns). A node freed meanwhile leaves an unrecorded
            // file, which its next start deletes.
            let Some(inputs) = inputs.upgrade() else {
                return Err(shared.failure_error());
            };
            inputs.send_blocking(input)?;
            drop(inputs);
            answer.recv().map_err(|_| shared.failure_error())?
        });
        Ok(SnapshotWriter::new(temp, meta, deliver))
    }

    /// The host applied every delivered entry through `index`. Acks may lag
    /// and may repeat; an index beyond what was delivered is refused.
    pub fn ack_applied(&self, index: Index) -> Result<(), NodeError> {
        let delivered = self.shared.delivered.load(Ordering::Acquire);
        if index > delivered {
            return Err(NodeError::NotDelivered { index, delivered });
        }
        self.send(Input::Group(GroupInput::Applied(index)))
    }

    /// Waits up to `timeout` for a batch; `Ok(None)` when none came. After a
    /// failure, the batch pending at that moment is still handed out, then
    /// every call returns the failure.
    pub fn poll_ready(&self, timeout: Duration) -> Result<Option<ReadyBatch>, NodeError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut outbox = self.shared.outbox.lock();
        loop {
            if !outbox.pending.is_empty() {
                let batch = outbox.pending.take();
                // A restored snapshot counts as delivered through its index.
                let delivered = batch
                    .committed
                    .last()
                    .map(|last| last.entry.index)
                    .max(batch.restore.as_ref().map(|r| r.meta.index));
                if let Some(delivered) = delivered {
                    self.shared.delivered.store(delivered, Ordering::Release);
                }
                if outbox.failure.is_none() {
                    self.shared.readiness.clear();
                }
                return Ok(Some(batch));
            }
            if let Some(why) = &outbox.failure {
                return Err(NodeError::Failed(why.clone()));
            }
            let timed_out = match deadline {
                Some(deadline) => self
                    .shared
                    .batch_ready
                    .wait_until(&mut outbox, deadline)
                    .timed_out(),
                None => {
                    self.shared.batch_ready.wait(&mut outbox);
                    false
                }
            };
            if timed_out && outbox.pending.is_empty() && outbox.failure.is_none() {
                return Ok(None);
            }
        }
    }

    /// A descriptor that is readable while a batch (or a failure) waits to
    /// be polled. Owned by the node: do not close it or read from it.
    pub fn readiness_fd(&self) -> RawFd {
        let outbox = self.shared.outbox.lock();
        let waiting = !outbox.pending.is_empty() || outbox.failure.is_some();
        self.shared.readiness.arm(waiting)
    }

    /// The node's state as of the driver's last round.
    pub fn status(&self) -> Status {
        self.shared.status.lock().clone()
    }

    pub fn set_log_level(&self, level: LogLevel) {
        self.shared.log_level.store(level as u8, Ordering::Relaxed);
    }

    fn send(&self, input: Input) -> Result<(), NodeError> {
        self.send_with(input, Busy::Wait)
    }

    /// [`Node::send`] for inputs whose results are asynchronous: an
    /// inline node may hand them to the thread running its round.
    fn send_async(&self, input: Input) -> Result<(), NodeError> {
        self.send_with(input, Busy::HandOff)
    }

    fn send_with(&self, input: Input, busy: Busy) -> Result<(), NodeError> {
        let Some(inputs) = &self.inputs else {
            return Err(NodeError::Failed("node is shutting down".into()));
        };
        inputs.send(input, busy)
    }

    fn failure_error(&self) -> NodeError {
        self.shared.failure_error()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Hanging up the input channel tells the driver to finish; it lets
        // the persistence thread complete every queued write before both
        // threads end. An inline driver has written everything already; it
        // waits for a snapshot verification still running, syncs, and lets
        // its sync thread finish the waits queued.
        if let Some(inputs) = self.inputs.take() {
            if let Some(driver) = &inputs.inline {
                // Joined outside the lock: a worker finishing takes it.
                let workers = driver.lock().stop_workers();
                for worker in workers {
                    let _ = worker.join();
                }
                driver.lock().sync_everything_written();
            }
            // The last reference, unless the sync thread holds one for a
            // moment: hanging up its queue ends that thread.
            drop(inputs);
        }
        for handle in self.threads.drain(..) {
            // Panics were caught inside the thread (spawn_guarded).
            let _ = handle.join();
        }
    }
}

/// Spawns a node thread whose panic, should one happen, stops the node with
/// a clear failure instead of leaving the host waiting forever.
fn spawn_guarded(
    name: String,
    shared: &Arc<Shared>,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, NodeError> {
    let shared = shared.clone();
    crate::threads::spawn_catching(name, move |why| shared.fail(why), body)
}
