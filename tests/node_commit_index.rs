//! A hard state that only advances the commit index is written without a
//! sync of its own, so a crash may recover an older commit index than the
//! host applied. These tests plant that older commit index in a stopped
//! node's WAL (as a crash before the next sync would leave it) and start
//! the node again.

mod node_support;

use embraft::core::{HardState, Role};
use embraft::node::{Node, NodeError};
use embraft::wal::{Wal, WalOptions};
use node_support::{commit, Cluster};
use std::time::Duration;

const ENTRIES: u32 = 20;

/// A one-node cluster that committed and applied `ENTRIES` entries, then
/// stopped with its latest commit index replaced by `lost_commit`.
/// Returns the cluster and the index its host had applied.
fn stopped_with_commit_index(name: &str, lost_commit: u64) -> (Cluster, u64) {
    let mut cluster = Cluster::start(name, 1, |_| {});
    commit(&mut cluster, 0..ENTRIES, &[1]);
    let applied = cluster.host(1).last_applied;
    cluster.stop(1);
    let dir = cluster.host(1).dir.clone();
    let (wal, recovered) = Wal::open(&dir, WalOptions::default()).expect("WAL opens");
    assert!(recovered.hard_state.commit >= applied);
    let stale = HardState {
        commit: lost_commit,
        ..recovered.hard_state
    };
    wal.append(&[], Some(&stale)).expect("hard state written");
    drop(wal);
    (cluster, applied)
}

#[test]
fn the_hosts_applied_index_raises_a_commit_index_lost_in_a_crash() {
    let (mut cluster, applied) = stopped_with_commit_index("commit-lost", 1);
    let mut config = cluster.host(1).config.clone();
    config.applied = applied;
    let node = Node::new(config).expect("starts with applied beyond the recovered commit");
    let status = node.status();
    assert!(
        status.commit >= applied,
        "commit {} raised to the applied index {applied}",
        status.commit
    );
    assert_eq!(status.applied, applied);
    // Nothing at or below the applied index is delivered again; a new
    // entry is.
    let host = cluster.host_mut(1);
    host.node = Some(node);
    host.applied.clear();
    host.last_applied = applied;
    // Until its first batch says otherwise, so `commit` waits for the
    // restarted node to lead.
    host.role = Role::Follower;
    host.leader = 0;
    commit(&mut cluster, 0..1, &[1]);
    let delivered: Vec<u64> = cluster.host(1).applied.iter().map(|e| e.0).collect();
    assert_eq!(delivered.len(), 1, "only the new entry: {delivered:?}");
    assert!(delivered[0] > applied);
}

#[test]
fn a_node_restarted_with_nothing_applied_commits_its_log_again() {
    let (mut cluster, applied) = stopped_with_commit_index("commit-relearned", 1);
    cluster.restart(1).expect("restarts from its directory");
    assert!(
        cluster.run_until(Duration::from_secs(10), |c| c.host(1).last_applied
            >= applied),
        "the entries past the recovered commit index are committed and delivered again"
    );
    assert_eq!(cluster.host(1).applied.len(), ENTRIES as usize);
}

#[test]
fn an_applied_index_beyond_the_recovered_log_is_refused() {
    let (cluster, applied) = stopped_with_commit_index("commit-beyond", 1);
    let mut config = cluster.host(1).config.clone();
    config.applied = applied + 1;
    match Node::new(config) {
        Err(NodeError::InvalidConfig(why)) => {
            assert!(why.contains("beyond the recovered log"), "{why}")
        }
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
}
