//! Scenarios with many groups per process sharing one write-ahead log per
//! process (see `groups.rs`): every group's checker holds throughout, and
//! every group recovers once the faults heal.

use crate::cluster::{Options, TICK};
use crate::groups::{Groups, Process};
use crate::network::NetFaults;
use crate::rng::{scenario_stream, SplitMix64};
use crate::scenarios::SLOW_DISK;

/// Groups per run: from [`MIN_GROUPS`] to this many, drawn per seed.
const MAX_GROUPS: u64 = 16;
const MIN_GROUPS: u64 = 4;

/// Processes, replicas per group and groups, drawn per seed: 3 or 5
/// processes, groups on every process or on a subset of at least three.
fn draw_groups(rng: &mut SplitMix64) -> (usize, usize, bool) {
    let processes = if rng.chance(0.5) { 3 } else { 5 };
    let groups = rng.between(MIN_GROUPS, MAX_GROUPS) as usize;
    (processes, groups, rng.chance(0.5))
}

/// A lossy, duplicating, reordering network whose hostility varies per
/// seed.
fn lossy(rng: &mut SplitMix64) -> NetFaults {
    NetFaults {
        drop: rng.below(20) as f64 / 100.0,
        duplicate: rng.below(10) as f64 / 100.0,
        long_delay: rng.below(10) as f64 / 100.0,
        ..NetFaults::UNRELIABLE
    }
}

/// One random fault or client step over the processes, chosen by `roll`:
/// a process crash (of any process: groups may lose their quorum), a
/// restart, a partition of random shape, a cut link, an isolated process,
/// healing, a read in a random group, or (from 8 on) a proposal on the
/// leader of a random share of the groups. Then a pause of a few ticks,
/// not whole ones, so that crashes land inside rounds.
fn process_step(gs: &mut Groups, roll: u64) {
    let all = gs.processes();
    match roll {
        0 => {
            let up = gs.up_processes();
            if !up.is_empty() {
                let p = gs.pick_one(&up);
                gs.crash_process(p);
            }
        }
        1 | 2 => {
            let down = gs.down_processes();
            if !down.is_empty() {
                let p = gs.pick_one(&down);
                gs.restart_process(p);
            }
        }
        3 => {
            let mut side: Vec<Process> = Vec::new();
            let mut rest: Vec<Process> = Vec::new();
            for p in all {
                if gs.rng.chance(0.5) {
                    side.push(p);
                } else {
                    rest.push(p);
                }
            }
            gs.partition(&[&side, &rest]);
        }
        4 => {
            let a = gs.pick_one(&all);
            let b = gs.pick_one(&all);
            if a != b {
                gs.cut(a, b);
            }
        }
        5 => {
            let p = gs.pick_one(&all);
            gs.isolate(p);
        }
        6 => gs.heal(),
        7 => {
            let g = gs.rng.below(gs.len() as u64) as usize;
            let up = gs.group(g).up_nodes();
            if !up.is_empty() {
                let id = gs.group_mut(g).pick_one(&up);
                gs.group_mut(g).read(id);
            }
        }
        _ => {
            for g in 0..gs.len() {
                if gs.rng.chance(0.5) {
                    gs.propose_at_leader(g);
                }
            }
        }
    }
    let pause = gs.rng.below(3 * TICK);
    gs.advance(pause);
}

const CRASH_ROUNDS: usize = 150;

/// The run of [`many_groups_under_process_crashes`]; returns the healed
/// groups.
fn process_crash_run(mut rng: SplitMix64) -> Groups {
    let (processes, groups, spread) = draw_groups(&mut rng);
    let mut opts = Options::new(3);
    opts.disk = SLOW_DISK;
    opts.net = lossy(&mut rng);
    opts.pre_vote = rng.chance(0.5);
    opts.check_quorum = rng.chance(0.5);
    let mut gs = Groups::new(rng, opts, processes, groups, spread);
    for _ in 0..CRASH_ROUNDS {
        let roll = gs.rng.below(12);
        process_step(&mut gs, roll);
    }
    gs.heal_and_check_liveness();
    assert!(
        gs.shared_rounds() > 0,
        "no round of a shared log carried two groups' writes"
    );
    gs
}

scenario! {
    /// Processes crash at random points of their shared log's rounds, on
    /// slow disks and a lossy network, with partitions and cut links
    /// between processes and a steady trickle of proposals and reads in
    /// every group: each crash loses the round in progress of every group
    /// on the process at once, and never a durable one. Every group's
    /// checker holds throughout, and once the faults heal every group
    /// elects a leader, commits and applies a new proposal everywhere.
    fn many_groups_under_process_crashes(rng: SplitMix64) {
        process_crash_run(rng);
    }
}

/// Not a scenario: a seed of many groups must replay exactly, as one of a
/// single cluster does.
#[test]
fn same_seed_replays_the_same_groups_run() {
    let run = |seed| {
        process_crash_run(scenario_stream("many_groups_under_process_crashes", seed)).digest()
    };
    for seed in 0..10 {
        assert_eq!(run(seed), run(seed), "seed {seed} ran differently twice");
    }
    assert_ne!(run(0), run(1), "the run does not depend on the seed");
}

const QUIET_ROUNDS: usize = 30;

