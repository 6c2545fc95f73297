//! Unit tests of the state machine's rules, driven by a minimal in-memory
//! cluster (the seeded fault-injecting simulator lives in tests/simulation).

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    /// Messages in flight, delivered in order.
    wire: VecDeque<Message>,
    /// Applied entries per node.
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Nodes whose traffic is dropped.
    isolated: Vec<NodeId>,
    /// Read outcomes per node.
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Snapshot transfers asked for: (from, to, what).
    snapshot_sends: Vec<(NodeId, NodeId, SnapshotMeta)>,
    /// What the latest snapshot holds: the applied entries it covers.
    snapshot_contents: Vec<Entry>,
    /// The durable log of nodes that read evicted entries back from it.
    storage: BTreeMap<NodeId, TestStorage>,
    /// The most bytes each node cached after handling a ready batch.
    peak_cached: BTreeMap<NodeId, u64>,
}

/// A node's durable log, as the test host writes it, seen through the
/// core's read-only view; it can be made to fail or to lie.
#[derive(Clone, Default)]
struct TestStorage {
    log: Arc<Mutex<BTreeMap<Index, Entry>>>,
    failing: Arc<AtomicBool>,
    wrong_terms: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    /// Answers header reads without the data of ordinary entries, as a
    /// storage that keeps an index of terms does.
    strip_headers: Arc<AtomicBool>,
    header_reads: Arc<AtomicU64>,
}

impl TestStorage {
    fn write(&self, entries: &[Entry]) {
        let mut log = self.log.lock().unwrap();
        if let Some(first) = entries.first() {
            log.split_off(&first.index);
        }
        log.extend(entries.iter().map(|e| (e.index, e.clone())));
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl LogStorage for TestStorage {
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, LogReadError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Err(LogReadError::Failed("disk unplugged".into()));
        }
        let mut out = Vec::new();
        let mut size = 0;
        for e in self.log.lock().unwrap().range(lo..hi).map(|(_, e)| e) {
            size += e.size();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            let mut e = e.clone();
            if self.wrong_terms.load(Ordering::Relaxed) {
                e.term += 1;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn entry_headers(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, LogReadError> {
        let mut entries = self.entries(lo, hi, max_bytes)?;
        if self.strip_headers.load(Ordering::Relaxed) {
            self.header_reads.fetch_add(1, Ordering::Relaxed);
            for e in &mut entries {
                if e.kind != EntryKind::ConfChange {
                    e.data = Payload::default();
                }
            }
        }
        Ok(entries)
    }
}

fn config(id: NodeId) -> Config {
    Config {
        id,
        seed: id * 7919,
        ..Config::default()
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).collect();
        Cluster {
            nodes: ids
                .iter()
                .map(|&id| {
                    (
                        id,
                        Raft::new(config(id), InitialState::bootstrap(&ids)).unwrap(),
                    )
                })
                .collect(),
            wire: VecDeque::new(),
            applied: ids.iter().map(|&id| (id, Vec::new())).collect(),
            isolated: Vec::new(),
            reads: ids.iter().map(|&id| (id, Vec::new())).collect(),
            snapshot_sends: Vec::new(),
            snapshot_contents: Vec::new(),
            storage: BTreeMap::new(),
            peak_cached: BTreeMap::new(),
        }
    }

    /// A cluster whose nodes read evicted entries back from their durable
    /// log, and keep at most `max_cached_bytes` cached (0: no bound).
    fn with_log_storage(n: u64, max_cached_bytes: u64) -> Cluster {
        let mut c = Cluster::with_config(n, |cfg| Config {
            max_cached_bytes,
            ..cfg
        });
        for (&id, node) in c.nodes.iter_mut() {
            let storage = TestStorage::default();
            storage.write(node.log_entries());
            node.set_log_storage(Box::new(storage.clone()));
            c.storage.insert(id, storage);
        }
        c
    }

    /// A cluster whose nodes run `adjust(config(id))`.
    fn with_config(n: u64, adjust: impl Fn(Config) -> Config) -> Cluster {
        let mut c = Cluster::new(n);
        let ids: Vec<NodeId> = (1..=n).collect();
        for &id in &ids {
            let cfg = adjust(config(id));
            c.nodes
                .insert(id, Raft::new(cfg, InitialState::bootstrap(&ids)).unwrap());
        }
        c
    }

    /// A cluster whose nodes keep only `keep` entries before a snapshot.
    fn with_compaction(n: u64, keep: u64) -> Cluster {
        Cluster::with_config(n, |cfg| Config {
            compact_keep_entries: keep,
            ..cfg
        })
    }

    /// A cluster that serves reads from the leader's lease.
    fn with_leases(n: u64) -> Cluster {
        Cluster::with_config(n, |cfg| Config {
            lease_reads: true,
            ..cfg
        })
    }

    /// The outcome of node `id`'s read under `context`, if it arrived.
    fn read_outcome(&self, id: NodeId, context: u64) -> Option<Result<Index, ReadError>> {
        self.reads[&id]
            .iter()
            .find(|r| r.context == context)
            .map(|r| r.result)
    }

    /// Node `id` snapshots everything it applied.
    fn snapshot(&mut self, id: NodeId) -> SnapshotMeta {
        let applied = self.applied[&id].clone();
        let meta = self.node(id).compact(applied.len() as Index).unwrap();
        self.snapshot_contents = applied;
        meta
    }

    /// Elects a leader, cuts one follower off, commits `proposals` entries
    /// without it and snapshots the leader: the follower now needs the
    /// snapshot. Returns (leader, follower, snapshot); the follower stays
    /// cut off.
    fn follower_behind_a_snapshot(&mut self, proposals: u8) -> (NodeId, NodeId, SnapshotMeta) {
        let leader = self.elected();
        let lagging = (1..=3).find(|&id| id != leader).unwrap();
        self.isolated.push(lagging);
        for i in 0..proposals {
            self.node(leader).propose(vec![i]).unwrap();
        }
        self.settle();
        let meta = self.snapshot(leader);
        (leader, lagging, meta)
    }

    /// Delivers the snapshots asked for, as a host's transfer would.
    fn transfer_snapshots(&mut self) {
        for (from, to, meta) in std::mem::take(&mut self.snapshot_sends) {
            if self.isolated.contains(&to) {
                self.node(from).report_snapshot(to, false);
                continue;
            }
            self.node(to).restore(meta);
            self.node(from).report_snapshot(to, true);
        }
        self.settle();
    }

    /// Starts a node that belongs to no membership yet (it is being added).
    fn add_blank_node(&mut self, id: NodeId) {
        let node = Raft::new(config(id), InitialState::default()).unwrap();
        self.nodes.insert(id, node);
        self.applied.insert(id, Vec::new());
        self.reads.insert(id, Vec::new());
    }

    fn change(&mut self, leader: NodeId, change: ConfChange) -> Result<(), ProposeError> {
        self.node(leader).propose_conf_change(&change)?;
        self.settle();
        Ok(())
    }

    fn elected(&mut self) -> NodeId {
        self.tick_all(30);
        self.leader().expect("a leader")
    }

    /// Handles every node's ready batch (persisting at once) and delivers
    /// messages until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut busy = false;
            for (&id, node) in self.nodes.iter_mut() {
                if !node.has_ready() {
                    continue;
                }
                busy = true;
                let rd = node.ready();
                if let Some(storage) = self.storage.get(&id) {
                    storage.write(&rd.entries);
                }
                if let Some(meta) = &rd.snapshot {
                    // The host restores its state machine from the snapshot.
                    let applied = self.applied.get_mut(&id).unwrap();
                    *applied = self.snapshot_contents[..meta.index as usize].to_vec();
                }
                self.snapshot_sends.extend(
                    rd.snapshots_to_send
                        .iter()
                        .map(|(to, meta)| (id, *to, meta.clone())),
                );
                self.wire.extend(rd.messages);
                node.on_persisted(rd.number);
                self.wire.extend(rd.persisted_messages);
                if let Some(last) = rd.committed_entries.last() {
                    node.on_applied(last.index);
                }
                self.reads.get_mut(&id).unwrap().extend(rd.read_states);
                self.applied
                    .get_mut(&id)
                    .unwrap()
                    .extend(rd.committed_entries);
                let peak = self.peak_cached.entry(id).or_default();
                *peak = (*peak).max(node.cached_entry_bytes());
            }
            while let Some(m) = self.wire.pop_front() {
                busy = true;
                if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&m.to) {
                    let _ = node.step(m);
                }
            }
            if !busy {
                return;
            }
        }
        panic!("cluster never settled");
    }

    fn tick_all(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.role() == Role::Leader && !self.isolated.contains(&n.id()))
            .map(|n| n.id())
            .collect();
        assert!(leaders.len() <= 1, "several leaders: {leaders:?}");
        leaders.first().copied()
    }

    fn node(&mut self, id: NodeId) -> &mut Raft {
        self.nodes.get_mut(&id).unwrap()
    }
}

#[test]
fn a_leader_is_elected_and_commits_its_noop() {
    let mut c = Cluster::new(3);
    c.tick_all(30);
    let leader = c.leader().expect("a leader");
    let term = c.node(leader).term();
    for n in c.nodes.values() {
        assert_eq!(n.term(), term);
        assert_eq!(n.leader(), leader);
        assert_eq!(n.commit_index(), 2);
    }
    // The founding membership, then the new leader's no-op.
    let kinds = [EntryKind::ConfChange, EntryKind::Noop];
    assert!(c
        .applied
        .values()
        .all(|a| a.iter().map(|e| e.kind).eq(kinds)));
}

#[test]
fn proposals_are_applied_in_order_on_every_node() {
    let mut c = Cluster::new(3);
    c.tick_all(30);
    let leader = c.leader().unwrap();
    for i in 0..100u32 {
        c.node(leader).propose(i.to_le_bytes().to_vec()).unwrap();
        if i % 7 == 0 {
            c.settle();
        }
    }
    c.settle();
    let expected: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_le_bytes().to_vec()).collect();
    for applied in c.applied.values() {
        let data: Vec<Vec<u8>> = applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.to_vec())
            .collect();
        assert_eq!(data, expected);
    }
}

#[test]
fn followers_refuse_proposals_and_name_the_leader() {
    let mut c = Cluster::new(3);
    c.tick_all(30);
    let leader = c.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    assert_eq!(
        c.node(follower).propose(b"x".to_vec()),
        Err(ProposeError::NotLeader { leader })
    );
    let too_big = vec![0; (Config::default().max_entry_bytes + 1) as usize];
    assert!(matches!(
        c.node(leader).propose(too_big),
        Err(ProposeError::TooLarge { .. })
    ));
}

