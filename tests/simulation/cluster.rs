//! A cluster of real Raft cores wired to the simulated network and disks,
//! driven by a virtual clock, with the safety checker watching every event.
//!
//! The cluster is the host of every core, and follows the host contract of
//! `Ready` to the letter: entries and hard state go to the disk (which
//! groups and splits writes as the node does, see `disk.rs`), `messages`
//! leave at once, `persisted_messages` leave and `on_persisted` is called
//! only when the disk reports the batch durable, and committed entries are
//! applied to a (volatile) state machine and acknowledged. It also plays the
//! node layer's part in snapshots (see `snapshot.rs`): it snapshots the
//! state machine when a scenario compacts a node, streams snapshots the
//! core asks for, assembles received chunks, writes the file, calls
//! `restore`, records the snapshot with the batch that reports it, and
//! restores the state machine from it, at runtime and at recovery.

use crate::checker::{entry_at, fingerprint, Checker};
use crate::disk::{Batch, Completed, Disk, DiskTiming, SharedWal, SnapshotFile, Write};
use crate::fnv::Fnv;
use crate::membership::Members;
use crate::network::{Links, NetFaults, Network};
use crate::rng::SplitMix64;
use crate::snapshot::{self, Machine, Receiving};
use embraft::core::{
    ConfChange, Config, ConfigError, Entry, EntryKind, Index, NodeId, ProposeError, Raft, Role,
    StepError, Term, TransferError, QUIESCENT_CHECK_TIMEOUTS,
};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Virtual time units per Raft tick. Message and disk delays are drawn in
/// these units, so most of them fall within a tick.
pub const TICK: u64 = 10;

/// At most this many nodes take part at once: members, blank joiners
/// waiting to be added, and removed nodes still running.
pub const MAX_SLOTS: usize = 7;

/// Node ids one run may use. A removed node never comes back under its old
/// id (a stale leader could still count it by that id); its slot goes to a
/// new node with a fresh id instead.
pub const MAX_NODE_IDS: usize = 48;

/// How a scenario's cluster is built and how hostile its environment is.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The founding voters: nodes `1..=nodes`.
    pub nodes: usize,
    /// Nodes running from the start: the founders, then blank joiners (no
    /// membership yet) that can be added later. At most [`MAX_SLOTS`].
    pub slots: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub lease_reads: bool,
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    pub net: NetFaults,
    pub disk: DiskTiming,
    /// Entries a node keeps in memory before the index it compacts at
    /// (the core's `compact_keep_entries`).
    pub compact_keep_entries: u64,
    /// Idle ticks before a leader quiesces (the core's `quiesce_tick`; 0:
    /// never).
    pub quiesce_tick: u32,
    /// Bytes of entries a node caches (the core's `max_cached_bytes`); when
    /// not 0, each node reads evicted entries back from its simulated disk.
    /// `EMBRAFT_SIM_MAX_CACHED_BYTES` sets it for every scenario.
    pub max_cached_bytes: u64,
    /// Reads of evicted entries in a thousand that fail.
    pub log_read_failures_per_mille: u64,
    /// The core's `skip_commit_broadcast` for every node, or `None`: each
    /// node start draws it from the node's seed, so every scenario runs
    /// leaders of both kinds, and clusters that mix them, at no extra
    /// cost. `EMBRAFT_SIM_SKIP_COMMIT_BROADCAST=0|1` sets it for every
    /// scenario.
    pub skip_commit_broadcast: Option<bool>,
}

/// The cache bound every scenario runs with unless it sets its own: the
/// environment's `EMBRAFT_SIM_MAX_CACHED_BYTES`, or 0 (no bound, no view).
fn max_cached_bytes_from_env() -> u64 {
    let Ok(value) = std::env::var("EMBRAFT_SIM_MAX_CACHED_BYTES") else {
        return 0;
    };
    value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("EMBRAFT_SIM_MAX_CACHED_BYTES must be a number, not {value:?}"))
}

/// `EMBRAFT_SIM_SKIP_COMMIT_BROADCAST`, if set (see
/// [`Options::skip_commit_broadcast`]).
fn skip_commit_broadcast_from_env() -> Option<bool> {
    let value = std::env::var("EMBRAFT_SIM_SKIP_COMMIT_BROADCAST").ok()?;
    match value.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => panic!("EMBRAFT_SIM_SKIP_COMMIT_BROADCAST must be 0 or 1, not {value:?}"),
    }
}

impl Options {
    pub fn new(nodes: usize) -> Options {
        Options {
            nodes,
            slots: nodes,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            election_tick: 10,
            heartbeat_tick: 2,
            net: NetFaults::RELIABLE,
            disk: DiskTiming {
                min_delay: 1,
                max_delay: 8,
            },
            compact_keep_entries: Config::default().compact_keep_entries,
            quiesce_tick: 0,
            max_cached_bytes: max_cached_bytes_from_env(),
            log_read_failures_per_mille: 0,
            skip_commit_broadcast: skip_commit_broadcast_from_env(),
        }
    }

