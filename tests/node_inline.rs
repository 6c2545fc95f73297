//! Inline nodes (`Threading::Inline`): each input call runs the node's
//! round on the caller's thread; the only thread of their own waits for
//! WAL syncs. The whole cluster
//! suite also runs inline with `EMBRAFT_TEST_THREADING=inline cargo test
//! --test node_disk --test node_snapshot --test node_membership`; these
//! tests cover the mode in the default run, and what only it promises: a
//! call returns with its batch ready.

mod node_support;

use embraft::core::{ConfChange, MessageBody, NodeId, Role};
use embraft::node::{LogLevel, NodeConfig, NodeError, ProposalResult, Threading};
use embraft::wal::SyncMode;
use node_support::{commit, Cluster, Link};
use std::time::Duration;

fn inline(config: &mut NodeConfig) {
    config.threading = Threading::Inline;
}

/// Names of this process's threads that only a threaded node has: the
/// workers of its runtime (`embraft-rt<id>-w<n>`). Not an inline node's
/// sync thread (`embraft-rt<id>-sync`), nor the WAL's short-lived segment
/// preparation thread (`embraft-wal-prepare`).
fn node_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .filter(|name| {
            name.strip_prefix("embraft-rt")
                .and_then(|rest| rest.split_once("-w"))
                .is_some_and(|(id, n)| {
                    [id, n]
                        .iter()
                        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .collect()
}

#[test]
fn inline_nodes_elect_replicate_and_restart_from_disk() {
    let mut cluster = Cluster::start("inline-basic", 3, inline);
    let leader = cluster.elect();
    // Every node in this binary is inline: none has workers (only a sync
    // thread).
    assert_eq!(node_threads(), Vec::<String>::new());
    commit(&mut cluster, 0..100, &[1, 2, 3]);

    // A follower restarted from its directory recovers its log.
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.restart(follower).unwrap();
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| c.host(follower).applied.len()
            == 100)
    );
    commit(&mut cluster, 100..120, &[1, 2, 3]);

    // The whole cluster restarted: same state everywhere, and it goes on.
    for id in 1..=3 {
        cluster.restart(id).unwrap();
    }
    // The hosts' view of roles is from before the restarts: wait for the
    // nodes themselves to agree on a leader.
    assert!(cluster.run_until(Duration::from_secs(10), |c| {
        let statuses: Vec<_> = c.hosts.iter().map(|h| h.node().status()).collect();
        statuses.iter().any(|s| s.role == Role::Leader)
            && statuses.iter().all(|s| s.leader == statuses[0].leader)
            && c.agreed_leader() == Some(statuses[0].leader)
    }));
    commit(&mut cluster, 120..130, &[1, 2, 3]);
    let first = cluster.host(1).applied.clone();
    assert_eq!(first.len(), 130);
    for id in 2..=3 {
        assert_eq!(cluster.host(id).applied, first, "node {id}");
    }
}

/// With no ticks and nothing else moving, and without syncs, each call's
/// batch is there to poll the moment the call returns: the leader's
/// appends after `propose`, the follower's answer after `step`, the
/// commit after the leader steps the answers.
#[test]
fn an_input_call_returns_with_its_batch_ready() {
    one_proposal_by_hand("inline-ready", SyncMode::Never, Duration::ZERO);
}

/// With syncs, what waits for one (the followers' answers, the leader's
/// commit) comes from the sync thread once the write is durable: the call
/// returns without waiting for the disk.
#[test]
fn what_waits_for_a_sync_comes_once_it_is_durable() {
    one_proposal_by_hand("inline-synced", SyncMode::Always, Duration::from_secs(5));
}

/// Proposes one entry and carries its messages by hand, polling each node
/// for the batch its call produced with `timeout`.
fn one_proposal_by_hand(name: &str, sync: SyncMode, timeout: Duration) {
    let mut cluster = Cluster::start(name, 3, |config| {
        inline(config);
        config.wal.sync = sync;
    });
    let leader = cluster.elect();
    commit(&mut cluster, 0..1, &[1, 2, 3]);
    cluster.ticking = false;
    cluster.settle();

    let node = |id: NodeId| cluster.host(id).node();
    let poll_now = |id: NodeId| {
        node(id)
            .poll_ready(timeout)
            .unwrap()
            .unwrap_or_else(|| panic!("node {id} has its batch ready"))
    };
    let proposal = node(leader).propose(b"right away").unwrap();
    let appends = poll_now(leader).messages;
    assert_eq!(appends.len(), 2, "one append per follower");
    let mut answers = Vec::new();
    for append in &appends {
        node(append.to).step(&append.bytes).unwrap();
        let answer = poll_now(append.to).messages;
        assert_eq!(answer.len(), 1);
        let decoded = embraft::codec::decode_message(&answer[0].bytes).unwrap();
        assert!(
            matches!(
                decoded.body,
                MessageBody::AppendResponse { reject: false, .. }
            ),
            "{decoded:?}"
        );
        answers.extend(answer);
    }
    for answer in &answers {
        node(leader).step(&answer.bytes).unwrap();
    }
    // With syncs, the followers' answers can commit the entry before the
    // leader's own copy is durable: a batch (the appends that carry the new
    // commit index) may come first, and the entry with the sync.
    let mut batch = poll_now(leader);
    while batch.committed.is_empty() && sync == SyncMode::Always {
        assert!(batch.outcomes.is_empty(), "an outcome before its entry");
        batch = poll_now(leader);
    }
    let committed: Vec<_> = batch.committed.iter().map(|c| c.proposal_id).collect();
    assert_eq!(committed, vec![proposal]);
    assert!(
        batch
            .outcomes
            .iter()
            .any(|o| o.proposal_id == proposal
                && matches!(o.result, ProposalResult::Committed { .. }))
    );
}

/// A follower cut off while the leader compacts catches up through a
/// snapshot sent in chunks, verified on a worker thread whose result an
/// inline node takes in by itself.
#[test]
fn a_lagging_inline_follower_catches_up_through_a_snapshot() {
    let mut cluster = Cluster::start("inline-snap", 3, |config| {
        inline(config);
        config.raft.compact_keep_entries = 10;
        config.snapshot.chunk_size = 256;
        config.log_level = LogLevel::Info;
    });
    let leader = cluster.elect();
    let lagging = if leader == 1 { 2 } else { 1 };
    let other = 6 - leader - lagging;
    commit(&mut cluster, 0..20, &[1, 2, 3]);
    for peer in [leader, other] {
        cluster.set_link(lagging, peer, Link::Drop);
        cluster.set_link(peer, lagging, Link::Drop);
    }
    commit(&mut cluster, 20..150, &[leader, other]);
    cluster.host_mut(leader).take_snapshot().unwrap();
    let snapshot_index = *cluster.host(leader).snapshots_taken.last().unwrap();
    commit(&mut cluster, 150..160, &[leader, other]);
    assert!(cluster.run_until(Duration::from_secs(10), |c| c
        .host(leader)
        .node()
        .status()
        .snapshot_index
        == snapshot_index));

    for peer in [leader, other] {
        cluster.set_link(lagging, peer, Link::Deliver);
        cluster.set_link(peer, lagging, Link::Deliver);
    }
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| c.host(lagging).applied.len()
            == 160),
        "the follower catches up"
    );
    let host = cluster.host(lagging);
    assert_eq!(host.restores.first().map(|r| r.0), Some(snapshot_index));
    assert_eq!(host.applied, cluster.host(leader).applied);

    // It restarts from the snapshot it received.
    cluster.restart(lagging).unwrap();
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| c.host(lagging).applied.len()
            == 160)
    );
}

