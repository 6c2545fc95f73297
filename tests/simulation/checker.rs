//! Raft's safety properties, checked after every event of a run.
//!
//! The checker sees what an omniscient observer sees: each node's role,
//! term, log and commit index, every batch of entries a node hands to its
//! disk, every entry it applies, and every node's durable state. It keeps
//! just enough history to check the properties incrementally, so the cost
//! of checking grows with the events of a run, not with their square.
//!
//! Quorums follow the membership: the checker replays the membership
//! changes of the committed log (see [`Members`]) and judges every entry
//! against the memberships in force around it. The properties that need no
//! membership (one leader per term, one entry per committed index, leader
//! completeness) are what two disjoint majorities committing would break,
//! so they hold across every change of configuration.
//!
//! Snapshots: the checker records the digest of the applied state at every
//! index (see `snapshot.rs`); every node applying an index, every snapshot
//! taken and every snapshot restored, at runtime or at recovery, must agree
//! with it, and a snapshot's metadata must be the committed log's at its
//! index (term, membership in force). A node's log may start after its
//! snapshot: what the snapshot covers counts as held (it covers committed
//! entries only, which the checks of its last entry enforce).

use crate::disk::Disk;
use crate::fnv::Fnv;
use crate::membership::Members;
use crate::snapshot::Machine;
use embraft::core::{
    ConfChange, ConfState, Entry, EntryKind, Index, NodeId, Raft, ReadState, Role, SnapshotMeta,
    Term,
};
use std::collections::BTreeMap;

/// What every copy of the entry at one `(index, term)` must agree on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct EntryFacts {
    fingerprint: u64,
    prev_term: Term,
}

/// An entry some node has counted as committed.
#[derive(Clone, Copy, Debug)]
struct CommittedEntry {
    term: Term,
    fingerprint: u64,
    /// The term of the node that first counted it committed. The entry was
    /// committed in this term or an earlier one, so every leader of a later
    /// term must hold it.
    seen_in_term: Term,
}

/// The checker's memory of one node's current incarnation.
#[derive(Clone, Copy, Default)]
struct NodeView {
    term: Term,
    commit: Index,
    applied: Index,
    /// While the node leads: its term, and how much of the committed prefix
    /// its log has been verified to contain.
    leading: Option<(Term, usize)>,
}

pub struct Checker {
    /// Every membership the committed log put in force, with the index of
    /// the entry that did; the first is the empty membership before the
    /// founding entry.
    configs: Vec<(Index, Members)>,
    /// The one leader of each term seen so far.
    leaders: BTreeMap<Term, NodeId>,
    /// Every `(index, term)` ever handed to a disk. Two entries with the same
    /// index and term must carry the same payload and follow an entry of the
    /// same term; by induction over the index, that is the log matching
    /// property for every pair of logs.
    ledger: BTreeMap<(Index, Term), EntryFacts>,
    /// The committed prefix of the log as far as any node has counted it;
    /// `committed[i]` is index `i + 1`.
    committed: Vec<CommittedEntry>,
    /// The digest of the applied state after each index; `digests[i]` is
    /// after index `i + 1`.
    digests: Vec<u64>,
    nodes: Vec<NodeView>,
    /// Read requests awaiting their outcome, by context: who asked, and how
    /// much was committed when they did.
    reads: BTreeMap<u64, (NodeId, Index)>,
    reads_served: u64,
}

impl Checker {
    /// A checker for nodes with ids `1..=capacity`.
    pub fn new(capacity: usize) -> Checker {
        Checker {
            configs: vec![(0, Members::default())],
            leaders: BTreeMap::new(),
            ledger: BTreeMap::new(),
            committed: Vec::new(),
            digests: Vec::new(),
            nodes: vec![NodeView::default(); capacity],
            reads: BTreeMap::new(),
            reads_served: 0,
        }
    }

