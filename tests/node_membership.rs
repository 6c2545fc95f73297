//! Membership changes seen from the node API, with message delivery under
//! the test's control.

mod node_support;

use embraft::core::{ConfChange, Role};
use embraft::node::{DropReason, ProposalResult};
use node_support::{Cluster, Link};
use std::time::Duration;

/// A leader that removes itself takes no proposal once the removal entry is
/// in its log (the core refuses it: `ProposeError::LeaderLeaving`): it gets
/// its outcome at once, dropped as by a node that does not lead. Once the
/// removal commits the leader steps down.
#[test]
fn a_removed_leader_drops_later_proposals() {
    let mut cluster = Cluster::start("removed-leader", 3, |_| {});
    let leader = cluster.elect();
    // No ticks from here on: no heartbeat or election may reorder the steps.
    cluster.ticking = false;
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    // Every follower acknowledges the new leader's no-op first. Otherwise a
    // follower the leader still probes would get no new entry until it
    // answered (and its answer is about to be held), and the held
    // acknowledgements below could be those of the no-op.
    assert!(cluster.run_until(Duration::from_secs(10), |c| {
        let status = c.host(leader).node().status();
        status.last_index >= 2
            && status.commit == status.last_index
            && status.peers.len() == followers.len()
            && status
                .peers
                .iter()
                .all(|p| p.match_index == status.last_index && p.replicating)
    }));
    let removal_index = cluster.host(leader).node().status().last_index + 1;

    // The followers take the removal entry; their acknowledgements wait.
    for &f in &followers {
        cluster.set_link(f, leader, Link::Hold);
    }
    let removal = cluster
        .host(leader)
        .node()
        .propose_conf_change(ConfChange::RemoveNode(leader))
        .unwrap();
    assert!(cluster.run_until(Duration::from_secs(10), |c| followers
        .iter()
        .all(|&f| c.held_ack_from(f) >= removal_index)));

    // A proposal after it never reaches the followers.
    for &f in &followers {
        cluster.set_link(leader, f, Link::Drop);
    }
    let later = cluster
        .host(leader)
        .node()
        .propose(b"after the removal")
        .unwrap();
    assert!(cluster.run_until(Duration::from_secs(10), |c| {
        c.host(leader).node().status().persisted >= c.host(leader).node().status().last_index
            && c.host(leader).node().status().last_index >= 2
    }));

    // The acknowledgements arrive: the removal commits and the leader steps
    // down; the later proposal was dropped.
    for &f in &followers {
        cluster.set_link(f, leader, Link::Deliver);
    }
    assert!(
        cluster.run_until(Duration::from_secs(10), |c| c
            .host(leader)
            .outcomes
            .contains_key(&removal)),
        "the removal never got an outcome"
    );
    let host = cluster.host(leader);
    assert!(matches!(
        host.outcomes.get(&removal),
        Some(ProposalResult::Committed { .. })
    ));
    assert!(matches!(
        host.outcomes[&later],
        ProposalResult::Dropped(DropReason::NotLeader { .. })
    ));
    assert_ne!(host.node().status().role, Role::Leader);
}
