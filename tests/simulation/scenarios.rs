//! The scenarios, in the spirit of the Raft paper and the well-known Raft
//! lab suites. Each is a `#[test]` run under many seeds (see `seeds.rs`);
//! the checker enforces safety throughout, and each scenario asserts the
//! progress it expects.

use crate::cluster::{Cluster, Options, TICK};
use crate::disk::DiskTiming;
use crate::network::NetFaults;
use crate::rng::{scenario_stream, SplitMix64};
use embraft::core::{NodeId, ProposeError, Role};

pub fn others(c: &Cluster, excluded: &[NodeId]) -> Vec<NodeId> {
    c.ids()
        .into_iter()
        .filter(|id| !excluded.contains(id))
        .collect()
}

pub fn election_timeouts(c: &Cluster, n: u64) -> u64 {
    u64::from(c.options().election_tick) * n
}

fn propose_at_leader(c: &mut Cluster) {
    if let Some(leader) = c.leader() {
        let _ = c.propose(leader);
    }
}

/// Asks one of `ids`, at random, for a read point (the checker verifies it).
fn read_at_random(c: &mut Cluster, ids: &[NodeId]) {
    let id = c.pick_one(ids);
    c.read(id);
}

/// Heals everything, then every node of `ids` must get a read point.
fn heal_and_read_everywhere(c: &mut Cluster, ids: &[NodeId]) {
    c.heal_and_check_liveness();
    for &id in ids {
        c.await_read(id);
    }
}

scenario! {
    /// A new cluster elects one leader, and with nothing going wrong keeps
    /// it: no node starts another election.
    fn initial_election(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let mut c = Cluster::new(rng, Options::new(nodes));
        let leader = c.await_stable_leader();
        let term = c.node(leader).term();
        let quiet = election_timeouts(&c, 5);
        c.run_ticks(quiet);
        assert_eq!(c.stable_leader(), Some(leader), "leadership moved on a healthy network");
        for id in c.ids() {
            assert_eq!(c.node(id).term(), term, "node {id} left term {term} on a healthy network");
        }
    }
}

scenario! {
    /// Losing the leader elects another; the old leader rejoins as a
    /// follower; without a quorum nobody leads; with one back, someone does.
    fn reelection_after_leader_loss(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(3));
        let first = c.await_stable_leader();

        // A stable leader needs a quorum it can reach: this awaits a new one.
        c.net.isolate(first);
        c.await_stable_leader();

        c.net.heal();
        let timeouts = election_timeouts(&c, 2);
        c.run_ticks(timeouts);
        assert_ne!(c.node(first).role(), Role::Leader, "the old leader did not step down");
        assert!(c.stable_leader().is_some(), "the rejoined cluster lost its leader");

        let current = c.await_stable_leader();
        let bystander = others(&c, &[current])[0];
        c.net.partition(&[]);
        let timeouts = election_timeouts(&c, 4);
        c.run_ticks(timeouts);
        assert_eq!(c.leader(), None, "a node leads with every link cut");

        c.net.partition(&[&[current, bystander]]);
        c.await_stable_leader();
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Seven nodes; again and again three random nodes are cut off, and the
    /// remaining four elect (or keep) a leader among themselves (a stable
    /// leader needs a quorum it can reach, so it is one of the four).
    fn many_elections_with_minorities_cut_off(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(7));
        c.await_stable_leader();
        for _ in 0..10 {
            let ids = c.ids();
            let cut = c.pick(&ids, 3);
            let majority = others(&c, &cut);
            c.net.partition(&[&majority]);
            c.await_stable_leader();
            c.net.heal();
        }
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Proposals commit one after another at consecutive indexes, and every
    /// node applies them.
    fn basic_agreement(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let mut c = Cluster::new(rng, Options::new(nodes));
        c.await_stable_leader();
        c.await_leader_commits_its_log();
        let mut last = c.committed_len();
        for _ in 0..5 {
            let (index, _) = c.commit_one();
            assert_eq!(index, last + 1, "a proposal on a healthy cluster skipped an index");
            c.await_applied_everywhere(index);
            last = index;
        }
    }
}