#[test]
fn a_new_leader_takes_over_when_the_leader_is_cut_off_and_the_old_one_steps_down() {
    let mut c = Cluster::new(3);
    c.tick_all(30);
    let old = c.leader().unwrap();
    c.isolated.push(old);
    c.tick_all(40);
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old);
    // Check-quorum: the isolated leader gave up within an election timeout.
    assert_ne!(c.node(old).role(), Role::Leader);
    let new_term = c.node(new).term();
    c.isolated.clear();
    c.tick_all(30);
    assert_eq!(
        c.leader(),
        Some(new),
        "pre-vote keeps the rejoining node from disrupting"
    );
    assert_eq!(c.node(new).term(), new_term);
}

#[test]
fn single_node_commits_only_after_persisting() {
    let mut n = Raft::new(config(1), InitialState::bootstrap(&[1])).unwrap();
    assert_eq!(n.status().conf_state.voters, vec![1], "founding membership");
    let rd = n.ready();
    assert_eq!(rd.committed_entries.len(), 1, "the founding entry");
    n.campaign();
    let rd = n.ready();
    assert_eq!(n.role(), Role::Candidate, "own vote not durable yet");
    n.on_persisted(rd.number);
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed_entries.is_empty());
    n.on_persisted(rd.number);
    assert_eq!(n.commit_index(), 2);
    assert_eq!(n.ready().committed_entries.len(), 1);
}

#[test]
fn only_a_batch_that_advances_nothing_but_the_commit_index_needs_no_sync() {
    let mut n = Raft::new(config(1), InitialState::bootstrap(&[1])).unwrap();
    n.ready();
    n.campaign();
    let vote = n.ready();
    assert!(vote.must_sync, "a new term and vote");
    n.on_persisted(vote.number);
    let noop = n.ready();
    assert!(noop.must_sync, "the leader's first entry");
    assert!(!noop.entries.is_empty());
    n.on_persisted(noop.number);
    let commit = n.ready();
    let hard_state = commit.hard_state.expect("the commit index moved");
    assert_eq!(hard_state.commit, 2);
    assert!(commit.entries.is_empty());
    assert!(!commit.must_sync, "only the commit index changed");
}

#[test]
fn vote_responses_wait_for_persistence() {
    let mut n = Raft::new(config(2), InitialState::bootstrap(&[1, 2, 3])).unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::Vote {
            last_index: 1,
            last_term: 1,
            transfer: false,
        },
    })
    .unwrap();
    let rd = n.ready();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.hard_state.unwrap().vote, 1);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { reject: false }
    );
}

#[test]
fn bad_messages_are_refused() {
    let mut n = Raft::new(config(2), InitialState::bootstrap(&[1, 2, 3])).unwrap();
    let msg = |from, to, term, body| Message {
        from,
        to,
        term,
        body,
    };
    let hb = MessageBody::Heartbeat {
        commit: 0,
        context: 0,
    };
    assert_eq!(
        n.step(msg(9, 2, 1, MessageBody::TimeoutNow)),
        Err(StepError::UnknownSender(9))
    );
    assert_eq!(
        n.step(msg(1, 3, 1, hb.clone())),
        Err(StepError::WrongRecipient(3))
    );
    assert!(n.step(msg(1, 2, 0, hb.clone())).is_err());
    // A term no election could reach is refused, so that a node never
    // adopts a term it could not campaign beyond.
    assert_eq!(
        n.step(msg(1, 2, u64::MAX, hb)),
        Err(StepError::Invalid(
            "term beyond the largest a cluster can reach"
        ))
    );
    assert_eq!(n.status().term, 1);
    let gap = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![Entry {
            index: 5,
            term: 1,
            kind: EntryKind::Normal,
            data: Payload::default(),
        }],
        commit: 0,
    };
    assert!(n.step(msg(1, 2, 1, gap)).is_err());
    let beyond = |prev_index| MessageBody::Append {
        prev_index,
        prev_term: 1,
        entries: vec![],
        commit: MAX_INDEX,
    };
    // Far beyond the log, yet under the ceiling (beyond it, see
    // `indexes_beyond_the_ceiling_are_refused_in_every_message`).
    for prev_index in [MAX_INDEX, MAX_INDEX - 5] {
        n.step(msg(1, 2, 1, beyond(prev_index))).unwrap();
        let rd = n.ready();
        assert!(matches!(
            rd.persisted_messages[0].body,
            MessageBody::AppendResponse { reject: true, .. }
        ));
    }
    assert_eq!(n.commit_index(), 1, "the bogus commit index was not taken");
}

#[test]
fn read_index_is_served_at_the_commit_index_after_a_heartbeat_round() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    c.node(leader).propose(b"a".to_vec()).unwrap();
    c.settle();
    let commit = c.node(leader).commit_index();
    c.node(leader).read_index(7).unwrap();
    assert!(
        c.node(leader).read_states.is_empty(),
        "needs a quorum round first"
    );
    c.settle();
    assert_eq!(
        c.reads[&leader],
        vec![ReadState {
            context: 7,
            result: Ok(commit)
        }]
    );
    // A follower's read is forwarded to the leader.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    c.node(follower).read_index(8).unwrap();
    c.settle();
    assert_eq!(c.reads[&follower][0].result, Ok(commit));
}

#[test]
fn a_deposed_leader_never_serves_a_read() {
    let mut c = Cluster::new(3);
    let old = c.elected();
    c.isolated.push(old);
    c.node(old).read_index(1).unwrap();
    c.settle();
    assert!(c.reads[&old].is_empty(), "no quorum confirmed it");
    c.tick_all(40);
    assert_ne!(c.node(old).role(), Role::Leader);
    assert_eq!(
        c.reads[&old],
        vec![ReadState {
            context: 1,
            result: Err(ReadError::LeadershipLost)
        }]
    );
}

#[test]
fn leadership_moves_to_an_up_to_date_voter_and_proposals_wait() {
    let mut c = Cluster::new(3);
    let old = c.elected();
    let target = (1..=3).find(|&id| id != old).unwrap();
    c.node(old).transfer_leader(target).unwrap();
    assert_eq!(
        c.node(old).propose(b"x".to_vec()),
        Err(ProposeError::TransferInProgress)
    );
    c.settle();
    assert_eq!(c.leader(), Some(target));
    assert_eq!(
        c.node(old).transfer_leader(9),
        Err(TransferError::NotLeader { leader: target })
    );
}

#[test]
fn leadership_moves_to_a_lagging_voter_once_it_catches_up() {
    let mut c = Cluster::new(3);
    let old = c.elected();
    let target = (1..=3).find(|&id| id != old).unwrap();
    c.isolated.push(target);
    for i in 0..20u8 {
        c.node(old).propose(vec![i]).unwrap();
    }
    c.settle();
    c.isolated.clear();
    c.node(old).transfer_leader(target).unwrap();
    c.tick_all(3);
    assert_eq!(c.leader(), Some(target));
    let last = c.node(old).status().last_index;
    assert!(c.node(target).status().last_index > last - 1);
}

#[test]
fn a_transfer_to_a_cut_off_voter_times_out_and_the_leader_resumes() {
    let mut c = Cluster::new(3);
    let old = c.elected();
    let target = (1..=3).find(|&id| id != old).unwrap();
    c.isolated.push(target);
    c.node(old).transfer_leader(target).unwrap();
    c.tick_all(Config::default().election_tick as usize + 1);
    assert_eq!(c.leader(), Some(old));
    assert_eq!(c.node(old).status().lead_transferee, NO_NODE);
    c.node(old).propose(b"after".to_vec()).unwrap();
}

#[test]
fn a_learner_is_added_caught_up_and_promoted() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    for i in 0..10u8 {
        c.node(leader).propose(vec![i]).unwrap();
    }
    c.settle();
    c.add_blank_node(4);
    c.change(leader, ConfChange::AddLearner(4)).unwrap();
    assert!(c.node(leader).status().conf_state.learners.contains(&4));
    assert_eq!(c.node(4).role(), Role::Follower);
    let leader_log = c.node(leader).status().last_index;
    assert_eq!(
        c.node(4).status().last_index,
        leader_log,
        "learner caught up"
    );
    // A learner never votes: it has no say in the commit index either.
    c.change(leader, ConfChange::PromoteLearner(4)).unwrap();
    let cs = c.node(4).status().conf_state;
    assert_eq!(cs.voters, vec![1, 2, 3, 4]);
    assert!(cs.learners.is_empty());
}

#[test]
fn a_second_change_is_refused_while_one_is_pending() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    c.node(leader)
        .propose_conf_change(&ConfChange::AddLearner(4))
        .unwrap();
    assert_eq!(
        c.node(leader)
            .propose_conf_change(&ConfChange::AddLearner(5)),
        Err(ProposeError::ConfChangePending)
    );
}

#[test]
fn a_leader_that_removes_itself_steps_down_once_the_change_commits() {
    let mut c = Cluster::new(3);
    let old = c.elected();
    c.change(old, ConfChange::RemoveNode(old)).unwrap();
    assert_ne!(c.node(old).role(), Role::Leader);
    c.tick_all(40);
    let new = c.leader().expect("the remaining two elect a leader");
    assert_ne!(new, old);
    let new_term = c.node(new).term();
    // The removed node keeps running but never campaigns or disrupts.
    c.tick_all(60);
    assert_eq!(c.leader(), Some(new));
    assert_eq!(c.node(new).term(), new_term);
}

#[test]
fn a_joint_change_reaches_the_target_and_leaves_joint_by_itself() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    for id in [4, 5] {
        c.add_blank_node(id);
    }
    c.change(
        leader,
        ConfChange::EnterJoint {
            voters: vec![1, 2, 3, 4, 5],
            learners: vec![],
        },
    )
    .unwrap();
    c.settle();
    for id in 1..=5 {
        let cs = c.node(id).status().conf_state;
        assert_eq!(cs.voters, vec![1, 2, 3, 4, 5], "node {id}");
        assert!(cs.voters_outgoing.is_empty(), "node {id} left joint");
    }
    // Shrink back to three through a joint configuration that drops the
    // leader; it steps down once the change commits.
    let keep: Vec<NodeId> = (1..=5).filter(|&id| id != leader).take(3).collect();
    c.change(
        leader,
        ConfChange::EnterJoint {
            voters: keep.clone(),
            learners: vec![],
        },
    )
    .unwrap();
    c.tick_all(40);
    let new = c.leader().expect("a leader among the remaining voters");
    assert!(keep.contains(&new));
    assert_eq!(c.node(new).status().conf_state.voters, keep);
}

