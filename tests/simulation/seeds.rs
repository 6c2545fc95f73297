//! Runs a scenario under many seeds, and replays one.
//!
//! `EMBRAFT_SIM_SEEDS=<n>` runs seeds `0..n` (default 500);
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

/// Runs `scenario` once per seed; each run gets its own random stream,
/// derived from the scenario's name and the seed.
pub fn run(name: &str, scenario: fn(SplitMix64)) {
    if let Some(seed) = env_u64("EMBRAFT_SIM_SEED") {
        run_seed(name, seed, scenario);
        return;
    }
    let seeds = env_u64("EMBRAFT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    for seed in 0..seeds {
        run_seed(name, seed, scenario);
    }
}

fn run_seed(name: &str, seed: u64, scenario: fn(SplitMix64)) {
    // Each run builds and drops its own cluster, so nothing accumulates
    // across seeds; a panic anywhere in the run (a violated property, or the
    // core itself) is reported with what it takes to replay it.
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| scenario(scenario_stream(name, seed)))) {
        eprintln!(
            "simulation scenario `{name}` failed at seed {seed}; replay it with\n    \
             EMBRAFT_SIM_SEED={seed} cargo test --release --test simulation -- --exact scenarios::{name}"
        );
        resume_unwind(panic);
    }
}
