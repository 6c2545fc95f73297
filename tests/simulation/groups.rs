//! Many groups per process, as embraft's runtime runs them: P processes,
//! G groups, each group with a replica on every process or on a seeded
//! subset of at least three. Each group is a [`Cluster`] (its cores, its
//! host's state machines, its own checker), and the groups share what the
//! processes share:
//!
//! - one clock: every event of every group happens in one order, on one
//!   virtual time;
//! - one write-ahead log per process ([`SharedWal`]): writes of different
//!   groups submitted while a write is in progress go into one round,
//!   durable all at once, and each group's part of the log is a `Disk` of
//!   its own, so every group's writes stay in order. A round completes as
//!   one event, so no crash can fall between its groups;
//! - one set of links between the processes ([`Links`]): a partition or a
//!   cut link cuts every group between two processes together. Each
//!   group's messages travel on that group's wire (the group id is the
//!   wire they are on), with per-message loss, duplication and delay;
//! - one fate: a process crash stops every group's replica on it and drops
//!   the shared log's round in progress for all of them; a restart starts
//!   every group from what the shared log holds.

use crate::cluster::{first_committed, Cluster, Options, Proposals, TICK};
use crate::disk::SharedWal;
use crate::fnv::Fnv;
use crate::network::{Links, NetFaults};
use crate::rng::SplitMix64;
use embraft::core::{Index, NodeId, Term};
use std::cell::RefCell;
use std::rc::Rc;

/// A process, `1..=P`: it hosts at most one node of each group.
pub type Process = NodeId;

/// What happens next on the shared clock.
#[derive(Clone, Copy)]
enum Event {
    /// The round of this process's log that is due is durable.
    Round(Process),
    /// The message due on this group's wire arrives.
    Message(usize),
}

pub struct Groups {
    pub rng: SplitMix64,
    opts: Options,
    processes: usize,
    groups: Vec<Cluster>,
    /// `hosts[g][id - 1]`: the process running node `id` of group `g`.
    hosts: Vec<Vec<Process>>,
    /// `residents[p - 1]`: every group's node on process `p`, as
    /// `(group, node)`.
    residents: Vec<Vec<(usize, NodeId)>>,
    links: Rc<RefCell<Links>>,
    wals: Rc<RefCell<Vec<SharedWal>>>,
    down: Vec<bool>,
    now: u64,
    ticks: u64,
}