#[test]
fn an_unreachable_follower_is_probed_instead_of_streamed_to() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    c.node(leader).propose(b"x".to_vec()).unwrap();
    c.settle();
    let replicating = |c: &mut Cluster| {
        c.node(leader)
            .status()
            .peers
            .iter()
            .find(|p| p.id == follower)
            .unwrap()
            .replicating
    };
    assert!(replicating(&mut c));
    c.node(leader).report_unreachable(follower);
    assert!(!replicating(&mut c));
    c.settle();
    c.node(leader).propose(b"y".to_vec()).unwrap();
    c.settle();
    assert!(replicating(&mut c), "back to streaming once it answers");
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut c = Cluster::with_compaction(3, 5);
    let (leader, lagging, meta) = c.follower_behind_a_snapshot(50);
    assert_eq!(meta.conf_state.voters, vec![1, 2, 3]);
    let status = c.node(leader).status();
    assert_eq!(status.snapshot_index, meta.index);
    assert_eq!(
        status.first_index,
        meta.index + 1 - 5,
        "five trailing entries kept"
    );
    c.isolated.clear();
    c.tick_all(2);
    assert_eq!(
        c.snapshot_sends.len(),
        1,
        "the leader asks for one snapshot transfer"
    );
    assert_eq!(c.node(leader).snapshot_pending(lagging), Some(meta.index));
    let other = (1..=3).find(|&id| id != leader && id != lagging).unwrap();
    assert_eq!(c.node(leader).snapshot_pending(other), None);
    c.transfer_snapshots();
    assert_eq!(
        c.node(leader).snapshot_pending(lagging),
        None,
        "installed: nothing pending"
    );
    c.node(leader).propose(b"after".to_vec()).unwrap();
    c.settle();
    let expected = c.applied[&leader].clone();
    assert_eq!(c.applied[&lagging], expected);
    assert_eq!(c.node(lagging).status().snapshot_index, meta.index);
    assert_eq!(c.node(lagging).status().conf_state.voters, vec![1, 2, 3]);
}

#[test]
fn a_failed_snapshot_transfer_is_asked_for_again() {
    let mut c = Cluster::with_compaction(3, 1);
    let (leader, lagging, _) = c.follower_behind_a_snapshot(10);
    c.tick_all(1);
    c.transfer_snapshots();
    c.isolated.clear();
    c.tick_all(3);
    assert!(
        !c.snapshot_sends.is_empty(),
        "asked for again after the failure"
    );
    c.transfer_snapshots();
    c.settle();
    assert_eq!(c.applied[&lagging], c.applied[&leader]);
}

#[test]
fn snapshots_cover_only_applied_entries() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let applied = c.node(leader).status().applied;
    assert_eq!(
        c.node(leader).compact(applied + 1),
        Err(CompactError::NotApplied {
            index: applied + 1,
            applied
        })
    );
    c.node(leader).compact(applied).unwrap();
    assert_eq!(
        c.node(leader).compact(applied),
        Err(CompactError::AlreadyCompacted {
            snapshot_index: applied
        })
    );
}

#[test]
fn a_node_restarts_from_a_snapshot_and_the_entries_after_it() {
    let mut c = Cluster::with_compaction(3, 2);
    let leader = c.elected();
    for i in 0..10u8 {
        c.node(leader).propose(vec![i]).unwrap();
    }
    c.settle();
    let meta = c.snapshot(leader);
    c.node(leader).propose(b"tail".to_vec()).unwrap();
    c.settle();
    let before = c.node(leader).status();
    let held = c.node(leader).log_entries().to_vec();
    assert_eq!(
        held[0].index,
        meta.index - 1,
        "two entries before the snapshot"
    );
    let restarted = Raft::new(
        config(leader),
        InitialState {
            hard_state: c.node(leader).hard_state(),
            snapshot: Some(meta.clone()),
            entries: held,
            applied: meta.index,
            ..InitialState::default()
        },
    )
    .unwrap();
    let after = restarted.status();
    assert_eq!(after.last_index, before.last_index);
    assert_eq!(after.snapshot_index, meta.index);
    assert_eq!(after.conf_state, before.conf_state);
    assert_eq!(after.commit, before.commit);
}

#[test]
fn a_snapshot_reported_sent_but_never_installed_is_sent_again() {
    let mut c = Cluster::with_compaction(3, 1);
    let (leader, lagging, _) = c.follower_behind_a_snapshot(10);
    c.isolated.clear();
    c.tick_all(2);
    // The host claims success, but the chunks were lost on the way.
    for (from, to, _) in std::mem::take(&mut c.snapshot_sends) {
        c.node(from).report_snapshot(to, true);
    }
    c.tick_all(3);
    assert!(
        !c.snapshot_sends.is_empty(),
        "the follower refused the probe: resend"
    );
    c.transfer_snapshots();
    c.settle();
    assert_eq!(c.applied[&lagging], c.applied[&leader]);
}

#[test]
fn a_single_voter_that_adds_a_voter_keeps_leading_until_it_answers() {
    let mut c = Cluster::new(1);
    let leader = c.elected();
    c.add_blank_node(2);
    c.isolated.push(2);
    c.change(leader, ConfChange::AddVoter(2)).unwrap();
    // The new voter is still starting up; check-quorum runs once per
    // election timeout.
    for _ in 0..Config::default().election_tick - 1 {
        c.tick_all(1);
    }
    assert_eq!(c.node(leader).role(), Role::Leader);
    c.isolated.clear();
    c.tick_all(30);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(2).status().conf_state.voters, vec![1, 2]);
}

#[test]
fn a_joining_node_votes_before_it_knows_the_membership() {
    let mut n = Raft::new(config(2), InitialState::default()).unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Vote {
            last_index: 4,
            last_term: 2,
            transfer: false,
        },
    })
    .unwrap();
    let rd = n.ready();
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { reject: false }
    );
}

#[test]
fn inconsistent_snapshot_chunks_and_voterless_snapshots_are_refused() {
    let mut n = Raft::new(config(2), InitialState::bootstrap(&[1, 2, 3])).unwrap();
    let good_meta = SnapshotMeta {
        index: 10,
        term: 2,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    };
    let chunk = |meta: SnapshotMeta, offset, total_len, data: Vec<u8>| Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::InstallSnapshot {
            meta,
            offset,
            total_len,
            checksum: 0,
            data,
        },
    };
    let voterless = SnapshotMeta {
        conf_state: ConfState::default(),
        ..good_meta.clone()
    };
    let future_term = SnapshotMeta {
        term: 9,
        ..good_meta.clone()
    };
    for bad in [
        chunk(good_meta.clone(), 1000, 4, vec![0; 16]),
        chunk(good_meta.clone(), u64::MAX, u64::MAX, vec![0; 1]),
        chunk(voterless.clone(), 0, 4, vec![0; 4]),
        chunk(future_term, 0, 4, vec![0; 4]),
    ] {
        assert!(matches!(n.step(bad), Err(StepError::Invalid(_))));
    }
    n.step(chunk(good_meta.clone(), 0, 4, vec![0; 4])).unwrap();
    assert_eq!(n.ready().snapshot_chunks.len(), 1);
    assert!(
        !n.restore(voterless),
        "a snapshot without voters is refused"
    );
    assert_eq!(n.status().conf_state.voters, vec![1, 2, 3]);
    assert!(n.restore(good_meta));
}

#[test]
fn indexes_beyond_the_ceiling_are_refused_in_every_message() {
    let mut n = Raft::new(config(2), InitialState::bootstrap(&[1, 2, 3])).unwrap();
    let before = n.status();
    let beyond = MAX_INDEX + 1;
    let meta = SnapshotMeta {
        index: u64::MAX,
        term: 2,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    };
    let bodies = vec![
        MessageBody::InstallSnapshot {
            meta,
            offset: 0,
            total_len: 4,
            checksum: 0,
            data: vec![0; 4],
        },
        MessageBody::Append {
            prev_index: beyond,
            prev_term: 1,
            entries: Vec::new(),
            commit: 0,
        },
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: Vec::new(),
            commit: u64::MAX,
        },
        MessageBody::Heartbeat {
            commit: u64::MAX,
            context: 0,
        },
        MessageBody::Vote {
            last_index: beyond,
            last_term: 1,
            transfer: false,
        },
        MessageBody::AppendResponse {
            reject: true,
            index: 1,
            hint_index: u64::MAX,
            hint_term: 1,
        },
    ];
    for body in bodies {
        let name = body.name();
        let result = n.step(Message {
            from: 1,
            to: 2,
            term: 2,
            body,
        });
        assert!(
            matches!(result, Err(StepError::Invalid(_))),
            "{name} beyond the index ceiling: {result:?}"
        );
    }
    let status = n.status();
    assert_eq!(
        (status.term, status.commit, status.last_index),
        (before.term, before.commit, before.last_index),
        "nothing was adopted"
    );
    assert!(n.ready().snapshot_chunks.is_empty());
}

#[test]
fn snapshot_metadata_at_an_index_is_known_before_compacting() {
    let mut c = Cluster::with_compaction(3, 1);
    let leader = c.elected();
    for i in 0..5u8 {
        c.node(leader).propose(vec![i]).unwrap();
    }
    c.settle();
    let applied = c.node(leader).status().applied;
    let term = c.node(leader).term();
    assert_eq!(
        c.node(leader).snapshot_meta_at(applied + 1),
        Err(CompactError::NotApplied {
            index: applied + 1,
            applied
        })
    );
    let meta = c.node(leader).snapshot_meta_at(applied).unwrap();
    assert_eq!((meta.index, meta.term), (applied, term));
    assert_eq!(meta.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(
        c.node(leader).status().snapshot_index,
        0,
        "asking compacts nothing"
    );
    assert_eq!(c.node(leader).compact(applied), Ok(meta));
    assert_eq!(
        c.node(leader).snapshot_meta_at(applied),
        Err(CompactError::AlreadyCompacted {
            snapshot_index: applied
        })
    );
}

#[test]
fn a_leader_hands_out_snapshot_answers_of_its_term_only() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let term = c.node(leader).term();
    let answer = |term, next_offset, reject| Message {
        from: follower,
        to: leader,
        term,
        body: MessageBody::InstallSnapshotResponse {
            index: 7,
            next_offset,
            reject,
        },
    };
    c.node(leader).step(answer(term, 4096, false)).unwrap();
    c.node(leader).step(answer(term - 1, 8192, false)).unwrap();
    c.node(leader).step(answer(term, 0, true)).unwrap();
    let rd = c.node(leader).ready();
    assert_eq!(
        rd.snapshot_responses,
        vec![
            SnapshotResponse {
                from: follower,
                index: 7,
                next_offset: 4096,
                reject: false
            },
            SnapshotResponse {
                from: follower,
                index: 7,
                next_offset: 0,
                reject: true
            },
        ],
        "the answer of an earlier term is dropped"
    );
    // A follower has no transfer to steer: nothing surfaces there.
    let other = (1..=3).find(|&id| id != leader && id != follower).unwrap();
    let mut to_follower = answer(term, 1, false);
    to_follower.to = other;
    c.node(other).step(to_follower).unwrap();
    assert!(c.node(other).ready().snapshot_responses.is_empty());
}

