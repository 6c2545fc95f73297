//! Snapshots through the node API: taken with the writer, recorded and
//! compacted, sent to a lagging follower, restored from the file the node
//! names, recovered after a restart; and everything the node must refuse.

mod node_support;

use embraft::codec::encode_message;
use embraft::core::{ConfState, Index, Message, MessageBody, NodeId, SnapshotMeta};
use embraft::node::{LogLevel, NodeConfig, NodeError};
use embraft::snapshot::{SnapshotError, SnapshotId};
use node_support::{commit, decode_state, encode_state, Cluster, Link};
use std::path::Path;
use std::time::Duration;

fn configure(config: &mut NodeConfig) {
    config.raft.compact_keep_entries = 10;
    config.log_level = LogLevel::Info;
    // Small chunks: even these small snapshots travel in many of them.
    config.snapshot.chunk_size = 256;
}

/// The snapshot files in a node's folder, as ids; any other file is named.
fn snapshot_files(dir: &Path) -> (Vec<SnapshotId>, Vec<String>) {
    let mut ids = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir.join("snapshots")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        match SnapshotId::parse(&name) {
            Some(id) => ids.push(id),
            None => others.push(name),
        }
    }
    ids.sort_by_key(|id| id.index);
    (ids, others)
}

fn cut(cluster: &mut Cluster, node: NodeId, link: Link) {
    for other in 1..=cluster.hosts.len() as NodeId {
        if other != node {
            cluster.set_link(node, other, link);
            cluster.set_link(other, node, link);
        }
    }
}

/// Has node `id` snapshot what it applied and waits until its node has
/// recorded the snapshot (and compacted its log); returns its index.
fn snapshot_and_record(cluster: &mut Cluster, id: NodeId) -> Index {
    cluster.host_mut(id).take_snapshot().unwrap();
    let index = *cluster.host(id).snapshots_taken.last().unwrap();
    assert!(
        cluster.run_until(Duration::from_secs(10), |c| c
            .host(id)
            .node()
            .status()
            .snapshot_index
            == index),
        "node {id} records its snapshot at {index}"
    );
    index
}

fn same_state(cluster: &Cluster, a: NodeId, b: NodeId) -> bool {
    cluster.host(a).applied == cluster.host(b).applied
}

/// The whole cycle: the leader snapshots through the writer and compacts;
/// a follower cut off meanwhile catches up through the snapshot (sent in
/// hundreds of chunks), restores from the file its node names, then takes
/// the entries after it; both restart from snapshot plus log.
#[test]
fn a_lagging_follower_catches_up_through_a_snapshot_and_both_restart_from_it() {
    let mut cluster = Cluster::start("snap-cycle", 3, configure);
    let leader = cluster.elect();
    let lagging = if leader == 1 { 2 } else { 1 };
    let other = 6 - leader - lagging;
    commit(&mut cluster, 0..50, &[1, 2, 3]);

    cut(&mut cluster, lagging, Link::Drop);
    commit(&mut cluster, 50..200, &[leader, other]);
    let snapshot_index = snapshot_and_record(&mut cluster, leader);
    commit(&mut cluster, 200..220, &[leader, other]);
    let status = cluster.host(leader).node().status();
    assert_eq!(
        status.first_index,
        snapshot_index + 1 - 10,
        "ten entries kept"
    );
    let (files, others) = snapshot_files(&cluster.host(leader).dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].index, snapshot_index);
    assert!(others.is_empty(), "{others:?}");
    let snapshot_bytes = files[0].len;
    assert!(
        snapshot_bytes > 256 * 20,
        "many chunks: {snapshot_bytes} bytes"
    );

    cut(&mut cluster, lagging, Link::Deliver);
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| c.host(lagging).applied.len()
            == 220),
        "the follower catches up"
    );
    let host = cluster.host(lagging);
    assert_eq!(host.restores.len(), 1, "one restore: {:?}", host.restores);
    assert_eq!(host.restores[0].0, snapshot_index);
    assert!(same_state(&cluster, lagging, leader));
    assert_eq!(
        snapshot_files(&cluster.host(lagging).dir).0,
        files,
        "the follower keeps the very same file"
    );
    // The leader streamed it. (Whether it also hears the follower's last
    // answer depends on a race with the follower's append responses, which
    // may end the transfer first.)
    let sending = format!("to node {lagging}");
    assert!(cluster
        .host(leader)
        .logs
        .iter()
        .any(|l| l.starts_with("sending the snapshot") && l.ends_with(&sending)));

    // Restarts with a state machine that was not kept: each node hands
    // its host the snapshot, then the entries after it.
    commit(&mut cluster, 220..230, &[1, 2, 3]);
    for id in [lagging, leader] {
        cluster.restart(id).unwrap();
        assert!(
            cluster.run_until(Duration::from_secs(20), |c| c.host(id).applied.len() == 230),
            "node {id} restored and caught up"
        );
        let host = cluster.host(id);
        assert_eq!(host.restores.last().map(|r| r.0), Some(snapshot_index));
        assert!(same_state(&cluster, id, other), "node {id} after restart");
    }
}