/// A follower removed by a membership change stops counting; the two left
/// commit on their own.
#[test]
fn an_inline_cluster_removes_a_member_and_goes_on() {
    let mut cluster = Cluster::start("inline-member", 3, inline);
    let leader = cluster.elect();
    commit(&mut cluster, 0..5, &[1, 2, 3]);
    let removed = if leader == 3 { 2 } else { 3 };
    let change = cluster
        .host(leader)
        .node()
        .propose_conf_change(ConfChange::RemoveNode(removed))
        .unwrap();
    assert!(cluster.run_until(Duration::from_secs(10), |c| matches!(
        c.host(leader).outcomes.get(&change),
        Some(ProposalResult::Committed { .. })
    )));
    assert!(cluster.run_until(Duration::from_secs(10), |c| c
        .host(leader)
        .node()
        .status()
        .peers
        .iter()
        .all(|p| p.id != removed)));
    cluster.stop(removed);
    let rest: Vec<NodeId> = (1..=3).filter(|&id| id != removed).collect();
    commit(&mut cluster, 5..20, &rest);
    assert_eq!(cluster.host(leader).role, Role::Leader);
}

/// Inputs are checked before they reach the node's lock, as on a threaded
/// node.
#[test]
fn an_inline_node_refuses_bad_input() {
    let mut cluster = Cluster::start("inline-errors", 1, |config| {
        inline(config);
        config.raft.max_entry_bytes = 16;
    });
    cluster.elect();
    let node = cluster.host(1).node();
    assert!(matches!(
        node.propose(&[0; 17]),
        Err(NodeError::ProposalTooLarge { .. })
    ));
    assert!(matches!(
        node.step(&[0xee; 8]),
        Err(NodeError::MalformedMessage(_))
    ));
    assert!(matches!(
        node.ack_applied(1_000),
        Err(NodeError::NotDelivered { .. })
    ));
    assert!(matches!(
        node.begin_snapshot(1_000),
        Err(NodeError::NotApplied { .. })
    ));
}
