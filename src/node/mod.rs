//! A single Raft node: a runtime (`crate::runtime`) running one group.
//!
//! A node is the runtime's simplest case, with the same code under it: a
//! group stepped by the runtime's workers (or, inline, by the caller's
//! threads), one WAL in its data directory, and one entry cache. What it
//! adds is the single-group API: no group ids, and the data directory
//! laid out as a node's (the group's snapshot files beside the WAL).
//!
//! Threads ([`Threading::Node`], the default):
//! - the caller's threads: [`Node::tick`], [`Node::step`], [`Node::propose`]
//!   and the other input calls validate their input, then queue it in the
//!   group's mailbox without blocking ([`NodeError::Busy`] when it is
//!   full); [`Node::poll_ready`] takes the pending batch;
//! - two workers step the group and write the WAL: while one waits for a
//!   sync, the other steps what came meanwhile, and the WAL's group commit
//!   shares syncs between them.
//!
//! With [`Threading::Inline`] each input call steps the group on the
//! caller's thread, WAL write included, so the batch it produced is ready
//! to poll when the call returns. With a synced WAL the node's sync
//! thread waits for the writes and releases what waited on them; a
//! short-lived thread verifies a received snapshot.
//!
//! The node never calls into the host: log lines travel in the batches.

pub use crate::error::NodeError;
#[doc(hidden)]
pub use crate::group::oversized_prefixes;
pub use crate::group::{
    CommittedEntry, DropReason, LogLevel, LogLine, NodeState, OutboundMessage, ProposalOutcome,
    ProposalResult, ReadyBatch, SnapshotOptions, SnapshotRestore, SnapshotWriter,
    MAX_SNAPSHOT_CHUNK_BYTES, SEGMENT_MEMBERSHIP_IDS,
};
pub(crate) use crate::threads::panic_message;

use crate::core::{ConfChange, Config, Index, NodeId, Status};
use crate::metrics::Metrics;
use crate::runtime::{
    GroupStart, Layout, Runtime, RuntimeConfig, DEFAULT_CACHE_BYTES,
    DEFAULT_WAL_SEGMENTS_SOFT_LIMIT, MAX_MAILBOX_CAPACITY,
};
use crate::wal::{AdvancedOptions, FileLayer, WalOptions, DEFAULT_GROUP};
use parking_lot::Mutex;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// Bytes of log entries kept in memory (0: no bound); older ones are
    /// read back from the WAL when a follower or a restart needs them
    /// (see [`RuntimeConfig::cache_bytes`]).
    pub cache_bytes: u64,
    /// Segments the WAL may hold before the node asks for a snapshot
    /// (`ReadyBatch::snapshot_wanted`) so it can compact its log (see
    /// [`RuntimeConfig::wal_segments_soft_limit`]); 0: never on this
    /// account.
    pub wal_segments_soft_limit: usize,
}

/// Where a node does its work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// Two worker threads per node; input calls only queue and return at
    /// once.
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
    /// The configuration of a runtime with these settings; `workers` is
    /// the pool size when not inline (0: one per core). A node's runtime,
    /// and a runtime created through the C API from a node's config.
    pub fn runtime_config(&self, workers: usize) -> RuntimeConfig {
        RuntimeConfig {
            workers,
            inline: self.threading == Threading::Inline,
            wal: self.wal.clone(),
            wal_files: self.wal_files.clone(),
            raft: self.raft.clone(),
            snapshot: self.snapshot.clone(),
            log_level: self.log_level,
            mailbox_capacity: self.input_capacity,
            cache_bytes: self.cache_bytes,
            wal_segments_soft_limit: self.wal_segments_soft_limit,
            ..RuntimeConfig::new(self.raft.id, self.data_dir.clone())
        }
    }

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
            cache_bytes: DEFAULT_CACHE_BYTES,
            wal_segments_soft_limit: DEFAULT_WAL_SEGMENTS_SOFT_LIMIT,
        }
    }
}

pub const DEFAULT_INPUT_CAPACITY: usize = 4096;

/// The largest input queue capacity a node accepts.
pub const MAX_INPUT_CAPACITY: usize = MAX_MAILBOX_CAPACITY;

/// A threaded node's workers: one steps the group while the other waits
/// for a sync.
const NODE_WORKERS: usize = 2;

/// The node's group in its runtime (and in its WAL's records).
const GROUP: u64 = DEFAULT_GROUP;

/// A running Raft node. Every method takes `&self` and may be called from
/// any thread; dropping it stops its threads after its writes are durable.
pub struct Node {
    runtime: Runtime,
    status: Arc<Mutex<Status>>,
}