/// The WAL segment files under a node's data directory.
fn segment_count(dir: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        // The node's threads create and delete files while this runs.
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "seg") {
                count += 1;
            }
        }
    }
    count
}

/// A follower that installs the leader's snapshot deletes the WAL
/// segments the snapshot replaced at once, without waiting for a snapshot
/// of its own.
#[test]
fn installing_a_snapshot_deletes_the_wal_segments_it_replaces() {
    let mut cluster = Cluster::start("snap-install-segments", 3, |config| {
        configure(config);
        config.wal.segment_size = 4096;
        // A segment must hold the largest entry (`Node::new` checks).
        config.raft.max_entry_bytes = 1024;
    });
    let leader = cluster.elect();
    let lagging = if leader == 1 { 2 } else { 1 };
    let other = 6 - leader - lagging;
    commit(&mut cluster, 0..300, &[1, 2, 3]);
    let before = segment_count(&cluster.host(lagging).dir);
    assert!(before >= 4, "the follower's log spans {before} segments");

    cut(&mut cluster, lagging, Link::Drop);
    commit(&mut cluster, 300..400, &[leader, other]);
    snapshot_and_record(&mut cluster, leader);
    cut(&mut cluster, lagging, Link::Deliver);
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| c.host(lagging).restores.len()
            == 1
            && segment_count(&c.host(lagging).dir) <= 2),
        "the follower installs the snapshot and keeps at most 2 of its {before} segments, \
         has {} restores and {} segments",
        cluster.host(lagging).restores.len(),
        segment_count(&cluster.host(lagging).dir)
    );
    assert!(cluster.host(lagging).snapshots_taken.is_empty());
    commit(&mut cluster, 400..410, &[1, 2, 3]);
    assert!(same_state(&cluster, lagging, leader));
}

/// The ready batches ask for a snapshot once the log grew past the
/// threshold since the last one, once per crossing.
#[test]
fn a_snapshot_is_asked_for_once_per_threshold_crossing() {
    let mut cluster = Cluster::start("snap-wanted", 1, |config| {
        config.snapshot.entries_threshold = 20;
    });
    commit(&mut cluster, 0..15, &[1]);
    assert!(cluster.host(1).wanted.is_empty(), "below the threshold");
    commit(&mut cluster, 15..40, &[1]);
    cluster.settle();
    let wanted = cluster.host(1).wanted.clone();
    assert_eq!(wanted.len(), 1, "asked once: {wanted:?}");
    assert!(wanted[0] >= 20);
    // The index asked for is one the node accepts a snapshot at.
    let host = cluster.host_mut(1);
    host.node().begin_snapshot(wanted[0]).unwrap().abort();
    host.take_snapshot().unwrap();
    commit(&mut cluster, 40..45, &[1]);
    cluster.settle();
    assert_eq!(
        cluster.host(1).wanted.len(),
        1,
        "not again below the threshold"
    );
    commit(&mut cluster, 45..70, &[1]);
    cluster.settle();
    assert_eq!(cluster.host(1).wanted.len(), 2, "crossed again");
}

