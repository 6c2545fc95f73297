//! Scenarios with an almost empty entry cache: nodes keep only the entries
//! not yet durable or not yet handed out for applying, read every other one
//! back from their simulated disk when a follower needs it, and some of
//! those reads fail. Every check holds with the cache so small.

use crate::cluster::{Cluster, Options, MAX_SLOTS};
use crate::membership_scenarios::membership_step;
use crate::network::NetFaults;
use crate::rng::SplitMix64;
use crate::scenarios::{churn_step, hostile_options, others, CHURN_STEP_KINDS};
use crate::snapshot_scenarios::compaction_step;

const CACHE_CHURN_ROUNDS: usize = 1000;

scenario! {
    /// The churn of `snapshots_under_faults` (crashes on slow disks,
    /// partitions, cut links, a lossy network, transfers, reads, proposals,
    /// membership changes, compactions) with caches of a few entries at
    /// most and up to one failed read of evicted entries in ten. Compaction
    /// keeps up to 64 entries, so lagging followers catch up both from
    /// evicted entries and through snapshots. Once the faults heal the
    /// cluster recovers.
    fn evicted_entries_under_faults(rng: SplitMix64) {
        let founders = rng.between(1, 5) as usize;
        let mut opts = hostile_options(&mut rng, founders);
        opts.slots = MAX_SLOTS;
        opts.compact_keep_entries = rng.below(64);
        opts.max_cached_bytes = rng.between(1, 200);
        opts.log_read_failures_per_mille = rng.below(100);
        let membership = rng.chance(0.5);
        let mut c = Cluster::new(rng, opts);
        for _ in 0..CACHE_CHURN_ROUNDS {
            let roll = c.rng.below(CHURN_STEP_KINDS + 12);
            match roll.checked_sub(CHURN_STEP_KINDS) {
                Some(extra @ 0..=3) if membership => membership_step(&mut c, extra),
                Some(4..=5) => compaction_step(&mut c),
                _ => churn_step(&mut c, roll),
            }
        }
        c.heal_and_check_liveness();
    }
}

scenario! {
    /// A follower cut off (or down) while the others commit catches up
    /// from entries its leader no longer caches, on a reliable or a lossy
    /// network, while some reads of them fail: it applies everything
    /// committed, without a snapshot.
    fn lagging_follower_catches_up_from_evicted_entries(rng: SplitMix64) {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let crash = rng.chance(0.5);
        let lossy = rng.chance(0.5);
        let mut opts = Options::new(nodes);
        opts.max_cached_bytes = 1;
        opts.log_read_failures_per_mille = rng.below(200);
        let mut c = Cluster::new(rng, opts);
        let leader = c.await_stable_leader();
        c.commit_one();
        let candidates = others(&c, &[leader]);
        let follower = c.pick_one(&candidates);
        if crash {
            c.crash(follower);
        } else {
            c.net.isolate(follower);
        }
        let entries = c.rng.between(5, 40);
        let mut last = 0;
        for _ in 0..entries {
            last = c.commit_one().0;
        }
        let rest = others(&c, &[follower]);
        c.await_applied_by(&rest, last);
        assert!(
            rest.iter().all(|&id| c.node(id).log_entries().is_empty()),
            "a node kept entries it had made durable and applied"
        );
        if lossy {
            c.net.set_faults(NetFaults { drop: 0.1, ..NetFaults::UNRELIABLE });
        }
        if crash {
            c.restart(follower);
        }
        c.net.heal();
        c.await_applied_by(&[follower], last);
        assert!(c.log_reads() > 0, "follower {follower} caught up without a read of evicted entries");
        assert_eq!(c.installs(follower), 0, "follower {follower} needed a snapshot");
        c.heal_and_check_liveness();
    }
}
