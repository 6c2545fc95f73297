//! A group driven directly, with no thread, lock or channel: three groups
//! wired together by hand, their writes made durable when the test says.

use super::*;
use crate::core::{Config, EntryKind, InitialState, MessageBody, Role};
use crate::fs_util::Scratch;

/// One group and what its owner keeps for it: the host's batch and the
/// writes taken but not yet durable.
struct Member {
    group: Group,
    batch: Pending,
    unsynced: Vec<PersistJob>,
    _dir: Scratch,
}

impl Member {
    fn new(id: NodeId, voters: &[NodeId]) -> Member {
        let dir = Scratch::new("group");
        let (store, _) = SnapshotStore::open(&dir.0, None).unwrap();
        let config = Config {
            id,
            seed: id,
            ..Config::default()
        };
        let raft = Raft::new(config.clone(), InitialState::bootstrap(voters)).unwrap();
        let group = Group::new(
            raft,
            store,
            &SnapshotOptions::default(),
            config.election_tick,
            0,
            LogLevel::Off,
        );
        let state = NodeState {
            role: Role::Follower,
            leader: 0,
            term: 0,
        };
        Member {
            group,
            batch: Pending::new(state),
            unsynced: Vec::new(),
            _dir: dir,
        }
    }

    /// What an owner does after inputs: take the work, keep the writes.
    fn round(&mut self) {
        self.group.process();
        self.unsynced.extend(self.group.take_writes());
        self.group.flush_output(&mut self.batch);
    }

    /// Every write taken so far is durable.
    fn sync(&mut self) {
        if let Some(last) = self.unsynced.last() {
            let seq = last.seq;
            self.unsynced.clear();
            self.group.durable(seq);
        }
        self.round();
    }
}

struct Trio {
    members: Vec<Member>,
    /// Everything each member handed out, batch by batch.
    seen: Vec<Vec<ReadyBatch>>,
}

impl Trio {
    fn new() -> Trio {
        let voters = [1, 2, 3];
        Trio {
            members: voters.iter().map(|&id| Member::new(id, &voters)).collect(),
            seen: vec![Vec::new(); 3],
        }
    }

    fn member(&mut self, id: NodeId) -> &mut Member {
        &mut self.members[id as usize - 1]
    }

    /// Takes every member's batch and delivers its messages; true when
    /// any message moved.
    fn deliver(&mut self) -> bool {
        let mut moved = false;
        for from in 0..self.members.len() {
            let batch = self.members[from].batch.take();
            for out in &batch.messages {
                let msg = wire::decode(&out.bytes).unwrap();
                let target = &mut self.members[out.to as usize - 1];
                target.group.step(msg);
                target.round();
                moved = true;
            }
            self.seen[from].push(batch);
        }
        moved
    }

    /// Syncs and delivers until nothing moves.
    fn settle(&mut self) {
        for _ in 0..100 {
            self.members.iter_mut().for_each(Member::sync);
            if !self.deliver() {
                return;
            }
        }
        panic!("the groups never settled");
    }

    fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            let member = self.member(id);
            member.group.tick();
            member.round();
            self.settle();
            if self.member(id).batch.take().state.role == Role::Leader {
                return;
            }
        }
        panic!("node {id} was not elected");
    }
}

fn committed(batches: &[ReadyBatch]) -> Vec<(Index, Vec<u8>, u64)> {
    batches
        .iter()
        .flat_map(|b| &b.committed)
        .filter(|c| c.entry.kind == EntryKind::Normal && !c.entry.data.is_empty())
        .map(|c| (c.entry.index, c.entry.data.to_vec(), c.proposal_id))
        .collect()
}

#[test]
fn groups_driven_directly_elect_and_commit() {
    let mut trio = Trio::new();
    trio.elect(1);
    let leader = trio.member(1);
    leader.group.propose(7, Payload::from(&b"x=1"[..]));
    leader.round();
    trio.settle();

    let outcomes: Vec<_> = trio.seen[0].iter().flat_map(|b| &b.outcomes).collect();
    let index = match outcomes.as_slice() {
        [ProposalOutcome {
            proposal_id: 7,
            result: ProposalResult::Committed { index },
        }] => *index,
        other => panic!("expected proposal 7 committed, got {other:?}"),
    };
    assert_eq!(committed(&trio.seen[0]), [(index, b"x=1".to_vec(), 7)]);
    for follower in 1..3 {
        // Followers apply the same entry, with no proposal id of theirs.
        assert_eq!(
            committed(&trio.seen[follower]),
            [(index, b"x=1".to_vec(), 0)]
        );
    }
}

#[test]
fn a_follower_answers_an_append_only_once_it_is_durable() {
    let mut trio = Trio::new();
    trio.elect(1);
    let leader = trio.member(1);
    leader.group.propose(1, Payload::from(&b"y"[..]));
    leader.round();
    let appends = leader.batch.take();
    let to_two: Vec<_> = appends.messages.iter().filter(|m| m.to == 2).collect();
    assert!(
        !to_two.is_empty(),
        "the leader replicates before its own sync"
    );

    let follower = trio.member(2);
    for out in to_two {
        follower.group.step(wire::decode(&out.bytes).unwrap());
    }
    follower.round();
    assert!(!follower.unsynced.is_empty(), "the entry must be written");
    let answers = |batch: ReadyBatch| {
        batch
            .messages
            .iter()
            .map(|m| wire::decode(&m.bytes).unwrap())
            .filter(|m| matches!(m.body, MessageBody::AppendResponse { .. }))
            .count()
    };
    assert_eq!(
        answers(follower.batch.take()),
        0,
        "answered before the entry was durable"
    );
    follower.sync();
    assert_eq!(answers(follower.batch.take()), 1);
}

#[test]
fn an_absorbed_restore_supersedes_the_entries_it_covers() {
    let state = NodeState {
        role: Role::Follower,
        leader: 0,
        term: 1,
    };
    let entry = |index| CommittedEntry {
        entry: Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: Payload::from(&b"e"[..]),
        },
        proposal_id: 0,
    };
    let mut host = Pending::new(state);
    host.push_committed(entry(4));
    host.push_committed(entry(6));
    host.set_snapshot_wanted(5);

    let dir = Scratch::new("group");
    let (store, _) = SnapshotStore::open(&dir.0, None).unwrap();
    let temp = store.create(5, 1).unwrap();
    let file = temp.finish().unwrap();
    let mut group_out = Pending::new(state);
    group_out.set_restore(SnapshotRestore {
        meta: SnapshotMeta {
            index: 5,
            term: 1,
            ..SnapshotMeta::default()
        },
        path: file.path.clone(),
        pin: store.pin(&file),
    });
    group_out.push_committed(entry(7));
    host.absorb(&mut group_out);

    assert!(group_out.is_empty());
    let batch = host.take();
    assert_eq!(batch.restore.map(|r| r.meta.index), Some(5));
    let indexes: Vec<_> = batch.committed.iter().map(|c| c.entry.index).collect();
    assert_eq!(indexes, [6, 7], "entry 4 is covered by the restore");
    assert_eq!(batch.snapshot_wanted, None, "the restore covers index 5");
}
