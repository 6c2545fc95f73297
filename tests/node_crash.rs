//! Power loss in the middle of a node's write: a follower that learns of
//! a new term and catches up on more entries than one WAL append carries
//! writes them in parts, each synced before the next. Crashed after each
//! sync in turn (the fault-injecting file layer of `wal_support`), it must
//! restart from whatever its disk holds, and know committed what the
//! leader told it was committed, as far as its log reaches: in particular
//! the membership changes among the entries.

mod wal_support;

use embraft::codec::{decode_message, encode_message};
use embraft::core::{ConfChange, Entry, EntryKind, Message, MessageBody, NodeId};
use embraft::node::{Node, NodeConfig, NodeError, Threading};
use embraft::wal::{SyncMode, WriteMethod};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal_support::{CrashFiles, TempDir};

const ME: NodeId = 2;
const LEADER: NodeId = 1;
/// Entries the leader sends, after the founding entry at index 1.
const LAST: u64 = 41;
/// About four parts: each append carries half a segment of entries.
const SEGMENT_SIZE: u64 = 8 << 10;

/// The leader's log from index 2 on, all of term 2: two membership
/// changes that add nodes 4 and 5, then entries of 200 bytes.
fn leader_entries() -> Vec<Entry> {
    (2..=LAST)
        .map(|index| {
            let (kind, data) = match index {
                2 => (EntryKind::ConfChange, ConfChange::AddVoter(4).encode()),
                3 => (EntryKind::ConfChange, ConfChange::AddVoter(5).encode()),
                _ => (EntryKind::Normal, vec![index as u8; 200]),
            };
            Entry {
                index,
                term: 2,
                kind,
                data: data.into(),
            }
        })
        .collect()
}

/// The leader of term 2's append of its log after `prev`, all of it
/// committed.
fn append_after(prev: u64) -> Vec<u8> {
    let msg = Message {
        from: LEADER,
        to: ME,
        term: 2,
        body: MessageBody::Append {
            prev_index: prev,
            prev_term: if prev == 1 { 1 } else { 2 },
            entries: leader_entries().split_off((prev - 1) as usize),
            commit: LAST,
        },
    };
    let mut bytes = Vec::new();
    encode_message(&msg, &mut bytes);
    bytes
}

fn config(dir: &std::path::Path, threading: Threading) -> NodeConfig {
    let mut config = NodeConfig::new(ME, dir);
    config.threading = threading;
    config.peers = vec![1, 2, 3];
    config.raft.seed = 7;
    config.wal.segment_size = SEGMENT_SIZE;
    // A segment must hold the largest entry; these are of 200 bytes.
    config.raft.max_entry_bytes = 1 << 10;
    config.wal.sync = SyncMode::Always;
    // The method whose writes the crashing file layer can hold back.
    config.wal.write_method = WriteMethod::Pwrite;
    config
}

/// Polls until the node answers that it holds the whole append (its
/// write is durable) or fails; true for the answer.
fn await_answer(node: &Node) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match node.poll_ready(Duration::from_millis(20)) {
            Ok(Some(batch)) => {
                for out in batch.messages {
                    let msg = decode_message(&out.bytes).expect("the node encodes");
                    if let MessageBody::AppendResponse { reject, index, .. } = msg.body {
                        assert!(!reject, "the append follows the founding entry");
                        if index == LAST {
                            return true;
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(NodeError::Failed(_)) => return false,
            Err(err) => panic!("poll: {err}"),
        }
    }
    panic!("the node neither answered nor failed");
}

/// Crashes the follower after each sync of its catch-up write in turn;
/// returns how many crash points there were.
fn crash_at_every_sync(threading: Threading) -> u64 {
    for syncs in 0.. {
        let dir = TempDir::new("node-crash");
        let files = Arc::new(CrashFiles::default());
        let mut crashing = config(dir.path(), threading);
        crashing.wal_files = files.clone();
        let node = Node::new(crashing).expect("a new node starts");
        // Arm the layer once the founding entry is durable, so that the
        // syncs counted are the append's.
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.status().persisted < 1 {
            assert!(
                Instant::now() < deadline,
                "the founding entry never became durable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        files.crash_after_syncs(syncs);
        // The first this node hears of term 2.
        // An inline node writes on the caller's thread: the step fails.
        let answered = match node.step(&append_after(1)) {
            Ok(()) => await_answer(&node),
            Err(NodeError::Failed(_)) => false,
            Err(err) => panic!("step: {err}"),
        };
        drop(node);
        let node = Node::new(config(dir.path(), threading)).unwrap_or_else(|err| {
            panic!("crashed after {syncs} syncs of the append, the node does not restart: {err}")
        });
        let status = node.status();
        if answered {
            // The answer promised the whole append durable. (The crash may
            // still have come after it, at a later write or at shutdown.)
            assert!(
                status.last_index >= LAST,
                "the node answered for index {LAST} but recovered only through {}",
                status.last_index
            );
            return syncs;
        }
        let held = status.last_index;
        assert!(
            status.commit >= held.min(LAST),
            "crashed after {syncs} syncs: the log holds entries through {held}, which the \
             leader said were committed, but the node recovered commit index {}",
            status.commit
        );
        if held >= 3 {
            assert_eq!(
                status.conf_state.voters,
                vec![1, 2, 3, 4, 5],
                "crashed after {syncs} syncs: the committed changes are not in force"
            );
        }
        // The node goes on: the leader, told where it stands, completes
        // its log.
        node.step(&append_after(status.commit)).expect("step");
        assert!(
            await_answer(&node),
            "crashed after {syncs} syncs: no answer"
        );
    }
    unreachable!()
}

#[test]
fn a_crash_between_the_parts_of_a_write_keeps_the_hard_state_with_the_entries() {
    let points = crash_at_every_sync(Threading::Node);
    // Each part of the append takes a sync: without several, nothing was
    // tested.
    assert!(points >= 3, "only {points} crash points");
}

#[test]
fn an_inline_node_keeps_the_hard_state_with_the_entries_too() {
    let points = crash_at_every_sync(Threading::Inline);
    assert!(points >= 3, "only {points} crash points");
}
