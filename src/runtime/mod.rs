//! The runtime: many Raft groups on one worker pool and one shared WAL.
//!
//! A runtime has an id unique in its cluster; it hosts at most one replica
//! of each group, and a group's members are the ids of the runtimes that
//! host it. Every group is a thread-free [`Group`]; the runtime owns every
//! thread:
//! - the caller's threads: input calls ([`Runtime::step`],
//!   [`Runtime::propose`], ...) validate their input, put it in the
//!   group's mailbox and schedule the group if it was idle; they never
//!   block on a group or the disk;
//! - a fixed pool of workers (`worker.rs`): each takes the scheduled
//!   groups, steps each (at most one worker holds a group at a time), and
//!   writes what all of them must persist as one WAL batch with one sync;
//!   then tells each group its writes are durable, through its mailbox;
//! - short-lived threads verifying received snapshots.
//!
//! An inline runtime ([`RuntimeConfig::inline`]) has no workers: the
//! caller's thread steps the group it gave input to, WAL write included,
//! and a sync thread waits for the WAL and steps the groups whose writes
//! it made durable.
//!
//! The host ticks the whole runtime with one call ([`Runtime::tick`]): an
//! awake group gets each tick; a quiet one (see `Config::quiesce_tick`) is
//! ticked in bulk every few ticks, and a tick reaches only the groups due
//! (`ticker.rs`), so idle groups cost next to nothing.
//! The host polls all groups' output with one call ([`Runtime::poll`]).

mod readiness;
mod ticker;
mod worker;

use crate::codec::{decode_group_frame, encode_group_frame};
use crate::core::{
    ConfChange, Config, Entry, Index, LogReadError, LogStorage, Message, NodeId, Payload, Raft,
    Status,
};
use crate::error::NodeError;
use crate::group::{
    initial_state, random_seed, restore_at_start, sync_everything_written, wire, Group, Input,
    LogLevel, LogLine, NodeState, Pending, ReadyBatch, SnapshotOptions, SnapshotWriter, StartError,
    Verified, MAX_SNAPSHOT_CHUNK_BYTES, SEGMENT_MEMBERSHIP_IDS,
};
use crate::metrics::Metrics;
use crate::snapshot::{SnapshotStore, SNAPSHOT_DIR};
use crate::wal::{
    segment_bytes_for_entry, AdvancedOptions, FileLayer, Recovered, SyncMode, Wal, WalError,
    WalOptions,
};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};
use readiness::Readiness;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use ticker::{GroupTicks, Ticker};

/// A group's id: the same on every runtime hosting a replica of it.
pub type GroupId = u64;

/// Everything needed to open (or reopen) a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// This runtime's id in the cluster: its replicas' node id in every
    /// group. Never 0.
    pub id: NodeId,
    /// Holds the shared WAL and, under `groups/<id>/`, each group's
    /// snapshot files.
    pub data_dir: PathBuf,
    /// Worker threads (0: one per core). Ignored by an inline runtime.
    pub workers: usize,
    /// No worker threads: each input call steps its group on the caller's
    /// thread, WAL write included, and returns with the group's output
    /// ready to poll (when another thread is stepping the group, a
    /// proposal or message is left to it, and is stepped before that
    /// thread's call returns). With a synced WAL one thread of the
    /// runtime waits for the syncs and steps the groups they release.
    /// Spares the thread wake-ups of a hand-off to a worker, for hosts
    /// that drive a few groups from many threads (or green threads).
    pub inline: bool,
    pub wal: WalOptions,
    /// The file layer the WAL goes through (fault injection in tests).
    pub wal_files: Arc<dyn FileLayer>,
    /// The core's tunables for every group; `id` is ignored (the runtime's
    /// is used) and a `seed` of 0 picks a random one per group.
    pub raft: Config,
    pub snapshot: SnapshotOptions,
    pub log_level: LogLevel,
    /// Inputs a group's mailbox holds before [`NodeError::Busy`].
    pub mailbox_capacity: usize,
    /// Segments the shared WAL may hold before the groups whose old
    /// entries keep the oldest ones are asked for snapshots (raft-engine's
    /// purge feedback); 0: never asked on this account.
    pub wal_segments_soft_limit: usize,
    /// Bytes of log entries all groups together keep in memory (0: no
    /// bound). Beyond it, a group stepped by a worker drops from memory
    /// the entries it may (durable and handed out for applying); they are
    /// read back from the WAL when a follower or a restart needs them.
    pub cache_bytes: u64,
}

impl RuntimeConfig {
    /// The defaults: the core's, except that leaders skip commit
    /// broadcasts (`Config::skip_commit_broadcast`). A runtime's groups
    /// mostly take proposals one at a time, and each broadcast costs every
    /// follower a step and the leader one per answer; as in many-group
    /// hosts such as TiKV, followers' applies (and reads served by a
    /// follower) may then lag by up to a heartbeat interval.
    pub fn new(id: NodeId, data_dir: impl Into<PathBuf>) -> RuntimeConfig {
        RuntimeConfig {
            id,
            data_dir: data_dir.into(),
            workers: 0,
            inline: false,
            wal: WalOptions::default(),
            wal_files: AdvancedOptions::default().files,
            raft: Config {
                skip_commit_broadcast: true,
                ..Config::default()
            },
            snapshot: SnapshotOptions::default(),
            log_level: LogLevel::Off,
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            cache_bytes: DEFAULT_CACHE_BYTES,
            wal_segments_soft_limit: DEFAULT_WAL_SEGMENTS_SOFT_LIMIT,
        }
    }
}

pub const DEFAULT_MAILBOX_CAPACITY: usize = 4096;

