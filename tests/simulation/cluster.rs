//! A cluster of real Raft cores wired to the simulated network and disks,
//! driven by a virtual clock, with the safety checker watching every event.
//!
//! The cluster is the host of every core, and follows the host contract of
//! `Ready` to the letter: entries and hard state go to the disk, `messages`
//! leave at once, `persisted_messages` leave and `on_persisted` is called
//! only when the disk reports the batch durable, and committed entries are
//! applied to a (volatile) state machine and acknowledged.

use crate::checker::{entry_at, fingerprint, Checker};
use crate::disk::{Batch, Disk, DiskTiming};
use crate::fnv::Fnv;
use crate::network::{NetFaults, Network};
use crate::rng::SplitMix64;
use embraft::core::{Config, Entry, Index, NodeId, ProposeError, Raft, Role, Term, TransferError};

/// Virtual time units per Raft tick. Message and disk delays are drawn in
/// these units, so most of them fall within a tick.
pub const TICK: u64 = 10;

/// How a scenario's cluster is built and how hostile its environment is.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub nodes: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub lease_reads: bool,
    pub election_tick: u32,
    pub heartbeat_tick: u32,
    pub net: NetFaults,
    pub disk: DiskTiming,
}

impl Options {
    pub fn new(nodes: usize) -> Options {
        Options {
            nodes,
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
        }
    }

    /// The longest a healthy cluster should need to elect a leader: many
    /// randomized election timeouts, allowing for split votes. Without
    /// pre-vote, candidates with stale logs can keep resetting the timer of
    /// the one node that could win; one seed in 20,000 of figure8_reliable
    /// (18829) needed 12.5 timeouts after healing.
    pub fn election_budget(&self) -> u64 {
        u64::from(self.election_tick) * 25
    }
}

pub struct Cluster {
    pub rng: SplitMix64,
    opts: Options,
    now: u64,
    ticks: u64,
    voters: Vec<NodeId>,
    /// `None` while the node is down. Index `id - 1`.
    rafts: Vec<Option<Raft>>,
    disks: Vec<Disk>,
    pub net: Network,
    checker: Checker,
    next_payload: u64,
    next_read_context: u64,
    trace: bool,
}

impl Cluster {
    pub fn new(rng: SplitMix64, opts: Options) -> Cluster {
        let mut cluster = Cluster {
            rng,
            opts,
            now: 0,
            ticks: 0,
            voters: (1..=opts.nodes as NodeId).collect(),
            rafts: (0..opts.nodes).map(|_| None).collect(),
            disks: (0..opts.nodes).map(|_| Disk::default()).collect(),
            net: Network::new(opts.nodes, opts.net),
            checker: Checker::new(opts.nodes),
            next_payload: 0,
            next_read_context: 0,
            trace: std::env::var_os("EMBRAFT_SIM_TRACE").is_some(),
        };
        for id in cluster.ids() {
            cluster.start(id);
        }
        cluster
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.voters.clone()
    }

    pub fn quorum(&self) -> usize {
        self.opts.nodes / 2 + 1
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    // ---- nodes: start, crash, restart, inspect ----

    /// Starts a node from whatever its disk holds, with a fresh seed.
    fn start(&mut self, id: NodeId) {
        let config = Config {
            id,
            election_tick: self.opts.election_tick,
            heartbeat_tick: self.opts.heartbeat_tick,
            pre_vote: self.opts.pre_vote,
            check_quorum: self.opts.check_quorum,
            lease_reads: self.opts.lease_reads,
            seed: self.rng.next_u64(),
            ..Config::default()
        };
        let initial = self.disks[slot(id)].recover(&self.voters);
        let raft = Raft::new(config, initial)
            .unwrap_or_else(|e| panic!("node {id} refused its recovered state: {e}"));
        self.rafts[slot(id)] = Some(raft);
        self.checker.on_restart(id);
        self.trace_line(|| format!("start {id}"));
        self.after_event(id);
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
        self.start(id);
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.rafts[slot(id)].is_some()
    }

    pub fn up_nodes(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|&id| self.is_up(id))
            .collect()
    }

