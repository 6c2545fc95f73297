//! The simulator's single source of randomness.
//!
//! Every random choice of a run (delays, drops, crashes, node seeds) is drawn
//! from one generator seeded by the scenario seed, so a seed replays exactly.

use crate::fnv::Fnv;

/// SplitMix64: tiny, fast, and fully determined by its seed. Written here
/// rather than taken from the core so that the simulator shares no code with
/// what it tests.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[lo, hi]` (both inclusive); `hi >= lo`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A value in `[0, n)`; `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p` (0.0 never draws true, 1.0 always does).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits give a uniform float in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Mixes a scenario name into a seed so that scenarios run on independent
/// random streams even though they number their seeds alike.
pub fn scenario_stream(name: &str, seed: u64) -> SplitMix64 {
    // One SplitMix64 step spreads the bits of the name's hash.
    let h = Fnv::new().bytes(name.as_bytes()).finish();
    let mut mixer = SplitMix64::new(h ^ seed);
    SplitMix64::new(mixer.next_u64())
}