    /// The node restarted with volatile state wiped; its durable state is
    /// what it was.
    pub fn on_restart(&mut self, id: NodeId) {
        self.nodes[index(id)] = NodeView::default();
        // Reads in flight died with the node's volatile state.
        self.reads.retain(|_, (asker, _)| *asker != id);
    }

    /// Node `id` asked for a read point under `context`.
    pub fn on_read_requested(&mut self, id: NodeId, context: u64) {
        let committed = self.committed_len();
        assert!(
            self.reads.insert(context, (id, committed)).is_none(),
            "read context reused"
        );
    }

    /// Linearizable reads: a read point covers every entry committed before
    /// the read was asked for (so the read sees every write that finished
    /// before it began), and is itself committed. Each read has one outcome.
    pub fn on_read_state(&mut self, id: NodeId, state: &ReadState) {
        let Some((asker, committed_before)) = self.reads.remove(&state.context) else {
            panic!(
                "node {id} reported read {} that is not outstanding",
                state.context
            );
        };
        assert_eq!(
            asker, id,
            "node {id} reported the outcome of node {asker}'s read"
        );
        if let Ok(index) = state.result {
            assert!(
                index >= committed_before,
                "stale read: node {id} got read index {index}, but index {committed_before} \
                 was committed before it asked"
            );
            assert!(
                index <= self.committed_len(),
                "node {id} got read index {index}, beyond anything committed ({})",
                self.committed_len()
            );
            self.reads_served += 1;
        }
    }

    /// Whether the read under `context` is still awaiting its outcome.
    pub fn read_outstanding(&self, context: u64) -> bool {
        self.reads.contains_key(&context)
    }

    /// How many reads got a read point.
    pub fn reads_served(&self) -> u64 {
        self.reads_served
    }

    pub fn committed_len(&self) -> Index {
        self.committed.len() as Index
    }

    /// The term of the committed entry at `i`, if `i` is known committed.
    pub fn committed_term(&self, i: Index) -> Option<Term> {
        let offset = usize::try_from(i.checked_sub(1)?).ok()?;
        self.committed.get(offset).map(|c| c.term)
    }

    /// How far the node's current incarnation has applied.
    pub fn applied(&self, id: NodeId) -> Index {
        self.nodes[index(id)].applied
    }

    /// Checks a node's role, term, log and commit index after an event.
    pub fn observe(&mut self, raft: &Raft, disks: &[Disk]) {
        let id = raft.id();
        let term = raft.term();
        let view = self.nodes[index(id)];
        assert!(
            term >= view.term,
            "node {id}'s term went back from {} to {term} without a restart",
            view.term
        );
        self.nodes[index(id)].term = term;

        let log = raft.log_entries();
        let commit = raft.commit_index();
        assert!(
            commit >= view.commit,
            "node {id}'s commit index went back from {} to {commit}",
            view.commit
        );
        for i in view.commit + 1..=commit {
            // An entry the node evicted from its cache is the one on its
            // disk, where the core reads it back from.
            let evicted = || {
                let held = i >= raft.first_index() && raft.log_term(i).is_some();
                held.then(|| disks[index(id)].entry(i)).flatten()
            };
            match entry_at(log, i).cloned().or_else(evicted) {
                Some(entry) => self.on_committed(id, term, &entry, disks),
                // Covered by a snapshot the node installed: what the other
                // node committed, as the snapshot's checks verify.
                None => assert!(
                    i < raft.first_index() && i <= self.committed_len(),
                    "node {id} committed index {i}, which it neither holds nor got from a \
                     committed snapshot"
                ),
            }
        }
        self.nodes[index(id)].commit = commit;

        if raft.role() == Role::Leader {
            let leader = *self.leaders.entry(term).or_insert(id);
            assert_eq!(leader, id, "nodes {leader} and {id} both led term {term}");
            self.check_leader_completeness(raft);
        } else {
            self.nodes[index(id)].leading = None;
        }
    }