    pub fn down_nodes(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|&id| !self.is_up(id))
            .collect()
    }

    /// The core of a running node.
    pub fn node(&self, id: NodeId) -> &Raft {
        self.rafts[slot(id)]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is down"))
    }

    /// The term of the entry at `index` in the node's durable log.
    pub fn durable_term_at(&self, id: NodeId, index: Index) -> Option<Term> {
        self.disks[slot(id)].term_at(index)
    }

    pub fn applied(&self, id: NodeId) -> Index {
        self.checker.applied(id)
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
        fn log(h: &mut Fnv, entries: &[Entry]) {
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
        for id in self.ids() {
            let disk = &self.disks[slot(id)];
            let hs = disk.hard_state();
            h.u64(hs.term).u64(hs.vote).u64(hs.commit);
            log(&mut h, disk.log());
            if let Some(raft) = &self.rafts[slot(id)] {
                h.u64(raft.term())
                    .u64(raft.commit_index())
                    .u64(raft.role() as u64);
                log(&mut h, raft.log_entries());
            }
        }
        h.finish()
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
        self.ticks += 1;
        for id in self.ids() {
            if let Some(raft) = self.rafts[slot(id)].as_mut() {
                raft.tick();
                self.after_event(id);
            }
        }
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
            .ids()
            .into_iter()
            .find(|&id| self.disks[slot(id)].next_completion_at() == Some(at));
        match writer {
            Some(id) => self.complete_write(id),
            None => self.deliver_next(),
        }
    }

    fn deliver_next(&mut self) {
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
        if let Err(e) = raft.step(msg) {
            panic!("node {to} refused a genuine message: {e}");
        }
        self.after_event(to);
    }

    fn complete_write(&mut self, id: NodeId) {
        let done = self.disks[slot(id)].complete_next();
        self.trace_line(|| format!("durable {id} batch {}", done.ready_number));
        if let Some(from) = done.replaced_from {
            self.checker.on_durable_replace(from, &self.disks);
        }
        for m in &done.persisted_messages {
            self.net.send(self.now, &mut self.rng, m);
        }
        let raft = self.rafts[slot(id)]
            .as_mut()
            .expect("a crashed node has no pending writes");
        raft.on_persisted(done.ready_number);
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
            // Nothing is ever compacted and membership never changes here,
            // so the core has no reason to hand out any of these; a host
            // that ignored them would break the contract.
            assert!(
                rd.snapshot.is_none()
                    && rd.snapshots_to_send.is_empty()
                    && rd.snapshot_chunks.is_empty()
                    && rd.conf_state.is_none(),
                "node {id} handed out snapshot or membership work the simulator does not model"
            );
            if let Some(first) = rd.entries.first() {
                let prev_term = match first.index - 1 {
                    0 => 0,
                    prev => {
                        entry_at(raft.log_entries(), prev)
                            .unwrap_or_else(|| {
                                panic!("node {id} wrote index {} after a gap", prev + 1)
                            })
                            .term
                    }
                };
                self.checker.on_entries_written(id, prev_term, &rd.entries);
            }
            for m in &rd.messages {
                self.net.send(self.now, &mut self.rng, m);
            }
            self.disks[slot(id)].submit(
                self.now,
                &mut self.rng,
                self.opts.disk,
                Batch {
                    ready_number: rd.number,
                    hard_state: rd.hard_state,
                    entries: rd.entries,
                    persisted_messages: rd.persisted_messages,
                },
            );
            for state in &rd.read_states {
                self.checker.on_read_state(id, state);
            }
            if let Some(last) = rd.committed_entries.last() {
                let last = last.index;
                self.checker
                    .on_applied(id, &rd.committed_entries, &self.disks);
                raft.on_applied(last);
            }
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
        panic!("liveness: node {id} got no read point within {budget} ticks");
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
    /// progress, not merely self-proclaimed or cut off.
    pub fn stable_leader(&self) -> Option<NodeId> {
        let leader = self.leader()?;
        let term = self.node(leader).term();
        let followers = self
            .up_nodes()
            .into_iter()
            .filter(|&id| {
                self.net.connected(leader, id)
                    && self.node(id).term() == term
                    && self.node(id).leader() == leader
            })
            .count();
        (followers >= self.quorum()).then_some(leader)
    }

    /// Liveness: a stable leader emerges within the election budget.
    pub fn await_stable_leader(&mut self) -> NodeId {
        let budget = self.opts.election_budget();
        if !self.run_until(budget, |c| c.stable_leader().is_some()) {
            panic!("liveness: no stable leader within {budget} ticks");
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

    /// Liveness: proposes through the current leader until a proposal
    /// commits, re-proposing when leadership moves, within a budget.
    pub fn commit_one(&mut self) -> (Index, Term) {
        let budget = self.opts.election_budget() * 2;
        let start = self.ticks;
        let mut pending: Vec<(Index, Term)> = Vec::new();
        let mut proposed_in: Option<Term> = None;
        while self.ticks - start < budget {
            if let Some(&done) = pending.iter().find(|&&(i, t)| self.is_committed(i, t)) {
                return done;
            }
            if let Some(leader) = self.stable_leader() {
                let term = self.node(leader).term();
                if proposed_in != Some(term) {
                    if let Ok(p) = self.propose(leader) {
                        pending.push(p);
                        proposed_in = Some(term);
                    }
                }
            }
            self.tick();
        }
        panic!("liveness: no proposal committed within {budget} ticks");
    }

    /// Liveness: every running node applies through `index`.
    pub fn await_applied_everywhere(&mut self, index: Index) {
        let nodes = self.up_nodes();
        self.await_applied_by(&nodes, index);
    }

    /// Liveness: each of `nodes` applies through `index`.
    pub fn await_applied_by(&mut self, nodes: &[NodeId], index: Index) {
        let budget = self.opts.election_budget() * 2;
        let done = self.run_until(budget, |c| nodes.iter().all(|&id| c.applied(id) >= index));
        assert!(
            done,
            "liveness: nodes {nodes:?} did not all apply index {index} within {budget} ticks"
        );
    }

    /// The point of the leader's no-op entry: a new leader commits every
    /// entry in its log, earlier terms' included, without waiting for a
    /// client to propose.
    pub fn await_leader_commits_its_log(&mut self) {
        let budget = self.opts.election_budget();
        let done = self.run_until(budget, |c| {
            c.stable_leader().is_some_and(|l| {
                let raft = c.node(l);
                raft.log_entries().last().map_or(0, |e| e.index) == raft.commit_index()
            })
        });
        assert!(
            done,
            "liveness: no leader committed its whole log within {budget} ticks without proposals"
        );
    }

    /// Ends every fault (partitions, lossy links, crashed nodes), then
    /// requires the cluster to recover: a leader is elected, commits its
    /// log, commits a new proposal, and every node applies it.
    pub fn heal_and_check_liveness(&mut self) {
        self.net.heal();
        self.net.set_faults(NetFaults::RELIABLE);
        for id in self.down_nodes() {
            self.restart(id);
        }
        self.await_stable_leader();
        self.await_leader_commits_its_log();
        let (index, _) = self.commit_one();
        self.await_applied_everywhere(index);
    }
}

fn slot(id: NodeId) -> usize {
    (id - 1) as usize
}
