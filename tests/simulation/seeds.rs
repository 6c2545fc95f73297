//! Runs a scenario under many seeds, and replays one.
//!
//! `EMBRAFT_SIM_SEEDS=<n>` runs seeds `0..n` (default 500), or `0..n/k` for
//! a long scenario marked `[1/k of the seeds]`;
//! `EMBRAFT_SIM_SEED=<seed>` runs only that seed, to replay a failure;
//! `EMBRAFT_SIM_TRACE=1` prints every event of the run.

use crate::rng::{scenario_stream, SplitMix64};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

const DEFAULT_SEEDS: u64 = 500;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
    )
}

/// Runs `scenario` (the test `name` in module `module`) once per seed, on
/// one seed in `share` (at least one); each run gets its own random stream,
/// derived from the scenario's name and the seed.
pub fn run(module: &str, name: &str, share: u64, scenario: fn(SplitMix64)) {
    // The test's path as the harness names it: without the crate's name.
    let test = format!(
        "{}::{name}",
        module.split_once("::").map_or(module, |(_, m)| m)
    );
    if let Some(seed) = env_u64("EMBRAFT_SIM_SEED") {
        run_seed(&test, name, seed, scenario);
        return;
    }
    let seeds = env_u64("EMBRAFT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    for seed in 0..(seeds / share).max(1) {
        run_seed(&test, name, seed, scenario);
    }
}

fn run_seed(test: &str, name: &str, seed: u64, scenario: fn(SplitMix64)) {
    // Each run builds and drops its own cluster, so nothing accumulates
    // across seeds; a panic anywhere in the run (a violated property, or the
    // core itself) is reported with what it takes to replay it.
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| scenario(scenario_stream(name, seed)))) {
        eprintln!(
            "simulation scenario `{name}` failed at seed {seed}; replay it with\n    \
             EMBRAFT_SIM_SEED={seed} cargo test --release --test simulation -- --exact {test}"
        );
        resume_unwind(panic);
    }
}
