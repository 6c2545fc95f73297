//! Scenarios that change the membership: nodes join as blank joiners (no
//! membership yet), become learners and voters, and leave, by single-step
//! and joint changes, while faults strike. The checker replays every
//! committed change and judges quorums by the membership in force; each
//! scenario asserts the progress it expects once the faults heal.

use crate::cluster::{Cluster, Options, MAX_SLOTS};
use crate::membership::Members;
use crate::network::NetFaults;
use crate::rng::SplitMix64;
use crate::scenarios::{
    churn_step, election_timeouts, hostile_options, CHURN_STEP_KINDS, SLOW_DISK,
};
use embraft::core::{ConfChange, EntryKind, NodeId, ProposeError, Role};

/// Nodes that may be added: running blank joiners, never members.
fn joiners(c: &Cluster, m: &Members) -> Vec<NodeId> {
    c.ids()
        .into_iter()
        .filter(|&id| !m.contains(id) && c.is_blank(id))
        .collect()
}

/// Removed nodes whose data may go: no membership a node may still decide
/// by counts them.
fn forgotten(c: &Cluster) -> Vec<NodeId> {
    c.ids()
        .into_iter()
        .filter(|&id| !c.is_blank(id) && c.is_forgotten(id))
        .collect()
}

/// A random membership change from `m`, the membership in force on the
/// leader: single-step or joint, growing or shrinking, the leader's own
/// removal included. Joint targets take joiners straight in as voters at
/// times, since the core leaves that check to the host.
fn random_change(c: &mut Cluster, m: &Members) -> ConfChange {
    let joiners = joiners(c, m);
    let members = m.members();
    let learners: Vec<NodeId> = m.learners.iter().copied().collect();
    match c.rng.below(6) {
        0 | 1 if !joiners.is_empty() => ConfChange::AddLearner(c.pick_one(&joiners)),
        0..=2 if !learners.is_empty() => ConfChange::PromoteLearner(c.pick_one(&learners)),
        2 if !joiners.is_empty() => ConfChange::AddVoter(c.pick_one(&joiners)),
        3 => ConfChange::RemoveNode(c.pick_one(&members)),
        _ => {
            let mut pool = members;
            pool.extend(joiners);
            let size = c.rng.between(1, pool.len() as u64) as usize;
            let voters = c.pick(&pool, size);
            let rest: Vec<NodeId> = pool.into_iter().filter(|id| !voters.contains(id)).collect();
            let learners = rest.into_iter().filter(|_| c.rng.chance(0.3)).collect();
            ConfChange::EnterJoint { voters, learners }
        }
    }
}

/// Proposes `change` on `leader` and checks the answer against the
/// checker's model of membership: the core takes exactly the changes the
/// model finds valid (unless an earlier change or a transfer is pending),
/// and refuses to promote a learner the leader knows to lag behind its
/// commit index, which is all it promises about promotions.
fn propose_checked(c: &mut Cluster, leader: NodeId, change: &ConfChange) {
    let m = c.membership_of(leader);
    let expected = m.after(change);
    let behind = match *change {
        ConfChange::AddVoter(id) | ConfChange::PromoteLearner(id) => {
            m.is_learner(id) && !c.caught_up(leader, id)
        }
        _ => false,
    };
    let result = c.propose_conf_change(leader, change);
    match (&expected, &result) {
        (Err(why), Ok(_)) => {
            panic!("leader {leader} took {change:?}, invalid against {m:?}: {why}")
        }
        (Ok(_), Err(ProposeError::ConfChange(e))) => {
            panic!("leader {leader} refused {change:?}, valid against {m:?}: {e}")
        }
        _ => {}
    }
    match result {
        Ok(_) => assert!(
            !behind,
            "leader {leader} promoted a learner behind it: {change:?}"
        ),
        Err(ProposeError::LearnerBehind { matched, commit }) => assert!(
            behind && matched < commit,
            "leader {leader} refused {change:?} as behind ({matched} < {commit}) \
             though it had caught up"
        ),
        Err(_) => {}
    }
}

/// A membership change on the leader (if any), or a removed node leaving
/// for good and a blank joiner taking its slot.
pub fn membership_step(c: &mut Cluster, roll: u64) {
    if roll == 0 {
        let gone = forgotten(c);
        if !gone.is_empty() {
            let id = c.pick_one(&gone);
            c.replace(id);
        }
    } else if let Some(leader) = c.leader() {
        let m = c.membership_of(leader);
        let change = random_change(c, &m);
        propose_checked(c, leader, &change);
    }
}

const MEMBERSHIP_CHURN_ROUNDS: usize = 1000;