    /// The longest a healthy cluster should need to elect a leader: many
    /// randomized election timeouts, allowing for split votes. Without
    /// pre-vote, candidates with stale logs can keep resetting the timer of
    /// the one node that could win; one seed in 20,000 of figure8_reliable
    /// (18829) needed 12.5 timeouts after healing.
    /// With quiescence, add the slow check-in a quiescent follower makes
    /// before it notices a leader that died quietly (twice, for the
    /// randomized timeout it is measured in).
    pub fn election_budget(&self) -> u64 {
        let check_in = if self.quiesce_tick > 0 {
            2 * QUIESCENT_CHECK_TIMEOUTS
        } else {
            0
        };
        u64::from(self.election_tick) * u64::from(25 + check_in)
    }
}

pub struct Cluster {
    pub rng: SplitMix64,
    opts: Options,
    now: u64,
    ticks: u64,
    /// `None` while the node is down. Index `id - 1`, for every node
    /// created so far (ids are given out in order).
    rafts: Vec<Option<Raft>>,
    disks: Vec<Disk>,
    /// The host's volatile state per node: its state machine, its latest
    /// snapshot (the one it streams), and a snapshot it receives.
    machines: Vec<Machine>,
    latest_snapshots: Vec<Option<SnapshotFile>>,
    receiving: Vec<Receiving>,
    /// Snapshots each node installed from a leader, durably.
    installs: Vec<u64>,
    /// Nodes whose slot went to a new node: stopped for good.
    retired: Vec<bool>,
    pub net: Network,
    checker: Checker,
    next_payload: u64,
    next_read_context: u64,
    trace: bool,
    /// Reads of evicted entries the nodes' cores made from their disks.
    log_reads: Arc<AtomicU64>,
    /// Set when this cluster is one group of many sharing processes.
    processes: Option<Processes>,
}

/// The processes a group's nodes run on, when many groups share them (see
/// `groups.rs`): node `id` runs on process `hosts[id - 1]`, and writes go
/// through that process's shared WAL, `wals[host - 1]`.
struct Processes {
    /// This group's index among the groups.
    group: usize,
    hosts: Vec<NodeId>,
    wals: Rc<RefCell<Vec<SharedWal>>>,
}

/// The proposals [`Cluster::propose_until`] has made: one through each
/// stable leader's term, again when leadership moves or the leader refused.
#[derive(Default)]
pub struct Proposals {
    made: Vec<(Index, Term)>,
    made_in: Option<Term>,
}

impl Proposals {
    /// Returns what `done` returns for the proposals so far, or proposes
    /// through the current stable leader if none was made in its term.
    pub fn step<R>(
        &mut self,
        c: &mut Cluster,
        propose: &mut impl FnMut(&mut Cluster, NodeId) -> Result<(Index, Term), ProposeError>,
        done: &impl Fn(&Cluster, &[(Index, Term)]) -> Option<R>,
    ) -> Option<R> {
        if let Some(result) = done(c, &self.made) {
            return Some(result);
        }
        if let Some(leader) = c.stable_leader() {
            let term = c.node(leader).term();
            if self.made_in != Some(term) {
                if let Ok(p) = propose(c, leader) {
                    self.made.push(p);
                    self.made_in = Some(term);
                }
            }
        }
        None
    }
}

/// Which of `proposed` committed first, if any did.
pub fn first_committed(c: &Cluster, proposed: &[(Index, Term)]) -> Option<(Index, Term)> {
    proposed
        .iter()
        .copied()
        .find(|&(i, t)| c.is_committed(i, t))
}

impl Cluster {
    pub fn new(rng: SplitMix64, opts: Options) -> Cluster {
        let net = Network::new(MAX_NODE_IDS, opts.net);
        Cluster::build(rng, opts, net, None)
    }

    /// Group `group` of many on shared processes: node `id` runs on process
    /// `hosts[id - 1]`, reaches the others over `links` between the
    /// processes, and writes through its process's WAL in `wals`.
    pub fn on_processes(
        group: usize,
        rng: SplitMix64,
        opts: Options,
        links: Rc<RefCell<Links>>,
        wals: Rc<RefCell<Vec<SharedWal>>>,
        hosts: Vec<NodeId>,
    ) -> Cluster {
        assert_eq!(hosts.len(), opts.slots, "a node without a process");
        let net = Network::over(links, Some(hosts.clone()), opts.slots, opts.net);
        Cluster::build(rng, opts, net, Some(Processes { group, hosts, wals }))
    }

    fn build(
        rng: SplitMix64,
        opts: Options,
        net: Network,
        processes: Option<Processes>,
    ) -> Cluster {
        assert!(
            opts.nodes >= 1 && opts.nodes <= opts.slots && opts.slots <= MAX_SLOTS,
            "{opts:?} does not fit the simulator"
        );
        let mut cluster = Cluster {
            rng,
            opts,
            now: 0,
            ticks: 0,
            rafts: Vec::new(),
            disks: Vec::new(),
            machines: Vec::new(),
            latest_snapshots: Vec::new(),
            receiving: Vec::new(),
            installs: Vec::new(),
            retired: Vec::new(),
            net,
            checker: Checker::new(MAX_NODE_IDS),
            next_payload: 0,
            next_read_context: 0,
            trace: std::env::var_os("EMBRAFT_SIM_TRACE").is_some(),
            log_reads: Arc::default(),
            processes,
        };
        // Every founder's disk holds the founding entry before any starts.
        let founders: Vec<NodeId> = (1..=opts.nodes as NodeId).collect();
        for id in 1..=opts.slots as NodeId {
            let disk = if founders.contains(&id) {
                Disk::founding(&founders)
            } else {
                Disk::default()
            };
            cluster.create(disk);
        }
        for id in cluster.ids() {
            cluster.start(id);
        }
        cluster
    }