/// A snapshot recorded after the log has already grown past the threshold
/// again asks for the next one at once, without waiting for more entries.
#[test]
fn a_snapshot_recorded_late_asks_again_when_the_log_is_already_past_the_threshold() {
    let mut cluster = Cluster::start("snap-wanted-late", 1, |config| {
        config.snapshot.entries_threshold = 20;
    });
    commit(&mut cluster, 0..25, &[1]);
    cluster.settle();
    let first = cluster.host(1).wanted.clone();
    assert_eq!(first.len(), 1, "asked once: {first:?}");
    // The host starts the snapshot at the index asked for, but the log
    // grows by more than the threshold before the snapshot is finished.
    let host = cluster.host(1);
    let mut writer = host.node().begin_snapshot(first[0]).unwrap();
    let upto = host
        .applied
        .iter()
        .take_while(|(index, _, _)| *index <= first[0])
        .cloned()
        .collect::<Vec<_>>();
    writer.write(&encode_state(&upto)).unwrap();
    commit(&mut cluster, 25..60, &[1]);
    cluster.settle();
    assert_eq!(cluster.host(1).wanted.len(), 1, "one question at a time");
    writer.finish().unwrap();
    cluster.settle();
    let wanted = cluster.host(1).wanted.clone();
    assert_eq!(wanted.len(), 2, "asked again once recorded: {wanted:?}");
    assert!(wanted[1] >= first[0] + 20, "{wanted:?}");
}

/// What the writer refuses, and that nothing it gives up stays behind.
#[test]
fn the_writer_refuses_unapplied_and_stale_indexes_and_leaves_nothing_behind() {
    let mut cluster = Cluster::start("snap-writer", 1, |_| {});
    commit(&mut cluster, 0..10, &[1]);
    cluster.settle();
    let host = cluster.host(1);
    let applied = host.last_applied;
    let node = host.node();
    let dir = host.dir.clone();

    match node.begin_snapshot(applied + 1) {
        Err(err @ NodeError::NotApplied { .. }) => {
            assert!(err.to_string().contains("acknowledged"), "{err}")
        }
        other => panic!("{:?}", other.map(|w| w.index())),
    }

    // Aborted, or dropped unfinished: the temporary file goes.
    let writer = node.begin_snapshot(applied).unwrap();
    assert!(writer.path().exists());
    writer.abort();
    let writer = node.begin_snapshot(applied).unwrap();
    let path = writer.path().to_path_buf();
    drop(writer);
    assert!(!path.exists());
    assert_eq!(snapshot_files(&dir), (vec![], vec![]));

    // Two writers at once: the later index wins; the earlier one, finished
    // after it, is stale and its file deleted.
    let mut early = node.begin_snapshot(applied - 2).unwrap();
    let mut late = node.begin_snapshot(applied).unwrap();
    late.write(b"late").unwrap();
    early.write(b"early").unwrap();
    late.finish().unwrap();
    match early.finish() {
        Err(NodeError::StaleSnapshot {
            index,
            snapshot_index,
        }) => assert_eq!((index, snapshot_index), (applied - 2, applied)),
        other => panic!("{other:?}"),
    }
    match node.begin_snapshot(applied) {
        Err(NodeError::StaleSnapshot { .. }) => {}
        other => panic!("{:?}", other.map(|w| w.index())),
    }
    cluster.settle();
    let (files, others) = snapshot_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!((files[0].index, files[0].len), (applied, 4));
    assert!(others.is_empty(), "{others:?}");

    // Written through its path rather than the writer.
    commit(&mut cluster, 10..12, &[1]);
    cluster.settle();
    let host = cluster.host(1);
    let writer = host.node().begin_snapshot(host.last_applied).unwrap();
    std::fs::write(writer.path(), b"written by path").unwrap();
    writer.finish().unwrap();
    cluster.settle();
    let (files, _) = snapshot_files(&dir);
    assert_eq!(files.len(), 1, "the older snapshot is deleted: {files:?}");
    assert_eq!(files[0].len, b"written by path".len() as u64);
}