/// An entry of term `term` at `index` carrying `change`.
fn conf_entry(index: Index, term: Term, change: ConfChange) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::ConfChange,
        data: change.encode().into(),
    }
}

fn normal_entry(index: Index, term: Term, data: &[u8]) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: data.to_vec().into(),
    }
}

fn vote_request(from: NodeId, to: NodeId, term: Term, last: (Index, Term)) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Vote {
            last_index: last.0,
            last_term: last.1,
            transfer: false,
        },
    }
}

fn vote_refused(n: &mut Raft) -> bool {
    let rd = n.ready();
    match rd.persisted_messages.as_slice() {
        [Message {
            body: MessageBody::VoteResponse { reject },
            ..
        }] => *reject,
        other => panic!("expected one vote response, got {other:?}"),
    }
}

#[test]
fn a_lagging_node_follows_a_leader_added_since_it_last_applied() {
    // Node 5 knows the membership {1} with learner 5; node 6 was added
    // since, and now leads.
    let mut state = InitialState::bootstrap(&[1]);
    state
        .entries
        .push(conf_entry(2, 1, ConfChange::AddLearner(5)));
    state.hard_state.commit = 2;
    let mut n = Raft::new(config(5), state).unwrap();
    let append = MessageBody::Append {
        prev_index: 2,
        prev_term: 1,
        entries: vec![],
        commit: 2,
    };
    n.step(Message {
        from: 6,
        to: 5,
        term: 4,
        body: append,
    })
    .unwrap();
    assert_eq!(n.leader(), 6);
    let rd = n.ready();
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse {
            reject: false,
            index: 2,
            ..
        }
    ));
}

#[test]
fn a_lagging_voter_answers_a_candidate_it_does_not_know_yet() {
    // Node 2 knows the membership {2, 3}; since then {3, 6} took over (node
    // 2 was promoted back in, say, or is still needed by a joint
    // configuration), and node 6 campaigns: it needs node 2's vote.
    let mut state = InitialState::bootstrap(&[2, 3]);
    state.hard_state.term = 2;
    let mut n = Raft::new(config(2), state).unwrap();
    n.step(vote_request(6, 2, 3, (9, 3))).unwrap();
    assert!(!vote_refused(&mut n));
}

/// Takes node `id`'s ready batch, makes it durable at once, applies what
/// it commits, and steps every message it sends into its recipient, whose
/// own batches stay pending: one hop of the cluster, for tests that act
/// between hops.
fn hop(c: &mut Cluster, id: NodeId) {
    let rd = c.node(id).ready();
    c.node(id).on_persisted(rd.number);
    if let Some(last) = rd.committed_entries.last() {
        c.node(id).on_applied(last.index);
    }
    for m in rd.messages.into_iter().chain(rd.persisted_messages) {
        let to = m.to;
        let _ = c.node(to).step(m);
    }
}

#[test]
fn a_removed_leader_leaves_a_log_the_remaining_voters_can_win() {
    // Leader `l` of {1, 2} removes itself; `f` acknowledges the removal,
    // and `l` counts it committed, but `f` never hears so: it still needs
    // `l`'s vote. A proposal made on `l` in between (before `l` applies
    // its removal and steps down) is refused: taken, it would never reach
    // `f`, and `l` would refuse its vote to `f` forever.
    let mut c = Cluster::new(2);
    let l = c.elected();
    let f = 3 - l;
    let (removal, _) = c
        .node(l)
        .propose_conf_change(&ConfChange::RemoveNode(l))
        .unwrap();
    hop(&mut c, l);
    hop(&mut c, f);
    assert_eq!(c.node(l).commit_index(), removal);
    assert_eq!(
        c.node(l).role(),
        Role::Leader,
        "the removal is not applied yet"
    );
    let _ = c.node(l).propose(b"late".to_vec());
    c.isolated.push(f);
    c.settle();
    assert_eq!(c.node(l).role(), Role::Follower);
    assert_eq!(c.node(l).status().conf_state.voters, vec![f]);
    assert_eq!(c.node(f).commit_index(), removal - 1);
    c.isolated.clear();
    c.tick_all(60);
    assert_eq!(c.leader(), Some(f), "the remaining voter never won");
    assert_eq!(c.node(f).status().conf_state.voters, vec![f]);
}

#[test]
fn a_leader_takes_no_proposal_while_its_removal_is_pending() {
    // Single-step: refused from the moment the removal is in the log.
    let mut c = Cluster::new(3);
    let l = c.elected();
    c.node(l).propose(b"before".to_vec()).unwrap();
    let (removal, _) = c
        .node(l)
        .propose_conf_change(&ConfChange::RemoveNode(l))
        .unwrap();
    assert_eq!(
        c.node(l).propose(b"after".to_vec()),
        Err(ProposeError::LeaderLeaving)
    );
    assert_eq!(
        c.node(l).propose_conf_change(&ConfChange::AddLearner(9)),
        Err(ProposeError::LeaderLeaving)
    );
    c.settle();
    assert_eq!(c.node(l).role(), Role::Follower);
    assert_eq!(c.node(l).status().last_index, removal);

    // Joint: the leader, made a learner, still votes as an outgoing voter
    // while joint, so it takes proposals until the entry that leaves the
    // joint configuration is in its log.
    let mut c = Cluster::new(3);
    let l = c.elected();
    let others: Vec<NodeId> = (1..=3).filter(|&id| id != l).collect();
    let joint = ConfChange::EnterJoint {
        voters: others.clone(),
        learners: vec![l],
    };
    c.node(l).propose_conf_change(&joint).unwrap();
    c.node(l).propose(b"while joint".to_vec()).unwrap();
    while c.node(l).status().conf_state.voters_outgoing.is_empty() {
        hop(&mut c, l);
        for &id in &others {
            hop(&mut c, id);
        }
    }
    c.node(l).propose(b"still joint".to_vec()).unwrap();
    hop(&mut c, l);
    let leave = c.node(l).status().last_index;
    assert_eq!(
        c.node(l).propose(b"leaving".to_vec()),
        Err(ProposeError::LeaderLeaving)
    );
    c.settle();
    assert_eq!(c.node(l).role(), Role::Follower);
    assert_eq!(c.node(l).status().conf_state.learners, vec![l]);
    assert_eq!(c.node(l).status().last_index, leave);
    assert_eq!(c.node(others[0]).commit_index(), leave);
}

#[test]
fn a_removed_node_votes_by_its_whole_log() {
    // Node 1 was removed at index 3 and has applied its removal (commit
    // 3), but it holds entry 4, which it acknowledged to the leader: that
    // leader, not yet applying the removal, may count node 1 toward
    // committing 4 under {1, 2, 3}. Node 3, lacking 4 and unaware of the
    // removal, campaigns under {1, 2, 3}: its vote must be refused, or
    // node 3 could win without a committed entry.
    let mut state = InitialState::bootstrap(&[1, 2, 3]);
    state.entries.extend([
        Entry {
            index: 2,
            term: 2,
            kind: EntryKind::Noop,
            data: Payload::default(),
        },
        conf_entry(3, 2, ConfChange::RemoveNode(1)),
        normal_entry(4, 2, b"acknowledged"),
    ]);
    state.hard_state = HardState {
        term: 2,
        vote: 2,
        commit: 3,
    };
    let mut n = Raft::new(config(1), state).unwrap();
    assert_eq!(n.status().conf_state.voters, vec![2, 3]);
    n.step(vote_request(3, 1, 3, (3, 2))).unwrap();
    assert!(vote_refused(&mut n), "a candidate without entry 4");
    n.step(vote_request(3, 1, 3, (4, 2))).unwrap();
    assert!(!vote_refused(&mut n), "a candidate as up to date");
}

#[test]
fn a_learner_being_promoted_votes_by_its_whole_log() {
    // Learner 3's log holds its promotion, not yet committed as far as it
    // knows: the leader may already count it, so it guards its whole log.
    let mut state = InitialState::bootstrap(&[1, 2]);
    state.entries.extend([
        conf_entry(2, 2, ConfChange::AddLearner(3)),
        conf_entry(3, 2, ConfChange::PromoteLearner(3)),
        normal_entry(4, 2, b"counted"),
    ]);
    state.hard_state = HardState {
        term: 2,
        vote: NO_NODE,
        commit: 2,
    };
    let mut n = Raft::new(config(3), state).unwrap();
    assert_eq!(n.status().conf_state.learners, vec![3]);
    n.step(vote_request(2, 3, 3, (3, 2))).unwrap();
    assert!(vote_refused(&mut n));
}

#[test]
fn a_removed_node_holding_what_the_voters_lack_campaigns_for_it() {
    // Node 1 was removed from {1, 2} at index 3 and has applied that. Node
    // 2 led term 3 without knowing the removal had committed, and sent its
    // no-op (4) to node 1, which acknowledged it; node 2 then crashed
    // before its own copy was durable. Node 2 still decides by {1, 2} and
    // needs node 1's vote, which node 1 must refuse (node 2 lacks entry 4,
    // which node 2 as leader may have counted committed); and node 1, no
    // voter, never campaigns by itself. Asked for its vote, node 1 runs in
    // {2}, wins node 2's vote, commits an entry of its term, which tells
    // node 2 the removal is in force, and steps down; node 2 then leads.
    let mut c = Cluster::new(2);
    let (removed, voter) = removal_unknown_to_the_voter();
    c.nodes.insert(1, Raft::new(config(1), removed).unwrap());
    c.nodes.insert(2, Raft::new(config(2), voter).unwrap());
    assert_eq!(c.node(1).status().conf_state.voters, vec![2]);
    c.tick_all(100);
    assert_eq!(c.leader(), Some(2), "the remaining voter never won");
    let kept = c.node(2).log_entries().iter().find(|e| e.index == 4);
    assert_eq!(kept.map(|e| e.term), Some(3), "node 1's entry 4 was lost");
    assert_eq!(c.node(2).status().conf_state.voters, vec![2]);
    assert_eq!(c.node(1).role(), Role::Follower);
}

/// Node 1 removed from {1, 2} at index 3, holding node 2's no-op of term
/// 3 at index 4; node 2 lacks it and still decides by {1, 2} (see
/// `a_removed_node_holding_what_the_voters_lack_campaigns_for_it`).
/// Returns their states: (node 1, node 2).
fn removal_unknown_to_the_voter() -> (InitialState, InitialState) {
    let log = |last: Index| {
        let mut state = InitialState::bootstrap(&[1, 2]);
        state.entries.extend(
            [
                Entry {
                    index: 2,
                    term: 2,
                    kind: EntryKind::Noop,
                    data: Payload::default(),
                },
                conf_entry(3, 2, ConfChange::RemoveNode(1)),
                Entry {
                    index: 4,
                    term: 3,
                    kind: EntryKind::Noop,
                    data: Payload::default(),
                },
            ]
            .into_iter()
            .filter(|e| e.index <= last),
        );
        state
    };
    let mut removed = log(4);
    removed.hard_state = HardState {
        term: 3,
        vote: 2,
        commit: 3,
    };
    let mut voter = log(3);
    voter.hard_state = HardState {
        term: 3,
        vote: 2,
        commit: 2,
    };
    (removed, voter)
}