/// Heals everything; then every group must fall quiet once idle and send
/// nothing but check-ins; a proposal in one group wakes it (its followers
/// wake on its leader's messages and apply it) while every other group
/// stays quiet and silent.
fn quiet_then_wake_one(gs: &mut Groups) {
    gs.heal_and_check_liveness();
    let opts = gs.options();
    let timeout = u64::from(opts.election_tick);
    assert!(
        gs.run_until(opts.election_budget(), Groups::all_quiet),
        "idle groups never all went quiet\n{}",
        gs.describe()
    );
    // Answers to the last appends may still be on their way (they wait for
    // the followers' rounds).
    gs.run_ticks(timeout);
    gs.reset_stats();
    // Long enough for the followers to check in (after one to two times
    // QUIESCENT_CHECK_TIMEOUTS election timeouts): a check-in and its
    // answer are all a quiet group sends.
    gs.run_ticks((2 * u64::from(embraft::core::QUIESCENT_CHECK_TIMEOUTS) + 5) * timeout);
    gs.assert_only_check_ins(&gs.all_groups());
    // A follower that just checked in runs its election timer until its
    // leader's answer puts it back to sleep.
    assert!(
        gs.run_until(timeout, Groups::all_quiet),
        "a quiet group woke with nothing to do\n{}",
        gs.describe()
    );
    let woken = gs.rng.below(gs.len() as u64) as usize;
    gs.reset_stats();
    let committed = gs.commit_one_in(&[woken]);
    gs.await_applied(&[woken], &committed);
    let rest: Vec<usize> = gs
        .all_groups()
        .into_iter()
        .filter(|&g| g != woken)
        .collect();
    gs.assert_only_check_ins(&rest);
    assert!(
        gs.run_until(opts.election_budget(), Groups::all_quiet),
        "group {woken} did not go quiet again\n{}",
        gs.describe()
    );
}

scenario! {
    /// Idle groups go quiet and wake on demand while processes crash and
    /// are cut off (partitions and cut links between processes, reads and
    /// proposals in random groups): whenever everything is healed, every
    /// group falls quiet and silent, and a proposal wakes only its group.
    /// Last, a process crashes while every group is quiet, so the leaders
    /// on it die quietly and stay down: every group has a leader again
    /// within the election budget, which allows for the followers'
    /// check-in (`QUIESCENT_CHECK_TIMEOUTS`).
    fn many_groups_quiescent_under_partitions(rng: SplitMix64) {
        let (processes, groups, spread) = draw_groups(&mut rng);
        let mut opts = Options::new(3);
        opts.quiesce_tick = 2 + rng.below(6) as u32;
        opts.lease_reads = rng.chance(0.5);
        let mut gs = Groups::new(rng, opts, processes, groups, spread);
        for _ in 0..QUIET_ROUNDS {
            let roll = gs.rng.below(14);
            if roll >= 12 {
                quiet_then_wake_one(&mut gs);
            } else {
                process_step(&mut gs, roll);
            }
            let idle = gs.rng.below(4 * u64::from(opts.election_tick));
            gs.run_ticks(idle);
        }
        quiet_then_wake_one(&mut gs);
        let leaders: Vec<Process> = gs.leader_processes();
        let p = gs.pick_one(&leaders);
        gs.crash_process(p);
        gs.await_every_group("no leader after the quiet leaders' process crashed",
            opts.election_budget(), |_, c| c.stable_leader().is_some());
        gs.heal_and_check_liveness();
    }
}

const CACHE_ROUNDS: usize = 150;

scenario! {
    /// Every group keeps at most a few entries cached and reads the rest
    /// back from its part of the shared log (some reads fail), under the
    /// process crashes, partitions and lossy network of
    /// `many_groups_under_process_crashes`, with compactions, and quiescence
    /// in half the seeds. Then one process is cut off while every group
    /// commits, and catches up, in every group, from entries its leaders
    /// no longer cache.
    fn many_groups_with_bounded_caches(rng: SplitMix64) {
        let (processes, groups, spread) = draw_groups(&mut rng);
        let mut opts = Options::new(3);
        opts.disk = SLOW_DISK;
        opts.net = lossy(&mut rng);
        opts.max_cached_bytes = rng.between(1, 200);
        opts.log_read_failures_per_mille = rng.below(100);
        opts.compact_keep_entries = rng.below(64);
        if rng.chance(0.5) {
            opts.quiesce_tick = 2 + rng.below(6) as u32;
        }
        let mut gs = Groups::new(rng, opts, processes, groups, spread);
        for _ in 0..CACHE_ROUNDS {
            let roll = gs.rng.below(13);
            if roll == 12 {
                let g = gs.rng.below(gs.len() as u64) as usize;
                let up = gs.group(g).up_nodes();
                if !up.is_empty() {
                    let id = gs.group_mut(g).pick_one(&up);
                    gs.group_mut(g).compact(id);
                }
            } else {
                process_step(&mut gs, roll);
            }
        }
        gs.heal_and_check_liveness();
        let hosting: Vec<Process> =
            gs.processes().into_iter().filter(|&p| gs.hosts_any(p)).collect();
        let lagging = gs.pick_one(&hosting);
        gs.isolate(lagging);
        let reads = gs.log_reads();
        let every = gs.all_groups();
        let mut committed = Vec::new();
        // More entries than a cache of 200 bytes holds (32 bytes each).
        for _ in 0..gs.rng.between(10, 25) {
            committed = gs.commit_one_in(&every);
        }
        gs.heal();
        gs.await_applied(&every, &committed);
        assert!(
            gs.log_reads() > reads,
            "process {lagging} caught up without a read of evicted entries"
        );
        gs.heal_and_check_liveness();
    }
}