/// Writers begun at once at equal and at different indexes, then
/// finished or aborted from many threads at once: whatever wins, a restart
/// opens the directory. Writers of one index write the same state, so they
/// publish one file name; the stale ones must leave that file to the
/// writer being recorded.
#[test]
fn writers_racing_at_equal_and_different_indexes_leave_a_directory_that_opens() {
    const THREADS: usize = 9;
    const ROUNDS: u32 = 12;
    let mut cluster = Cluster::start("snap-race", 1, configure);
    let mut proposed = 0;
    for round in 0..ROUNDS {
        commit(&mut cluster, proposed..proposed + 6, &[1]);
        proposed += 6;
        cluster.settle();
        let host = cluster.host(1);
        let applied = host.last_applied;
        let states: Vec<(Index, Vec<u8>)> = (0..3)
            .map(|back| {
                let index = applied - back;
                let prefix: Vec<_> = host
                    .applied
                    .iter()
                    .filter(|(i, _, _)| *i <= index)
                    .cloned()
                    .collect();
                (index, encode_state(&prefix))
            })
            .collect();
        let node = host.node();
        let begun = std::sync::Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (index, state) = &states[t % states.len()];
                let begun = &begun;
                scope.spawn(move || {
                    let writer = node.begin_snapshot(*index);
                    // No writer ends before every one has begun.
                    begun.wait();
                    let mut writer = writer.unwrap();
                    writer.write(state).unwrap();
                    if (t + round as usize) % 4 == 3 {
                        writer.abort();
                        return;
                    }
                    match writer.finish() {
                        Ok(()) | Err(NodeError::StaleSnapshot { .. }) => {}
                        Err(err) => panic!("writer at {index}: {err}"),
                    }
                });
            }
        });
        cluster.settle();
        if let Err(err) = cluster.restart(1) {
            panic!("round {round}: the node does not restart: {err}");
        }
        assert!(
            cluster.run_until(Duration::from_secs(10), |c| c.host(1).applied.len()
                == proposed as usize),
            "round {round}: the restarted node applies everything again"
        );
        let (files, others) = snapshot_files(&cluster.host(1).dir);
        assert!(files.len() <= 1, "round {round}: {files:?}");
        assert!(others.is_empty(), "round {round}: {others:?}");
    }
}

/// A node refuses to start from a snapshot file that is missing or
/// damaged: the WAL records it, so the log before it is gone.
#[test]
fn a_damaged_or_missing_snapshot_file_stops_the_node_from_starting() {
    let mut cluster = Cluster::start("snap-damaged", 1, configure);
    commit(&mut cluster, 0..30, &[1]);
    cluster.settle();
    cluster.host_mut(1).take_snapshot().unwrap();
    cluster.settle();
    cluster.stop(1);
    let dir = cluster.host(1).dir.clone();
    let (files, _) = snapshot_files(&dir);
    let path = dir.join("snapshots").join(files[0].file_name());
    let good = std::fs::read(&path).unwrap();

    let mut bad = good.clone();
    bad[7] ^= 0x40;
    std::fs::write(&path, &bad).unwrap();
    match cluster.restart(1) {
        Err(NodeError::Snapshot(SnapshotError::Corrupt { reason, .. })) => {
            assert!(reason.contains("CRC-32"), "{reason}")
        }
        other => panic!("{:?}", other.err()),
    }
    std::fs::remove_file(&path).unwrap();
    match cluster.restart(1) {
        Err(NodeError::Snapshot(SnapshotError::Corrupt { reason, .. })) => {
            assert!(reason.contains("no snap-"), "{reason}")
        }
        other => panic!("{:?}", other.err()),
    }
    std::fs::write(&path, &good).unwrap();
    cluster.restart(1).unwrap();
    assert!(cluster.run_until(Duration::from_secs(10), |c| c.host(1).applied.len() == 30));
    assert_eq!(cluster.host(1).restores.len(), 1);
    assert_eq!(cluster.host(1).applied, decode_state(&good));
}

/// What a follower's state looks like from outside, to show it unchanged.
fn state_of(cluster: &Cluster, id: NodeId) -> (u64, u64, u64, u64, ConfState) {
    let s = cluster.host(id).node().status();
    (
        s.term,
        s.commit,
        s.last_index,
        s.snapshot_index,
        s.conf_state,
    )
}

struct Chunk {
    meta: SnapshotMeta,
    offset: u64,
    total_len: u64,
    checksum: u32,
    data: Vec<u8>,
}

fn chunk_message(from: NodeId, to: NodeId, term: u64, chunk: Chunk) -> Vec<u8> {
    let msg = Message {
        from,
        to,
        term,
        body: MessageBody::InstallSnapshot {
            meta: chunk.meta,
            offset: chunk.offset,
            total_len: chunk.total_len,
            checksum: chunk.checksum,
            data: chunk.data,
        },
    };
    let mut bytes = Vec::new();
    encode_message(&msg, &mut bytes);
    bytes
}

