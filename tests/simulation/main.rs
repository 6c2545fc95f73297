//! Deterministic simulation of whole embraft clusters.
//!
//! Real Raft cores run on a simulated network and simulated disks under a
//! virtual clock; one seeded generator decides every delay, loss, crash and
//! partition, so any failure replays exactly from its seed. A checker
//! verifies Raft's safety properties after every event, and the scenarios
//! check liveness once their faults heal. See `seeds.rs` for the
//! environment variables that choose the seeds.
//!
//! Membership changes are simulated: a cluster has up to seven node slots,
//! the founding voters plus blank joiners (nodes started with no
//! membership) that scenarios add as learners and voters, by single-step
//! and joint changes, and remove again; a removed node keeps running until
//! a fresh joiner takes its slot. The checker replays the membership
//! changes of the committed log and judges every quorum by the membership
//! in force (see `checker.rs` and `membership.rs`).
//!
//! Log compaction and snapshots are simulated: scenarios make nodes
//! snapshot their state machine and compact at random points; the cluster,
//! as the host, streams snapshots in chunks through the simulated network,
//! assembles them, writes and records them on the simulated disk, and
//! restores the state machine from them, at runtime and at recovery (see
//! `snapshot.rs` and `disk.rs`). The checker holds every snapshot to the
//! committed log and to the state every node had at its index.
//!
//! The entry cache is simulated: a node may keep few entries in memory and
//! read the rest back from its simulated disk, and some of those reads
//! fail (see `cache_scenarios.rs`); `EMBRAFT_SIM_MAX_CACHED_BYTES=<n>` runs
//! every scenario so.
//!
//! Leaders that send no append just to carry a commit index (the core's
//! `skip_commit_broadcast`, which the multi-group runtime turns on) are
//! simulated: each node start draws the option from the node's seed, so
//! every scenario runs leaders of both kinds; followers then learn commits
//! from heartbeats, later appends and `Quiesce`, and the liveness checks
//! hold them to it. `EMBRAFT_SIM_SKIP_COMMIT_BROADCAST=0|1` sets it for
//! every node.
//!
//! Many groups per process are simulated, as embraft's runtime runs them:
//! 3 or 5 processes host 4 to 16 groups, each group on every process or on
//! a seeded subset of at least three; each process has one write-ahead log
//! whose rounds carry the writes of every group submitted while a round is
//! in progress and become durable at once, a process crash loses the
//! unfinished rounds of all its groups together (and is checked to), and
//! partitions cut every group between two processes together. Every group
//! has its own checker; scenarios run with quiescence and with bounded
//! entry caches read back from the shared log (see `groups.rs` and
//! `groups_scenarios.rs`).

/// Declares a scenario: a `#[test]` that runs `body` under every seed, or,
/// for a long scenario marked `[1/N of the seeds]`, under the first N-th of
/// them.
macro_rules! scenario {
    ($(#[$doc:meta])* fn $name:ident($rng:ident: SplitMix64) $body:block) => {
        scenario! { $(#[$doc])* [1/1 of the seeds] fn $name($rng: SplitMix64) $body }
    };
    ($(#[$doc:meta])* [1/$share:literal of the seeds]
     fn $name:ident($rng:ident: SplitMix64) $body:block) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            fn body(#[allow(unused_mut)] mut $rng: SplitMix64) $body
            crate::seeds::run(module_path!(), stringify!($name), $share, body);
        }
    };
}

mod cache_scenarios;
mod checker;
mod cluster;
mod disk;
mod fnv;
mod groups;
mod groups_scenarios;
mod membership;
mod membership_scenarios;
mod network;
mod rng;
mod scenarios;
mod seeds;
mod snapshot;
mod snapshot_scenarios;