    fn on_committed(&mut self, id: NodeId, term: Term, entry: &Entry, disks: &[Disk]) {
        let i = entry.index;
        let fingerprint = fingerprint(entry);
        match self.committed.get((i - 1) as usize) {
            Some(known) => assert!(
                known.term == entry.term && known.fingerprint == fingerprint,
                "node {id} committed index {i} with term {}, but index {i} was already committed with term {}",
                entry.term,
                known.term
            ),
            None => {
                assert_eq!(i, self.committed_len() + 1, "committed prefix has a gap");
                self.check_counted_commit(i, entry.term, disks);
                self.committed.push(CommittedEntry {
                    term: entry.term,
                    fingerprint,
                    seen_in_term: term,
                });
                if entry.kind == EntryKind::ConfChange {
                    self.on_conf_change_committed(entry);
                }
                self.check_still_held(i, entry.term, disks, "was counted committed");
            }
        }
    }

    /// A membership change committed: it is in force from its index on.
    /// The leader takes one change at a time, each proposed against the
    /// membership the one before it put in force, so every committed change
    /// must apply to the membership in force where it lands.
    fn on_conf_change_committed(&mut self, entry: &Entry) {
        let i = entry.index;
        let change = ConfChange::decode(&entry.data)
            .unwrap_or_else(|| panic!("the membership change committed at {i} does not decode"));
        let current = self.latest_config();
        let next = current.after(&change).unwrap_or_else(|why| {
            panic!(
                "membership change {change:?} committed at {i} is invalid against the \
                 membership in force {current:?}: {why}"
            )
        });
        if next != *current {
            self.configs.push((i, next));
        }
    }

    /// The membership the committed log puts in force through index `i`.
    pub fn config_at(&self, i: Index) -> &Members {
        let (_, m) = self
            .configs
            .iter()
            .rev()
            .find(|(at, _)| *at <= i)
            .expect("the empty membership is in force from index 0");
        m
    }

    /// The membership the latest committed change put in force.
    pub fn latest_config(&self) -> &Members {
        &self.configs.last().expect("never empty").1
    }

    /// Whether node `id` is a member of a membership that nodes may still
    /// decide by: the one in force, or the one before it.
    pub fn may_count(&self, id: NodeId) -> bool {
        self.latest_config().contains(id) || self.previous_config().contains(id)
    }

    /// The membership before the latest one: nodes that have not applied
    /// the latest change yet still decide by it.
    fn previous_config(&self) -> &Members {
        let n = self.configs.len();
        &self.configs[n.saturating_sub(2)].1
    }

    /// A node reported the membership in force once it applied through
    /// `index`: it must be the one the committed log prescribes there.
    pub fn on_conf_state(&self, id: NodeId, index: Index, cs: &ConfState) {
        let expected = self.config_at(index);
        assert!(
            expected.matches(cs),
            "node {id} has membership {cs:?} in force after index {index}, but the committed \
             log puts {expected:?} in force there"
        );
    }

    /// When an entry is first counted committed, the nodes holding it
    /// durably must be a quorum of the membership in force, or of the one
    /// before it: a leader that committed the latest change but has not
    /// applied it yet still counts by the one before, which is safe because
    /// one change at a time keeps every quorum of the two overlapping.
    fn check_counted_commit(&self, i: Index, term: Term, disks: &[Disk]) {
        let holds = |id: NodeId| holds(disks, id, i, term);
        let (latest, previous) = (self.latest_config(), self.previous_config());
        if latest.voters().is_empty() {
            assert_eq!(
                i, 1,
                "index {i} committed before any membership was in force"
            );
            // The founding entry, committed by construction.
            return;
        }
        assert!(
            latest.is_quorum(holds) || previous.is_quorum(holds),
            "index {i} (term {term}) was counted committed while held durably only by {:?}, \
             a quorum neither of {latest:?} nor of {previous:?}",
            holders(disks, i, term)
        );
    }