impl Groups {
    /// `groups` groups on `processes` processes; with `spread`, a group has
    /// replicas on a seeded subset of at least three processes, otherwise
    /// on every one. `opts` is each group's (its node counts aside).
    pub fn new(
        mut rng: SplitMix64,
        opts: Options,
        processes: usize,
        groups: usize,
        spread: bool,
    ) -> Groups {
        assert!(
            groups <= 64,
            "the shared log tells groups apart by a bit each"
        );
        let links = Rc::new(RefCell::new(Links::new(processes)));
        let wals = Rc::new(RefCell::new(
            (0..processes).map(|_| SharedWal::default()).collect(),
        ));
        let mut hosts = Vec::new();
        let mut clusters = Vec::new();
        let mut residents = vec![Vec::new(); processes];
        for g in 0..groups {
            let replicas = if spread {
                rng.between(3, processes as u64) as usize
            } else {
                processes
            };
            let mut pool: Vec<Process> = (1..=processes as Process).collect();
            let placed: Vec<Process> = (0..replicas)
                .map(|_| pool.swap_remove(rng.below(pool.len() as u64) as usize))
                .collect();
            let mut group_opts = opts;
            group_opts.nodes = replicas;
            group_opts.slots = replicas;
            let stream = SplitMix64::new(rng.next_u64());
            clusters.push(Cluster::on_processes(
                g,
                stream,
                group_opts,
                Rc::clone(&links),
                Rc::clone(&wals),
                placed.clone(),
            ));
            for (id, &p) in (1..).zip(&placed) {
                residents[slot(p)].push((g, id));
            }
            hosts.push(placed);
        }
        Groups {
            rng,
            opts,
            processes,
            groups: clusters,
            hosts,
            residents,
            links,
            wals,
            down: vec![false; processes],
            now: 0,
            ticks: 0,
        }
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn group(&self, g: usize) -> &Cluster {
        &self.groups[g]
    }

    pub fn group_mut(&mut self, g: usize) -> &mut Cluster {
        &mut self.groups[g]
    }

    pub fn processes(&self) -> Vec<Process> {
        (1..=self.processes as Process).collect()
    }

    pub fn up_processes(&self) -> Vec<Process> {
        self.processes()
            .into_iter()
            .filter(|&p| !self.down[slot(p)])
            .collect()
    }

    pub fn down_processes(&self) -> Vec<Process> {
        self.processes()
            .into_iter()
            .filter(|&p| self.down[slot(p)])
            .collect()
    }

    /// Whether `p` hosts a node of any group.
    pub fn hosts_any(&self, p: Process) -> bool {
        !self.residents[slot(p)].is_empty()
    }

    /// Every group's node on `p`, as `(group, node)`.
    fn nodes_on(&self, p: Process) -> Vec<(usize, NodeId)> {
        self.residents[slot(p)].clone()
    }

    /// The process hosting group `g`'s node `id`.
    pub fn host(&self, g: usize, id: NodeId) -> Process {
        self.hosts[g][slot(id)]
    }

    // ---- faults ----

    /// Power loss: every group's replica on `p` stops, and the shared
    /// log's round in progress (and the one gathering) is lost for all of
    /// them at once.
    pub fn crash_process(&mut self, p: Process) {
        assert!(!self.down[slot(p)], "process {p} is already down");
        let nodes = self.nodes_on(p);
        for &(g, id) in &nodes {
            self.groups[g].crash(id);
        }
        let durable_at = |g: usize| {
            let &(_, id) = nodes.iter().find(|&&(h, _)| h == g).expect("g is on p");
            self.groups[g].durable_at(id)
        };
        self.wals.borrow_mut()[slot(p)].crash(self.now, durable_at);
        self.down[slot(p)] = true;
    }

    /// Starts every group's replica on `p` from what the shared log holds.
    pub fn restart_process(&mut self, p: Process) {
        assert!(self.down[slot(p)], "process {p} is already up");
        self.down[slot(p)] = false;
        for (g, id) in self.nodes_on(p) {
            self.groups[g].restart(id);
        }
    }

    /// Splits the processes (see [`Links::partition`]).
    pub fn partition(&mut self, sides: &[&[Process]]) {
        self.links.borrow_mut().partition(sides);
    }

    pub fn isolate(&mut self, p: Process) {
        self.links.borrow_mut().isolate(p);
    }

    pub fn cut(&mut self, a: Process, b: Process) {
        self.links.borrow_mut().cut(a, b);
    }

    pub fn heal(&mut self) {
        self.links.borrow_mut().heal();
    }

    /// Per-message faults on every group's wire.
    pub fn set_faults(&mut self, faults: NetFaults) {
        for c in &mut self.groups {
            c.net.set_faults(faults);
        }
    }

    /// Draws one of `ids`.
    pub fn pick_one(&mut self, ids: &[Process]) -> Process {
        ids[self.rng.below(ids.len() as u64) as usize]
    }

    // ---- time ----

    fn set_now(&mut self, now: u64) {
        self.now = now;
        for c in &mut self.groups {
            c.set_now(now);
        }
    }

    /// The next event and when it is due: a round of a process's log
    /// first (lowest process first), else a message on a group's wire.
    fn next_event(&self) -> Option<(u64, Event)> {
        let round = (1..)
            .zip(&self.residents)
            .filter_map(|(p, nodes)| {
                let at = nodes
                    .iter()
                    .filter_map(|&(g, id)| self.groups[g].next_completion_at(id))
                    .min()?;
                Some((at, Event::Round(p)))
            })
            .min_by_key(|&(at, _)| at);
        let message = (0..self.len())
            .filter_map(|g| Some((self.groups[g].net.next_delivery_at()?, Event::Message(g))))
            .min_by_key(|&(at, _)| at);
        match (round, message) {
            (Some(r), Some(m)) => Some(if r.0 <= m.0 { r } else { m }),
            (r, m) => r.or(m),
        }
    }

    /// Runs every event due by `until`.
    fn process_events_through(&mut self, until: u64) {
        while let Some((at, event)) = self.next_event().filter(|&(at, _)| at <= until) {
            self.set_now(at);
            match event {
                Event::Round(p) => self.complete_round(p, at),
                Event::Message(g) => self.groups[g].deliver_next(),
            }
        }
    }

    /// The round of `p`'s log due at `at` is durable: every group's part
    /// of it, in one event. What the groups write in answer goes into a
    /// later round.
    fn complete_round(&mut self, p: Process, at: u64) {
        for (g, id) in self.nodes_on(p) {
            while self.groups[g]
                .next_completion_at(id)
                .is_some_and(|t| t <= at)
            {
                self.groups[g].complete_write(id);
            }
        }
    }

    /// Delivers everything due before the next tick, then ticks every
    /// running node of every group.
    pub fn tick(&mut self) {
        let tick_at = (self.ticks + 1) * TICK;
        self.process_events_through(tick_at);
        self.set_now(tick_at);
        self.ticks += 1;
        for c in &mut self.groups {
            c.tick_nodes();
        }
    }

    pub fn run_ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Runs until `done` holds (checked after every tick), for at most
    /// `max_ticks`. Returns whether it held.
    pub fn run_until(&mut self, max_ticks: u64, mut done: impl FnMut(&Groups) -> bool) -> bool {
        for _ in 0..max_ticks {
            if done(self) {
                return true;
            }
            self.tick();
        }
        done(self)
    }

    /// Runs `units` of virtual time, which need not be whole ticks, so that
    /// crashes land between a write and its round's completion.
    pub fn advance(&mut self, units: u64) {
        let until = self.now + units;
        while (self.ticks + 1) * TICK <= until {
            self.tick();
        }
        self.process_events_through(until);
        self.set_now(until);
    }

    // ---- clients and liveness ----

    /// Proposes on group `g`'s leader, if it has one.
    pub fn propose_at_leader(&mut self, g: usize) {
        if let Some(leader) = self.groups[g].leader() {
            let _ = self.groups[g].propose(leader);
        }
    }

    /// Whether every running node of every group is quiescent.
    pub fn all_quiet(&self) -> bool {
        self.groups.iter().all(|c| {
            c.up_nodes()
                .into_iter()
                .all(|id| c.node(id).status().quiescent)
        })
    }

    /// Liveness: `done` holds for every group within `budget` ticks.
    pub fn await_every_group(
        &mut self,
        what: &str,
        budget: u64,
        done: impl Fn(usize, &Cluster) -> bool,
    ) {
        let all = |gs: &Groups| gs.groups.iter().enumerate().all(|(g, c)| done(g, c));
        if !self.run_until(budget, all) {
            let failing = (0..self.len())
                .find(|&g| !done(g, &self.groups[g]))
                .expect("some group fails");
            panic!(
                "liveness: {what} within {budget} ticks in group {failing} (on processes {:?}), \
                 at tick {}\n{}",
                self.hosts[failing],
                self.ticks,
                self.groups[failing].describe()
            );
        }
    }

    /// Liveness: a proposal commits in each of `groups`, each re-proposed
    /// when its leadership moves; returns each one's committed proposal.
    pub fn commit_one_in(&mut self, groups: &[usize]) -> Vec<(Index, Term)> {
        let budget = self.opts.election_budget() * 2;
        let mut proposals: Vec<Proposals> = groups.iter().map(|_| Proposals::default()).collect();
        let mut committed: Vec<Option<(Index, Term)>> = vec![None; groups.len()];
        for _ in 0..budget {
            for (i, &g) in groups.iter().enumerate() {
                if committed[i].is_none() {
                    let c = &mut self.groups[g];
                    committed[i] =
                        proposals[i].step(c, &mut |c, leader| c.propose(leader), &first_committed);
                }
            }
            if committed.iter().all(Option::is_some) {
                return committed.into_iter().flatten().collect();
            }
            self.tick();
        }
        let g = groups[committed
            .iter()
            .position(Option::is_none)
            .expect("one failed")];
        panic!(
            "liveness: no proposal committed within {budget} ticks in group {g}\n{}",
            self.groups[g].describe()
        );
    }

    /// Forgets every group's message counts.
    pub fn reset_stats(&mut self) {
        for c in &mut self.groups {
            c.net.stats = Default::default();
        }
    }

    /// Each of `groups` sent nothing but check-ins (and answers to them)
    /// since the counts were last reset.
    pub fn assert_only_check_ins(&self, groups: &[usize]) {
        for &g in groups {
            let stats = &self.groups[g].net.stats;
            assert_eq!(
                stats.total(),
                stats.count(&["WakeUp", "Quiesce"]),
                "quiet group {g} sent more than check-ins: {stats:?}\n{}",
                self.groups[g].describe()
            );
        }
    }

    /// The processes hosting some group's leader.
    pub fn leader_processes(&self) -> Vec<Process> {
        let mut hosts: Vec<Process> = (0..self.len())
            .filter_map(|g| Some(self.host(g, self.groups[g].leader()?)))
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    }

    /// A hash of every group's observable state (see [`Cluster::digest`]).
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        for c in &self.groups {
            h.u64(c.digest());
        }
        h.u64(self.shared_rounds()).finish()
    }