#[test]
fn a_node_does_not_campaign_while_a_committed_membership_change_is_not_in_force() {
    // Node 2 learns that the removal of node 3 committed before it holds
    // the entry durably, so the change is not in force here yet: were it
    // to campaign now, it would count votes by a membership the cluster
    // may have left.
    // Without check-quorum, so that the leader's lease does not hold the
    // campaign back either.
    let cfg = Config {
        check_quorum: false,
        ..config(2)
    };
    let mut n = Raft::new(cfg, InitialState::bootstrap(&[1, 2, 3])).unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![conf_entry(2, 2, ConfChange::RemoveNode(3))],
            commit: 2,
        },
    })
    .unwrap();
    n.campaign();
    assert_eq!(
        n.role(),
        Role::Follower,
        "campaigned by an outdated membership"
    );
    assert_eq!(n.status().term, 2);
    // Once the entry is durable it is handed out and in force: now it may.
    let rd = n.ready();
    n.on_persisted(rd.number);
    let rd = n.ready();
    assert_eq!(rd.committed_entries.last().map(|e| e.index), Some(2));
    assert_eq!(n.status().conf_state.voters, vec![1, 2]);
    n.campaign();
    assert_ne!(n.role(), Role::Follower);
}

#[test]
fn a_leader_serves_no_lease_read_once_it_hands_leadership_over() {
    let mut c = Cluster::with_leases(3);
    let old = c.elected();
    c.tick_all(3);
    c.node(old).read_index(1).unwrap();
    c.settle();
    assert!(
        matches!(c.read_outcome(old, 1), Some(Ok(_))),
        "the lease serves a read at once"
    );

    // TimeoutNow reaches the target; then the old leader hears nothing more.
    let target = if old == 1 { 2 } else { 1 };
    c.node(old).transfer_leader(target).unwrap();
    let rd = c.node(old).ready();
    c.node(old).on_persisted(rd.number);
    let timeout_now = rd
        .messages
        .into_iter()
        .find(|m| m.body == MessageBody::TimeoutNow)
        .expect("the target is caught up: TimeoutNow leaves at once");
    c.isolated.push(old);
    c.node(target).step(timeout_now).unwrap();
    c.settle();
    assert_eq!(c.leader(), Some(target), "the target took over");
    let new_commit = c.node(target).commit_index();
    assert!(new_commit > c.node(old).commit_index());

    // The old leader still believes it leads, inside what was its lease.
    assert_eq!(c.node(old).role(), Role::Leader);
    c.node(old).read_index(2).unwrap();
    c.settle();
    assert_eq!(
        c.read_outcome(old, 2),
        None,
        "a stale read point was served from a lease the transfer voided"
    );
    // It cannot confirm its leadership, and gives up once check-quorum fires.
    c.tick_all(30);
    assert_eq!(c.read_outcome(old, 2), Some(Err(ReadError::LeadershipLost)));
}

#[test]
fn a_transfer_abandoned_late_leaves_the_lease_void_for_the_term() {
    let mut c = Cluster::with_leases(3);
    let leader = c.elected();
    c.tick_all(3);
    let target = if leader == 1 { 2 } else { 1 };
    c.isolated.push(target);
    // Cut off, the target never campaigns: the transfer is abandoned, and
    // the leader leads on (its TimeoutNow could still land any time).
    c.node(leader).transfer_leader(target).unwrap();
    c.node(leader).propose(vec![1]).unwrap_err();
    c.tick_all(25);
    assert_eq!(
        c.node(leader).status().lead_transferee,
        NO_NODE,
        "abandoned"
    );
    assert_eq!(c.leader(), Some(leader));
    c.node(leader).read_index(7).unwrap();
    c.settle();
    assert!(
        matches!(c.read_outcome(leader, 7), Some(Ok(_))),
        "reads are still served, through a heartbeat round"
    );
    assert_eq!(
        c.node(leader).lease_until,
        0,
        "no lease once TimeoutNow may be on its way"
    );
}

#[test]
fn a_follower_inside_a_leader_lease_does_not_campaign_when_asked() {
    let mut c = Cluster::with_leases(3);
    let leader = c.elected();
    let follower = if leader == 1 { 2 } else { 1 };
    let term = c.node(follower).term();
    c.node(follower).campaign();
    assert_eq!(c.node(follower).role(), Role::Follower);
    assert_eq!(c.node(follower).term(), term);
    c.settle();
    assert_eq!(c.leader(), Some(leader));
    // Once the leader is silent for an election timeout, it may.
    c.isolated.push(leader);
    for _ in 0..c.nodes[&follower].config.election_tick {
        c.node(follower).tick();
    }
    c.node(follower).campaign();
    assert_ne!(c.node(follower).role(), Role::Follower);
}

#[test]
fn a_burst_of_reads_shares_heartbeat_rounds() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let commit = c.node(leader).commit_index();
    for context in 1..=100 {
        c.node(leader).read_index(context).unwrap();
    }
    let heartbeats = |rd: &Ready| {
        rd.messages
            .iter()
            .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
            .count()
    };
    let rd = c.node(leader).ready();
    assert_eq!(heartbeats(&rd), 2, "one round to each of two peers");
    c.wire.extend(rd.messages);
    c.node(leader).on_persisted(rd.number);
    // Reads that arrive while that round is out wait for the next one,
    // sent once the first is confirmed.
    for context in 101..=150 {
        c.node(leader).read_index(context).unwrap();
    }
    assert!(!c.node(leader).has_ready(), "no round for them yet");
    c.settle();
    for context in 1..=150 {
        assert_eq!(c.read_outcome(leader, context), Some(Ok(commit)));
    }
}

#[test]
fn reads_in_progress_are_bounded() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let follower = if leader == 1 { 2 } else { 1 };
    // A silent quorum: nothing confirms the leader's reads.
    c.isolated
        .extend([1, 2, 3].into_iter().filter(|&id| id != leader));
    let max = MAX_READS_IN_PROGRESS as u64;
    for context in 1..=max + 3 {
        c.node(leader).read_index(context).unwrap();
    }
    c.settle();
    for context in max + 1..=max + 3 {
        assert_eq!(c.read_outcome(leader, context), Some(Err(ReadError::Busy)));
    }
    assert_eq!(c.read_outcome(leader, max), None, "still waiting");
    // A follower forwards at most as many.
    for context in 1..=max {
        c.node(follower).read_index(context).unwrap();
    }
    assert_eq!(c.node(follower).read_index(max + 1), Err(ReadError::Busy));
}

#[test]
fn a_node_refuses_to_start_from_a_membership_without_voters() {
    let learners_only = InitialState {
        conf_state: ConfState {
            learners: vec![1, 2],
            ..ConfState::default()
        },
        ..InitialState::default()
    };
    assert!(matches!(
        Raft::new(config(1), learners_only),
        Err(ConfigError::InvalidMembership(_))
    ));
}

#[test]
fn a_removed_node_campaigns_for_its_log_only_after_an_election_timeout() {
    let (removed, _) = removal_unknown_to_the_voter();
    let mut n = Raft::new(config(1), removed).unwrap();
    n.step(vote_request(2, 1, 4, (3, 2))).unwrap();
    assert!(vote_refused(&mut n), "node 2 lacks entry 4");
    assert_eq!(n.role(), Role::Follower, "it campaigned at once");
    let timeout = n.config.election_tick;
    for _ in 1..timeout {
        n.tick();
    }
    assert_eq!(n.role(), Role::Follower);
    for _ in 0..timeout {
        n.tick();
    }
    assert_eq!(
        n.role(),
        Role::PreCandidate,
        "it campaigns once the timeout passed"
    );
}

#[test]
fn a_leader_voting_in_neither_half_of_a_joint_membership_does_not_leave_it() {
    // Node 1 votes in neither half of {2, 3} / {2, 3, 4} (auto-leave), yet
    // wins both halves' votes, as a removed node campaigning for entries
    // the voters lack may (see `holds_what_voters_lack`).
    let state = InitialState {
        conf_state: ConfState {
            voters: vec![2, 3],
            voters_outgoing: vec![2, 3, 4],
            auto_leave: true,
            ..ConfState::default()
        },
        ..InitialState::default()
    };
    let mut n = Raft::new(config(1), state).unwrap();
    n.start_election();
    let term = n.term() + 1;
    let msg = |from, body| Message {
        from,
        to: 1,
        term,
        body,
    };
    for from in [2, 3, 4] {
        n.step(msg(from, MessageBody::PreVoteResponse { reject: false }))
            .unwrap();
    }
    for from in [2, 3, 4] {
        n.step(msg(from, MessageBody::VoteResponse { reject: false }))
            .unwrap();
    }
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    assert!(
        rd.entries.iter().all(|e| e.kind != EntryKind::ConfChange),
        "it proposed leaving the joint membership: {:?}",
        rd.entries
    );
}

#[test]
fn a_candidate_that_installs_a_snapshot_stands_down() {
    let mut n = Raft::new(config(2), InitialState::bootstrap(&[1, 2, 3])).unwrap();
    n.campaign();
    assert_eq!(n.role(), Role::PreCandidate);
    let meta = SnapshotMeta {
        index: 10,
        term: 1,
        conf_state: ConfState {
            voters: vec![1, 2, 3, 4, 5],
            ..ConfState::default()
        },
    };
    assert!(n.restore(meta));
    assert_eq!(
        n.role(),
        Role::Follower,
        "a campaign for a log and membership it no longer has"
    );
}

#[test]
fn a_lost_read_round_is_sent_again_with_the_next_heartbeat() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let commit = c.node(leader).commit_index();
    let heartbeat = c.nodes[&leader].config.heartbeat_tick as usize;
    let lose_the_round = |c: &mut Cluster| {
        let rd = c.node(leader).ready();
        c.node(leader).on_persisted(rd.number);
    };
    // The round's heartbeats are lost, and no other read comes.
    c.node(leader).read_index(1).unwrap();
    lose_the_round(&mut c);
    c.tick_all(heartbeat);
    assert_eq!(c.read_outcome(leader, 1), Some(Ok(commit)));
    // A read that arrives behind a lost round waits for the same heartbeat.
    c.node(leader).read_index(2).unwrap();
    lose_the_round(&mut c);
    c.node(leader).read_index(3).unwrap();
    c.settle();
    assert_eq!(c.read_outcome(leader, 3), None);
    c.tick_all(heartbeat);
    assert_eq!(c.read_outcome(leader, 2), Some(Ok(commit)));
    assert_eq!(c.read_outcome(leader, 3), Some(Ok(commit)));
}