/// The largest mailbox capacity a runtime accepts. A mailbox takes memory
/// only for the inputs waiting in it, so the bound is about how much work
/// a host may pile up before it hears `Busy`, not about an allocation.
pub const MAX_MAILBOX_CAPACITY: usize = 1 << 20;

/// With the default 64 MiB segments: a shared WAL of about 1 GiB.
pub const DEFAULT_WAL_SEGMENTS_SOFT_LIMIT: usize = 16;

/// Ticks between two looks at the shared WAL's size.
const PURGE_CHECK_TICKS: u64 = 10;

/// The folder of the groups' own folders (each holding its snapshot
/// folder), inside the data directory.
const GROUPS_DIR: &str = "groups";

/// Groups asked for a snapshot per look: those holding the oldest
/// segments; the next look asks the next ones if the WAL is still large.
const PURGE_ASKS: usize = 16;

/// The default entry cache of a runtime, for all its groups together.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

/// How a group starts on this runtime.
#[derive(Clone, Debug, Default)]
pub struct GroupStart {
    /// Voters of a new group, this runtime included; read only when the
    /// WAL holds nothing of the group. Empty to join an existing group
    /// (it learns the membership from the leader) or to restart one.
    pub peers: Vec<NodeId>,
    /// What the host has already applied of this group (see
    /// `NodeConfig::applied`).
    pub applied: Index,
}

/// One group's output, taken by [`Runtime::poll`].
#[derive(Debug)]
pub struct GroupReady {
    pub group: GroupId,
    pub batch: ReadyBatch,
}

/// Counts of the runtime's work since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Worker rounds run.
    pub rounds: u64,
    /// Group steps across all rounds (a group stepped in two rounds counts
    /// twice).
    pub group_steps: u64,
    /// WAL syncs waited for: one per round that wrote something a group
    /// waits on, however many groups it served.
    pub syncs: u64,
    /// Segment files the shared WAL holds now.
    pub wal_segments: usize,
    /// Groups reached by ticks, summed over the ticks: an awake group on
    /// each tick, a quiet one only when its ticks are due.
    pub tick_visits: u64,
}

/// What [`Runtime::step_frame`] did with a frame's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameReport {
    /// Queued for their groups.
    pub stepped: usize,
    /// For groups not running here.
    pub unknown_group: usize,
    /// Refused by a full mailbox.
    pub busy: usize,
    /// Malformed, or addressed to another runtime.
    pub refused: usize,
}

/// Encodes the messages of `readies` as one group frame per destination
/// runtime (docs/WIRE.md, "Group frames"), in the order the groups made
/// them: what a transport sends after a poll.
pub fn frames_per_peer(readies: &[GroupReady]) -> BTreeMap<NodeId, Vec<u8>> {
    let mut per_peer: BTreeMap<NodeId, Vec<(u64, &[u8])>> = BTreeMap::new();
    for ready in readies {
        for msg in &ready.batch.messages {
            per_peer
                .entry(msg.to)
                .or_default()
                .push((ready.group, &msg.bytes));
        }
    }
    per_peer
        .into_iter()
        .map(|(peer, messages)| {
            let mut frame = Vec::new();
            encode_group_frame(messages.into_iter(), &mut frame);
            (peer, frame)
        })
        .collect()
}

/// A running runtime. Every method takes `&self` and may be called from
/// any thread; dropping it stops the workers after every write is durable.
pub struct Runtime {
    shared: Arc<Shared>,
    /// The workers, or an inline runtime's sync thread.
    threads: Vec<JoinHandle<()>>,
}

/// Where a runtime keeps each group's snapshot files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Under `groups/<id>/` of the data directory.
    Groups,
    /// In the data directory itself: a node's single group.
    SingleGroup,
}

/// How an inline call proceeds when another thread is stepping the group
/// it gives input to (see [`RuntimeConfig::inline`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Waits for its turn and steps the group itself: its output is ready
    /// when it returns.
    Wait,
    /// Leaves its input to that thread, which steps it before its own call
    /// returns; returns at once. For proposals and messages, whose results
    /// come later anyway: many proposers (or a transport) then never queue
    /// up on the group, and their inputs share one round.
    HandOff,
}

/// What a group's mailbox carries to the worker that steps it.
enum Work {
    Input(Input),
    /// The ticks owed to the group (see `ticker.rs`) are due.
    Ticks,
    /// The group's writes through this number are durable.
    Durable(u64),
    Verified(Verified),
    /// The group has work of its own to hand out (a host's snapshot to
    /// record): it needs a round.
    Wake,
}

/// A group as the runtime holds it.
struct Slot {
    id: GroupId,
    mailbox: Mutex<Vec<Work>>,
    /// In the run queue or held by a worker: input then needs no
    /// scheduling of its own.
    scheduled: AtomicBool,
    cell: Mutex<Cell>,
    outbox: Mutex<Outbox>,
    /// Shared with a node, which reads it without a map lookup.
    status: Arc<Mutex<Status>>,
    /// Highest committed index handed to the host: the bound for acks.
    delivered: AtomicU64,
    /// Highest index the host acknowledged applying, not yet told to the
    /// group: taken in at the group's next round, as nothing in the group
    /// waits on it (see [`Runtime::ack_applied`]).
    acked: AtomicU64,
    next_proposal_id: AtomicU64,
    /// The ticks owed to the group and where the ticker holds it: placed
    /// after each round, a quiet group is skipped by ticks until they
    /// matter, so ten thousand quiet groups cost a round each per
    /// check-in period, not per election timeout, and ticks pass them by.
    ticks: GroupTicks,
    /// Bytes of entries the group held in memory after its last round.
    cached_bytes: AtomicU64,
    /// Stopped or removed: a worker that still finds it queued leaves it.
    stopped: AtomicBool,
    /// Held by the thread stepping the group in an inline runtime.
    turn: Mutex<()>,
    max_entry_bytes: u64,
}

