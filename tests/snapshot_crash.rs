//! A crash at every step of taking a snapshot and of installing one from
//! the leader leaves either the old state or the new one, never a mix.
//!
//! Each case starts from a node that has a snapshot (the old state) and
//! entries after it, stops it, then performs the steps the node performs,
//! with the snapshot store and the WAL directly, up to a crash point, and
//! drops everything there (a process crash: files stay as they are). The
//! node is then started on the directory: the restore it hands its host,
//! the snapshot file it keeps and the entries it delivers must be exactly
//! the old state or exactly the new one.

mod node_support;

use embraft::core::{ConfState, HardState, Index, SnapshotMeta};
use embraft::snapshot::{SnapshotId, SnapshotStore};
use embraft::wal::{Recovered, Wal, WalOptions};
use node_support::{encode_state, AppliedState, Cluster};
use std::path::Path;
use std::time::Duration;

const KEEP: u64 = 5;

fn wal_options() -> WalOptions {
    WalOptions {
        segment_size: 64 << 10,
        ..WalOptions::default()
    }
}

/// A single-node cluster with a snapshot at some index and entries after
/// it; stopped. Returns the cluster and the applied state at the end.
fn old_state(name: &str) -> (Cluster, AppliedState, Index) {
    let mut cluster = Cluster::start(name, 1, |config| {
        config.raft.compact_keep_entries = KEEP;
        config.wal = wal_options();
        // A segment must hold the largest entry (`Node::new` checks).
        config.raft.max_entry_bytes = 16 << 10;
    });
    cluster.elect();
    propose(&mut cluster, 0..30);
    cluster.host_mut(1).take_snapshot().unwrap();
    let old_index = cluster.host(1).last_applied;
    propose(&mut cluster, 30..40);
    assert!(cluster.run_until(Duration::from_secs(10), |c| c
        .host(1)
        .node()
        .status()
        .snapshot_index
        == old_index));
    let applied = cluster.host(1).applied.clone();
    cluster.stop(1);
    (cluster, applied, old_index)
}

/// The stopped node's WAL and snapshot store, opened as the node opens
/// them.
fn open_stopped(dir: &Path) -> (Wal, Recovered, SnapshotStore) {
    let (wal, recovered) = Wal::open(dir, wal_options()).unwrap();
    let expected = recovered.snapshot.as_ref().map(|m| (m.index, m.term));
    let (store, _) = SnapshotStore::open(dir, expected).unwrap();
    (wal, recovered, store)
}

fn voters_1() -> ConfState {
    ConfState {
        voters: vec![1],
        ..ConfState::default()
    }
}

fn propose(cluster: &mut Cluster, numbers: std::ops::Range<u32>) {
    for n in numbers.clone() {
        let data = format!("entry-{n:04}").into_bytes();
        cluster.host(1).node().propose(&data).unwrap();
    }
    let want = numbers.end as usize;
    assert!(cluster.run_until(Duration::from_secs(10), |c| c.host(1).applied.len() == want));
}

fn snapshot_ids(dir: &Path) -> Vec<SnapshotId> {
    std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            SnapshotId::parse(&name).unwrap_or_else(|| panic!("leftover file {name}"))
        })
        .collect()
}

/// Starts the node again with an empty state machine and checks that it
/// is exactly in one of the two states: restored from the snapshot at
/// `index`, with `applied` as the host's state once caught up.
fn reopen(cluster: &mut Cluster) -> (Index, AppliedState) {
    cluster.restart(1).expect("the node starts after the crash");
    cluster.ticking = false;
    cluster.settle();
    let host = cluster.host(1);
    let restored = host.restores.last().expect("a restore is handed out").0;
    let status = host.node().status();
    assert_eq!(status.snapshot_index, restored, "WAL and file agree");
    let ids = snapshot_ids(&host.dir);
    assert_eq!(ids.len(), 1, "one snapshot file is left: {ids:?}");
    assert_eq!(ids[0].index, restored);
    (restored, host.applied.clone())
}

/// The steps of taking a snapshot, in the node's order.
const TAKE_STEPS: [&str; 6] = [
    "temporary file half written",
    "temporary file complete and synced",
    "renamed to its final name",
    "metadata durable in the WAL",
    "older snapshot files deleted",
    "log compacted",
];