fn log_count(cluster: &Cluster, id: NodeId, text: &str) -> usize {
    cluster
        .host(id)
        .logs
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

/// Garbage, truncated chunks, chunks whose metadata contradicts the
/// transfer under way, and a whole snapshot whose checksum does not match
/// are all refused with a clear message; the follower keeps its state,
/// goes on replicating, and installs a correct snapshot afterwards.
#[test]
fn damaged_snapshot_input_is_refused_and_a_correct_snapshot_still_installs() {
    let mut cluster = Cluster::start("snap-refused", 3, configure);
    let leader = cluster.elect();
    let follower = if leader == 1 { 2 } else { 1 };
    commit(&mut cluster, 0..10, &[1, 2, 3]);
    cluster.ticking = false; // no elections while the state is compared
    cluster.settle();
    let before = state_of(&cluster, follower);
    let term = before.0;
    let meta = SnapshotMeta {
        index: before.1 + 100,
        term,
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    };
    let data = b"a snapshot that is not what its checksum says".to_vec();
    let whole = |data: &[u8], checksum| Chunk {
        meta: meta.clone(),
        offset: 0,
        total_len: data.len() as u64,
        checksum,
        data: data.to_vec(),
    };

    // Garbage, and every truncation of a well-formed chunk: refused by
    // step with a decoding error.
    let node = cluster.host(follower).node();
    let err = node.step(&[0xee; 64]).unwrap_err();
    assert!(matches!(err, NodeError::MalformedMessage(_)), "{err}");
    let good_bytes = chunk_message(leader, follower, term, whole(&data, crc32fast::hash(&data)));
    for len in 0..good_bytes.len() {
        match node.step(&good_bytes[..len]) {
            Err(NodeError::MalformedMessage(err)) => assert!(!err.to_string().is_empty()),
            other => panic!("a chunk cut to {len} bytes was taken: {other:?}"),
        }
    }

    // A whole snapshot whose bytes do not match its checksum: verified,
    // refused, deleted.
    let wrong = crc32fast::hash(&data) ^ 1;
    node.step(&chunk_message(leader, follower, term, whole(&data, wrong)))
        .unwrap();
    assert!(
        cluster.run_until(Duration::from_secs(5), |c| log_count(c, follower, "CRC-32")
            == 1)
    );
    let refusal = cluster
        .host(follower)
        .logs
        .iter()
        .find(|l| l.contains("CRC-32"))
        .unwrap()
        .clone();
    assert!(
        refusal.contains("refused") && refusal.contains("previous state is kept"),
        "{refusal}"
    );

    // Chunks that contradict the transfer under way: the same snapshot
    // point with another membership.
    let node = cluster.host(follower).node();
    let half = |offset: u64, voters: Vec<NodeId>| Chunk {
        meta: SnapshotMeta {
            conf_state: ConfState {
                voters,
                ..ConfState::default()
            },
            ..meta.clone()
        },
        offset,
        total_len: data.len() as u64,
        checksum: crc32fast::hash(&data),
        data: data[offset as usize..offset as usize + 10].to_vec(),
    };
    node.step(&chunk_message(
        leader,
        follower,
        term,
        half(0, vec![1, 2, 3]),
    ))
    .unwrap();
    node.step(&chunk_message(leader, follower, term, half(10, vec![1, 2])))
        .unwrap();
    assert!(cluster.run_until(Duration::from_secs(5), |c| log_count(
        c,
        follower,
        "another membership"
    ) == 1));

    // A chunk reaching past the snapshot's end: refused before it is
    // stored (logged at debug level).
    let mut beyond = whole(&data, 0);
    beyond.offset = 10;
    let bytes = chunk_message(leader, follower, term, beyond);
    cluster.host(follower).node().step(&bytes).unwrap();

    cluster.settle();
    assert_eq!(state_of(&cluster, follower), before);
    assert!(cluster.host(follower).restores.is_empty());
    let (files, others) = snapshot_files(&cluster.host(follower).dir);
    assert!(
        files.is_empty() && others.is_empty(),
        "{files:?} {others:?}"
    );

    // It goes on replicating, and a real snapshot installs.
    cluster.ticking = true;
    cut(&mut cluster, follower, Link::Drop);
    let other = 6 - leader - follower;
    commit(&mut cluster, 10..60, &[leader, other]);
    cluster.host_mut(leader).take_snapshot().unwrap();
    let snapshot_index: Index = *cluster.host(leader).snapshots_taken.last().unwrap();
    commit(&mut cluster, 60..70, &[leader, other]);
    cut(&mut cluster, follower, Link::Deliver);
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| c.host(follower).applied.len()
            == 70)
    );
    assert_eq!(
        cluster.host(follower).restores.first().map(|r| r.0),
        Some(snapshot_index)
    );
    assert!(same_state(&cluster, follower, leader));
}