/// A cluster whose leader goes quiet after `quiesce_tick` idle ticks.
fn quiescing_cluster(lease_reads: bool) -> (Cluster, NodeId) {
    let mut c = Cluster::with_config(3, |cfg| Config {
        quiesce_tick: 3,
        lease_reads,
        ..cfg
    });
    let leader = c.elected();
    c.tick_all(5);
    for id in 1..=3 {
        assert!(c.node(id).status().quiescent, "node {id} is not quiet");
    }
    (c, leader)
}

#[test]
fn an_idle_group_goes_quiet_and_a_proposal_wakes_it() {
    let (mut c, leader) = quiescing_cluster(false);
    for _ in 0..100 {
        for node in c.nodes.values_mut() {
            node.tick();
            assert!(!node.has_ready(), "a quiet node had something to say");
        }
    }
    assert_eq!(c.leader(), Some(leader), "nobody campaigned");
    let (index, _) = c.node(leader).propose(b"x".to_vec()).unwrap();
    c.settle();
    for id in 1..=3 {
        assert!(!c.node(id).status().quiescent);
        assert_eq!(c.node(id).commit_index(), index);
    }
    // Idle again, it goes quiet again.
    c.tick_all(5);
    assert!(c.node(leader).status().quiescent);
}

#[test]
fn a_quiet_leader_holds_no_lease_and_a_read_wakes_it() {
    let (mut c, leader) = quiescing_cluster(true);
    assert_eq!(c.node(leader).lease_until, 0, "a lease outlived quiescence");
    let commit = c.node(leader).commit_index();
    c.node(leader).read_index(1).unwrap();
    assert!(!c.node(leader).status().quiescent);
    assert_eq!(c.read_outcome(leader, 1), None, "served from a lease");
    c.settle();
    assert_eq!(c.read_outcome(leader, 1), Some(Ok(commit)));
}

#[test]
fn followers_of_a_leader_that_died_quietly_elect_another() {
    let (mut c, leader) = quiescing_cluster(false);
    c.isolated.push(leader);
    let timeout = c.nodes[&leader].config.election_tick as usize;
    // Quiet followers refuse to campaign, or to vote, until they check in.
    c.tick_all(timeout * 5);
    assert_eq!(c.leader(), None);
    c.tick_all(timeout * 2 * (QUIESCENT_CHECK_TIMEOUTS as usize + 3));
    let new = c.leader().expect("a new leader");
    assert_ne!(new, leader);
}

#[test]
fn a_quiet_follower_told_its_leader_is_unreachable_campaigns_after_a_timeout() {
    let (mut c, leader) = quiescing_cluster(false);
    let follower = if leader == 1 { 2 } else { 1 };
    c.node(follower).report_unreachable(leader);
    assert!(!c.node(follower).status().quiescent);
    let timeout = c.nodes[&follower].config.election_tick;
    for _ in 0..2 * timeout {
        c.node(follower).tick();
    }
    assert_eq!(c.node(follower).role(), Role::PreCandidate);
    // Its pre-vote wakes the quiet leader, which the follower then follows.
    c.settle();
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(follower).leader(), leader);
}

/// An owner may leave a quiet node unticked for `quiet_ticks_allowed`
/// ticks and give them at once: one tick fewer changes nothing, and that
/// many bring the follower's check-in; a node that is not quiet allows none.
#[test]
fn a_quiet_follower_allows_exactly_the_ticks_before_its_check_in() {
    let (mut c, leader) = quiescing_cluster(false);
    let follower = if leader == 1 { 2 } else { 1 };
    let check_in = c.node(follower).randomized_election_timeout * QUIESCENT_CHECK_TIMEOUTS;
    let leader_allows = c.node(leader).quiet_ticks_allowed();
    assert!(leader_allows >= c.nodes[&leader].config.election_tick * QUIESCENT_CHECK_TIMEOUTS);
    let allowed = c.node(follower).quiet_ticks_allowed();
    assert!(
        allowed >= 1 && allowed <= check_in,
        "{allowed} of {check_in}"
    );
    for _ in 0..allowed - 1 {
        c.node(follower).tick();
    }
    assert!(c.node(follower).status().quiescent);
    assert!(!c.node(follower).has_ready());
    assert_eq!(c.node(follower).quiet_ticks_allowed(), 1);
    c.node(follower).tick();
    assert!(!c.node(follower).status().quiescent, "no check-in");
    assert_eq!(c.node(follower).quiet_ticks_allowed(), 0);
}

#[test]
fn a_quiet_leader_answers_a_check_in_without_waking_the_group() {
    let (mut c, leader) = quiescing_cluster(false);
    let follower = if leader == 1 { 2 } else { 1 };
    let timeout = c.nodes[&follower].config.election_tick;
    // The follower checks in after ten of its election timeouts...
    let mut check_in = None;
    for _ in 0..2 * timeout * QUIESCENT_CHECK_TIMEOUTS {
        c.node(follower).tick();
        if !c.node(follower).status().quiescent {
            let rd = c.node(follower).ready();
            c.node(follower).on_persisted(rd.number);
            check_in = rd
                .messages
                .into_iter()
                .find(|m| m.body == MessageBody::WakeUp);
            break;
        }
    }
    let check_in = check_in.expect("the follower checked in");
    // ...and the leader, still quiet, answers it alone.
    c.node(leader).step(check_in).unwrap();
    assert!(
        c.node(leader).status().quiescent,
        "the check-in woke the leader"
    );
    let rd = c.node(leader).ready();
    c.node(leader).on_persisted(rd.number);
    assert_eq!(rd.messages.len(), 1);
    assert!(matches!(rd.messages[0].body, MessageBody::Quiesce { .. }));
    c.node(follower).step(rd.messages[0].clone()).unwrap();
    assert!(c.node(follower).status().quiescent);
}

// ---- entry cache and log storage ----

/// Payloads of the normal entries node `id` applied.
fn applied_payloads(c: &Cluster, id: NodeId) -> Vec<Vec<u8>> {
    c.applied[&id]
        .iter()
        .filter(|e| e.kind == EntryKind::Normal)
        .map(|e| e.data.to_vec())
        .collect()
}

/// Elects a leader, cuts a follower off and commits `n` proposals without
/// it. Returns (leader, follower, payloads proposed).
fn follower_left_behind(c: &mut Cluster, n: u32) -> (NodeId, NodeId, Vec<Vec<u8>>) {
    let leader = c.elected();
    let lagging = c.nodes.keys().copied().find(|&id| id != leader).unwrap();
    c.isolated.push(lagging);
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| i.to_le_bytes().to_vec()).collect();
    for (i, data) in payloads.iter().enumerate() {
        c.node(leader).propose(data.clone()).unwrap();
        if i % 64 == 0 {
            c.settle();
        }
    }
    c.settle();
    (leader, lagging, payloads)
}

/// Node `id` applied exactly `payloads` (the diff of 10,000 payloads is
/// no use in a failure message).
fn assert_applied(c: &Cluster, id: NodeId, payloads: &[Vec<u8>]) {
    let applied = applied_payloads(c, id);
    let first_difference = applied.iter().zip(payloads).position(|(a, p)| a != p);
    assert!(
        applied == payloads,
        "node {id} applied {} payloads, first difference at {first_difference:?}; {} expected",
        applied.len(),
        payloads.len()
    );
}

#[test]
fn a_lagging_follower_catches_up_from_evicted_entries() {
    let mut c = Cluster::with_log_storage(3, 0);
    let (leader, lagging, payloads) = follower_left_behind(&mut c, 300);
    let before = c.node(leader).cached_entry_bytes();
    let freed = c.node(leader).evict_cached_entries(Index::MAX);
    assert!(freed > 0 && freed == before, "freed {freed} of {before}");
    assert_eq!(c.node(leader).cached_entry_bytes(), 0);
    assert!(c.node(leader).log_entries().is_empty());
    let last = c.node(leader).status().last_index;
    let last_term = c.node(leader).log_term(last);
    assert_eq!(last_term, Some(c.node(leader).term()));

    c.isolated.clear();
    c.tick_all(5);
    assert_eq!(c.node(lagging).status().last_index, last);
    assert_applied(&c, lagging, &payloads);
    assert!(
        c.storage[&leader].reads() > 0,
        "the leader never read storage"
    );
    assert_eq!(c.node(leader).status().log_read_failures, 0);
    // Committed entries the follower applied are the leader's, index by
    // index, including the no-op and the founding membership.
    assert!(
        c.applied[&lagging] == c.applied[&leader],
        "node {} applied other entries",
        lagging
    );
}

#[test]
fn committed_entries_are_identical_with_an_almost_empty_cache() {
    let mut c = Cluster::with_log_storage(3, 1);
    let (leader, lagging, payloads) = follower_left_behind(&mut c, 200);
    c.isolated.clear();
    c.tick_all(5);
    for id in 1..=3 {
        assert_applied(&c, id, &payloads);
        assert!(
            c.applied[&id] == c.applied[&leader],
            "node {} applied other entries",
            id
        );
        // Everything is durable and applied: nothing needs the cache.
        assert_eq!(c.node(id).cached_entry_bytes(), 0, "node {id}");
    }
    assert!(c.storage[&leader].reads() > 0);
    // A restart from the durable log agrees with what was applied.
    let durable: Vec<Entry> = c.storage[&lagging]
        .log
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect();
    assert_eq!(durable, c.applied[&lagging]);
}

#[test]
fn a_log_storage_error_delays_the_follower_without_losing_entries() {
    let mut c = Cluster::with_log_storage(3, 1);
    let (leader, lagging, payloads) = follower_left_behind(&mut c, 100);
    c.storage[&leader].failing.store(true, Ordering::Relaxed);
    c.isolated.clear();
    c.tick_all(20);
    let behind = c.node(lagging).status();
    assert!(behind.commit < c.node(leader).commit_index());
    assert!(applied_payloads(&c, lagging).is_empty());
    let status = c.node(leader).status();
    assert!(status.log_read_failures > 1, "no retry: {status:?}");
    assert_eq!(
        c.node(leader).last_log_read_error(),
        Some(&LogReadError::Failed("disk unplugged".into()))
    );
    // Storage that answers with other terms is refused as well.
    c.storage[&leader].failing.store(false, Ordering::Relaxed);
    c.storage[&leader]
        .wrong_terms
        .store(true, Ordering::Relaxed);
    c.tick_all(5);
    assert!(matches!(
        c.node(leader).last_log_read_error(),
        Some(LogReadError::Inconsistent(_))
    ));
    assert!(applied_payloads(&c, lagging).is_empty());
    assert_eq!(c.leader(), Some(leader), "read errors cost the leadership");
    // Once storage answers again, the follower catches up.
    c.storage[&leader]
        .wrong_terms
        .store(false, Ordering::Relaxed);
    c.tick_all(5);
    assert_applied(&c, lagging, &payloads);
    assert!(
        c.applied[&lagging] == c.applied[&leader],
        "node {} applied other entries",
        lagging
    );
}