scenario! {
    /// Random membership changes, single-step and joint, between one and
    /// seven voters, with learners, while the churn of `scenarios::churn`
    /// goes on (crashes on slow disks, partitions, cut links, a lossy
    /// network, transfers, reads, proposals). Removed nodes keep running
    /// until a blank joiner takes their slot. The checker holds throughout,
    /// every answer to a change matches the model of membership, and once
    /// the faults heal the final membership elects, commits, applies, and
    /// takes one more change.
    fn membership_changes_under_faults(rng: SplitMix64) {
        let founders = rng.between(1, 4) as usize;
        let mut opts = hostile_options(&mut rng, founders);
        opts.slots = MAX_SLOTS;
        // What keeps a removed node that missed its removal from stealing
        // votes forever (docs/MEMBERSHIP.md).
        opts.pre_vote = true;
        opts.check_quorum = true;
        let mut c = Cluster::new(rng, opts);
        for _ in 0..MEMBERSHIP_CHURN_ROUNDS {
            let roll = c.rng.below(CHURN_STEP_KINDS + 10);
            match roll.checked_sub(CHURN_STEP_KINDS) {
                Some(extra @ 0..=3) => membership_step(&mut c, extra),
                _ => churn_step(&mut c, roll),
            }
        }
        c.heal_and_check_liveness();
        let leader = c.await_stable_leader();
        let m = c.membership_of(leader);
        let change = loop {
            let change = random_change(&mut c, &m);
            if m.after(&change).is_ok() {
                break change;
            }
        };
        c.change_membership(&change);
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// The cluster walks from one voter to seven and back to one, twice,
    /// by single-step changes (learner first, promoted once caught up; or
    /// a voter added straight away) and joint ones, while proposals go on
    /// over a lossy network and a random voter is down during each change
    /// whenever the cluster can spare it. Every change must take effect.
    fn voters_from_one_to_seven_and_back(rng: SplitMix64) {
        let mut opts = Options::new(1);
        opts.slots = MAX_SLOTS;
        opts.disk = SLOW_DISK;
        let mut c = Cluster::new(rng, opts);
        for _ in 0..2 {
            for target in (2..=MAX_SLOTS).chain((1..MAX_SLOTS).rev()) {
                walk_one_step(&mut c, target);
                c.heal_and_check_liveness();
                let voters = c.membership().voters().len();
                assert_eq!(voters, target, "the walk reached {voters} voters, not {target}");
            }
        }
    }
}

/// Changes the membership from its current voters to `target` voters (one
/// more or one fewer) by a random kind of change, with a random voter down
/// meanwhile if the memberships on the way keep a quorum without it.
fn walk_one_step(c: &mut Cluster, target: usize) {
    // Removed nodes leave for good as soon as they may.
    for id in forgotten(c) {
        c.replace(id);
    }
    let lossy = NetFaults {
        drop: 0.05,
        ..NetFaults::UNRELIABLE
    };
    c.net.set_faults(lossy);
    let m = c.membership().clone();
    let voters = m.voters();
    let steps: Vec<ConfChange> = if target > voters.len() {
        let joiners = joiners(c, &m);
        let new = c.pick_one(&joiners);
        match c.rng.below(3) {
            0 => vec![ConfChange::AddLearner(new), ConfChange::PromoteLearner(new)],
            1 => vec![ConfChange::AddVoter(new)],
            _ => {
                let mut target = voters.clone();
                target.push(new);
                vec![ConfChange::EnterJoint {
                    voters: target,
                    learners: vec![],
                }]
            }
        }
    } else {
        let gone = c.pick_one(&voters);
        let rest: Vec<NodeId> = voters.iter().copied().filter(|&id| id != gone).collect();
        match c.rng.below(3) {
            0 => vec![ConfChange::RemoveNode(gone)],
            1 => vec![ConfChange::EnterJoint {
                voters: rest,
                learners: vec![],
            }],
            // The removed voter stays on as a learner for a while.
            _ => vec![
                ConfChange::EnterJoint {
                    voters: rest,
                    learners: vec![gone],
                },
                ConfChange::RemoveNode(gone),
            ],
        }
    };
    // Every membership on the way, joint ones included.
    let mut on_the_way = vec![m.clone()];
    for change in &steps {
        let next = on_the_way
            .last()
            .expect("not empty")
            .after(change)
            .expect("valid");
        if next.is_joint() {
            on_the_way.push(next.clone());
            on_the_way.push(next.after(&ConfChange::LeaveJoint).expect("joint"));
        } else {
            on_the_way.push(next);
        }
    }
    let down = c.pick_one(&voters);
    let spared = on_the_way.iter().all(|m| m.is_quorum(|id| id != down));
    if spared {
        c.crash(down);
    }
    for change in &steps {
        if let ConfChange::PromoteLearner(new) = *change {
            let caught_up = |c: &Cluster| c.stable_leader().is_some_and(|l| c.caught_up(l, new));
            let budget = c.options().election_budget();
            assert!(
                c.run_until(budget, caught_up),
                "learner {new} never caught up"
            );
        }
        c.change_membership(change);
        for _ in 0..3 {
            if let Some(leader) = c.leader() {
                let _ = c.propose(leader);
            }
            c.run_ticks(1);
        }
    }
    if spared {
        c.restart(down);
    }
}

scenario! {
    /// A leader removes itself, by a single-step or a joint change, while
    /// proposals go on: it keeps leading until the change is in force on
    /// it, then steps down, never leads again though it keeps running, and
    /// the remaining voters elect a leader among themselves that commits.
    fn removed_leader_steps_down(rng: SplitMix64) {
        let nodes = rng.between(2, 5) as usize;
        let joint = rng.chance(0.5);
        let mut opts = Options::new(nodes);
        opts.slots = nodes + 1;
        let mut c = Cluster::new(rng, opts);
        let old = c.await_stable_leader();
        c.commit_one();
        let m = c.membership().clone();
        let change = if joint {
            let mut voters: Vec<NodeId> = m.voters().into_iter().filter(|&id| id != old).collect();
            // At times the joint change also brings in the blank joiner.
            voters.extend(joiners(&c, &m).into_iter().filter(|_| c.rng.chance(0.5)));
            ConfChange::EnterJoint { voters, learners: vec![] }
        } else {
            ConfChange::RemoveNode(old)
        };
        c.propose_conf_change(old, &change).expect("the leader takes the change");
        // Removed in one step, the leader takes nothing more; a joint
        // change leaves it an outgoing voter until the joint configuration
        // is left.
        for _ in 0..3 {
            let result = c.propose(old);
            if joint {
                result.expect("an outgoing voter leads on");
            } else {
                assert_eq!(result, Err(ProposeError::LeaderLeaving));
            }
        }
        let budget = c.options().election_budget();
        let stepped_down = c.run_until_event(budget, |c| c.node(old).role() != Role::Leader);
        assert!(stepped_down, "the removed leader still leads after {budget} ticks");
        assert!(
            !c.membership_of(old).is_voter(old),
            "leader {old} stepped down before its removal was in force"
        );
        let last = c.last_entry(old);
        assert_eq!(
            (last.kind, last.index),
            (EntryKind::ConfChange, c.node(old).commit_index()),
            "leader {old} took entries beyond the change that removed it"
        );
        let new = c.await_stable_leader();
        assert!(c.membership().is_voter(new), "leader {new} is no voter");
        let term = c.node(new).term();
        c.commit_one();
        let quiet = election_timeouts(&c, 5);
        let led_again = c.run_until(quiet, |c| c.node(old).role() == Role::Leader);
        assert!(!led_again, "the removed leader {old} led again");
        assert_eq!(c.node(new).term(), term, "the removed leader disturbed the new one");
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// A voter is removed while it learns of it, while it is cut off, or
    /// while it is down; then it keeps running and ticking for many
    /// election timeouts. One that missed its removal still believes it
    /// votes and campaigns, but it raises no member's term, deposes no
    /// leader, and the cluster commits as before.
    fn removed_node_does_not_disrupt(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        // Pre-vote and check-quorum (the defaults) are what keep it quiet
        // (docs/MEMBERSHIP.md).
        let opts = Options::new(nodes);
        let how = rng.below(3);
        let mut c = Cluster::new(rng, opts);
        let leader = c.await_stable_leader();
        c.commit_one();
        let candidates = crate::scenarios::others(&c, &[leader]);
        let removed = c.pick_one(&candidates);
        match how {
            0 => {}
            1 => c.net.isolate(removed),
            _ => c.crash(removed),
        }
        c.change_membership(&ConfChange::RemoveNode(removed));
        if !c.is_up(removed) {
            c.restart(removed);
        }
        c.net.heal();
        let leader = c.await_stable_leader();
        let term = c.node(leader).term();
        for _ in 0..5 {
            let timeouts = election_timeouts(&c, 2);
            c.run_ticks(timeouts);
            assert_ne!(c.node(removed).role(), Role::Leader, "the removed node leads");
            c.commit_one();
        }
        assert_eq!(c.stable_leader(), Some(leader), "the removed node deposed the leader");
        for id in c.membership().voters() {
            assert_eq!(c.node(id).term(), term, "node {id} left term {term}");
        }
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// A learner cut off while the cluster commits falls behind; the leader
    /// knows it (its match index is below the commit index) and refuses to
    /// promote it, by promotion or by adding it as a voter, and the
    /// membership stays as it was. Once the learner is back and has caught
    /// up, the promotion goes through, singly or in a joint change, and the
    /// new voter counts in the quorum.
    fn learner_promoted_only_after_catching_up(rng: SplitMix64) {
        let joint = rng.chance(0.5);
        let mut opts = Options::new(3);
        opts.slots = 4;
        let mut c = Cluster::new(rng, opts);
        c.await_stable_leader();
        let learner = 4;
        c.change_membership(&ConfChange::AddLearner(learner));
        c.net.isolate(learner);
        for _ in 0..3 {
            c.commit_one();
        }
        let leader = c.await_stable_leader();
        assert!(!c.caught_up(leader, learner), "the cut-off learner caught up");
        let before = c.membership().clone();
        for change in [ConfChange::PromoteLearner(learner), ConfChange::AddVoter(learner)] {
            match c.propose_conf_change(leader, &change) {
                Err(ProposeError::LearnerBehind { matched, commit }) => assert!(matched < commit),
                other => panic!("leader {leader} answered {other:?} to {change:?} of a lagging learner"),
            }
        }
        let timeouts = election_timeouts(&c, 2);
        c.run_ticks(timeouts);
        assert_eq!(*c.membership(), before, "a refused promotion changed the membership");

        c.net.heal();
        let budget = c.options().election_budget();
        let caught_up = |c: &Cluster| c.stable_leader().is_some_and(|l| c.caught_up(l, learner));
        assert!(c.run_until(budget, caught_up), "the learner never caught up");
        let change = if joint {
            let mut voters = before.voters();
            voters.push(learner);
            ConfChange::EnterJoint { voters, learners: vec![] }
        } else {
            ConfChange::PromoteLearner(learner)
        };
        c.change_membership(&change);
        assert!(c.membership().is_voter(learner));

        // Four voters need three: with two of the old voters cut off, the
        // new voter's answers are needed to commit.
        let leader = c.await_stable_leader();
        let old: Vec<NodeId> = before.voters().into_iter().filter(|&id| id != leader).collect();
        let away = c.pick_one(&old);
        c.net.isolate(away);
        let (index, _) = c.commit_one();
        c.await_applied_by(&[learner], index);
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// A voter that missed two membership changes catches up on them in a
    /// write too large for one append, and crashes once the first part,
    /// holding both changes, is durable: it must restart knowing both
    /// committed (docs/ARCHITECTURE.md, the ready contract). Were it to
    /// recover the founding membership, it could win an election by the
    /// vote of the other founder that missed the later entries, while the
    /// leader goes on with the new voters: two quorums that do not meet,
    /// which the checker catches as soon as either commits.
    fn voter_crashes_while_catching_up_on_changes(rng: SplitMix64) {
        let mut opts = Options::new(3);
        opts.slots = 5;
        opts.disk = SLOW_DISK;
        let mut c = Cluster::new(rng, opts);
        let leader = c.await_stable_leader();
        c.commit_one();
        let followers = crate::scenarios::others(&c, &[leader, 4, 5]);
        let lagging = c.pick_one(&followers);
        let other = if followers[0] == lagging { followers[1] } else { followers[0] };
        c.net.isolate(lagging);
        c.change_membership(&ConfChange::AddVoter(4));
        c.change_membership(&ConfChange::AddVoter(5));
        let leader = c.await_stable_leader();
        let (changes_end, _) = c.commit_one();
        // The other founder misses what follows; the new voters make the
        // quorum.
        c.net.partition(&[&[leader, 4, 5]]);
        let more = c.rng.between(2, 5);
        for _ in 0..more {
            c.commit_one();
        }
        assert_eq!(c.membership_of(leader).voters().len(), 5, "the changes are in force");
        // The lagging voter catches up from the leader, and loses power
        // once part of its write is durable.
        c.net.partition(&[&[leader, 4, 5, lagging]]);
        let budget = c.options().election_budget();
        let landed = c.run_until_event(budget, |c| {
            c.durable_term_at(lagging, changes_end).is_some()
        });
        assert!(landed, "node {lagging} never caught up");
        c.crash(lagging);
        c.net.partition(&[&[leader, 4, 5], &[lagging, other]]);
        c.restart(lagging);
        let timeouts = election_timeouts(&c, 4);
        for _ in 0..timeouts {
            if let Some(l) = c.leader() {
                let _ = c.propose(l);
            }
            c.run_ticks(1);
        }
        c.heal_and_check_liveness();
    }
}