scenario! {
    /// With one follower of three down or cut off, the other two still
    /// commit; the follower catches up when it is back.
    fn agreement_with_follower_down(rng: SplitMix64) {
        let crash = rng.chance(0.5);
        let mut c = Cluster::new(rng, Options::new(3));
        let leader = c.await_stable_leader();
        let (index, _) = c.commit_one();
        c.await_applied_everywhere(index);

        let follower = others(&c, &[leader])[0];
        if crash {
            c.crash(follower);
        } else {
            c.net.isolate(follower);
        }
        let alive = others(&c, &[follower]);
        let mut last = index;
        for _ in 0..3 {
            let (index, _) = c.commit_one();
            c.await_applied_by(&alive, index);
            last = index;
        }

        if crash {
            c.restart(follower);
        } else {
            c.net.heal();
        }
        c.await_applied_everywhere(last);
        let (index, _) = c.commit_one();
        c.await_applied_everywhere(index);
    }
}

scenario! {
    /// Five nodes; with three followers cut off, the leader's proposal does
    /// not commit. Once they are back, the cluster commits again.
    fn no_agreement_without_quorum(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(5));
        let leader = c.await_stable_leader();
        c.commit_one();
        let ids = c.ids();
        let candidates = others(&c, &[leader]);
        let partner = c.pick_one(&candidates);
        c.net.partition(&[&[leader, partner]]);
        let (index, term) = c.propose(leader).expect("the leader takes proposals");
        let timeouts = election_timeouts(&c, 5);
        c.run_ticks(timeouts);
        assert!(
            !c.is_committed(index, term),
            "index {index} committed with only 2 of {} nodes reachable",
            ids.len()
        );
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Several proposals taken in one instant get consecutive indexes in one
    /// term, and all of them commit.
    fn concurrent_proposals(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(3));
        let leader = c.await_stable_leader();
        let proposals: Vec<_> = (0..5)
            .map(|_| c.propose(leader).expect("the leader takes proposals"))
            .collect();
        for pair in proposals.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1, "concurrent proposals got {pair:?}");
            assert_eq!(pair[1].1, pair[0].1, "concurrent proposals got {pair:?}");
        }
        let (last, term) = *proposals.last().expect("five proposals");
        c.await_applied_everywhere(last);
        for &(index, _) in &proposals {
            assert!(c.is_committed(index, term), "proposal at {index} was lost");
        }
    }
}

scenario! {
    /// A leader cut off from the others takes proposals it can never
    /// commit; the others move on. When it rejoins, its entries are
    /// discarded, never applied.
    fn deposed_leader_rejoins(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(3));
        let first = c.await_stable_leader();
        c.commit_one();

        c.net.isolate(first);
        let stranded: Vec<_> = (0..3)
            .map(|_| c.propose(first).expect("the cut-off leader still takes proposals"))
            .collect();
        let second = c.await_stable_leader();
        c.commit_one();

        // The second leader is cut off in turn; the first rejoins the third
        // node, which must lead (the first's log is behind).
        let third = others(&c, &[first, second])[0];
        c.net.partition(&[&[first, third]]);
        assert_eq!(c.await_stable_leader(), third);
        c.commit_one();

        c.heal_and_check_liveness();
        for (index, term) in stranded {
            assert!(
                !c.is_committed(index, term),
                "the deposed leader's uncommitted entry {index} (term {term}) was committed"
            );
        }
    }
}

/// How many entries the deposed leader holds that the new leader does not.
const DIVERGED_ENTRIES: usize = 50;

