//! Inputs shared by the kernel tests.

use rand::{rngs::StdRng, Rng, SeedableRng};

/// `n` values uniform in [-1, 1), seeded; every `outliers_every`-th value (offset 3) is
/// multiplied by 100, the outlier channels that activation-aware scaling exists for
/// (`0` = no outliers).
pub fn random(seed: u64, n: usize, outliers_every: usize) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let v: f32 = r.random_range(-1.0..1.0);
            if outliers_every > 0 && i % outliers_every == 3 {
                v * 100.0
            } else {
                v
            }
        })
        .collect()
}