    /// Creates the next node, down, on `disk`; returns its id.
    fn create(&mut self, disk: Disk) -> NodeId {
        assert!(
            self.disks.len() < MAX_NODE_IDS,
            "the run used up its node ids"
        );
        self.rafts.push(None);
        self.disks.push(disk);
        self.machines.push(Machine::default());
        self.latest_snapshots.push(None);
        self.receiving.push(Receiving::Idle);
        self.installs.push(0);
        self.retired.push(false);
        self.disks.len() as NodeId
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    /// Every node taking part: all but the retired ones.
    pub fn ids(&self) -> Vec<NodeId> {
        self.all_ids()
            .filter(|&id| !self.retired[slot(id)])
            .collect()
    }

    /// Every node ever created, retired ones included.
    fn all_ids(&self) -> impl Iterator<Item = NodeId> {
        1..=self.disks.len() as NodeId
    }

    /// A quorum of the founding voters, for scenarios whose membership
    /// never changes.
    pub fn quorum(&self) -> usize {
        self.opts.nodes / 2 + 1
    }

    // ---- membership ----

    /// The membership the committed log has put in force.
    pub fn membership(&self) -> &Members {
        self.checker.latest_config()
    }

    /// Members (voters and learners) of the membership in force.
    pub fn members(&self) -> Vec<NodeId> {
        self.membership().members()
    }

    /// The membership node `id` has in force.
    pub fn membership_of(&self, id: NodeId) -> Members {
        Members::from_conf_state(&self.node(id).status().conf_state)
    }

    /// Proposes a membership change on node `id`.
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        change: &ConfChange,
    ) -> Result<(Index, Term), ProposeError> {
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        let result = raft.propose_conf_change(change);
        self.trace_line(|| format!("propose {change:?} on {id}: {result:?}"));
        self.after_event(id);
        result
    }

    /// Whether leader `leader` knows `learner` to have replicated through
    /// its commit index (what a host checks before promoting a learner).
    pub fn caught_up(&self, leader: NodeId, learner: NodeId) -> bool {
        let status = self.node(leader).status();
        status
            .peers
            .iter()
            .any(|p| p.id == learner && p.match_index >= status.commit)
    }

    /// Whether node `id`'s disk holds nothing: a joiner never added.
    pub fn is_blank(&self, id: NodeId) -> bool {
        self.disks[slot(id)].is_blank()
    }

    /// Whether node `id` counts in no membership any node may still decide
    /// by (neither the one in force nor the one before it), nor in one a
    /// change not yet committed would put in force, so that its data may
    /// go.
    pub fn is_forgotten(&self, id: NodeId) -> bool {
        !self.checker.may_count(id) && !self.named_by_uncommitted_change(id)
    }

    /// Whether a membership change beyond the committed log, in any node's
    /// log (durable or not), makes `id` a member: a removed node whose
    /// disk stayed blank is a joiner again, and a leader may add it back
    /// with a change that commits only after the node would be retired.
    fn named_by_uncommitted_change(&self, id: NodeId) -> bool {
        let committed = self.checker.committed_len();
        let adds = |e: &Entry| {
            e.index > committed
                && e.kind == EntryKind::ConfChange
                && ConfChange::decode(&e.data).is_some_and(|change| match change {
                    ConfChange::AddVoter(x)
                    | ConfChange::PromoteLearner(x)
                    | ConfChange::AddLearner(x) => x == id,
                    ConfChange::EnterJoint { voters, learners } => {
                        voters.contains(&id) || learners.contains(&id)
                    }
                    ConfChange::RemoveNode(_) | ConfChange::LeaveJoint => false,
                })
        };
        self.disks.iter().any(|d| d.log().iter().any(adds))
            || self
                .rafts
                .iter()
                .flatten()
                .any(|r| r.log_entries().iter().any(adds))
    }