#[test]
fn a_crash_at_any_step_of_taking_a_snapshot_leaves_the_old_or_the_new_one() {
    for (step, what) in TAKE_STEPS.iter().enumerate() {
        let (mut cluster, applied, old_index) = old_state("crash-take");
        let dir = cluster.host(1).dir.clone();
        let new_index = {
            let (wal, _, store) = open_stopped(&dir);
            let index = wal.last_index();
            let meta = SnapshotMeta {
                index,
                term: wal.term(index).unwrap().unwrap(),
                conf_state: voters_1(),
            };
            let bytes = encode_state(&applied);
            let mut temp = store.create(meta.index, meta.term).unwrap();
            temp.write(&bytes[..bytes.len() / 2]).unwrap();
            'crash: {
                if step == 0 {
                    break 'crash;
                }
                temp.write(&bytes[bytes.len() / 2..]).unwrap();
                let id = temp.seal().unwrap();
                if step == 1 {
                    break 'crash;
                }
                let file = temp.publish(id).unwrap();
                if step == 2 {
                    break 'crash;
                }
                wal.save_snapshot(&meta).unwrap();
                if step == 3 {
                    break 'crash;
                }
                store.record(&file).unwrap();
                if step == 4 {
                    break 'crash;
                }
                wal.compact(index - KEEP).unwrap();
            }
            index
        };
        let (restored, state) = reopen(&mut cluster);
        let expected = if step < 3 { old_index } else { new_index };
        assert_eq!(restored, expected, "crash after: {what}");
        assert_eq!(
            state, applied,
            "crash after: {what}: the same log either way"
        );
        println!("crash after {what}: restored the snapshot at {restored}");
    }
}

/// The steps of installing a snapshot received from a leader.
const INSTALL_STEPS: [&str; 6] = [
    "chunks partly written",
    "complete, verified and synced, not renamed",
    "renamed to its final name",
    "metadata durable in the WAL",
    "hard state durable after it",
    "older snapshot files deleted",
];

#[test]
fn a_crash_at_any_step_of_installing_a_snapshot_leaves_the_old_or_the_new_one() {
    for (step, what) in INSTALL_STEPS.iter().enumerate() {
        let (mut cluster, applied, old_index) = old_state("crash-install");
        let dir = cluster.host(1).dir.clone();
        // The leader's state: everything here and 50 entries more.
        let mut leader_state = applied.clone();
        let (new_index, term) = {
            let (wal, recovered, store) = open_stopped(&dir);
            let term = recovered.hard_state.term;
            let index = wal.last_index() + 50;
            for i in 0..50 {
                leader_state.push((index - 49 + i, term, format!("leader-{i}").into_bytes()));
            }
            let bytes = encode_state(&leader_state);
            let meta = SnapshotMeta {
                index,
                term,
                conf_state: voters_1(),
            };
            let id = SnapshotId {
                index,
                term,
                len: bytes.len() as u64,
                crc: crc32fast::hash(&bytes),
            };
            let mut partial = store.receive(id).unwrap();
            let half = (bytes.len() / 2) as u64;
            partial.write_chunk(0, &bytes[..half as usize]).unwrap();
            'crash: {
                if step == 0 {
                    break 'crash;
                }
                partial.write_chunk(half, &bytes[half as usize..]).unwrap();
                partial.seal().unwrap();
                if step == 1 {
                    break 'crash;
                }
                let file = partial.publish().unwrap();
                if step == 2 {
                    break 'crash;
                }
                wal.save_snapshot(&meta).unwrap();
                if step == 3 {
                    break 'crash;
                }
                let hard_state = HardState {
                    commit: index,
                    ..recovered.hard_state
                };
                wal.append(&[], Some(&hard_state)).unwrap();
                if step == 4 {
                    break 'crash;
                }
                store.record(&file).unwrap();
            }
            (index, term)
        };
        let (restored, state) = reopen(&mut cluster);
        if step < 3 {
            assert_eq!(restored, old_index, "crash after: {what}");
            assert_eq!(state, applied, "crash after: {what}");
        } else {
            assert_eq!(restored, new_index, "crash after: {what}");
            assert_eq!(state, leader_state, "crash after: {what}");
            let status = cluster.host(1).node().status();
            assert_eq!((status.last_index, status.term), (new_index, term));
        }
        println!("crash after {what}: restored the snapshot at {restored}");
    }
}
