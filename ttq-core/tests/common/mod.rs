//! Seeded random data for the tests.
#![allow(dead_code)]

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};

pub type B = NdArray<f32>;

/// Standard normal samples (Box-Muller), seeded.
pub fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-12);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn tensor2(values: Vec<f32>, shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

pub fn tensor1(values: Vec<f32>) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), &Default::default())
}

pub fn vec2(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

pub fn vec1(t: Tensor<B, 1>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// A layer input `[tokens, d]` shaped like LLM activations: most channels of unit scale, a
/// few outlier channels `outlier_gain` times larger.
pub fn activations_with_outliers(
    rng: &mut StdRng,
    tokens: usize,
    d: usize,
    outliers: &[usize],
    outlier_gain: f32,
) -> Vec<f32> {
    let mut x = normal(rng, tokens * d);
    for row in x.chunks_exact_mut(d) {
        for &c in outliers {
            row[c] *= outlier_gain;
        }
    }
    x
}

/// Frobenius norm of `a - b`.
pub fn diff_norm(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt()
}