    /// A removed node leaves for good: it stops, its data is deleted, and a
    /// blank joiner with a fresh id takes its slot. Returns the new id.
    pub fn replace(&mut self, id: NodeId) -> NodeId {
        assert!(
            self.is_forgotten(id),
            "node {id} may still count in a quorum"
        );
        if self.is_up(id) {
            self.crash(id);
        }
        self.retired[slot(id)] = true;
        self.disks[slot(id)].wipe();
        self.checker.on_wipe(&self.disks);
        self.trace_line(|| format!("retire {id}"));
        let new = self.create(Disk::default());
        self.start(new);
        new
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    // ---- nodes: start, crash, restart, inspect ----

    /// Starts a node from whatever its disk holds, with a fresh seed.
    fn start(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        let config = Config {
            id,
            election_tick: self.opts.election_tick,
            heartbeat_tick: self.opts.heartbeat_tick,
            pre_vote: self.opts.pre_vote,
            check_quorum: self.opts.check_quorum,
            lease_reads: self.opts.lease_reads,
            compact_keep_entries: self.opts.compact_keep_entries,
            quiesce_tick: self.opts.quiesce_tick,
            max_cached_bytes: self.opts.max_cached_bytes,
            // A bit of the seed rather than a draw of its own: the random
            // stream, and so every seed's faults, stay as they were.
            skip_commit_broadcast: self.opts.skip_commit_broadcast.unwrap_or(seed >> 63 == 1),
            seed,
            ..Config::default()
        };
        let mut initial = self.disks[slot(id)].recover();
        let raft = if self.opts.max_cached_bytes > 0 {
            // The host hands over the newest few entries; the core reads
            // the rest from the disk.
            let keep = self.rng.between(1, 8) as usize;
            initial
                .entries
                .drain(..initial.entries.len().saturating_sub(keep));
            loop {
                let rng = SplitMix64::new(self.rng.next_u64());
                let failures = self.opts.log_read_failures_per_mille;
                let reads = Arc::clone(&self.log_reads);
                let view = self.disks[slot(id)].log_view(rng, failures, reads);
                match Raft::with_log_storage(config.clone(), initial.clone(), Box::new(view)) {
                    // A start that could not read its log is tried again.
                    Err(ConfigError::LogRead(_)) => continue,
                    started => break started,
                }
            }
        } else {
            Raft::new(config, initial)
        };
        let raft = raft.unwrap_or_else(|e| panic!("node {id} refused its recovered state: {e}"));
        self.rafts[slot(id)] = Some(raft);
        self.checker.on_restart(id);
        // The host restores its state machine from the recorded snapshot.
        let snapshot = self.disks[slot(id)].snapshot().cloned();
        self.machines[slot(id)] = Machine::default();
        self.receiving[slot(id)] = Receiving::Idle;
        if let Some(file) = &snapshot {
            let machine = Machine::from_snapshot(&file.data);
            self.checker.on_snapshot_restored(id, &file.meta, machine);
            self.machines[slot(id)] = machine;
        }
        self.latest_snapshots[slot(id)] = snapshot;
        self.trace_line(|| format!("start {id}"));
        self.after_event(id);
        // A node recovers the membership its durable log puts in force.
        let raft = self.node(id);
        self.checker
            .on_conf_state(id, raft.commit_index(), &raft.status().conf_state);
    }

    /// Power loss: the node stops, and every write not yet durable is lost.
    pub fn crash(&mut self, id: NodeId) {
        assert!(self.is_up(id), "node {id} is already down");
        self.rafts[slot(id)] = None;
        self.disks[slot(id)].crash();
        self.trace_line(|| format!("crash {id}"));
    }

    pub fn restart(&mut self, id: NodeId) {
        assert!(!self.is_up(id), "node {id} is already up");
        assert!(!self.retired[slot(id)], "node {id} left for good");
        self.start(id);
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.rafts[slot(id)].is_some()
    }

    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&id| self.is_up(id))
            .collect()
    }

    /// Nodes that are down, retired ones excepted.
    pub fn down_nodes(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&id| !self.is_up(id))
            .collect()
    }

    /// The core of a running node.
    pub fn node(&self, id: NodeId) -> &Raft {
        self.rafts[slot(id)]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// The last entry of a running node's log, cached or only durable.
    pub fn last_entry(&self, id: NodeId) -> Entry {
        let raft = self.node(id);
        let last = raft.status().last_index;
        entry_at(raft.log_entries(), last)
            .cloned()
            .or_else(|| self.disks[slot(id)].entry(last))
            .unwrap_or_else(|| panic!("node {id} holds no entry at its last index {last}"))
    }

    /// How many times the nodes read evicted entries back from their disks.
    pub fn log_reads(&self) -> u64 {
        self.log_reads.load(Ordering::Relaxed)
    }

    /// The term of the entry at `index` in the node's durable log.
    pub fn durable_term_at(&self, id: NodeId, index: Index) -> Option<Term> {
        self.disks[slot(id)].term_at(index)
    }

    pub fn applied(&self, id: NodeId) -> Index {
        self.checker.applied(id)
    }

    // ---- snapshots ----

    /// The host of node `id` snapshots its state machine and compacts the
    /// log through what it applied, if that is beyond its latest snapshot:
    /// the snapshot file and its record are written, then the log before
    /// the core's first index goes. Returns the snapshot's index.
    pub fn compact(&mut self, id: NodeId) -> Option<Index> {
        let machine = self.machines[slot(id)];
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        if machine.applied <= raft.status().snapshot_index {
            return None;
        }
        let meta = raft
            .compact(machine.applied)
            .unwrap_or_else(|e| panic!("node {id} refused to compact what it applied: {e}"));
        self.checker.on_snapshot_taken(id, &meta, machine);
        let file = SnapshotFile {
            meta,
            data: machine.snapshot_data(),
        };
        let keep_from = raft.first_index();
        self.trace_line(|| {
            format!(
                "compact {id} through {} keeping from {keep_from}",
                machine.applied
            )
        });
        self.latest_snapshots[slot(id)] = Some(file.clone());
        self.submit(id, Write::Compaction { file, keep_from });
        self.after_event(id);
        Some(machine.applied)
    }

    fn submit(&mut self, id: NodeId, write: Write) {
        let processes = self.processes.as_ref();
        let (now, timing) = (self.now, self.opts.disk);
        submit(
            &mut self.disks,
            processes,
            id,
            now,
            &mut self.rng,
            timing,
            write,
        );
    }

    /// Where node `id` stands in receiving a snapshot.
    pub fn receiving(&self, id: NodeId) -> &Receiving {
        &self.receiving[slot(id)]
    }

    /// The index of the snapshot recorded on node `id`'s disk (0 if none).
    pub fn recorded_snapshot(&self, id: NodeId) -> Index {
        self.disks[slot(id)].snapshot_index()
    }

    /// How many snapshots node `id` installed from a leader, durably.
    pub fn installs(&self, id: NodeId) -> u64 {
        self.installs[slot(id)]
    }

    /// Draws `k` distinct nodes out of `ids`.
    pub fn pick(&mut self, ids: &[NodeId], k: usize) -> Vec<NodeId> {
        let mut pool = ids.to_vec();
        (0..k)
            .map(|_| pool.swap_remove(self.rng.below(pool.len() as u64) as usize))
            .collect()
    }

    pub fn pick_one(&mut self, ids: &[NodeId]) -> NodeId {
        ids[self.rng.below(ids.len() as u64) as usize]
    }

    /// A hash of the run's observable state: clock, message counts, and
    /// every node's durable and volatile state. Two runs of one seed must
    /// agree on it.
    pub fn digest(&self) -> u64 {
        fn log<'a>(h: &mut Fnv, entries: impl IntoIterator<Item = &'a Entry>) {
            for e in entries {
                h.u64(e.index).u64(e.term).u64(fingerprint(e));
            }
        }
        let mut h = Fnv::new();
        h.u64(self.now)
            .u64(self.ticks)
            .u64(self.checker.committed_len());
        for &n in &self.net.stats.sent {
            h.u64(n);
        }
        for id in self.all_ids() {
            let disk = &self.disks[slot(id)];
            let hs = disk.hard_state();
            h.u64(hs.term)
                .u64(hs.vote)
                .u64(hs.commit)
                .u64(disk.snapshot_index());
            log(&mut h, &disk.log());
            let machine = self.machines[slot(id)];
            h.u64(machine.applied).u64(machine.digest);
            if let Some(raft) = &self.rafts[slot(id)] {
                h.u64(raft.term())
                    .u64(raft.commit_index())
                    .u64(raft.role() as u64);
                log(&mut h, raft.log_entries());
            }
        }
        h.finish()
    }

    /// Every node's state, for the message of a failed liveness check.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "at tick {}, committed through {}, membership in force {:?}",
            self.ticks,
            self.committed_len(),
            self.membership()
        );
        for id in self.ids() {
            let line = match &self.rafts[slot(id)] {
                None => "down".to_string(),
                Some(raft) => {
                    let st = raft.status();
                    format!(
                        "{:?} term {} leader {} commit {} snapshot {} last {} applied {} \
                         voters {:?} outgoing {:?} learners {:?}",
                        st.role,
                        st.term,
                        st.leader,
                        st.commit,
                        st.snapshot_index,
                        st.last_index,
                        self.applied(id),
                        st.conf_state.voters,
                        st.conf_state.voters_outgoing,
                        st.conf_state.learners
                    )
                }
            };
            out.push_str(&format!("\n  node {id}: {line}"));
        }
        out
    }

    // ---- time ----

    /// Runs `n` ticks of virtual time.
    pub fn run_ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Runs until `done` holds (checked after every tick), for at most
    /// `max_ticks`. Returns whether it held.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.tick();
        }
        done(self)
    }

    /// Like [`Cluster::run_until`], but checks `done` after every single
    /// event, so a scenario can act between a node's change of state and the
    /// delivery of the messages it sent about it.
    pub fn run_until_event(
        &mut self,
        max_ticks: u64,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> bool {
        let deadline = self.ticks + max_ticks;
        while self.ticks < deadline {
            if done(self) {
                return true;
            }
            let tick_at = (self.ticks + 1) * TICK;
            match self.next_event_at().filter(|&at| at <= tick_at) {
                Some(at) => {
                    self.now = at;
                    self.process_event_at(at);
                }
                None => self.tick(),
            }
        }
        done(self)
    }

    /// Runs `units` of virtual time, which need not be whole ticks: crashes
    /// and partitions can then land between a message's send and its
    /// delivery, or between a write and its completion.
    pub fn advance(&mut self, units: u64) {
        let until = self.now + units;
        while (self.ticks + 1) * TICK <= until {
            self.tick();
        }
        self.process_events_through(until);
        self.now = until;
    }

    fn process_events_through(&mut self, until: u64) {
        while let Some(at) = self.next_event_at().filter(|&at| at <= until) {
            self.now = at;
            self.process_event_at(at);
        }
    }

    /// Delivers everything due before the next tick, then ticks every
    /// running node.
    fn tick(&mut self) {
        let tick_at = (self.ticks + 1) * TICK;
        self.process_events_through(tick_at);
        self.now = tick_at;
        self.tick_nodes();
    }

    /// Ticks every running node, at a tick's time.
    pub fn tick_nodes(&mut self) {
        self.ticks += 1;
        for id in self.all_ids() {
            if let Some(raft) = self.rafts[slot(id)].as_mut() {
                raft.tick();
                self.after_event(id);
            }
        }
    }

    /// Sets the virtual time, for a driver running many clusters on one
    /// clock (see `groups.rs`); time never goes back.
    pub fn set_now(&mut self, now: u64) {
        debug_assert!(now >= self.now, "time went back");
        self.now = now;
    }

    /// When node `id`'s latest completed write was made durable.
    pub fn durable_at(&self, id: NodeId) -> u64 {
        self.disks[slot(id)].durable_at()
    }

    /// When node `id`'s next pending write completes, if it has one.
    pub fn next_completion_at(&self, id: NodeId) -> Option<u64> {
        self.disks[slot(id)].next_completion_at()
    }

    fn next_event_at(&self) -> Option<u64> {
        let disk = self
            .disks
            .iter()
            .filter_map(|d| d.next_completion_at())
            .min();
        match (self.net.next_delivery_at(), disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs one event due at `at`: a disk completion first (lowest node id
    /// first), else a message delivery.
    fn process_event_at(&mut self, at: u64) {
        let writer = self
            .all_ids()
            .find(|&id| self.disks[slot(id)].next_completion_at() == Some(at));
        match writer {
            Some(id) => self.complete_write(id),
            None => self.deliver_next(),
        }
    }

    /// Takes the next message off the wire and delivers it.
    pub fn deliver_next(&mut self) {
        let Some(msg) = self.net.deliver_next() else {
            return;
        };
        let to = msg.to;
        let Some(raft) = self.rafts[slot(to)].as_mut() else {
            return;
        };
        if self.trace {
            eprintln!("t={} deliver {msg:?}", self.now);
        }
        match raft.step(msg) {
            // Members refuse non-members (a removed node, or a new one this
            // node has not seen added yet).
            Ok(()) | Err(StepError::UnknownSender(_)) => {}
            Err(e) => panic!("node {to} refused a genuine message: {e}"),
        }
        self.after_event(to);
    }

    /// Makes node `id`'s oldest pending write durable and tells the node.
    pub fn complete_write(&mut self, id: NodeId) {
        let raft = self.rafts[slot(id)]
            .as_mut()
            .expect("a crashed node has no pending writes");
        match self.disks[slot(id)].complete_next() {
            Completed::Batch {
                readies,
                replaced_from,
                installed,
            } => {
                if self.trace {
                    let numbers: Vec<u64> = readies.iter().map(|(n, _)| *n).collect();
                    eprintln!("t={} durable {id} batches {numbers:?}", self.now);
                }
                if let Some(file) = installed {
                    // The snapshot is recorded: the host restores its state
                    // machine from it.
                    let machine = Machine::from_snapshot(&file.data);
                    self.checker.on_snapshot_restored(id, &file.meta, machine);
                    self.machines[slot(id)] = machine;
                    self.latest_snapshots[slot(id)] = Some(file);
                    self.receiving[slot(id)] = Receiving::Idle;
                    self.installs[slot(id)] += 1;
                }
                if let Some(from) = replaced_from {
                    self.checker.on_durable_replace(from, &self.disks);
                }
                for (ready_number, persisted_messages) in readies {
                    for m in &persisted_messages {
                        self.net.send(self.now, &mut self.rng, m);
                    }
                    raft.on_persisted(ready_number);
                }
            }
            Completed::Prefix { replaced_from } => {
                if self.trace {
                    eprintln!("t={} durable {id} prefix", self.now);
                }
                if let Some(from) = replaced_from {
                    self.checker.on_durable_replace(from, &self.disks);
                }
            }
            Completed::Compaction => {
                if self.trace {
                    eprintln!("t={} durable {id} compaction", self.now);
                }
            }
            Completed::ReceivedFile(file) => {
                // The whole snapshot is on disk: the core may take it.
                let taken = raft.restore(file.meta.clone());
                if self.trace {
                    eprintln!(
                        "t={} durable {id} received {:?}: {taken}",
                        self.now, file.meta
                    );
                }
                self.receiving[slot(id)] = if taken {
                    Receiving::Recording(file.meta)
                } else {
                    self.disks[slot(id)].delete_received();
                    Receiving::Idle
                };
            }
        }
        self.after_event(id);
    }

    /// Checks the node, then serves every ready batch it has.
    fn after_event(&mut self, id: NodeId) {
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        self.checker.observe(raft, &self.disks);
        // A core that keeps reporting work after it was taken would spin the
        // simulator forever; a few rounds are plenty.
        for _ in 0..8 {
            if !raft.has_ready() {
                return;
            }
            let rd = raft.ready();
            if self.trace {
                eprintln!("t={} ready {id} {rd:?}", self.now);
            }
            if let Some(first) = rd.entries.first() {
                // Held (cached or evicted), or the snapshot's last entry.
                let prev_term = match first.index - 1 {
                    0 => 0,
                    prev => raft
                        .log_term(prev)
                        .unwrap_or_else(|| panic!("node {id} wrote index {first:?} after a gap")),
                };
                self.checker.on_entries_written(id, prev_term, &rd.entries);
            }
            for m in &rd.messages {
                self.net.send(self.now, &mut self.rng, m);
            }
            for (peer, meta) in &rd.snapshots_to_send {
                let file = self.latest_snapshots[slot(id)]
                    .as_ref()
                    .filter(|f| f.meta == *meta)
                    .unwrap_or_else(|| {
                        panic!("node {id} asked to send {meta:?}, not its snapshot")
                    });
                snapshot::send(raft, &mut self.net, &mut self.rng, self.now, file, *peer);
            }
            for chunk in rd.snapshot_chunks {
                if let Some(file) = self.receiving[slot(id)].take(chunk) {
                    submit(
                        &mut self.disks,
                        self.processes.as_ref(),
                        id,
                        self.now,
                        &mut self.rng,
                        self.opts.disk,
                        Write::ReceivedFile(file),
                    );
                }
            }
            if let Some(meta) = &rd.snapshot {
                assert!(
                    matches!(&self.receiving[slot(id)], Receiving::Recording(m) if m == meta),
                    "node {id} installed {meta:?}, which its host did not hand it"
                );
            }
            submit(
                &mut self.disks,
                self.processes.as_ref(),
                id,
                self.now,
                &mut self.rng,
                self.opts.disk,
                Write::Batch(Batch {
                    ready_number: rd.number,
                    hard_state: rd.hard_state,
                    entries: rd.entries,
                    persisted_messages: rd.persisted_messages,
                    installs: rd.snapshot,
                }),
            );
            for state in &rd.read_states {
                self.checker.on_read_state(id, state);
            }
            if let Some(last) = rd.committed_entries.last() {
                let last = last.index;
                let machine = &mut self.machines[slot(id)];
                let states: Vec<Machine> = rd
                    .committed_entries
                    .iter()
                    .map(|e| {
                        machine.apply(e);
                        *machine
                    })
                    .collect();
                self.checker
                    .on_applied(id, &rd.committed_entries, &states, &self.disks);
                if let Some(cs) = &rd.conf_state {
                    self.checker.on_conf_state(id, last, cs);
                }
                raft.on_applied(last);
            }
            assert!(
                rd.conf_state.is_none() || !rd.committed_entries.is_empty(),
                "node {id} reported a new membership without applying anything"
            );
            self.checker.observe(raft, &self.disks);
        }
        panic!("node {id} still has work after 8 ready batches in a row");
    }

    fn trace_line(&self, line: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("t={} {}", self.now, line());
        }
    }

    // ---- clients and leaders ----

    /// A payload no other proposal of this run carries.
    pub fn fresh_payload(&mut self) -> Vec<u8> {
        self.next_payload += 1;
        self.next_payload.to_le_bytes().to_vec()
    }

    pub fn propose(&mut self, id: NodeId) -> Result<(Index, Term), ProposeError> {
        let data = self.fresh_payload();
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        let result = raft.propose(data);
        self.after_event(id);
        result
    }

    /// Asks the node for a linearizable read point; the checker verifies
    /// the outcome when it arrives. Returns the read's context, or `None`
    /// when the node refused at once (it knows no leader).
    pub fn read(&mut self, id: NodeId) -> Option<u64> {
        self.next_read_context += 1;
        let context = self.next_read_context;
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        let accepted = raft.read_index(context).is_ok();
        if accepted {
            self.checker.on_read_requested(id, context);
        }
        self.after_event(id);
        accepted.then_some(context)
    }

    /// Liveness of reads: the node gets a read point within the budget,
    /// asking again whenever a read fails.
    pub fn await_read(&mut self, id: NodeId) {
        let budget = self.opts.election_budget();
        let start = self.ticks;
        let served = self.checker.reads_served();
        let mut pending = None;
        while self.ticks - start < budget {
            if self.checker.reads_served() > served {
                return;
            }
            if pending.map_or(true, |context| !self.checker.read_outstanding(context)) {
                pending = self.read(id);
            }
            self.tick();
        }
        panic!(
            "liveness: node {id} got no read point within {budget} ticks\n{}",
            self.describe()
        );
    }

    pub fn transfer_leader(&mut self, id: NodeId, to: NodeId) -> Result<(), TransferError> {
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        let result = raft.transfer_leader(to);
        self.after_event(id);
        result
    }

    /// Makes the node start an election now, as its election timeout would.
    pub fn campaign(&mut self, id: NodeId) {
        let raft = self.rafts[slot(id)].as_mut().expect("node is up");
        raft.campaign();
        self.after_event(id);
    }

    /// The running node that leads the highest term, if any does.
    pub fn leader(&self) -> Option<NodeId> {
        self.up_nodes()
            .into_iter()
            .filter(|&id| self.node(id).role() == Role::Leader)
            .max_by_key(|&id| self.node(id).term())
    }

    /// A leader that a quorum of running nodes it can reach (itself
    /// included) follows in its term: elected, known and able to make
    /// progress, not merely self-proclaimed or cut off. The quorum is one
    /// of the membership the leader has in force.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let leader = self.leader()?;
        let term = self.node(leader).term();
        let following = |id: NodeId| {
            self.is_up(id)
                && self.net.connected(leader, id)
                && self.node(id).term() == term
                && self.node(id).leader() == leader
        };
        self.membership_of(leader)
            .is_quorum(following)
            .then_some(leader)
    }

    /// Liveness: a stable leader emerges within the election budget.
    pub fn await_stable_leader(&mut self) -> NodeId {
        let budget = self.opts.election_budget();
        if !self.run_until(budget, |c| c.stable_leader().is_some()) {
            panic!(
                "liveness: no stable leader within {budget} ticks\n{}",
                self.describe()
            );
        }
        self.stable_leader().expect("checked above")
    }

    /// Whether `(index, term)` is in the committed prefix.
    pub fn is_committed(&self, index: Index, term: Term) -> bool {
        self.checker.committed_term(index) == Some(term)
    }

    pub fn committed_len(&self) -> Index {
        self.checker.committed_len()
    }

    /// Liveness: proposes through the current stable leader, again whenever
    /// leadership moves to a new term or the leader refused, until `done`
    /// returns something, within a budget. `done` sees the proposals made
    /// so far.
    fn propose_until<R>(
        &mut self,
        what: &str,
        mut propose: impl FnMut(&mut Cluster, NodeId) -> Result<(Index, Term), ProposeError>,
        done: impl Fn(&Cluster, &[(Index, Term)]) -> Option<R>,
    ) -> R {
        let budget = self.opts.election_budget() * 2;
        let start = self.ticks;
        let mut proposals = Proposals::default();
        while self.ticks - start < budget {
            if let Some(result) = proposals.step(self, &mut propose, &done) {
                return result;
            }
            self.tick();
        }
        panic!(
            "liveness: {what} within {budget} ticks\n{}",
            self.describe()
        );
    }

    /// Liveness: proposes through the current leader until a proposal
    /// commits, re-proposing when leadership moves, within a budget.
    pub fn commit_one(&mut self) -> (Index, Term) {
        self.propose_until(
            "no proposal committed",
            |c, leader| c.propose(leader),
            first_committed,
        )
    }

    /// Liveness of membership changes: proposes `change` through the
    /// current leader until the committed log has put it in force (and, for
    /// a joint change, left the joint configuration again).
    pub fn change_membership(&mut self, change: &ConfChange) {
        let mut target = self
            .membership()
            .after(change)
            .unwrap_or_else(|why| panic!("{change:?} is invalid: {why}"));
        if target.is_joint() {
            target = target.after(&ConfChange::LeaveJoint).expect("joint");
        }
        self.propose_until(
            &format!("membership change {change:?} not in force"),
            |c, leader| c.propose_conf_change(leader, change),
            |c, _| (*c.membership() == target).then_some(()),
        );
    }

    /// Liveness: every running member applies through `index`.
    pub fn await_applied_everywhere(&mut self, index: Index) {
        let nodes = self.up_members();
        self.await_applied_by(&nodes, index);
    }

    /// Members of the membership in force that are running.
    pub fn up_members(&self) -> Vec<NodeId> {
        self.members()
            .into_iter()
            .filter(|&id| self.is_up(id))
            .collect()
    }

    /// Whether a stable leader has committed its whole log.
    pub fn leader_committed_its_log(&self) -> bool {
        self.stable_leader().is_some_and(|l| {
            let raft = self.node(l);
            raft.status().last_index == raft.commit_index()
        })
    }

    /// Liveness: each of `nodes` applies through `index`.
    pub fn await_applied_by(&mut self, nodes: &[NodeId], index: Index) {
        let budget = self.opts.election_budget() * 2;
        let done = self.run_until(budget, |c| nodes.iter().all(|&id| c.applied(id) >= index));
        assert!(
            done,
            "liveness: nodes {nodes:?} did not all apply index {index} within {budget} ticks\n{}",
            self.describe()
        );
    }

    /// The point of the leader's no-op entry: a new leader commits every
    /// entry in its log, earlier terms' included, without waiting for a
    /// client to propose.
    pub fn await_leader_commits_its_log(&mut self) {
        let budget = self.opts.election_budget();
        let done = self.run_until(budget, Cluster::leader_committed_its_log);
        assert!(
            done,
            "liveness: no leader committed its whole log within {budget} ticks without \
             proposals\n{}",
            self.describe()
        );
    }

    /// Liveness: a joint configuration in force is left (the leader does it
    /// by itself), and a stable leader of the resulting membership emerges.
    pub fn await_membership_settled(&mut self) {
        let budget = self.opts.election_budget() * 2;
        let done = self.run_until(budget, |c| {
            !c.membership().is_joint()
                && c.stable_leader()
                    .is_some_and(|l| !c.membership_of(l).is_joint())
        });
        assert!(
            done,
            "liveness: the joint configuration {:?} was not left within {budget} ticks\n{}",
            self.membership(),
            self.describe()
        );
    }

    /// Ends every fault (partitions, lossy links, crashed nodes), then
    /// requires the cluster to recover: a leader is elected, commits its
    /// log, leaves any joint configuration, commits a new proposal, and
    /// every member applies it.
    pub fn heal_and_check_liveness(&mut self) {
        self.net.heal();
        self.net.set_faults(NetFaults::RELIABLE);
        for id in self.down_nodes() {
            self.restart(id);
        }
        self.await_stable_leader();
        self.await_leader_commits_its_log();
        self.await_membership_settled();
        let (index, _) = self.commit_one();
        self.await_applied_everywhere(index);
    }
}

fn slot(id: NodeId) -> usize {
    (id - 1) as usize
}

/// Queues `write` on node `id`'s disk: on its own, or in the round of its
/// process's shared WAL.
fn submit(
    disks: &mut [Disk],
    processes: Option<&Processes>,
    id: NodeId,
    now: u64,
    rng: &mut SplitMix64,
    timing: DiskTiming,
    write: Write,
) {
    let disk = &mut disks[slot(id)];
    match processes {
        None => disk.submit(now, rng, timing, write),
        Some(p) => {
            let host = p.hosts[slot(id)];
            p.wals.borrow_mut()[slot(host)].submit(p.group, disk, now, rng, timing, write);
        }
    }
}
