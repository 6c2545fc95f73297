//! Raft's safety properties, checked after every event of a run.
//!
//! The checker sees what an omniscient observer sees: each node's role,
//! term, log and commit index, every batch of entries a node hands to its
//! disk, every entry it applies, and every node's durable state. It keeps
//! just enough history to check the properties incrementally, so the cost
//! of checking grows with the events of a run, not with their square.

use crate::disk::Disk;
use crate::fnv::Fnv;
use embraft::core::{Entry, EntryKind, Index, NodeId, Raft, ReadState, Role, Term};
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
    quorum: usize,
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
    nodes: Vec<NodeView>,
    /// Read requests awaiting their outcome, by context: who asked, and how
    /// much was committed when they did.
    reads: BTreeMap<u64, (NodeId, Index)>,
    reads_served: u64,
}

impl Checker {
    pub fn new(nodes: usize) -> Checker {
        Checker {
            quorum: nodes / 2 + 1,
            leaders: BTreeMap::new(),
            ledger: BTreeMap::new(),
            committed: Vec::new(),
            nodes: vec![NodeView::default(); nodes],
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
            let entry = entry_at(log, i).unwrap_or_else(|| {
                panic!("node {id} committed index {i} beyond the end of its log")
            });
            self.on_committed(id, term, entry, disks);
        }
        self.nodes[index(id)].commit = commit;

        if raft.role() == Role::Leader {
            let leader = *self.leaders.entry(term).or_insert(id);
            assert_eq!(leader, id, "nodes {leader} and {id} both led term {term}");
            self.check_leader_completeness(id, term, log);
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
                self.check_on_durable_quorum(i, entry.term, disks, "was counted committed");
                self.committed.push(CommittedEntry {
                    term: entry.term,
                    fingerprint,
                    seen_in_term: term,
                });
            }
        }
    }

    /// Leader completeness: a leader of term `term` holds every entry
    /// committed in an earlier term.
    fn check_leader_completeness(&mut self, id: NodeId, term: Term, log: &[Entry]) {
        let verified = match self.nodes[index(id)].leading {
            Some((t, verified)) if t == term => verified,
            _ => 0,
        };
        for (offset, c) in self.committed[verified..].iter().enumerate() {
            let i = (verified + offset) as Index + 1;
            if c.seen_in_term < term {
                let held = entry_at(log, i).map(|e| e.term);
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
    /// committed entry may drop off a quorum of durable logs.
    pub fn on_durable_replace(&mut self, from: Index, disks: &[Disk]) {
        for i in from..=self.committed_len() {
            let term = self.committed[(i - 1) as usize].term;
            self.check_on_durable_quorum(i, term, disks, "lost its durable quorum");
        }
    }

    /// State machine safety: every node applies the committed entries in
    /// order, and only once a quorum holds them durably.
    pub fn on_applied(&mut self, id: NodeId, entries: &[Entry], disks: &[Disk]) {
        for e in entries {
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
            self.check_on_durable_quorum(e.index, e.term, disks, "was applied");
            self.nodes[index(id)].applied = e.index;
        }
    }

    fn check_on_durable_quorum(&self, i: Index, term: Term, disks: &[Disk], what: &str) {
        let holders = disks.iter().filter(|d| d.term_at(i) == Some(term)).count();
        assert!(
            holders >= self.quorum,
            "index {i} (term {term}) {what} while only {holders} of {} nodes held it durably",
            disks.len()
        );
    }
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