    /// Every committed entry stays durable on enough nodes that no quorum
    /// of the membership in force, nor of the one before it (which nodes
    /// that lag behind still elect by), lacks it: so no leader without it
    /// can ever be elected.
    fn check_still_held(&self, i: Index, term: Term, disks: &[Disk], what: &str) {
        let holds = |id: NodeId| holds(disks, id, i, term);
        for config in [self.latest_config(), self.previous_config()] {
            assert!(
                config.is_blocked_by(holds),
                "index {i} (term {term}) {what}, but only {:?} hold it durably: a quorum of \
                 {config:?} could elect a leader without it",
                holders(disks, i, term)
            );
        }
    }

    /// Checks the latest committed entry: every earlier one is held by at
    /// least the nodes holding it (a log holding an entry holds every entry
    /// before it), so it is the first to lose its quorum.
    fn check_last_still_held(&self, disks: &[Disk], what: &str) {
        let last = self.committed_len();
        if let Some(term) = self.committed_term(last) {
            self.check_still_held(last, term, disks, what);
        }
    }

    /// Leader completeness: a leader of term `term` holds every entry
    /// committed in an earlier term.
    fn check_leader_completeness(&mut self, raft: &Raft) {
        let (id, term, first_index) = (raft.id(), raft.term(), raft.first_index());
        let verified = match self.nodes[index(id)].leading {
            Some((t, verified)) if t == term => verified,
            _ => 0,
        };
        for (offset, c) in self.committed[verified..].iter().enumerate() {
            let i = (verified + offset) as Index + 1;
            // Entries before the log are the leader's snapshot's, whose last
            // one was checked against the committed log.
            if c.seen_in_term < term && i >= first_index {
                // Entries the leader evicted from its cache count by the
                // terms it keeps for them.
                let held = raft.log_term(i);
                assert_eq!(
                    held,
                    Some(c.term),
                    "leader {id} of term {term} lacks index {i} (term {}) committed by term {}",
                    c.term,
                    c.seen_in_term
                );
            }
        }
        self.nodes[index(id)].leading = Some((term, self.committed.len()));
    }

    /// A node handed `entries` to its disk; `prev_term` is the term of the
    /// entry just before the first of them (0 before index 1).
    pub fn on_entries_written(&mut self, id: NodeId, mut prev_term: Term, entries: &[Entry]) {
        for e in entries {
            let facts = EntryFacts {
                fingerprint: fingerprint(e),
                prev_term,
            };
            let known = *self.ledger.entry((e.index, e.term)).or_insert(facts);
            assert_eq!(
                known, facts,
                "log matching: node {id} wrote index {} term {} differing from another copy",
                e.index, e.term
            );
            prev_term = e.term;
        }
    }

    /// A durable write on some node replaced its log from `from` on: no
    /// committed entry may lose its durable quorum.
    pub fn on_durable_replace(&mut self, from: Index, disks: &[Disk]) {
        if from <= self.committed_len() {
            self.check_last_still_held(disks, "lost its durable copy on a node");
        }
    }

    /// A node's disk was wiped (a removed node leaving for good): committed
    /// entries must not depend on it.
    pub fn on_wipe(&mut self, disks: &[Disk]) {
        self.check_last_still_held(disks, "lost a durable copy to a wiped disk");
    }

    /// State machine safety: every node applies the committed entries in
    /// order, and only once a quorum holds them durably; its state machine
    /// is then the one every node has at that index (`states` holds the
    /// node's state after each entry).
    pub fn on_applied(
        &mut self,
        id: NodeId,
        entries: &[Entry],
        states: &[Machine],
        disks: &[Disk],
    ) {
        for (e, state) in entries.iter().zip(states) {
            let view = self.nodes[index(id)];
            assert_eq!(
                e.index,
                view.applied + 1,
                "node {id} applied index {} right after index {}",
                e.index,
                view.applied
            );
            assert!(
                e.index <= view.commit,
                "node {id} applied index {} beyond its commit index {}",
                e.index,
                view.commit
            );
            let c = self.committed[(e.index - 1) as usize];
            assert!(
                c.term == e.term && c.fingerprint == fingerprint(e),
                "state machine safety: node {id} applied index {} term {}, but the committed entry there has term {}",
                e.index,
                e.term,
                c.term
            );
            self.check_still_held(e.index, e.term, disks, "was applied");
            self.check_state(id, *state, "applying");
            self.nodes[index(id)].applied = e.index;
        }
    }

