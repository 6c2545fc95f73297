//! Scenarios with log compaction and snapshots: nodes snapshot their state
//! machine at random points and drop their log, leaders stream snapshots to
//! followers they can no longer catch up from the log, and nodes crash at
//! every step of installing one. The checker holds every snapshot to the
//! committed log and to the state every node had at its index.

use crate::cluster::{Cluster, Options, MAX_SLOTS};
use crate::membership_scenarios::membership_step;
use crate::network::NetFaults;
use crate::rng::SplitMix64;
use crate::scenarios::{churn_step, hostile_options, others, CHURN_STEP_KINDS, SLOW_DISK};
use crate::snapshot::Receiving;
use embraft::core::{Index, NodeId};

/// A random running node snapshots and compacts what it applied.
pub fn compaction_step(c: &mut Cluster) {
    let up = c.up_nodes();
    if !up.is_empty() {
        let id = c.pick_one(&up);
        c.compact(id);
    }
}

const SNAPSHOT_CHURN_ROUNDS: usize = 1000;

scenario! {
    /// The churn of `membership_changes_under_faults` (crashes on slow
    /// disks, partitions, cut links, a lossy network, transfers, reads,
    /// proposals, membership changes) while random nodes snapshot and
    /// compact at random points, keeping few entries, so that lagging and
    /// new nodes catch up through snapshots. Every check holds, and once
    /// the faults heal the cluster recovers.
    fn snapshots_under_faults(rng: SplitMix64) {
        let founders = rng.between(1, 5) as usize;
        let mut opts = hostile_options(&mut rng, founders);
        opts.slots = MAX_SLOTS;
        opts.pre_vote = true;
        opts.check_quorum = true;
        opts.compact_keep_entries = rng.below(4);
        let membership = rng.chance(0.5);
        let mut c = Cluster::new(rng, opts);
        let mut compactions = 0;
        for _ in 0..SNAPSHOT_CHURN_ROUNDS {
            let roll = c.rng.below(CHURN_STEP_KINDS + 12);
            match roll.checked_sub(CHURN_STEP_KINDS) {
                Some(extra @ 0..=3) if membership => membership_step(&mut c, extra),
                Some(4..=7) => {
                    compaction_step(&mut c);
                    compactions += 1;
                }
                _ => churn_step(&mut c, roll),
            }
        }
        assert!(compactions > 0, "the run took no snapshot");
        c.heal_and_check_liveness();
        // Everyone compacts, and the cluster goes on from its snapshots.
        for id in c.members() {
            c.compact(id);
        }
        c.heal_and_check_liveness();
    }
}

/// Cuts `follower` off (or crashes it), commits `entries` without it, and
/// compacts every other running member past what it holds. Returns the
/// last index committed.
fn leave_behind(c: &mut Cluster, follower: NodeId, crash: bool, entries: usize) -> Index {
    if crash {
        c.crash(follower);
    } else {
        c.net.isolate(follower);
    }
    let mut last = 0;
    for _ in 0..entries {
        last = c.commit_one().0;
    }
    let rest: Vec<NodeId> = others(c, &[follower]);
    c.await_applied_by(&rest, last);
    for id in rest {
        c.compact(id);
    }
    last
}

scenario! {
    /// A follower cut off (or down) while the others commit and compact
    /// past everything it holds catches up through a snapshot, on a
    /// reliable or a lossy network: it applies all that was committed, and
    /// installed at least one snapshot to get there.
    fn lagging_follower_catches_up_through_a_snapshot(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let crash = rng.chance(0.5);
        let lossy = rng.chance(0.5);
        let mut opts = Options::new(nodes);
        opts.compact_keep_entries = rng.below(4);
        let mut c = Cluster::new(rng, opts);
        let leader = c.await_stable_leader();
        c.commit_one();
        let candidates = others(&c, &[leader]);
        let follower = c.pick_one(&candidates);
        let entries = c.rng.between(5, 20) as usize;
        let last = leave_behind(&mut c, follower, crash, entries);
        if lossy {
            c.net.set_faults(NetFaults { drop: 0.1, ..NetFaults::UNRELIABLE });
        }
        if crash {
            c.restart(follower);
        }
        c.net.heal();
        c.await_applied_by(&[follower], last);
        assert!(c.installs(follower) > 0, "follower {follower} caught up without a snapshot");
        c.heal_and_check_liveness();
    }
}

/// The steps of installing a snapshot, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Some chunks received (in memory), not all.
    ChunksPartlyReceived,
    /// All received and verified; the file is being written.
    FileBeingWritten,
    /// The file is on disk and the core took it; its record in the log is
    /// not durable yet.
    FileComplete,
    /// The record is durable: recovery must restore from the snapshot,
    /// whether or not the host had restored its state machine yet.
    Recorded,
}

const STEPS: [Step; 4] = [
    Step::ChunksPartlyReceived,
    Step::FileBeingWritten,
    Step::FileComplete,
    Step::Recorded,
];

scenario! {
    /// A follower that must catch up through a snapshot crashes at a step
    /// of installing it. Restarted, it is in the old state (its former
    /// snapshot and log) or the new one (the snapshot and nothing of the
    /// log before it), never a mix, as its step dictates; its state
    /// machine is the one every node had at its index; then it catches up.
    fn crash_at_every_step_of_installing_a_snapshot(rng: SplitMix64) {
        let step = STEPS[rng.below(STEPS.len() as u64) as usize];
        let mut opts = Options::new(3);
        opts.compact_keep_entries = rng.below(3);
        opts.disk = SLOW_DISK;
        let mut c = Cluster::new(rng, opts);
        let leader = c.await_stable_leader();
        let candidates = others(&c, &[leader]);
        let follower = c.pick_one(&candidates);
        // At times the follower already holds an older snapshot.
        if c.rng.chance(0.5) {
            let (index, _) = c.commit_one();
            c.await_applied_everywhere(index);
            c.compact(follower);
            c.run_ticks(5);
        }
        let old = c.recorded_snapshot(follower);
        let entries = c.rng.between(3, 10) as usize;
        let last = leave_behind(&mut c, follower, false, entries);
        let new = c.node(leader).status().snapshot_index;
        assert!(new > old, "the leader compacted through {new}, not past {old}");
        c.net.heal();
        let installs = c.installs(follower);
        let reached = |c: &Cluster| match step {
            Step::ChunksPartlyReceived => matches!(c.receiving(follower), Receiving::Assembling(_)),
            Step::FileBeingWritten => matches!(c.receiving(follower), Receiving::WritingFile),
            Step::FileComplete => matches!(c.receiving(follower), Receiving::Recording(_)),
            Step::Recorded => c.installs(follower) > installs,
        };
        let budget = c.options().election_budget();
        assert!(c.run_until_event(budget, reached), "follower {follower} never reached {step:?}");
        c.crash(follower);
        let recorded = c.recorded_snapshot(follower);
        let expected = if step == Step::Recorded { new } else { old };
        assert_eq!(recorded, expected, "crashed at {step:?}, the disk records a snapshot at {recorded}");
        c.restart(follower);
        assert_eq!(
            c.node(follower).status().snapshot_index,
            expected,
            "restarted after a crash at {step:?}, the node starts from another snapshot"
        );
        c.await_applied_by(&[follower], last);
        assert!(c.installs(follower) > installs, "follower {follower} caught up without a snapshot");
        c.heal_and_check_liveness();
    }
}