scenario! {
    /// A follower whose log diverges from the leader's over 50 entries is
    /// repaired in a handful of round trips: the rejection hint lets the
    /// leader skip a whole term's worth of entries at once, where decrementing
    /// one index per rejection would take about 50.
    fn fast_backup_over_diverged_entries(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(3));
        let stale = c.await_stable_leader();
        c.commit_one();

        // The cut-off leader takes 50 entries it can never commit; the
        // others commit 50 different ones.
        c.net.isolate(stale);
        for _ in 0..DIVERGED_ENTRIES {
            c.propose(stale).expect("the cut-off leader still takes proposals");
        }
        let leader = c.await_stable_leader();
        for _ in 0..DIVERGED_ENTRIES {
            c.propose(leader).expect("the leader takes proposals");
        }
        let majority = others(&c, &[stale]);
        let last = c.node(leader).status().last_index;
        c.await_applied_by(&majority, last);

        // The stale node rejoins a node that becomes leader only now, so it
        // knows nothing of the stale log and probes from its own last index.
        let repairer = others(&c, &[stale, leader])[0];
        c.net.partition(&[&[repairer, stale]]);
        c.net.stats = Default::default();
        assert_eq!(c.await_stable_leader(), repairer);
        c.await_leader_commits_its_log();
        let last = c.committed_len();
        c.await_applied_by(&[stale], last);
        let rejections = c.net.stats.rejected_appends;
        assert!(
            rejections <= 4,
            "repairing {DIVERGED_ENTRIES} diverged entries took {rejections} rejected appends"
        );
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Message counts stay within small bounds on a healthy network.
    /// Electing a leader: each campaign asks every peer once and gets at most
    /// one answer per question, and nodes campaign no more often than their
    /// election timeouts allow. Committing ten proposals made at once: per
    /// follower and proposal, at most an append carrying it and one carrying
    /// the commit index that follows, plus what heartbeats cost.
    fn message_counts(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(3));
        let peers = (c.ids().len() - 1) as u64;
        c.await_stable_leader();
        let stats = &c.net.stats;
        let (pre_votes, votes) = (stats.count(&["PreVote"]), stats.count(&["Vote"]));
        let pre_vote_answers = stats.count(&["PreVoteResponse"]);
        let vote_answers = stats.count(&["VoteResponse"]);
        assert_eq!(pre_votes % peers, 0, "{pre_votes} pre-vote requests to {peers} peers");
        assert!(votes <= pre_votes, "{votes} vote requests after {pre_votes} pre-vote requests");
        assert!(pre_vote_answers <= pre_votes && vote_answers <= votes, "more answers than questions");
        let campaigns = pre_votes / peers;
        let timeouts = c.ticks() / u64::from(c.options().election_tick) + 1;
        assert!(
            campaigns <= (peers + 1) * timeouts,
            "{campaigns} campaigns in {} ticks",
            c.ticks()
        );

        c.await_leader_commits_its_log();
        let leader = c.stable_leader().expect("a leader was elected");
        c.net.stats = Default::default();
        let start = c.ticks();
        let mut last = 0;
        for _ in 0..10 {
            last = c.propose(leader).expect("the leader takes proposals").0;
        }
        c.await_applied_everywhere(last);
        let elapsed = c.ticks() - start;
        let heartbeat_rounds = elapsed / u64::from(c.options().heartbeat_tick) + 1;
        let sent = c.net.stats.total();
        // Each of the 2 messages (entries, commit) per proposal and each
        // heartbeat (plus the append its answer may prompt) is answered once.
        let bound = peers * 2 * (2 * 10 + 2 * heartbeat_rounds);
        assert!(
            sent <= bound,
            "committing 10 entries took {sent} messages (bound {bound}) over {elapsed} ticks"
        );
    }
}