impl Slot {
    /// Gives the group the ticks it is owed.
    fn take_ticks(&self, group: &mut Group, ticker: &Ticker) {
        let owed = ticker.take(self);
        if owed > 0 {
            group.handle(Input::Ticks(owed));
        }
    }

    /// Tells the group what the host acknowledged applying since.
    fn take_acked(&self, group: &mut Group) {
        let acked = self.acked.swap(0, Ordering::AcqRel);
        if acked > 0 {
            group.handle(Input::Applied(acked));
        }
    }
}

/// What a worker steps: the group and its snapshot files.
struct Cell {
    group: Group,
    store: SnapshotStore,
}

/// A group's output waiting for the host.
struct Outbox {
    pending: Pending,
    /// On the runtime's list of groups with output.
    listed: bool,
}

/// State shared by the host-facing [`Runtime`] and its workers.
struct Shared {
    id: NodeId,
    config: RuntimeConfig,
    layout: Layout,
    log_level: AtomicU8,
    wal: Arc<Wal>,
    groups: RwLock<HashMap<GroupId, Arc<Slot>>>,
    /// Bytes of entries all groups hold in memory, as of their last rounds.
    cached_bytes: AtomicU64,
    run_queue: Sender<Option<Arc<Slot>>>,
    run_queue_rx: Receiver<Option<Arc<Slot>>>,
    /// Groups with output for the host.
    ready: Mutex<Vec<Arc<Slot>>>,
    ready_signal: Condvar,
    /// Readable while `ready` holds a group or the runtime has failed;
    /// changed under the `ready` lock.
    readiness: Readiness,
    /// An inline runtime's queue to its sync thread; taken when the
    /// runtime stops. `None` in a runtime with workers, or one whose WAL
    /// does not sync.
    sync_queue: Mutex<Option<Sender<worker::Written>>>,
    failure: Mutex<Option<String>>,
    failed: AtomicBool,
    /// Threads verifying received snapshots; joined when the runtime stops.
    verifiers: Mutex<Vec<JoinHandle<()>>>,
    /// Groups being started (see [`Reservation`]).
    starting: Mutex<HashSet<GroupId>>,
    ticker: Ticker,
    rounds: AtomicU64,
    group_steps: AtomicU64,
    syncs: AtomicU64,
    tick_visits: AtomicU64,
}

/// A group being started: neither running nor startable again until the
/// start ends, successful or not.
struct Reservation<'a> {
    shared: &'a Shared,
    group: GroupId,
}

impl<'a> Reservation<'a> {
    fn take(shared: &'a Shared, group: GroupId) -> Result<Reservation<'a>, NodeError> {
        let mut starting = shared.starting.lock();
        if shared.groups.read().contains_key(&group) || !starting.insert(group) {
            return Err(NodeError::GroupExists(group));
        }
        Ok(Reservation { shared, group })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared.starting.lock().remove(&self.group);
    }
}

/// A group's view of its entries in the shared WAL, through which its core
/// reads back what it dropped from memory.
struct WalLog {
    wal: Arc<Wal>,
    group: GroupId,
}

impl LogStorage for WalLog {
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, LogReadError> {
        let entries = self
            .wal
            .entries_of(self.group, lo, hi, max_bytes)
            .map_err(|err| LogReadError::Failed(err.to_string()))?;
        if entries.is_empty() {
            return Err(LogReadError::Unavailable(lo));
        }
        Ok(entries)
    }

    fn entry_headers(
        &self,
        lo: Index,
        hi: Index,
        _max_bytes: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        // Terms and kinds come from the WAL's index: no payload is read.
        self.wal
            .entry_headers_of(self.group, lo, hi)
            .map_err(|err| LogReadError::Failed(err.to_string()))
    }
}

impl Runtime {
    /// Opens (or creates) the data directory, recovers the shared WAL and
    /// starts the workers. Groups found in the WAL are listed by
    /// [`Runtime::stored_groups`] and run once started with
    /// [`Runtime::start_group`].
    pub fn open(config: RuntimeConfig) -> Result<Runtime, NodeError> {
        Runtime::open_with_layout(config, Layout::Groups)
    }