    /// Every group's state, for the message of a failed check.
    pub fn describe(&self) -> String {
        let mut out = format!("at tick {}", self.ticks);
        for (g, c) in self.groups.iter().enumerate() {
            out.push_str(&format!(
                "\ngroup {g} on processes {:?}: {}",
                self.hosts[g],
                c.describe()
            ));
        }
        out
    }

    /// Every group's index.
    pub fn all_groups(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }

    /// Liveness: each of `groups` applies its `committed` index on every
    /// running member.
    pub fn await_applied(&mut self, groups: &[usize], committed: &[(Index, Term)]) {
        let budget = self.opts.election_budget() * 2;
        let done = |gs: &Groups| {
            groups.iter().zip(committed).all(|(&g, &(index, _))| {
                let c = &gs.groups[g];
                c.up_members().into_iter().all(|id| c.applied(id) >= index)
            })
        };
        if !self.run_until(budget, done) {
            let (g, _) = groups
                .iter()
                .zip(committed)
                .find(|(&g, &(index, _))| {
                    let c = &self.groups[g];
                    !c.up_members().into_iter().all(|id| c.applied(id) >= index)
                })
                .expect("one failed");
            panic!(
                "liveness: group {g}'s members did not all apply within {budget} ticks\n{}",
                self.groups[*g].describe()
            );
        }
    }

    /// Rounds of the processes' logs that carried more than one group's
    /// writes.
    pub fn shared_rounds(&self) -> u64 {
        self.wals.borrow().iter().map(|w| w.shared_rounds).sum()
    }

    /// Reads of evicted entries the groups' cores made from the shared logs.
    pub fn log_reads(&self) -> u64 {
        self.groups.iter().map(Cluster::log_reads).sum()
    }

    /// Ends every fault and restarts every process, then requires every
    /// group to recover: a stable leader that commits its log, a new
    /// proposal committed and applied by every member.
    pub fn heal_and_check_liveness(&mut self) {
        self.heal();
        self.set_faults(NetFaults::RELIABLE);
        for p in self.down_processes() {
            self.restart_process(p);
        }
        let budget = self.opts.election_budget();
        self.await_every_group("no stable leader", budget, |_, c| {
            c.stable_leader().is_some()
        });
        self.await_every_group("no leader committed its whole log", budget, |_, c| {
            c.leader_committed_its_log()
        });
        let all = self.all_groups();
        let committed = self.commit_one_in(&all);
        self.await_applied(&all, &committed);
    }
}

fn slot(id: NodeId) -> usize {
    (id - 1) as usize
}
