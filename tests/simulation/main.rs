//! Deterministic simulation of whole embraft clusters.
//!
//! Real Raft cores run on a simulated network and simulated disks under a
//! virtual clock; one seeded generator decides every delay, loss, crash and
//! partition, so any failure replays exactly from its seed. A checker
//! verifies Raft's safety properties after every event, and the scenarios
//! check liveness once their faults heal. See `seeds.rs` for the
//! environment variables that choose the seeds.
//!
//! Not simulated yet: log compaction and snapshots, membership changes.
//! The cluster refuses to run if the core hands out work for either.

mod checker;
mod cluster;
mod disk;
mod fnv;
mod network;
mod rng;
mod scenarios;
mod seeds;
