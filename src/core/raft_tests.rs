//! Unit tests of the state machine's rules, driven by a minimal in-memory
//! cluster (the seeded fault-injecting simulator lives in tests/simulation).

use super::*;

struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    /// Messages in flight, delivered in order.
    wire: VecDeque<Message>,
    /// Applied entries per node.
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Nodes whose traffic is dropped.
    isolated: Vec<NodeId>,
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
        }
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
                self.wire.extend(rd.messages);
                node.on_persisted(rd.number);
                self.wire.extend(rd.persisted_messages);
                if let Some(last) = rd.committed_entries.last() {
                    node.on_applied(last.index);
                }
                self.applied
                    .get_mut(&id)
                    .unwrap()
                    .extend(rd.committed_entries);
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
        assert_eq!(n.commit_index(), 1);
    }
    assert!(c
        .applied
        .values()
        .all(|a| a.len() == 1 && a[0].kind == EntryKind::Noop));
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
            .map(|e| e.data.clone())
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
    n.campaign();
    let rd = n.ready();
    assert_eq!(n.role(), Role::Candidate, "own vote not durable yet");
    n.on_persisted(rd.number);
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed_entries.is_empty());
    n.on_persisted(rd.number);
    assert_eq!(n.commit_index(), 1);
    assert_eq!(n.ready().committed_entries.len(), 1);
}

#[test]
fn vote_responses_wait_for_persistence() {
    let mut n = Raft::new(config(2), InitialState::bootstrap(&[1, 2, 3])).unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Vote {
            last_index: 0,
            last_term: 0,
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
        n.step(msg(9, 2, 1, hb.clone())),
        Err(StepError::UnknownSender(9))
    );
    assert_eq!(
        n.step(msg(1, 3, 1, hb.clone())),
        Err(StepError::WrongRecipient(3))
    );
    assert!(n.step(msg(1, 2, 0, hb)).is_err());
    let gap = MessageBody::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![Entry {
            index: 5,
            term: 1,
            kind: EntryKind::Normal,
            data: vec![],
        }],
        commit: 0,
    };
    assert!(n.step(msg(1, 2, 1, gap)).is_err());
    let beyond = |prev_index| MessageBody::Append {
        prev_index,
        prev_term: 1,
        entries: vec![],
        commit: u64::MAX,
    };
    for prev_index in [u64::MAX, u64::MAX - 5] {
        n.step(msg(1, 2, 1, beyond(prev_index))).unwrap();
        let rd = n.ready();
        assert!(matches!(
            rd.persisted_messages[0].body,
            MessageBody::AppendResponse { reject: true, .. }
        ));
    }
    assert_eq!(n.commit_index(), 0);
}