impl Node {
    /// Opens (or creates) the data directory, recovers the WAL and starts the
    /// node's threads. A new cluster needs `config.peers`; a restart takes
    /// membership, term, vote and log from the directory.
    pub fn new(config: NodeConfig) -> Result<Node, NodeError> {
        let id = config.raft.id;
        config
            .raft
            .validate()
            .map_err(|err| NodeError::InvalidConfig(err.to_string()))?;
        let runtime =
            Runtime::open_with_layout(config.runtime_config(NODE_WORKERS), Layout::SingleGroup)?;
        let start = GroupStart {
            peers: config.peers.clone(),
            applied: config.applied,
        };
        let note = format!(
            "node {id} started on {} (applied {}, {:?} threading)",
            config.data_dir.display(),
            config.applied,
            config.threading
        );
        runtime.start_group_noting(GROUP, start, Some(note))?;
        let status = runtime.status_cell(GROUP)?;
        Ok(Node { runtime, status })
    }

    pub fn id(&self) -> NodeId {
        self.runtime.id()
    }

    /// Advances the node's logical clock by one tick.
    pub fn tick(&self) -> Result<(), NodeError> {
        self.runtime.tick()
    }

    /// Takes a message received from a peer, as bytes the peer's node
    /// produced. Malformed bytes and misaddressed messages are refused here;
    /// messages the core refuses are logged at debug level.
    pub fn step(&self, bytes: &[u8]) -> Result<(), NodeError> {
        self.runtime.step(GROUP, bytes)
    }

    /// Queues a proposal and returns its id (never 0). Its outcome arrives
    /// in a later batch: committed at an index, or dropped with a reason.
    pub fn propose(&self, data: &[u8]) -> Result<u64, NodeError> {
        self.runtime.propose(GROUP, data)
    }

    /// Queues a membership change and returns its proposal id; its outcome
    /// arrives like that of [`Node::propose`], and the change is in force on
    /// each node once its entry is applied there.
    pub fn propose_conf_change(&self, change: ConfChange) -> Result<u64, NodeError> {
        self.runtime.propose_conf_change(GROUP, change)
    }

    /// Asks for a linearizable read point; the result, tagged with
    /// `context`, arrives in a later batch.
    pub fn read_index(&self, context: u64) -> Result<(), NodeError> {
        self.runtime.read_index(GROUP, context)
    }

    /// Asks the leader to hand leadership to `to`; a refusal is logged.
    pub fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        self.runtime.transfer_leader(GROUP, to)
    }

    /// The host's transport could not reach `peer`: a leader stops
    /// streaming to it until it answers again.
    pub fn report_unreachable(&self, peer: NodeId) -> Result<(), NodeError> {
        self.runtime.report_unreachable(peer)
    }

    /// Starts a snapshot of the host's state machine at `index`, which the
    /// host must have applied and acknowledged ([`Node::ack_applied`]) and
    /// which must be later than the node's latest snapshot. The host fills
    /// the returned writer's file, then calls [`SnapshotWriter::finish`]:
    /// the node records the snapshot and compacts its log.
    pub fn begin_snapshot(&self, index: Index) -> Result<SnapshotWriter, NodeError> {
        self.runtime.begin_snapshot(GROUP, index)
    }

    /// The host applied every delivered entry through `index`. Acks may lag
    /// and may repeat; an index beyond what was delivered is refused.
    pub fn ack_applied(&self, index: Index) -> Result<(), NodeError> {
        self.runtime.ack_applied(GROUP, index)
    }

    /// Waits up to `timeout` for a batch; `Ok(None)` when none came. After a
    /// failure, the batch pending at that moment is still handed out, then
    /// every call returns the failure.
    pub fn poll_ready(&self, timeout: Duration) -> Result<Option<ReadyBatch>, NodeError> {
        // One group: at most one batch.
        let readies = self.runtime.poll(timeout)?;
        Ok(readies.into_iter().next().map(|ready| ready.batch))
    }

    /// A descriptor that is readable while a batch (or a failure) waits to
    /// be polled. Owned by the node: do not close it or read from it.
    pub fn readiness_fd(&self) -> RawFd {
        self.runtime.readiness_fd()
    }

    /// The node's state as of its last round.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// What the node measured since it started (see `crate::metrics`).
    pub fn metrics(&self) -> Metrics {
        // The group runs as long as the node does.
        self.runtime.metrics(GROUP).unwrap_or_default()
    }

    pub fn set_log_level(&self, level: LogLevel) {
        self.runtime.set_log_level(level);
    }
}
