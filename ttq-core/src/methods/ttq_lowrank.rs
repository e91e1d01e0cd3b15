//! TTQ with a static low-rank part: `W ≈ B·A + R`, where `B·A` is the best rank-`r`
//! approximation of `W` (from its SVD) kept in full precision, and only the residual `R` is
//! quantized per prompt by TTQ.
//!
//! The factors are computed once per layer by subspace iteration: `V ← orth(Wᵀ W V)`
//! repeated, which converges to the top-`r` right singular vectors; then `B = W V`,
//! `A = Vᵀ`, so `B·A = W V Vᵀ` is the projection of `W` on that subspace. Optionally
//! (`weighted`, with calibration statistics) the SVD is of `W·diag(σ)` with `σ` the RMS of each
//! input channel on the calibration data, so that the low-rank part captures what matters
//! for the layer's outputs; then `A = Vᵀ diag(σ)⁻¹`.

use crate::{
    methods::Ttq, tensor_io, CalibrationStats, DynamicWeight, LowRank, Prepared, QuantError,
    QuantKernels, QuantMethod, QuantSpec, QuantizedLinear,
};
use burn::tensor::{backend::Backend, Tensor};

/// TTQ on the residual of a static rank-`r` part.
#[derive(Debug, Clone, Copy)]
pub struct TtqLowRank {
    /// The test-time quantizer applied to the residual.
    pub ttq: Ttq,
    /// Rank of the static part (0: plain TTQ).
    pub rank: usize,
    /// Weight the SVD by calibration activation RMS (needs calibration statistics).
    pub weighted: bool,
    /// Subspace iterations.
    pub iterations: usize,
}

impl TtqLowRank {
    /// TTQ + rank-`rank` static part, unweighted, 24 subspace iterations.
    pub fn new(ttq: Ttq, rank: usize) -> Self {
        Self {
            ttq,
            rank,
            weighted: false,
            iterations: 24,
        }
    }

    /// The rank-`r` factors of `weight` (`[rows, cols]`), `r = min(rank, rows, cols)`.
    pub fn factors<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
    ) -> Result<Option<LowRank<B>>, QuantError> {
        let [rows, cols] = weight.dims();
        let r = self.rank.min(rows).min(cols);
        if r == 0 {
            return Ok(None);
        }
        let device = weight.device();
        let sigma = match (self.weighted, calibration) {
            (false, _) => None,
            (true, Some(c)) => {
                c.check("TTQ + low-rank", cols)?;
                // The diagonal, taken on the device (only d values, not d², leave it).
                let diag = (c.gram_per_token() * Tensor::<B, 2>::eye(cols, &device))
                    .sum_dim(1)
                    .reshape([cols]);
                Some(diag.clamp_min(0.0).sqrt().clamp_min(1e-6))
            }
            (true, None) => {
                return Err(QuantError::Method {
                    method: "TTQ + low-rank".into(),
                    message: "the activation-weighted SVD needs calibration statistics".into(),
                })
            }
        };
        let m = match &sigma {
            Some(s) => weight.clone() * s.clone().unsqueeze_dim(0),
            None => weight.clone(),
        };
        // Deterministic start: a fixed pseudo-random matrix.
        let mut v = orthonormal_columns(
            (0..cols * r)
                .map(|k| (((k as u64).wrapping_mul(2654435761) % 1000) as f32 / 500.0) - 1.0)
                .collect(),
            cols,
            r,
        );
        for _ in 0..self.iterations {
            let vt = tensor_io::f32_tensor(v, [cols, r], &device);
            let z = m.clone().transpose().matmul(m.clone().matmul(vt));
            v = orthonormal_columns(tensor_io::to_f32_vec(z), cols, r);
        }
        let vt = tensor_io::f32_tensor(v, [cols, r], &device);
        let b = m.matmul(vt.clone());
        let a = match sigma {
            Some(s) => vt.transpose() / s.unsqueeze_dim(0),
            None => vt.transpose(),
        };
        Ok(Some(LowRank { b, a }))
    }
}

/// Orthonormalises the `r` columns of `m` (`[n, r]`, row-major) by modified Gram-Schmidt in
/// f64; a column that vanishes is replaced by a unit vector orthogonal to the others.
fn orthonormal_columns(m: Vec<f32>, n: usize, r: usize) -> Vec<f32> {
    let mut cols: Vec<Vec<f64>> = (0..r)
        .map(|j| (0..n).map(|i| f64::from(m[i * r + j])).collect())
        .collect();
    for j in 0..r {
        for attempt in 0..=n {
            for k in 0..j {
                let dot: f64 = cols[j].iter().zip(&cols[k]).map(|(a, b)| a * b).sum();
                let (done, rest) = cols.split_at_mut(j);
                for (x, y) in rest[0].iter_mut().zip(&done[k]) {
                    *x -= dot * y;
                }
            }
            let norm = cols[j].iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-12 {
                cols[j].iter_mut().for_each(|x| *x /= norm);
                break;
            }
            // Degenerate: try the next basis vector.
            cols[j] = (0..n)
                .map(|i| if i == attempt % n { 1.0 } else { 0.0 })
                .collect();
        }
    }
    let mut out = vec![0f32; n * r];
    for (j, c) in cols.iter().enumerate() {
        for (i, x) in c.iter().enumerate() {
            out[i * r + j] = *x as f32;
        }
    }
    out
}

impl<B: Backend> QuantMethod<B> for TtqLowRank {
    fn name(&self) -> String {
        let w = if self.weighted { ", act-weighted" } else { "" };
        format!(
            "{} + rank {}{w}",
            QuantMethod::<B>::name(&self.ttq),
            self.rank
        )
    }

    fn spec(&self) -> &QuantSpec {
        &self.ttq.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
        _kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        let low_rank = self.factors(weight, calibration)?;
        let residual = match &low_rank {
            Some(lr) => weight.clone() - lr.b.clone().matmul(lr.a.clone()),
            None => weight.clone(),
        };
        Ok(Prepared::Dynamic(DynamicWeight {
            weight: residual,
            low_rank,
        }))
    }

    fn realize(
        &self,
        prepared: &DynamicWeight<B>,
        x: &Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        QuantMethod::<B>::realize(&self.ttq, prepared, x, kernels)
    }
}