    pub(crate) fn open_with_layout(
        config: RuntimeConfig,
        layout: Layout,
    ) -> Result<Runtime, NodeError> {
        if config.id == 0 {
            return Err(NodeError::InvalidConfig("id 0 is reserved".into()));
        }
        if config.mailbox_capacity == 0 || config.mailbox_capacity > MAX_MAILBOX_CAPACITY {
            return Err(NodeError::InvalidConfig(format!(
                "input queue capacity {} must be between 1 and {MAX_MAILBOX_CAPACITY}",
                config.mailbox_capacity
            )));
        }
        let chunk = config.snapshot.chunk_size;
        if chunk == 0 || chunk > MAX_SNAPSHOT_CHUNK_BYTES || config.snapshot.window_chunks == 0 {
            return Err(NodeError::InvalidConfig(format!(
                "snapshot chunk size {chunk} must be between 1 and {MAX_SNAPSHOT_CHUNK_BYTES}, \
                 and the window at least one chunk"
            )));
        }
        let mut raft = config.raft.clone();
        raft.id = config.id;
        raft.validate()
            .map_err(|err| NodeError::InvalidConfig(err.to_string()))?;
        // Checked here, not by the WAL: the WAL only learns that a segment
        // is too small when an entry arrives, and refusing it then stops
        // the runtime.
        let max_entry = raft.max_entry_bytes;
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
        let advanced = AdvancedOptions {
            files: config.wal_files.clone(),
            ..AdvancedOptions::default()
        };
        // Each group reads what it needs through its log view when it
        // starts: recovery only indexes the log.
        let wal = Wal::open_index_only(&config.data_dir, config.wal.clone(), advanced).map_err(
            |err| match err {
                WalError::Locked(dir) => NodeError::DirectoryLocked(dir),
                WalError::Invalid(why) => NodeError::InvalidConfig(why),
                err => NodeError::Storage(err),
            },
        )?;
        let workers = match (config.inline, config.workers) {
            (true, _) => 0,
            (false, 0) => std::thread::available_parallelism().map_or(2, |n| n.get()),
            (false, n) => n,
        };
        let readiness =
            Readiness::new().map_err(|err| NodeError::Resource(format!("readiness fd: {err}")))?;
        let (syncs, sync_waits) = match (config.inline, config.wal.sync) {
            (true, SyncMode::Always) => {
                let (tx, rx) = crossbeam_channel::unbounded();
                (Some(tx), Some(rx))
            }
            // Workers wait for their own syncs, and a WAL that does not
            // sync has nothing to wait for.
            _ => (None, None),
        };
        let (run_queue, run_queue_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            id: config.id,
            log_level: AtomicU8::new(config.log_level as u8),
            config,
            layout,
            wal: Arc::new(wal),
            groups: RwLock::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
            run_queue,
            run_queue_rx,
            ready: Mutex::new(Vec::new()),
            ready_signal: Condvar::new(),
            readiness,
            sync_queue: Mutex::new(syncs),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            verifiers: Mutex::new(Vec::new()),
            starting: Mutex::new(HashSet::new()),
            ticker: Ticker::new(),
            rounds: AtomicU64::new(0),
            group_steps: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            tick_visits: AtomicU64::new(0),
        });
        // Dropped on failure below: stops the threads started so far.
        let mut runtime = Runtime {
            shared: shared.clone(),
            threads: Vec::with_capacity(workers.max(1)),
        };
        for n in 0..workers {
            let name = format!("embraft-rt{}-w{n}", shared.id);
            runtime.threads.push(shared.spawn(name, worker::run)?);
        }
        if let Some(waits) = sync_waits {
            let name = format!("embraft-rt{}-sync", shared.id);
            let sync = move |shared: &Arc<Shared>| worker::run_syncs(shared, &waits);
            runtime.threads.push(shared.spawn(name, sync)?);
        }
        Ok(runtime)
    }

    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    pub fn stats(&self) -> RuntimeStats {
        let shared = &self.shared;
        RuntimeStats {
            rounds: shared.rounds.load(Ordering::Relaxed),
            group_steps: shared.group_steps.load(Ordering::Relaxed),
            syncs: shared.syncs.load(Ordering::Relaxed),
            wal_segments: shared.wal.segment_count(),
            tick_visits: shared.tick_visits.load(Ordering::Relaxed),
        }
    }

    /// Bytes of log entries the groups hold in memory, as of their last
    /// rounds (see [`RuntimeConfig::cache_bytes`]).
    pub fn cached_entry_bytes(&self) -> u64 {
        self.shared.cached_bytes.load(Ordering::Relaxed)
    }

    /// The groups the WAL holds state of, running or not.
    pub fn stored_groups(&self) -> Vec<GroupId> {
        self.shared.wal.groups()
    }