    /// The node's state machine at `state.applied` must be everyone's
    /// there; the first node to reach an index sets it.
    fn check_state(&mut self, id: NodeId, state: Machine, doing: &str) {
        let i = state.applied;
        if i == 0 {
            return;
        }
        if i as usize == self.digests.len() + 1 {
            self.digests.push(state.digest);
        }
        assert_eq!(
            self.digests.get(i as usize - 1),
            Some(&state.digest),
            "node {id} has another state after index {i} than other nodes had, {doing}"
        );
    }

    /// A snapshot's metadata is the committed log's at its index, and its
    /// state the one every node had there.
    fn check_snapshot(&mut self, id: NodeId, meta: &SnapshotMeta, state: Machine, doing: &str) {
        let i = meta.index;
        assert_eq!(
            state.applied, i,
            "node {id}'s snapshot at {i} holds the state at {}",
            state.applied
        );
        assert!(
            i as usize <= self.digests.len(),
            "node {id}, {doing}, has a snapshot at {i}, which no node has applied"
        );
        assert_eq!(
            self.committed_term(i),
            Some(meta.term),
            "node {id}, {doing}, has a snapshot through ({i}, term {}), not a committed entry",
            meta.term
        );
        let expected = self.config_at(i);
        assert!(
            expected.matches(&meta.conf_state),
            "node {id}, {doing}, has a snapshot at {i} with membership {:?}, but the committed \
             log puts {expected:?} in force there",
            meta.conf_state
        );
        self.check_state(id, state, doing);
    }

    /// Node `id` took a snapshot of its state machine.
    pub fn on_snapshot_taken(&mut self, id: NodeId, meta: &SnapshotMeta, state: Machine) {
        assert_eq!(
            self.nodes[index(id)].applied,
            state.applied,
            "node {id} took a snapshot of another state than the one it applied"
        );
        self.check_snapshot(id, meta, state, "taking a snapshot");
    }

    /// Node `id`'s state machine was restored from a snapshot: installed
    /// from the leader's, or recovered at restart. It has applied through
    /// the snapshot, and goes on from there.
    pub fn on_snapshot_restored(&mut self, id: NodeId, meta: &SnapshotMeta, state: Machine) {
        self.check_snapshot(id, meta, state, "restoring a snapshot");
        let view = &mut self.nodes[index(id)];
        view.applied = view.applied.max(meta.index);
    }
}

/// Whether node `id`'s disk holds the committed `(i, term)` durably.
fn holds(disks: &[Disk], id: NodeId, i: Index, term: Term) -> bool {
    disks
        .get(index(id))
        .is_some_and(|d| d.holds_committed(i, term))
}

fn holders(disks: &[Disk], i: Index, term: Term) -> Vec<NodeId> {
    (1..=disks.len() as NodeId)
        .filter(|&id| holds(disks, id, i, term))
        .collect()
}

pub fn entry_at(log: &[Entry], i: Index) -> Option<&Entry> {
    let first = log.first()?.index;
    let offset = usize::try_from(i.checked_sub(first)?).ok()?;
    log.get(offset)
}

/// Identifies an entry's content (kind and payload) without keeping it.
/// A collision could only hide a violation, never invent one.
pub fn fingerprint(e: &Entry) -> u64 {
    let kind = match e.kind {
        EntryKind::Normal => 0u8,
        EntryKind::Noop => 1,
        EntryKind::ConfChange => 2,
    };
    Fnv::new().bytes(&[kind]).bytes(&e.data).finish()
}

fn index(id: NodeId) -> usize {
    (id - 1) as usize
}