scenario! {
    /// The whole cluster loses power, repeatedly, at random moments: what
    /// was committed survives, is applied again in the same order, and the
    /// cluster commits more after each restart.
    fn persistence_across_full_cluster_restarts(rng: SplitMix64) {
        let mut c = Cluster::new(rng, Options::new(3));
        for _ in 0..3 {
            let (index, _) = c.commit_one();
            c.await_applied_everywhere(index);
            if let Some(leader) = c.leader() {
                let _ = c.propose(leader);
            }
            let delay = c.rng.below(2 * TICK);
            c.advance(delay);
            let before = c.committed_len();
            for id in c.ids() {
                c.crash(id);
            }
            for id in c.ids() {
                c.restart(id);
            }
            c.await_stable_leader();
            c.await_leader_commits_its_log();
            c.await_applied_everywhere(before);
        }
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// A vote is durable before it is sent: a voter that crashes right
    /// after granting its vote must not, once restarted, grant it again to
    /// another candidate of the same term. Pre-vote and check-quorum are off,
    /// since they would keep the second candidate from asking in most runs.
    fn votes_survive_crashes(rng: SplitMix64) {
        let mut opts = Options::new(3);
        opts.pre_vote = false;
        opts.check_quorum = false;
        opts.disk = SLOW_DISK;
        let mut c = Cluster::new(rng, opts);
        let voter = c.await_stable_leader();
        let (index, _) = c.commit_one();
        c.await_applied_everywhere(index);
        let followers = others(&c, &[voter]);
        let (first, second) = (followers[0], followers[1]);

        // The first candidate asks the voter (the old leader) for its vote;
        // the second candidate hears nothing of this election.
        c.net.isolate(second);
        c.campaign(first);
        let term = c.node(first).term();
        let pause = c.rng.below(3 * TICK);
        c.advance(pause);
        c.crash(voter);
        c.restart(voter);

        // Only the second candidate can reach the voter now, asking for its
        // vote in the same term.
        c.net.heal();
        c.net.partition(&[&[second, voter]]);
        assert_eq!(c.node(second).term() + 1, term, "the second candidate heard of the election");
        c.campaign(second);
        let timeouts = election_timeouts(&c, 1);
        c.run_ticks(timeouts);
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// A node that wins an election and crashes at once, then campaigns
    /// again on restart, must not lead the same term a second time: its
    /// second leadership would append different entries at the (index, term)
    /// positions of its first. Pre-vote and check-quorum are off so that the
    /// restarted node gets to campaign before anyone else.
    fn crashed_new_leader_does_not_lead_its_term_twice(rng: SplitMix64) {
        let mut opts = Options::new(3);
        opts.pre_vote = false;
        opts.check_quorum = false;
        opts.disk = SLOW_DISK;
        let mut c = Cluster::new(rng, opts);
        let budget = opts.election_budget();
        let old = c.await_stable_leader();
        let (index, _) = c.commit_one();
        c.await_applied_everywhere(index);

        let candidates = others(&c, &[old]);
        let candidate = c.pick_one(&candidates);
        c.campaign(candidate);
        // Cut off the instant it wins, so that its voters do not get its
        // entries and would vote for it again in the same term.
        if c.run_until_event(budget, |c| c.node(candidate).role() == Role::Leader) {
            c.net.isolate(candidate);
            let _ = c.propose(candidate);
        }
        let pause = c.rng.below(TICK);
        c.advance(pause);
        c.crash(candidate);
        c.restart(candidate);
        c.net.heal();
        c.campaign(candidate);
        assert!(c.run_until_event(budget, |c| c.leader().is_some()), "nobody leads");
        let leader = c.leader().expect("just checked");
        let _ = c.propose(leader);
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Reads get linearizable read points (the checker verifies each one)
    /// while leaders are cut off and replaced, with or without leases; once
    /// the network heals, every node can read.
    fn reads_are_linearizable(rng: SplitMix64) {
        let mut opts = Options::new(5);
        opts.lease_reads = rng.chance(0.5);
        if rng.chance(0.5) {
            opts.net = NetFaults::UNRELIABLE;
        }
        let mut c = Cluster::new(rng, opts);
        c.await_stable_leader();
        let ids = c.ids();
        for _ in 0..200 {
            match c.rng.below(8) {
                0 => {
                    if let Some(leader) = c.leader() {
                        c.net.isolate(leader);
                    }
                }
                1 => c.net.heal(),
                2 | 3 => propose_at_leader(&mut c),
                _ => read_at_random(&mut c, &ids),
            }
            let pause = c.rng.below(2 * TICK);
            c.advance(pause);
        }
        heal_and_read_everywhere(&mut c, &ids);
    }
}

scenario! {
    /// Lease reads stay linearizable while leadership is handed over: the
    /// target of a transfer wins with votes that pass through the lease,
    /// and the old leader hears of it late (its link to the target is cut,
    /// or it is cut off altogether) while it is asked for reads.
    fn lease_reads_across_transfers(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let mut opts = Options::new(nodes);
        opts.lease_reads = true;
        if rng.chance(0.5) {
            opts.net = NetFaults::UNRELIABLE;
        }
        let mut c = Cluster::new(rng, opts);
        c.await_stable_leader();
        let ids = c.ids();
        for _ in 0..150 {
            match c.rng.below(10) {
                0 | 1 => {
                    if let Some(old) = c.leader() {
                        let target = c.pick_one(&others(&c, &[old]));
                        if c.transfer_leader(old, target).is_ok() {
                            let term = c.node(target).term();
                            let budget = election_timeouts(&c, 1);
                            c.run_until_event(budget, |c| c.node(target).term() > term);
                            if c.rng.chance(0.5) {
                                c.net.isolate(old);
                            } else {
                                c.net.cut(old, target);
                            }
                        }
                    }
                }
                2 => c.net.heal(),
                3 | 4 => propose_at_leader(&mut c),
                _ => read_at_random(&mut c, &ids),
            }
            let pause = c.rng.below(2 * TICK);
            c.advance(pause);
        }
        heal_and_read_everywhere(&mut c, &ids);
    }
}

scenario! {
    /// Idle groups go quiet and wake on demand, under crashes, partitions
    /// and reads (with leases or without): whenever every node is up and
    /// the network whole, the group falls silent once idle and sends
    /// nothing; proposals and reads wake it; a leader that crashes or is
    /// cut off while its group is quiet is replaced once the followers
    /// check in. The checker holds throughout, reads included.
    fn quiescent_groups_under_faults(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let mut opts = Options::new(nodes);
        opts.quiesce_tick = 2 + rng.below(6) as u32;
        opts.lease_reads = rng.chance(0.5);
        let mut c = Cluster::new(rng, opts);
        c.await_stable_leader();
        let ids = c.ids();
        let budget = opts.election_budget();
        for _ in 0..60 {
            match c.rng.below(12) {
                0 | 1 => {
                    c.heal_and_check_liveness();
                    let quiet = |c: &Cluster| ids.iter().all(|&id| c.node(id).status().quiescent);
                    assert!(
                        c.run_until(budget, quiet),
                        "an idle group never went quiet\n{}\n{:#?}",
                        c.describe(),
                        ids.iter().map(|&id| c.node(id).status()).collect::<Vec<_>>()
                    );
                    // Answers to the last appends may still be on their way
                    // (they wait for the followers' disks).
                    c.run_ticks(u64::from(opts.election_tick));
                    // Long enough for every follower to check in (after
                    // one to two times QUIESCENT_CHECK_TIMEOUTS election
                    // timeouts): a check-in and its answer are all a quiet
                    // group sends.
                    c.net.stats = Default::default();
                    let check_in = 2 * u64::from(embraft::core::QUIESCENT_CHECK_TIMEOUTS) + 5;
                    c.run_ticks(check_in * u64::from(opts.election_tick));
                    let stats = &c.net.stats;
                    let check_ins = stats.count(&["WakeUp", "Quiesce"]);
                    assert_eq!(
                        stats.total(),
                        check_ins,
                        "a quiet group sent more than check-ins: {stats:?}"
                    );
                    assert!(check_ins >= 2, "nobody checked in: {stats:?}");
                    c.run_ticks(u64::from(opts.election_tick));
                    assert!(quiet(&c), "a quiet group woke with nothing to do");
                }
                2 => {
                    let up = c.up_nodes();
                    if up.len() > c.quorum() {
                        let id = c.pick_one(&up);
                        c.crash(id);
                    }
                }
                3 => {
                    for id in c.down_nodes() {
                        c.restart(id);
                    }
                }
                4 => {
                    let id = c.pick_one(&ids);
                    c.net.isolate(id);
                }
                5 => c.net.heal(),
                6 | 7 => propose_at_leader(&mut c),
                _ => {
                    let up = c.up_nodes();
                    read_at_random(&mut c, &up);
                }
            }
            let idle = c.rng.below(4 * u64::from(opts.election_tick));
            c.run_ticks(idle);
        }
        heal_and_read_everywhere(&mut c, &ids);
    }
}

scenario! {
    /// Leadership moves to the chosen node, after catching it up if it
    /// lags; a transfer to a node that cannot answer holds proposals back
    /// for an election timeout, is then abandoned, and the leader keeps
    /// leading and takes proposals again.
    fn leadership_transfer(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let lagging = rng.chance(0.5);
        let mut c = Cluster::new(rng, Options::new(nodes));
        let leader = c.await_stable_leader();
        let candidates = others(&c, &[leader]);
        let target = c.pick_one(&candidates);
        if lagging {
            c.net.isolate(target);
            c.commit_one();
            c.net.heal();
        }
        c.transfer_leader(leader, target).expect("the leader takes a transfer");
        let budget = election_timeouts(&c, 2);
        let moved = c.run_until(budget, |c| c.stable_leader() == Some(target));
        assert!(moved, "leadership did not move to {target} within {budget} ticks");
        let (_, term) = c.commit_one();
        assert_eq!(term, c.node(target).term(), "the new leader did not commit in its term");

        let candidates = others(&c, &[target]);
        let unreachable = c.pick_one(&candidates);
        c.net.isolate(unreachable);
        let term = c.node(target).term();
        c.transfer_leader(target, unreachable).expect("the leader takes a transfer");
        assert_eq!(
            c.propose(target),
            Err(ProposeError::TransferInProgress),
            "the leader took a proposal while handing leadership over"
        );
        // The transfer is abandoned after an election timeout, and the
        // leader takes proposals again.
        let timeout = election_timeouts(&c, 1);
        c.run_ticks(timeout);
        c.propose(target).expect("the leader takes proposals once the transfer is abandoned");
        let timeouts = election_timeouts(&c, 2);
        c.run_ticks(timeouts);
        assert_eq!(c.stable_leader(), Some(target), "a hopeless transfer cost the leadership");
        assert_eq!(c.node(target).term(), term);
        c.commit_one();
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Pre-vote: a follower cut off for many election timeouts does not
    /// raise its term, and when it rejoins the leader keeps leading in the
    /// same term.
    fn pre_vote_rejoining_node_does_not_disturb_leader(rng: SplitMix64) {
        let commit_meanwhile = rng.chance(0.5);
        let mut c = Cluster::new(rng, Options::new(5));
        let leader = c.await_stable_leader();
        c.commit_one();
        let term = c.node(leader).term();

        let candidates = others(&c, &[leader]);
        let follower = c.pick_one(&candidates);
        c.net.isolate(follower);
        if commit_meanwhile {
            c.commit_one();
        }
        let timeouts = election_timeouts(&c, 8);
        c.run_ticks(timeouts);
        assert_eq!(c.node(follower).term(), term, "the cut-off follower raised its term");

        c.net.heal();
        c.run_ticks(timeouts);
        assert_eq!(c.stable_leader(), Some(leader), "the rejoining follower disturbed the leader");
        for id in c.ids() {
            assert_eq!(c.node(id).term(), term, "node {id} left term {term}");
        }
        let (index, committed_term) = c.commit_one();
        assert_eq!(committed_term, term);
        c.await_applied_everywhere(index);
    }
}

scenario! {
    /// Check-quorum: a leader cut off from the majority steps down within a
    /// couple of election timeouts, and the majority elects another.
    fn check_quorum_deposes_cut_off_leader(rng: SplitMix64) {
        let with_partner = rng.chance(0.5);
        let mut c = Cluster::new(rng, Options::new(5));
        let leader = c.await_stable_leader();
        if with_partner {
            let candidates = others(&c, &[leader]);
        let partner = c.pick_one(&candidates);
            let majority = others(&c, &[leader, partner]);
            c.net.partition(&[&[leader, partner], &majority]);
        } else {
            c.net.isolate(leader);
        }
        let budget = election_timeouts(&c, 3);
        let stepped_down = c.run_until(budget, |c| c.node(leader).role() != Role::Leader);
        assert!(stepped_down, "the cut-off leader still leads after {budget} ticks");
        assert_ne!(c.await_stable_leader(), leader);
        c.heal_and_check_liveness();
    }
}

/// Writes that take up to three ticks, so that crashes often catch writes
/// in flight.
pub const SLOW_DISK: DiskTiming = DiskTiming {
    min_delay: 1,
    max_delay: 3 * TICK,
};

const FIGURE8_ROUNDS: usize = 1000;

/// Figure 8 of the Raft paper, by brute force: leaders take a proposal and
/// crash (or are cut off) at random moments, so entries of old terms are
/// left on some nodes and new leaders must not commit them by counting
/// replicas.
fn figure8(mut rng: SplitMix64, unreliable: bool) {
    let mut opts = Options::new(5);
    opts.pre_vote = rng.chance(0.5);
    opts.check_quorum = rng.chance(0.5);
    if unreliable {
        opts.net = NetFaults::UNRELIABLE;
    }
    // A leader's own write can then still be pending when its followers'
    // acknowledgements arrive, and a crash can lose it.
    opts.disk = SLOW_DISK;
    let mut c = Cluster::new(rng, opts);
    let election = u64::from(opts.election_tick) * TICK;
    for _ in 0..FIGURE8_ROUNDS {
        for id in c.up_nodes() {
            if c.node(id).role() == Role::Leader {
                let _ = c.propose(id);
            }
        }
        // Mostly a fraction of a heartbeat, sometimes a whole election.
        let pause = if c.rng.chance(0.1) {
            c.rng.below(2 * election)
        } else {
            c.rng.below(2 * TICK)
        };
        c.advance(pause);
        if let Some(leader) = c.leader() {
            if unreliable {
                if c.rng.chance(0.5) {
                    c.net.isolate(leader);
                }
            } else {
                c.crash(leader);
            }
        }
        if unreliable {
            // Reconnect a node whenever fewer than a quorum are connected.
            let ids = c.ids();
            let connected = ids
                .iter()
                .filter(|&&id| c.net.connected(id, ids[0]))
                .count();
            if connected < c.quorum() || c.rng.chance(0.2) {
                c.net.heal();
            }
        } else if c.up_nodes().len() < c.quorum() {
            let down = c.down_nodes();
            let id = c.pick_one(&down);
            c.restart(id);
        }
    }
    c.heal_and_check_liveness();
}

scenario! {
    /// The sequence of Figure 8 of the Raft paper, adapted to leaders that
    /// append a no-op: an entry X of an old term reaches a majority under a
    /// later leader, which crashes before its own entry is durable on a
    /// majority; a node holding a newer conflicting entry may then lead and
    /// overwrite X. A leader that counted X committed by its replicas (rather
    /// than through an entry of its own term) breaks safety here. Timing is
    /// random; the shape is fixed.
    fn figure8_paper_sequence(rng: SplitMix64) {
        let mut opts = Options::new(5);
        opts.disk = SLOW_DISK;
        let mut c = Cluster::new(rng, opts);
        let budget = opts.election_budget();
        let s1 = c.await_stable_leader();
        c.commit_one();

        // S1 and a partner get X, in S1's term; nobody else does.
        let candidates = others(&c, &[s1]);
        let partner = c.pick_one(&candidates);
        let rest = others(&c, &[s1, partner]);
        c.net.partition(&[&[s1, partner], &rest]);
        let (x_index, x_term) = c.propose(s1).expect("the leader takes proposals");
        let replicated = c.run_until(budget, |c| c.durable_term_at(partner, x_index) == Some(x_term));
        assert!(replicated, "X did not reach S1's partner");

        // The other three elect a leader, cut off the instant it wins, so
        // that its own entry at X's index (the no-op) stays with it alone.
        let lone = |c: &Cluster| rest.iter().copied().find(|&id| c.node(id).role() == Role::Leader);
        assert!(c.run_until_event(budget, |c| lone(c).is_some()), "the three elected nobody");
        let s5 = lone(&c).expect("just found");
        c.net.isolate(s5);

        // X's holders and one more node elect a leader (one of X's holders,
        // whose logs are longer), which replicates X and its no-op; it
        // crashes a random moment later, possibly before its own no-op is
        // durable.
        let third = rest.iter().copied().find(|&id| id != s5).expect("two remain");
        let last = others(&c, &[s1, partner, s5, third])[0];
        c.net.partition(&[&[s1, partner, third]]);
        let elected = |c: &Cluster| {
            [s1, partner]
                .into_iter()
                .find(|&id| c.node(id).role() == Role::Leader && c.node(id).term() > x_term)
        };
        assert!(c.run_until_event(budget, |c| elected(c).is_some()), "X's holders did not lead");
        let s3 = elected(&c).expect("just found");
        let pause = c.rng.below(3 * TICK);
        c.advance(pause);
        c.crash(s3);

        // S5 can now win with the votes of the crashed leader and the node
        // that saw none of this, unless X committed properly (through a
        // no-op durable on a majority), in which case they refuse it.
        c.restart(s3);
        c.net.partition(&[&[s5, s3, last]]);
        c.await_stable_leader();
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// Figure 8 with crashing leaders on a reliable network.
    fn figure8_reliable(rng: SplitMix64) {
        figure8(rng, false);
    }
}

scenario! {
    /// Figure 8 with leaders cut off on a lossy, duplicating, reordering
    /// network.
    fn figure8_unreliable(rng: SplitMix64) {
        figure8(rng, true);
    }
}

scenario! {
    /// Proposals keep coming on a lossy, duplicating, reordering network;
    /// everything that commits is agreed on, and the cluster recovers.
    fn agreement_on_unreliable_network(rng: SplitMix64) {
        let mut opts = Options::new(5);
        opts.net = NetFaults::UNRELIABLE;
        let mut c = Cluster::new(rng, opts);
        for _ in 0..150 {
            if let Some(leader) = c.leader() {
                let _ = c.propose(leader);
            }
            let pause = c.rng.below(3 * TICK);
            c.advance(pause);
        }
        c.heal_and_check_liveness();
    }
}

const CHURN_ROUNDS: usize = 1000;

/// The environment of the churn scenarios: timing settings that vary per
/// seed, a network whose hostility varies per seed, and slow disks (so
/// crashes lose writes in flight).
pub fn hostile_options(rng: &mut SplitMix64, nodes: usize) -> Options {
    let mut opts = Options::new(nodes);
    opts.pre_vote = rng.chance(0.5);
    opts.check_quorum = rng.chance(0.5);
    opts.heartbeat_tick = rng.between(1, 3) as u32;
    opts.election_tick = rng.between(u64::from(opts.heartbeat_tick) + 4, 15) as u32;
    opts.net = NetFaults {
        drop: rng.below(30) as f64 / 100.0,
        duplicate: rng.below(10) as f64 / 100.0,
        long_delay: rng.below(10) as f64 / 100.0,
        ..NetFaults::UNRELIABLE
    };
    opts.disk = SLOW_DISK;
    opts
}

/// How many kinds of step [`churn_step`] takes; rolls from here on propose.
pub const CHURN_STEP_KINDS: u64 = 8;

/// One random step of churn, chosen by `roll`: a crash, a restart, a
/// partition of random shape, a cut link, healing, a read, a leadership
/// transfer, or (from [`CHURN_STEP_KINDS`] on) a proposal on every leader.
pub fn churn_step(c: &mut Cluster, roll: u64) {
    let ids = c.ids();
    match roll {
        0 => {
            let up = c.up_nodes();
            if !up.is_empty() {
                let id = c.pick_one(&up);
                c.crash(id);
            }
        }
        1 | 2 => {
            let down = c.down_nodes();
            if !down.is_empty() {
                let id = c.pick_one(&down);
                c.restart(id);
            }
        }
        3 => {
            let size = c.rng.between(1, ids.len() as u64 - 1) as usize;
            let side = c.pick(&ids, size);
            let rest = others(c, &side);
            c.net.partition(&[&side, &rest]);
        }
        4 => {
            let link = c.pick(&ids, 2);
            c.net.cut(link[0], link[1]);
        }
        5 => c.net.heal(),
        6 => {
            let up = c.up_nodes();
            if !up.is_empty() {
                let id = c.pick_one(&up);
                c.read(id);
            }
        }
        7 => {
            if let Some(leader) = c.leader() {
                let to = c.pick_one(&ids);
                let voter = to == leader || c.membership_of(leader).is_voter(to);
                let result = c.transfer_leader(leader, to);
                assert_eq!(
                    voter,
                    result.is_ok(),
                    "leader {leader} answered {result:?} to a transfer to node {to}"
                );
            }
        }
        _ => {
            for id in c.up_nodes() {
                if c.node(id).role() == Role::Leader {
                    let _ = c.propose(id);
                }
            }
        }
    }
    let pause = c.rng.below(3 * TICK);
    c.advance(pause);
}

/// Everything at once: random crashes and restarts, partitions of random
/// shape and cut links, a lossy network, leadership transfers, reads, and a
/// steady trickle of proposals, in the environment of [`hostile_options`].
/// Returns the healed cluster.
fn churn_run(mut rng: SplitMix64) -> Cluster {
    let nodes = [3, 5, 7][rng.below(3) as usize];
    let opts = hostile_options(&mut rng, nodes);
    let mut c = Cluster::new(rng, opts);
    for _ in 0..CHURN_ROUNDS {
        let roll = c.rng.below(14);
        churn_step(&mut c, roll);
    }
    c.heal_and_check_liveness();
    c
}

scenario! {
    /// Everything at once; see [`churn_run`].
    fn churn(rng: SplitMix64) {
        churn_run(rng);
    }
}

/// Not a scenario: a seed must replay exactly the same run, or no failure
/// could be replayed. Runs of one seed must agree on the final state, and
/// runs of different seeds should not.
#[test]
fn same_seed_replays_the_same_run() {
    let run = |seed| churn_run(scenario_stream("churn", seed)).digest();
    for seed in 0..10 {
        assert_eq!(run(seed), run(seed), "seed {seed} ran differently twice");
    }
    assert_ne!(run(0), run(1), "the run does not depend on the seed");
}