#[test]
fn eviction_keeps_entries_not_durable_or_not_handed_out() {
    let mut c = Cluster::with_log_storage(1, 0);
    c.node(1).campaign();
    c.settle();
    assert_eq!(c.node(1).role(), Role::Leader);
    let node = c.node(1);
    assert!(node.evict_cached_entries(Index::MAX) > 0);
    for i in 0..3u8 {
        node.propose(vec![i]).unwrap();
    }
    let unstable = node.ready();
    assert_eq!(unstable.entries.len(), 3);
    let last = unstable.entries.last().unwrap().index;
    // Handed out for persisting, not durable yet.
    assert_eq!(node.evict_cached_entries(Index::MAX), 0);
    node.on_persisted(unstable.number);
    // Durable and committed, but not handed out for applying yet.
    assert_eq!(node.commit_index(), last);
    assert_eq!(node.evict_cached_entries(Index::MAX), 0);
    let applying = node.ready();
    assert_eq!(applying.committed_entries.last().unwrap().index, last);
    let size: u64 = applying.committed_entries.iter().map(Entry::size).sum();
    assert_eq!(node.evict_cached_entries(last - 1), size - 25);
    assert_eq!(node.evict_cached_entries(Index::MAX), 25);
    assert!(node.log_entries().is_empty());
    // A new proposal is cached until it is durable and handed out.
    node.propose(vec![9]).unwrap();
    assert_eq!(node.evict_cached_entries(Index::MAX), 0);
    assert_eq!(node.cached_entry_bytes(), 25);

    // Without a log storage nothing leaves the cache.
    let mut plain = Cluster::new(1);
    plain.node(1).campaign();
    plain.settle();
    plain.node(1).propose(vec![1]).unwrap();
    plain.settle();
    let held = plain.node(1).cached_entry_bytes();
    assert!(held > 0);
    assert_eq!(plain.node(1).evict_cached_entries(Index::MAX), 0);
    assert_eq!(plain.node(1).cached_entry_bytes(), held);
}

#[test]
fn the_cache_stays_under_its_cap_while_a_follower_catches_up_10000_entries() {
    const CAP: u64 = 4 << 10;
    let mut c = Cluster::with_log_storage(3, CAP);
    for node in c.nodes.values_mut() {
        // Many rounds of catch-up, each read from storage, at most two
        // appends in flight (the test host delivers all of them before the
        // follower's next batch).
        node.config.max_msg_bytes = 2 << 10;
        node.config.max_inflight_msgs = 2;
    }
    let (leader, lagging, payloads) = follower_left_behind(&mut c, 10_000);
    for id in 1..=3 {
        assert!(c.node(id).cached_entry_bytes() <= CAP, "node {id}");
    }
    c.isolated.clear();
    // The host reports the peer it could not reach: the appends the
    // leader sent meanwhile are lost.
    c.node(leader).report_unreachable(lagging);
    c.peak_cached.clear();
    c.tick_all(3);
    assert_applied(&c, lagging, &payloads);
    // Every append the follower got was read from the leader's storage.
    assert!(c.storage[&leader].reads() >= 100);
    for id in 1..=3 {
        assert!(c.node(id).cached_entry_bytes() <= CAP, "node {id}");
    }
    assert!(c.peak_cached[&leader] <= CAP);
    // Between batches the follower also holds the appends it just made
    // durable, which it hands out for applying with its next batch.
    let entry = 28;
    let peak = c.peak_cached[&lagging];
    assert!(peak <= CAP + 2 * ((2 << 10) + entry), "peak {peak}");
}

/// What a restarted node knows of its log and state, to compare two ways
/// of restarting it.
/// Every entry node `id` has in its storage, in order.
fn durable_entries(c: &Cluster, id: NodeId) -> Vec<Entry> {
    c.storage[&id]
        .log
        .lock()
        .unwrap()
        .values()
        .cloned()
        .collect()
}

fn restart_view(node: &Raft) -> (HardState, Status, Vec<Option<Term>>) {
    let mut status = node.status();
    status.cached_entry_bytes = 0;
    let terms = (0..=status.last_index + 1)
        .map(|i| node.log_term(i))
        .collect();
    (node.hard_state(), status, terms)
}

#[test]
fn a_node_restarts_from_the_tail_of_its_log_and_its_storage() {
    let mut c = Cluster::with_log_storage(3, 0);
    let leader = c.elected();
    c.add_blank_node(4);
    c.change(leader, ConfChange::AddLearner(4)).unwrap();
    for i in 0..50u8 {
        c.node(leader).propose(vec![i]).unwrap();
    }
    c.settle();
    c.change(leader, ConfChange::AddVoter(4)).unwrap();
    c.node(leader).propose(vec![50]).unwrap();
    c.settle();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let durable = durable_entries(&c, follower);
    let last = durable.last().unwrap().index;
    let state = |entries: Vec<Entry>, applied: Index| InitialState {
        hard_state: c.nodes[&follower].hard_state(),
        entries,
        applied,
        ..InitialState::default()
    };
    for (tail, applied) in [(3, 0), (3, last - 10), (1, last), (0, last)] {
        let whole = Raft::new(config(follower), state(durable.clone(), applied)).unwrap();
        let entries = durable[durable.len() - tail..].to_vec();
        let storage = c.storage[&follower].clone();
        let reads = storage.reads();
        let node = Raft::with_log_storage(
            config(follower),
            state(entries, applied),
            Box::new(storage.clone()),
        );
        let node = match (tail, node) {
            // Without its last entry the log seems to end at the snapshot.
            (0, Ok(node)) => {
                assert_eq!(node.status().last_index, 0);
                continue;
            }
            (_, node) => node.unwrap(),
        };
        assert!(storage.reads() > reads);
        assert_eq!(restart_view(&node), restart_view(&whole), "tail {tail}");
        assert_eq!(node.status().conf_state.voters, vec![1, 2, 3, 4]);
        // Only what is not known committed is cached: the backlog still to
        // apply is read back as it is handed out.
        let commit = c.nodes[&follower].hard_state().commit;
        let uncommitted = durable.iter().filter(|e| e.index > commit);
        let size: u64 = uncommitted.map(Entry::size).sum();
        assert_eq!(
            node.cached_entry_bytes(),
            size,
            "tail {tail}, applied {applied}"
        );
    }

    // A failed read fails the start; a tail that does not follow what
    // storage holds, too.
    let storage = c.storage[&follower].clone();
    storage.failing.store(true, Ordering::Relaxed);
    let tail = durable[durable.len() - 1..].to_vec();
    let failed = Raft::with_log_storage(
        config(follower),
        state(tail.clone(), 0),
        Box::new(storage.clone()),
    );
    assert!(matches!(failed, Err(ConfigError::LogRead(_))));
    storage.failing.store(false, Ordering::Relaxed);
    let mut wrong = tail;
    wrong[0].term = 1;
    let older = Raft::with_log_storage(config(follower), state(wrong, 0), Box::new(storage));
    assert!(matches!(older, Err(ConfigError::InvalidLog(_))));
}

#[test]
fn a_restart_scans_applied_entries_by_their_headers_and_hands_out_the_rest_whole() {
    let mut c = Cluster::with_log_storage(3, 0);
    let leader = c.elected();
    c.add_blank_node(4);
    c.change(leader, ConfChange::AddLearner(4)).unwrap();
    for i in 0..40u8 {
        c.node(leader).propose(vec![i; 3]).unwrap();
    }
    c.settle();
    c.change(leader, ConfChange::AddVoter(4)).unwrap();
    c.settle();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let durable = durable_entries(&c, follower);
    let last = durable.last().unwrap().index;
    let applied = last - 10;
    let state = |entries: Vec<Entry>| InitialState {
        hard_state: c.nodes[&follower].hard_state(),
        entries,
        applied,
        ..InitialState::default()
    };
    let whole = Raft::new(config(follower), state(durable.clone())).unwrap();
    let storage = c.storage[&follower].clone();
    storage.strip_headers.store(true, Ordering::Relaxed);
    let mut node = Raft::with_log_storage(
        config(follower),
        state(durable[durable.len() - 1..].to_vec()),
        Box::new(storage.clone()),
    )
    .unwrap();
    assert!(storage.header_reads.load(Ordering::Relaxed) > 0);
    assert_eq!(restart_view(&node), restart_view(&whole));
    // The membership changes among the applied entries were replayed.
    assert_eq!(node.status().conf_state.voters, vec![1, 2, 3, 4]);
    // Only entries not known committed are cached, whole; those handed
    // out are the durable ones, data and all, read back from storage.
    let commit = c.nodes[&follower].hard_state().commit;
    let uncommitted: Vec<Entry> = durable
        .iter()
        .filter(|e| e.index > commit)
        .cloned()
        .collect();
    assert_eq!(
        node.cached_entry_bytes(),
        uncommitted.iter().map(Entry::size).sum::<u64>()
    );
    storage.strip_headers.store(false, Ordering::Relaxed);
    let handed_out = node.ready().committed_entries;
    assert_eq!(handed_out.len() as u64, commit - applied);
    for entry in &handed_out {
        assert!(entry.index > applied);
        assert_eq!(Some(entry), durable.iter().find(|e| e.index == entry.index));
    }
}

/// A restart leaves its committed backlog in storage, a membership change
/// among it too (in force from the restart on, like every committed
/// change): nothing is cached, and the backlog is handed out whole, read
/// back from storage.
#[test]
fn a_restart_leaves_its_committed_backlog_in_storage() {
    let mut c = Cluster::with_log_storage(3, 0);
    let leader = c.elected();
    c.add_blank_node(4);
    c.change(leader, ConfChange::AddLearner(4)).unwrap();
    c.settle();
    c.change(leader, ConfChange::AddVoter(4)).unwrap();
    c.node(leader).propose(vec![7; 3]).unwrap();
    c.settle();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let durable = durable_entries(&c, follower);
    let add_voter = durable
        .iter()
        .rev()
        .find(|e| e.kind == EntryKind::ConfChange)
        .unwrap()
        .index;
    let hard_state = c.nodes[&follower].hard_state();
    assert!(hard_state.commit > add_voter, "the change is committed");
    let state = InitialState {
        hard_state,
        entries: durable[durable.len() - 1..].to_vec(),
        // The host applied everything before the change.
        applied: add_voter - 1,
        ..InitialState::default()
    };
    let storage = c.storage[&follower].clone();
    let mut node =
        Raft::with_log_storage(config(follower), state, Box::new(storage.clone())).unwrap();
    assert_eq!(node.cached_entry_bytes(), 0, "the whole log is committed");
    assert_eq!(node.status().conf_state.voters, vec![1, 2, 3, 4]);
    let reads = storage.reads();
    let handed_out = node.ready().committed_entries;
    assert!(storage.reads() > reads, "the backlog is read back");
    let backlog: Vec<Entry> = durable
        .iter()
        .filter(|e| e.index >= add_voter && e.index <= hard_state.commit)
        .cloned()
        .collect();
    assert_eq!(handed_out, backlog);
    assert_eq!(node.cached_entry_bytes(), 0);
}