    /// The groups running.
    pub fn running_groups(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.shared.groups.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Starts a group: restarted from the WAL when it holds the group,
    /// else founded with `start.peers`, or empty to join.
    pub fn start_group(&self, group: GroupId, start: GroupStart) -> Result<(), NodeError> {
        self.start_group_noting(group, start, None)
    }

    /// [`Runtime::start_group`], with a log line (at info level) in the
    /// group's first batch.
    pub(crate) fn start_group_noting(
        &self,
        group: GroupId,
        start: GroupStart,
        note: Option<String>,
    ) -> Result<(), NodeError> {
        self.shared.check_alive()?;
        let shared = &self.shared;
        // Reserved while it starts, without holding the map: other groups
        // start meanwhile (a restart reads each group's log), and a second
        // start of this one is refused.
        let _reserved = Reservation::take(shared, group)?;
        let recovered = shared.recovered(group).map_err(NodeError::Storage)?;
        let expected = recovered.snapshot.as_ref().map(|m| (m.index, m.term));
        let (store, found) = SnapshotStore::open_in(
            &shared.config.data_dir,
            &shared.snapshot_dir(group),
            expected,
        )
        .map_err(NodeError::Snapshot)?;
        let initial = initial_state(
            shared.id,
            &start.peers,
            start.applied,
            &shared.wal,
            group,
            recovered,
        )
        .map_err(|err| match err {
            StartError::Invalid(why) => NodeError::InvalidConfig(format!("group {group}: {why}")),
            StartError::Storage(err) => NodeError::Storage(err),
        })?;
        let applied = initial.applied;
        let restore = restore_at_start(&initial, start.applied, &store, found.current);
        let mut raft_config = shared.config.raft.clone();
        raft_config.id = shared.id;
        if raft_config.seed == 0 {
            raft_config.seed = random_seed(shared.id ^ group.rotate_left(32));
        }
        let max_entry_bytes = raft_config.max_entry_bytes;
        let election_tick = raft_config.election_tick;
        let log = WalLog {
            wal: shared.wal.clone(),
            group,
        };
        let raft = Raft::with_log_storage(raft_config, initial, Box::new(log))
            .map_err(|err| NodeError::InvalidConfig(format!("group {group}: {err}")))?;
        let state = NodeState {
            role: raft.role(),
            leader: raft.leader(),
            term: raft.term(),
        };
        let status = raft.status();
        let group_state = Group::new(
            raft,
            store.clone(),
            &shared.config.snapshot,
            election_tick,
            applied,
            shared.config.log_level,
        );
        let mut pending = Pending::new(state);
        if let Some(restore) = restore {
            pending.set_restore(restore);
        }
        if shared.log_level() >= LogLevel::Info {
            let removed = found
                .removed
                .iter()
                .map(|path| format!("removed leftover snapshot file {}", path.display()));
            for text in note.into_iter().chain(removed) {
                pending.push_log(LogLine {
                    level: LogLevel::Info,
                    text,
                });
            }
        }
        let slot = Arc::new(Slot {
            id: group,
            mailbox: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            cell: Mutex::new(Cell {
                group: group_state,
                store,
            }),
            outbox: Mutex::new(Outbox {
                pending,
                listed: false,
            }),
            status: Arc::new(Mutex::new(status)),
            delivered: AtomicU64::new(applied),
            acked: AtomicU64::new(0),
            next_proposal_id: AtomicU64::new(1),
            ticks: shared.ticker.group_ticks(),
            cached_bytes: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            turn: Mutex::new(()),
            max_entry_bytes,
        });
        // Placed before it can be found to stop, so a stop unplaces it.
        shared.ticker.start(&slot);
        shared.groups.write().insert(group, slot.clone());
        // A first round hands out what the log already commits, and the
        // first status, without waiting for input; it lists the group for
        // the host, so what the start found comes in the same batch.
        shared.schedule(&slot, Busy::HandOff);
        Ok(())
    }

    /// Stops running a group; its state stays in the WAL and it can be
    /// started again.
    pub fn stop_group(&self, group: GroupId) -> Result<(), NodeError> {
        let slot = self
            .shared
            .groups
            .write()
            .remove(&group)
            .ok_or(NodeError::UnknownGroup(group))?;
        self.shared.forget(&slot);
        Ok(())
    }

    /// Stops a group and deletes its state: its WAL records (a durable
    /// tombstone) and its snapshot files.
    pub fn remove_group(&self, group: GroupId) -> Result<(), NodeError> {
        self.shared.check_alive()?;
        let slot = self
            .shared
            .groups
            .write()
            .remove(&group)
            .ok_or(NodeError::UnknownGroup(group))?;
        self.shared.forget(&slot);
        self.shared
            .wal
            .remove_group(group)
            .map_err(NodeError::Storage)?;
        // The group's own folder, above its snapshot folder (the store
        // creates both).
        let dir = self
            .shared
            .config
            .data_dir
            .join(GROUPS_DIR)
            .join(group.to_string());
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                return Err(NodeError::Resource(format!(
                    "removing {}: {err}",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    /// Advances every group's logical clock by one tick. A quiet group is
    /// given its ticks in bulk, when they would change something (a
    /// follower's check-in) or its next round comes for another reason;
    /// the tick itself reaches only the awake groups and the quiet ones
    /// whose ticks are due.
    pub fn tick(&self) -> Result<(), NodeError> {
        let shared = &self.shared;
        shared.check_alive()?;
        let tick = shared.ticker.tick();
        if tick.now % PURGE_CHECK_TICKS == 0 {
            shared.ask_pinning_groups();
        }
        shared
            .tick_visits
            .fetch_add(tick.reached, Ordering::Relaxed);
        // One marker in the mailbox however many ticks gather before the
        // group's next round: ticks never fill a mailbox. Delivered once
        // the ticker lets go: an inline runtime steps the group on this
        // thread, and its round places it with the ticker.
        for slot in &tick.to_mark {
            shared.deliver(slot, Work::Ticks);
        }
        Ok(())
    }

    /// Takes a message for `group` from a peer runtime, as bytes that
    /// runtime's group produced.
    pub fn step(&self, group: GroupId, bytes: &[u8]) -> Result<(), NodeError> {
        let msg = self.shared.check_message(bytes)?;
        let slot = self.shared.slot(group)?;
        self.shared.send_to(&slot, Input::Step(msg), Busy::HandOff)
    }

    /// Steps every message of a group frame from a peer runtime (docs/
    /// WIRE.md, "Group frames"). A malformed frame is refused whole.
    /// Messages are then taken one by one: those for a group not running
    /// here (it may start later than on its peers), those a full mailbox
    /// refuses (Raft resends what is lost) and those refused as
    /// malformed or misaddressed are left out and counted.
    pub fn step_frame(&self, frame: &[u8]) -> Result<FrameReport, NodeError> {
        self.shared.check_alive()?;
        let messages = decode_group_frame(frame).map_err(NodeError::MalformedMessage)?;
        let mut report = FrameReport::default();
        let groups = self.shared.groups.read();
        let mut touched: Vec<Arc<Slot>> = Vec::new();
        for (group, bytes) in messages {
            let msg = match self.shared.check_message(bytes) {
                Ok(msg) => msg,
                Err(_) => {
                    report.refused += 1;
                    continue;
                }
            };
            let Some(slot) = groups.get(&group) else {
                report.unknown_group += 1;
                continue;
            };
            let mut mailbox = slot.mailbox.lock();
            if mailbox.len() >= self.shared.config.mailbox_capacity {
                report.busy += 1;
                continue;
            }
            mailbox.push(Work::Input(Input::Step(msg)));
            drop(mailbox);
            report.stepped += 1;
            touched.push(slot.clone());
        }
        drop(groups);
        // Scheduled once the frame is in the mailboxes: a worker then
        // takes a group's share of the frame in one round.
        for slot in &touched {
            self.shared.schedule(slot, Busy::HandOff);
        }
        Ok(report)
    }

    /// Queues a proposal to `group` and returns its id (never 0, unique
    /// within the group). Its outcome arrives in a later batch of the
    /// group.
    pub fn propose(&self, group: GroupId, data: &[u8]) -> Result<u64, NodeError> {
        let slot = self.shared.slot(group)?;
        let size = data.len() as u64;
        if size > slot.max_entry_bytes {
            return Err(NodeError::ProposalTooLarge {
                size,
                limit: slot.max_entry_bytes,
            });
        }
        let proposal_id = slot.next_proposal_id.fetch_add(1, Ordering::Relaxed);
        self.shared.send_to(
            &slot,
            Input::Propose {
                proposal_id,
                data: Payload::from(data),
            },
            Busy::HandOff,
        )?;
        Ok(proposal_id)
    }

    /// Queues a membership change of `group` and returns its proposal id;
    /// its outcome arrives like that of [`Runtime::propose`]. Members are
    /// runtime ids.
    pub fn propose_conf_change(
        &self,
        group: GroupId,
        change: ConfChange,
    ) -> Result<u64, NodeError> {
        let slot = self.shared.slot(group)?;
        let proposal_id = slot.next_proposal_id.fetch_add(1, Ordering::Relaxed);
        self.shared.send_to(
            &slot,
            Input::ProposeConfChange {
                proposal_id,
                change,
            },
            Busy::Wait,
        )?;
        Ok(proposal_id)
    }

    /// Asks `group` for a linearizable read point; the result, tagged with
    /// `context`, arrives in a later batch of the group.
    pub fn read_index(&self, group: GroupId, context: u64) -> Result<(), NodeError> {
        self.send(group, Input::ReadIndex { context })
    }

    /// Asks `group`'s leader here to hand leadership to `to`.
    pub fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<(), NodeError> {
        self.send(group, Input::TransferLeader { to })
    }

    /// The host's transport could not reach runtime `peer`: every group
    /// hosting a replica there hears of it.
    pub fn report_unreachable(&self, peer: NodeId) -> Result<(), NodeError> {
        self.shared.check_alive()?;
        for slot in self.shared.groups.read().values() {
            self.shared
                .deliver(slot, Work::Input(Input::Unreachable { peer }));
        }
        Ok(())
    }

    /// The host applied every delivered entry of `group` through `index`.
    /// Costs the group no round of its own: the group takes the index in
    /// at its next round (a tick at the latest), or at once when a
    /// snapshot is begun. A group learns it only to offer snapshots and
    /// to report it in its status; nothing it sends waits on it.
    pub fn ack_applied(&self, group: GroupId, index: Index) -> Result<(), NodeError> {
        let slot = self.shared.slot(group)?;
        let delivered = slot.delivered.load(Ordering::Acquire);
        if index > delivered {
            return Err(NodeError::NotDelivered { index, delivered });
        }
        slot.acked.fetch_max(index, Ordering::AcqRel);
        Ok(())
    }

    /// Starts a snapshot of the host's state machine for `group` at
    /// `index`, which the host must have applied and acknowledged, and
    /// which must be later than the group's latest snapshot. The host
    /// fills the writer's file and finishes it: the group records the
    /// snapshot in the WAL and, once that is durable, compacts its log.
    pub fn begin_snapshot(
        &self,
        group: GroupId,
        index: Index,
    ) -> Result<SnapshotWriter, NodeError> {
        let slot = self.shared.slot(group)?;
        let (meta, store) = {
            let mut cell = slot.cell.lock();
            slot.take_acked(&mut cell.group);
            (cell.group.snapshot_meta_at(index)?, cell.store.clone())
        };
        let temp = store
            .create(meta.index, meta.term)
            .map_err(NodeError::Snapshot)?;
        let shared = Arc::downgrade(&self.shared);
        let deliver = Box::new(move |meta, file| {
            // A runtime stopped, or a group stopped, meanwhile leaves an
            // unrecorded file, which the group's next start deletes.
            let shared = shared
                .upgrade()
                .ok_or_else(|| NodeError::Failed("the runtime stopped".into()))?;
            let slot = shared.slot(group)?;
            let taken = slot.cell.lock().group.snapshot_taken(meta, file);
            shared.deliver(&slot, Work::Wake);
            taken.map_err(NodeError::from)
        });
        Ok(SnapshotWriter::new(temp, meta, deliver))
    }

    /// `group`'s state as of its last round; still answered after the
    /// runtime has failed.
    pub fn status(&self, group: GroupId) -> Result<Status, NodeError> {
        let groups = self.shared.groups.read();
        let slot = groups.get(&group).ok_or(NodeError::UnknownGroup(group))?;
        let status = slot.status.lock().clone();
        Ok(status)
    }

    /// What `group` and the shared WAL measured (see `crate::metrics`);
    /// still answered after the runtime has failed.
    pub fn metrics(&self, group: GroupId) -> Result<Metrics, NodeError> {
        let groups = self.shared.groups.read();
        let slot = groups.get(&group).ok_or(NodeError::UnknownGroup(group))?;
        let (apply_lag, cached_entry_bytes) = {
            let status = slot.status.lock();
            (
                status.commit.saturating_sub(status.applied),
                status.cached_entry_bytes,
            )
        };
        // Read from the group itself, waiting at most for a round that
        // holds it: a copy after every round would cost idle groups more
        // than the scrapes it serves.
        let group_metrics = slot.cell.lock().group.metrics();
        let metrics = Metrics {
            wal: self.shared.wal.metrics(),
            group: group_metrics,
            apply_lag,
            cached_entry_bytes,
        };
        Ok(metrics)
    }

    /// Where `group`'s status is published after each round.
    pub(crate) fn status_cell(&self, group: GroupId) -> Result<Arc<Mutex<Status>>, NodeError> {
        let groups = self.shared.groups.read();
        let slot = groups.get(&group).ok_or(NodeError::UnknownGroup(group))?;
        Ok(slot.status.clone())
    }

    /// Waits up to `timeout` for output of any group and takes all there
    /// is: one batch per group with output, in no particular order. An
    /// empty list when none came. After a failure, the output pending at
    /// that moment is still handed out, then every call returns the
    /// failure.
    pub fn poll(&self, timeout: Duration) -> Result<Vec<GroupReady>, NodeError> {
        let shared = &self.shared;
        let deadline = Instant::now().checked_add(timeout);
        let slots = {
            let mut ready = shared.ready.lock();
            loop {
                if !ready.is_empty() {
                    if !shared.failed.load(Ordering::Acquire) {
                        shared.readiness.clear();
                    }
                    break std::mem::take(&mut *ready);
                }
                if let Some(why) = shared.failure.lock().clone() {
                    return Err(NodeError::Failed(why));
                }
                let timed_out = match deadline {
                    Some(deadline) => shared
                        .ready_signal
                        .wait_until(&mut ready, deadline)
                        .timed_out(),
                    None => {
                        shared.ready_signal.wait(&mut ready);
                        false
                    }
                };
                if timed_out && ready.is_empty() {
                    return Ok(Vec::new());
                }
            }
        };
        Ok(slots
            .into_iter()
            .map(|slot| {
                let mut outbox = slot.outbox.lock();
                outbox.listed = false;
                let batch = outbox.pending.take();
                drop(outbox);
                // A restored snapshot counts as delivered through its index.
                let delivered = batch
                    .committed
                    .last()
                    .map(|last| last.entry.index)
                    .max(batch.restore.as_ref().map(|r| r.meta.index));
                if let Some(delivered) = delivered {
                    slot.delivered.store(delivered, Ordering::Release);
                }
                GroupReady {
                    group: slot.id,
                    batch,
                }
            })
            .collect())
    }

    fn send(&self, group: GroupId, input: Input) -> Result<(), NodeError> {
        let slot = self.shared.slot(group)?;
        self.shared.send_to(&slot, input, Busy::Wait)
    }

    /// A descriptor that is readable while output (or a failure) waits to
    /// be polled, for a host's event loop. Owned by the runtime: do not
    /// close it or read from it.
    pub fn readiness_fd(&self) -> RawFd {
        let ready = self.shared.ready.lock();
        let waiting = !ready.is_empty() || self.shared.failed.load(Ordering::Acquire);
        self.shared.readiness.arm(waiting)
    }

    /// Changes the level of the log lines every group hands out, from
    /// their next round.
    pub fn set_log_level(&self, level: LogLevel) {
        self.shared.log_level.store(level as u8, Ordering::Relaxed);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let shared = &self.shared;
        let join_verifiers = || {
            let verifiers = std::mem::take(&mut *shared.verifiers.lock());
            for verifier in verifiers {
                let _ = verifier.join();
            }
        };
        if shared.is_inline() {
            // A verifier steps its group when done, and may queue a sync:
            // the sync thread hangs up only after them.
            join_verifiers();
            drop(shared.sync_queue.lock().take());
        } else {
            // Each worker takes one stop mark after the work queued before
            // it.
            for _ in &self.threads {
                let _ = shared.run_queue.send(None);
            }
        }
        for thread in self.threads.drain(..) {
            // Panics were caught inside the thread (spawn_catching).
            let _ = thread.join();
        }
        for slot in shared.groups.read().values() {
            slot.cell.lock().group.stop_receiving();
        }
        join_verifiers();
        // A commit index written without a sync of its own is made durable
        // too, so a runtime stopped cleanly restarts where it stood.
        sync_everything_written(&self.shared.wal);
    }
}

impl Shared {
    fn check_alive(&self) -> Result<(), NodeError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(NodeError::Failed(
                self.failure.lock().clone().unwrap_or_default(),
            ));
        }
        Ok(())
    }

    fn slot(&self, group: GroupId) -> Result<Arc<Slot>, NodeError> {
        self.check_alive()?;
        self.groups
            .read()
            .get(&group)
            .cloned()
            .ok_or(NodeError::UnknownGroup(group))
    }

    /// Starts a thread of the runtime; a panic in it stops the runtime.
    fn spawn(
        self: &Arc<Self>,
        name: String,
        body: impl FnOnce(&Arc<Shared>) + Send + 'static,
    ) -> Result<JoinHandle<()>, NodeError> {
        let for_body = self.clone();
        let failing = self.clone();
        crate::threads::spawn_catching(name, move |why| failing.fail(why), move || body(&for_body))
    }

    fn is_inline(&self) -> bool {
        self.config.inline
    }

    fn log_level(&self) -> LogLevel {
        LogLevel::from_u8(self.log_level.load(Ordering::Relaxed)).unwrap_or(LogLevel::Off)
    }

    /// Inline runtime: hands a round's write to the sync thread; gives it
    /// back when there is none (the WAL does not sync, or the runtime is
    /// stopping) for the caller to wait for.
    fn queue_sync(&self, written: worker::Written) -> Result<(), worker::Written> {
        match &*self.sync_queue.lock() {
            Some(syncs) => syncs.send(written).map_err(|back| back.into_inner()),
            None => Err(written),
        }
    }

    /// The folder of `group`'s snapshot files, relative to the data
    /// directory. The store creates it with the group's first snapshot.
    fn snapshot_dir(&self, group: GroupId) -> PathBuf {
        if self.layout == Layout::SingleGroup {
            return PathBuf::from(SNAPSHOT_DIR);
        }
        Path::new(GROUPS_DIR)
            .join(group.to_string())
            .join(SNAPSHOT_DIR)
    }

    /// What the WAL holds of `group` (nothing for a new group): its hard
    /// state, its snapshot and the last entry after the snapshot. The core
    /// reads the rest through its log view as it starts (see
    /// `Raft::with_log_storage`), and keeps in memory only what the host
    /// has yet to apply.
    fn recovered(&self, group: GroupId) -> Result<Recovered, WalError> {
        let wal = &self.wal;
        let snapshot = wal.snapshot_of(group);
        let after_snapshot = snapshot.as_ref().map_or(0, |s| s.index) + 1;
        let first = wal.first_index_of(group).max(after_snapshot);
        let last = wal.last_index_of(group);
        let entries = if last >= first {
            wal.entries_of(group, last, last + 1, u64::MAX)?
        } else {
            Vec::new()
        };
        Ok(Recovered {
            hard_state: wal.hard_state_of(group),
            snapshot,
            entries,
        })
    }

    /// A group leaves: once a worker stepping it is done, its memory no
    /// longer counts toward the cache.
    fn forget(&self, slot: &Slot) {
        slot.stopped.store(true, Ordering::Release);
        // A worker may be stepping it: wait for that round to end. A
        // snapshot it was receiving is abandoned (its partial file goes).
        slot.cell.lock().group.stop_receiving();
        // No round of it runs from here on (a worker finds it stopped), so
        // none places it with the ticker again.
        self.ticker.stop(slot);
        self.recount_cache(slot, 0);
    }

    /// When the shared WAL has grown past its soft limit, asks the groups
    /// whose old entries keep its oldest segments for snapshots: once
    /// recorded, their logs are compacted and the segments go.
    fn ask_pinning_groups(self: &Arc<Self>) {
        let limit = self.config.wal_segments_soft_limit;
        if limit == 0 || self.wal.segment_count() <= limit {
            return;
        }
        let pinning = self.wal.groups_pinning_oldest(PURGE_ASKS);
        let groups = self.groups.read();
        let slots: Vec<Arc<Slot>> = pinning
            .iter()
            .filter_map(|(group, _)| groups.get(group).cloned())
            .collect();
        drop(groups);
        for slot in slots {
            self.deliver(&slot, Work::Input(Input::CompactionWanted));
        }
    }

    /// Decodes a message from a peer and checks it is one this runtime
    /// may take.
    fn check_message(&self, bytes: &[u8]) -> Result<Message, NodeError> {
        let msg = wire::decode(bytes).map_err(NodeError::MalformedMessage)?;
        msg.check_ceilings().map_err(NodeError::InvalidMessage)?;
        if msg.to != self.id {
            return Err(NodeError::WrongRecipient {
                to: msg.to,
                this_node: self.id,
            });
        }
        Ok(msg)
    }

    /// Records that `slot` now holds `bytes` of entries in memory; returns
    /// the runtime's new total.
    fn recount_cache(&self, slot: &Slot, bytes: u64) -> u64 {
        let before = slot.cached_bytes.swap(bytes, Ordering::Relaxed);
        // Wrapping: the difference may be negative; the total never is.
        let delta = bytes.wrapping_sub(before);
        self.cached_bytes
            .fetch_add(delta, Ordering::Relaxed)
            .wrapping_add(delta)
    }

    /// Queues a host input, refused when the mailbox is full.
    fn send_to(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        input: Input,
        busy: Busy,
    ) -> Result<(), NodeError> {
        {
            let mut mailbox = slot.mailbox.lock();
            if mailbox.len() >= self.config.mailbox_capacity {
                return Err(NodeError::Busy);
            }
            mailbox.push(Work::Input(input));
        }
        self.schedule(slot, busy);
        self.check_alive()
    }

    /// Queues work the runtime itself owes a group (ticks, durability,
    /// verified snapshots): never refused.
    fn deliver(self: &Arc<Self>, slot: &Arc<Slot>, work: Work) {
        slot.mailbox.lock().push(work);
        self.schedule(slot, Busy::Wait);
    }

    /// Gets the group stepped. With workers: puts it on the run queue
    /// unless it is there or held by a worker (which looks at the mailbox
    /// again when it lets go). Inline: steps it on this thread.
    fn schedule(self: &Arc<Self>, slot: &Arc<Slot>, busy: Busy) {
        if self.is_inline() {
            worker::drive_inline(self, slot, busy);
        } else if !slot.scheduled.swap(true, Ordering::SeqCst) {
            let _ = self.run_queue.send(Some(slot.clone()));
        }
    }

    /// Lists the group for the host when its outbox holds something.
    fn list_if_pending(&self, slot: &Arc<Slot>) {
        let mut outbox = slot.outbox.lock();
        if !outbox.listed && !outbox.pending.is_empty() {
            outbox.listed = true;
            let mut ready = self.ready.lock();
            if ready.is_empty() {
                self.readiness.signal();
            }
            ready.push(slot.clone());
            self.ready_signal.notify_all();
        }
    }

    /// Adds a line to a group's output when `level` is enabled; `text`
    /// runs only then.
    fn log(&self, slot: &Arc<Slot>, level: LogLevel, text: impl FnOnce() -> String) {
        if level != LogLevel::Off && level <= self.log_level() {
            slot.outbox.lock().pending.push_log(LogLine {
                level,
                text: text(),
            });
            self.list_if_pending(slot);
        }
    }

    /// Adds a line to a group's output.
    fn note(&self, slot: &Arc<Slot>, text: String) {
        self.log(slot, LogLevel::Info, || text);
    }

    /// Stops the runtime for good: the WAL failed (it is poisoned), or a
    /// worker panicked.
    fn fail(&self, why: String) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            *failure = Some(why);
            self.failed.store(true, Ordering::Release);
            drop(failure);
            let ready = self.ready.lock();
            if ready.is_empty() {
                self.readiness.signal();
            }
            self.ready_signal.notify_all();
        }
    }
}
