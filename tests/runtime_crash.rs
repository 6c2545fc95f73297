//! Power loss while a runtime writes many groups at once: every group of
//! the runtime is a follower catching up on an append from its leader,
//! and the runtime loses power after each sync of the shared WAL in turn
//! (the crashing file layer of `wal_support`). Whatever the crash point,
//! the runtime reopens from the one WAL, every group starts, every group
//! that had answered for its append (its write durable) still holds it,
//! and the commit index the leader sent came back with the entries. (The
//! layer stops writes at the crash but keeps what was written before it,
//! synced or not: that unsynced writes of all groups are lost together is
//! checked at the WAL's level, tests/wal_groups.rs, and in the simulator.)

mod wal_support;

use embraft::codec::{decode_message, encode_message};
use embraft::core::{Entry, EntryKind, Message, MessageBody, NodeId};
use embraft::node::NodeError;
use embraft::runtime::{GroupStart, Runtime, RuntimeConfig};
use embraft::wal::{SyncMode, WriteMethod};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wal_support::{CrashFiles, TempDir};

const ME: NodeId = 2;
const LEADER: NodeId = 1;
const GROUPS: u64 = 24;
/// Entries each group's leader sends, after the founding entry.
const LAST: u64 = 30;

fn config(dir: &std::path::Path) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(ME, dir);
    config.workers = 2;
    config.raft.seed = 7;
    config.raft.max_entry_bytes = 1 << 10;
    config.wal.segment_size = 64 << 10;
    config.wal.sync = SyncMode::Always;
    // The method whose writes the crashing file layer can hold back.
    config.wal.write_method = WriteMethod::Pwrite;
    config
}

/// Group `group`'s leader's append of its term-2 log after the founding
/// entry, all of it committed.
fn append(group: u64) -> Vec<u8> {
    let entries = (2..=LAST)
        .map(|index| Entry {
            index,
            term: 2,
            kind: EntryKind::Normal,
            data: vec![group as u8; 100].into(),
        })
        .collect();
    let msg = Message {
        from: LEADER,
        to: ME,
        term: 2,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries,
            commit: LAST,
        },
    };
    let mut bytes = Vec::new();
    encode_message(&msg, &mut bytes);
    bytes
}

/// Polls until every group answered for its whole append or the runtime
/// failed; returns the groups that answered.
fn answers(runtime: &Runtime) -> BTreeSet<u64> {
    let mut answered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (answered.len() as u64) < GROUPS {
        assert!(
            Instant::now() < deadline,
            "the runtime neither answered nor failed"
        );
        match runtime.poll(Duration::from_millis(20)) {
            Ok(readies) => {
                for ready in readies {
                    for out in &ready.batch.messages {
                        let msg = decode_message(&out.bytes).expect("the runtime encodes");
                        if let MessageBody::AppendResponse { reject, index, .. } = msg.body {
                            assert!(!reject, "the append follows the founding entry");
                            if index == LAST {
                                answered.insert(ready.group);
                            }
                        }
                    }
                }
            }
            Err(NodeError::Failed(_)) => break,
            Err(err) => panic!("poll: {err}"),
        }
    }
    answered
}

#[test]
fn a_crash_at_any_sync_keeps_every_answered_write_of_every_group() {
    let mut crash_points = 0;
    for syncs in 0.. {
        let dir = TempDir::new("runtime-crash");
        let files = Arc::new(CrashFiles::default());
        let mut crashing = config(dir.path());
        crashing.wal_files = files.clone();
        let runtime = Runtime::open(crashing).unwrap();
        for group in 1..=GROUPS {
            let start = GroupStart {
                peers: vec![1, 2, 3],
                applied: 0,
            };
            runtime.start_group(group, start).unwrap();
        }
        // Armed once every founding entry is durable, so that the syncs
        // counted are the appends'.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (1..=GROUPS).any(|g| runtime.status(g).unwrap().persisted < 1) {
            assert!(Instant::now() < deadline, "founding entries not durable");
            std::thread::sleep(Duration::from_millis(1));
        }
        files.crash_after_syncs(syncs);
        for group in 1..=GROUPS {
            match runtime.step(group, &append(group)) {
                Ok(()) => {}
                // The runtime stopped at the crash, before this group's turn.
                Err(NodeError::Failed(_)) => break,
                Err(err) => panic!("step: {err}"),
            }
        }
        let answered = answers(&runtime);
        drop(runtime);

        let runtime = Runtime::open(config(dir.path())).unwrap_or_else(|err| {
            panic!("crashed after {syncs} syncs, the runtime does not reopen: {err}")
        });
        for group in 1..=GROUPS {
            runtime
                .start_group(group, GroupStart::default())
                .unwrap_or_else(|err| {
                    panic!("crashed after {syncs} syncs, group {group} does not start: {err}")
                });
            let status = runtime.status(group).unwrap();
            if answered.contains(&group) {
                assert!(
                    status.last_index >= LAST,
                    "crashed after {syncs} syncs: group {group} answered for index {LAST} \
                     but recovered only through {}",
                    status.last_index
                );
            }
            let held = status.last_index;
            assert!(
                status.commit >= held.min(LAST) || held < 2,
                "crashed after {syncs} syncs: group {group} holds entries through {held}, \
                 committed by its leader, but recovered commit index {}",
                status.commit
            );
        }
        if answered.len() as u64 == GROUPS && !files.crashed() {
            break;
        }
        crash_points += 1;
        assert!(syncs < 10_000, "the appends never completed");
    }
    // Several syncs served the groups' appends: a crash fell between them.
    assert!(crash_points >= 1, "only {crash_points} crash points");
}