#[test]
fn a_host_that_applied_beyond_the_commit_index_restarts_from_storage() {
    // The node layer raises the commit index to what its host applied; a
    // bare host may not, and gets those entries again once they commit:
    // they stay cached until then (a membership change among them must be
    // at hand to take effect).
    let mut entries = InitialState::bootstrap(&[1]).entries;
    entries.extend((2..=10).map(|index| Entry {
        index,
        term: 1,
        kind: EntryKind::Normal,
        data: vec![index as u8].into(),
    }));
    let storage = TestStorage::default();
    storage.write(&entries);
    let initial = InitialState {
        hard_state: HardState {
            term: 1,
            vote: NO_NODE,
            commit: 1,
        },
        entries: entries[9..].to_vec(),
        applied: 10,
        ..InitialState::default()
    };
    let node = Raft::with_log_storage(config(1), initial, Box::new(storage.clone())).unwrap();
    let unapplied: u64 = entries[1..].iter().map(Entry::size).sum();
    assert_eq!(node.cached_entry_bytes(), unapplied);
    let mut c = Cluster::new(1);
    c.nodes.insert(1, node);
    c.storage.insert(1, storage);
    c.node(1).campaign();
    c.settle();
    assert_eq!(
        (c.node(1).role(), c.node(1).commit_index()),
        (Role::Leader, 11)
    );
    let indexes: Vec<Index> = c.applied[&1].iter().map(|e| e.index).collect();
    assert_eq!(indexes, (2..=11).collect::<Vec<_>>());
    assert_eq!(c.applied[&1][..9], entries[1..]);
}

// ---- skipped commit broadcasts ----

/// A cluster whose leaders send no append just to carry a commit index.
fn skipping_commit_broadcasts(n: u64, quiesce_tick: u32) -> Cluster {
    Cluster::with_config(n, |cfg| Config {
        skip_commit_broadcast: true,
        quiesce_tick,
        ..cfg
    })
}

/// Appends without entries among a ready batch's messages, by recipient.
fn empty_appends(rd: &Ready) -> Vec<NodeId> {
    rd.messages
        .iter()
        .chain(&rd.persisted_messages)
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if entries.is_empty()))
        .map(|m| m.to)
        .collect()
}

/// Proposal `data` on `leader`, hopped until the followers' answers have
/// committed it; returns its index and the leader's next batch, handled
/// as `hop` does (its messages delivered).
fn commit_by_hops(c: &mut Cluster, leader: NodeId, data: &[u8]) -> (Index, Ready) {
    let (index, _) = c.node(leader).propose(data.to_vec()).unwrap();
    hop(c, leader);
    let followers: Vec<NodeId> = c.nodes.keys().copied().filter(|&id| id != leader).collect();
    for &id in &followers {
        hop(c, id);
    }
    assert_eq!(c.node(leader).commit_index(), index);
    let rd = c.node(leader).ready();
    c.node(leader).on_persisted(rd.number);
    for m in rd.messages.iter().chain(&rd.persisted_messages) {
        let to = m.to;
        let _ = c.node(to).step(m.clone());
    }
    (index, rd)
}

#[test]
fn a_commit_is_broadcast_in_empty_appends_unless_skipped() {
    let mut c = Cluster::new(3);
    let leader = c.elected();
    let (_, rd) = commit_by_hops(&mut c, leader, b"x");
    assert_eq!(empty_appends(&rd).len(), 2, "the default broadcasts it");

    let mut c = skipping_commit_broadcasts(3, 0);
    let leader = c.elected();
    let (index, rd) = commit_by_hops(&mut c, leader, b"x");
    assert_eq!(empty_appends(&rd), Vec::<NodeId>::new());
    c.settle();
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &followers {
        assert_eq!(c.node(id).commit_index(), index - 1, "node {id}");
    }
    // The next heartbeat carries it.
    c.node(leader).tick();
    c.settle();
    for &id in &followers {
        assert_eq!(c.node(id).commit_index(), index, "node {id}");
    }
    // So does an append carrying entries.
    let (next, _) = commit_by_hops(&mut c, leader, b"y");
    c.node(leader).propose(b"z".to_vec()).unwrap();
    c.settle();
    for &id in &followers {
        assert_eq!(c.node(id).commit_index(), next, "node {id}");
    }
}

#[test]
fn a_follower_read_does_not_wait_for_a_skipped_commit() {
    let mut c = skipping_commit_broadcasts(3, 0);
    let leader = c.elected();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let (index, _) = commit_by_hops(&mut c, leader, b"x");
    c.settle();
    assert_eq!(c.node(follower).commit_index(), index - 1);
    // The leader's heartbeat round for the read carries the commit.
    c.node(follower).read_index(7).unwrap();
    c.settle();
    assert_eq!(c.read_outcome(follower, 7), Some(Ok(index)));
    assert_eq!(c.node(follower).commit_index(), index);
    assert_eq!(c.applied[&follower].last().map(|e| e.index), Some(index));
}

#[test]
fn a_membership_change_commit_is_broadcast_even_when_skipped() {
    let mut c = skipping_commit_broadcasts(3, 0);
    let leader = c.elected();
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    c.add_blank_node(4);
    c.node(leader)
        .propose_conf_change(&ConfChange::AddLearner(4))
        .unwrap();
    hop(&mut c, leader);
    for &id in &followers {
        hop(&mut c, id);
    }
    let rd = c.node(leader).ready();
    // Node 4, a learner in force by now, is probed besides.
    let told: Vec<NodeId> = empty_appends(&rd)
        .into_iter()
        .filter(|&to| to != 4)
        .collect();
    assert_eq!(told, followers);

    // A leader that removes itself steps down once the removal is in
    // force and heartbeats no more: the broadcast is the followers' only
    // news of it, with no tick.
    let mut c = skipping_commit_broadcasts(3, 0);
    let old = c.elected();
    let (removal, _) = c
        .node(old)
        .propose_conf_change(&ConfChange::RemoveNode(old))
        .unwrap();
    c.settle();
    assert_ne!(c.node(old).role(), Role::Leader);
    for id in (1..=3).filter(|&id| id != old) {
        assert_eq!(c.node(id).commit_index(), removal, "node {id}");
        assert!(!c.node(id).status().conf_state.voters.contains(&old));
    }
}

#[test]
fn a_follower_that_holds_a_membership_change_only_once_in_force_is_told_at_once() {
    let mut c = skipping_commit_broadcasts(3, 0);
    let leader = c.elected();
    let (f1, f2) = {
        let others: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
        (others[0], others[1])
    };
    c.add_blank_node(4);
    // Probed, `f2` gets the change in a probe and nothing more until it
    // answers: the change commits with `f1` and goes into force meanwhile.
    c.node(leader).report_unreachable(f2);
    let (change, _) = c
        .node(leader)
        .propose_conf_change(&ConfChange::AddLearner(4))
        .unwrap();
    hop(&mut c, leader);
    hop(&mut c, f1);
    hop(&mut c, leader);
    assert_eq!(c.node(leader).status().conf_state.learners, vec![4]);
    assert!(c.node(f2).commit_index() < change);
    hop(&mut c, f2);
    let rd = c.node(leader).ready();
    assert!(empty_appends(&rd).contains(&f2), "{:?}", rd.messages);
}

#[test]
fn a_removed_node_that_led_for_the_voters_tells_them_its_commit_even_when_skipping() {
    // As in `a_removed_node_holding_what_the_voters_lack_campaigns_for_it`:
    // node 1 leads only until its no-op (5) commits, then steps down and
    // sends nothing more, so node 2 hears of that commit by a broadcast or
    // not at all. Node 1 has applied all it holds here, so no entry it
    // took over counts as a pending membership change.
    let mut c = Cluster::new(2);
    let (mut removed, voter) = removal_unknown_to_the_voter();
    removed.hard_state.commit = 4;
    let skipping = |id| Config {
        skip_commit_broadcast: true,
        ..config(id)
    };
    c.nodes.insert(1, Raft::new(skipping(1), removed).unwrap());
    c.nodes.insert(2, Raft::new(skipping(2), voter).unwrap());
    for _ in 0..100 {
        c.tick_all(1);
        if c.node(1).log_term(5).is_some() {
            break;
        }
    }
    assert!(c.node(1).log_term(5) > Some(3), "node 1 never led");
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(2).commit_index(), 5);
}

#[test]
fn a_leader_skipping_commit_broadcasts_goes_quiet_with_every_follower_told() {
    // Heartbeats are rarer than the leader's quiescence: its `Quiesce`
    // carries the last commit.
    let mut c = Cluster::with_config(3, |cfg| Config {
        skip_commit_broadcast: true,
        quiesce_tick: 2,
        heartbeat_tick: 5,
        ..cfg
    });
    let leader = c.elected();
    c.tick_all(10);
    assert!(c.node(leader).status().quiescent);
    let (index, _) = commit_by_hops(&mut c, leader, b"x");
    c.settle();
    let mut heartbeats = 0;
    while !c.node(leader).status().quiescent {
        c.node(leader).tick();
        let rd = c.node(leader).ready();
        c.node(leader).on_persisted(rd.number);
        for m in rd.messages {
            heartbeats += usize::from(matches!(m.body, MessageBody::Heartbeat { .. }));
            let to = m.to;
            let _ = c.node(to).step(m);
        }
        c.settle();
    }
    assert_eq!(heartbeats, 0, "a heartbeat told the followers first");
    for id in 1..=3 {
        assert_eq!(c.node(id).commit_index(), index, "node {id}");
        assert!(c.node(id).status().quiescent, "node {id}");
    }
}

#[test]
fn a_transfer_completes_when_commits_are_not_broadcast() {
    let mut c = skipping_commit_broadcasts(3, 0);
    let leader = c.elected();
    let target = (1..=3).find(|&id| id != leader).unwrap();
    let (index, _) = commit_by_hops(&mut c, leader, b"x");
    c.node(leader).transfer_leader(target).unwrap();
    c.settle();
    assert_eq!(c.leader(), Some(target));
    // The new leader's first commit reaches everyone at once: it broadcasts
    // until the entries it inherited are applied.
    for id in 1..=3 {
        assert!(c.node(id).commit_index() > index, "node {id}");
    }
}
