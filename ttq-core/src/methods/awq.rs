//! AWQ (Lin et al. 2023, "Activation-aware Weight Quantization"), per linear layer.
//!
//! From calibration statistics of the layer's input `X`:
//! 1. **Scale search.** For `a` on a grid of `grid` points in `[0, 1)`, the per-channel
//!    scale `s = mean_t|X[t,:]|^a` (clamped below at 1e-4 and divided by
//!    `sqrt(max(s)·min(s))`, as the reference does) gives the weight `Q(W·diag(s))·diag(s)^-1`;
//!    the `a` with the smallest output error `||X (W - Ŵ)ᵀ||²` on the calibration inputs wins.
//! 2. **Clipping search.** On the scaled weight `W·diag(s)`, each group's range is shrunk to
//!    `max|w|·(1 - i/grid)` for `i < max_shrink·grid`, and the shrink with the smallest output
//!    error of that group (on the scaled inputs `X·diag(s)^-1`) is kept.
//!
//! The result runs as `y = Q(W·diag(s)) · (x ⊙ s^-1)`, like TTQ but with a scale fixed at
//! calibration time. How this differs from the reference implementation (per-linear rather
//! than per-block search, runtime input scaling rather than folding into the previous
//! layer, statistics from one full-precision pass) is listed in `docs/method.md`.

use crate::{
    group, CalibrationStats, Prepared, QuantError, QuantKernels, QuantMethod, QuantSpec,
    QuantizedLinear,
};
use burn::tensor::{backend::Backend, ElementConversion, Tensor};

/// AWQ's search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AwqConfig {
    /// Grid points for the exponent `a` in `[0, 1)` (the reference uses 20).
    pub grid: usize,
    /// Use only this exponent instead of searching (tests, ablations).
    pub fixed_alpha: Option<f32>,
    /// Run the clipping search.
    pub clip: bool,
    /// Largest fraction of a group's range the clipping search may cut (reference: 0.5).
    pub max_shrink: f32,
}

impl Default for AwqConfig {
    fn default() -> Self {
        Self {
            grid: 20,
            fixed_alpha: None,
            clip: true,
            max_shrink: 0.5,
        }
    }
}

/// Activation-aware weight quantization with calibration data.
#[derive(Debug, Clone, Copy)]
pub struct Awq {
    /// The quantizer.
    pub spec: QuantSpec,
    /// The searches.
    pub config: AwqConfig,
}

/// The smallest scale before normalisation (reference value).
const MIN_SCALE: f32 = 1e-4;

impl Awq {
    /// AWQ with `spec` and `config`.
    pub fn new(spec: QuantSpec, config: AwqConfig) -> Result<Self, QuantError> {
        if config.grid == 0 {
            return Err(QuantError::Method {
                method: "AWQ".into(),
                message: "the grid needs at least one point".into(),
            });
        }
        if let Some(a) = config.fixed_alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(QuantError::Method {
                    method: "AWQ".into(),
                    message: format!("the exponent must be in [0, 1], got {a}"),
                });
            }
        }
        if !(0.0..1.0).contains(&config.max_shrink) {
            return Err(QuantError::Method {
                method: "AWQ".into(),
                message: format!("max_shrink must be in [0, 1), got {}", config.max_shrink),
            });
        }
        Ok(Self { spec, config })
    }

    /// The exponents the scale search tries.
    fn alphas(&self) -> Vec<f32> {
        match self.config.fixed_alpha {
            Some(a) => vec![a],
            None => (0..self.config.grid)
                .map(|i| i as f32 / self.config.grid as f32)
                .collect(),
        }
    }

    /// `s = mean|x|^a`, clamped and normalised as in the reference.
    fn channel_scale<B: Backend>(mean_abs: &Tensor<B, 1>, a: f32) -> Tensor<B, 1> {
        let s = mean_abs.clone().powf_scalar(a).clamp_min(MIN_SCALE);
        let hi: f32 = s.clone().max().into_scalar().elem();
        let lo: f32 = s.clone().min().into_scalar().elem();
        s.div_scalar((hi * lo).sqrt())
    }

    /// Step 1: the scale with the smallest calibration output error.
    fn search_scale<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        calib: &CalibrationStats<B>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Tensor<B, 1>, QuantError> {
        let mean_abs = calib.mean_abs();
        let mut best: Option<(f64, Tensor<B, 1>)> = None;
        for a in self.alphas() {
            let s = Self::channel_scale(&mean_abs, a);
            let q = kernels.quantize(weight.clone(), Some(s.clone()), &self.spec)?;
            let w_hat = kernels.dequantize(&q) / s.clone().unsqueeze_dim(0);
            let err = calib.output_error(weight.clone() - w_hat);
            if best.as_ref().is_none_or(|(e, _)| err < *e) {
                best = Some((err, s));
            }
        }
        Ok(best.expect("at least one grid point").1)
    }

    /// Step 2: clips the scaled weight `ws` group by group, minimising each group's output
    /// error on the scaled inputs (Gram matrix `h` of `X·diag(s)^-1`, per token).
    fn search_clip<B: Backend>(
        &self,
        ws: Tensor<B, 2>,
        h: Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Tensor<B, 2>, QuantError> {
        let [rows, cols] = ws.dims();
        let g = self.spec.group_len(cols);
        let groups = self.spec.groups_per_row(cols);
        let padded = groups * g;
        let ws3 = group::pad_cols(ws.clone(), padded).reshape([rows, groups, g]);
        let blocks = diagonal_blocks(pad_square(h, padded), groups, g); // [groups, g, g]
        let amax = ws3.clone().abs().max_dim(2); // [rows, groups, 1]
        let steps = (self.config.max_shrink * self.config.grid as f32).ceil() as usize;
        let mut best_err: Option<Tensor<B, 3>> = None;
        let mut best_max = amax.clone();
        for i in 0..steps.max(1) {
            let max_val = amax
                .clone()
                .mul_scalar(1.0 - i as f32 / self.config.grid as f32);
            let clipped = clamp_sym(ws3.clone(), max_val.clone());
            let flat = clipped.reshape([rows, padded]).slice([0..rows, 0..cols]);
            let q = kernels.dequantize(&kernels.quantize(flat, None, &self.spec)?);
            let e = ws3.clone() - group::pad_cols(q, padded).reshape([rows, groups, g]);
            // err[r, k] = e[r,k,:] · H_kk · e[r,k,:]ᵀ, batched over groups.
            let e_by_group = e.swap_dims(0, 1); // [groups, rows, g]
            let err = (e_by_group.clone().matmul(blocks.clone()) * e_by_group)
                .sum_dim(2)
                .swap_dims(0, 1); // [rows, groups, 1]
            match &best_err {
                None => best_err = Some(err),
                Some(prev) => {
                    let better = err.clone().lower(prev.clone());
                    best_err = Some(prev.clone().mask_where(better.clone(), err));
                    best_max = best_max.mask_where(better, max_val);
                }
            }
        }
        let clipped = clamp_sym(ws3, best_max);
        Ok(clipped.reshape([rows, padded]).slice([0..rows, 0..cols]))
    }
}

/// Clamps `x` (`[rows, groups, g]`) to `[-m, m]` with `m` per group (`[rows, groups, 1]`).
fn clamp_sym<B: Backend>(x: Tensor<B, 3>, m: Tensor<B, 3>) -> Tensor<B, 3> {
    let dims = x.dims();
    let m = m.expand(dims);
    x.min_pair(m.clone()).max_pair(m.neg())
}

/// Pads a square matrix with zero rows and columns up to `n`.
fn pad_square<B: Backend>(h: Tensor<B, 2>, n: usize) -> Tensor<B, 2> {
    let h = group::pad_cols(h, n);
    let [r, _] = h.dims();
    if r == n {
        return h;
    }
    Tensor::cat(vec![h.clone(), Tensor::zeros([n - r, n], &h.device())], 0)
}

/// The `groups` diagonal `g × g` blocks of `h` (`[groups·g, groups·g]`), `[groups, g, g]`.
fn diagonal_blocks<B: Backend>(h: Tensor<B, 2>, groups: usize, g: usize) -> Tensor<B, 3> {
    let blocks: Vec<Tensor<B, 3>> = (0..groups)
        .map(|k| {
            h.clone()
                .slice([k * g..(k + 1) * g, k * g..(k + 1) * g])
                .unsqueeze_dim(0)
        })
        .collect();
    Tensor::cat(blocks, 0)
}

impl<B: Backend> QuantMethod<B> for Awq {
    fn name(&self) -> String {
        let clip = if self.config.clip { "" } else { ", no clip" };
        match self.config.fixed_alpha {
            Some(a) => format!("AWQ {} (a {a}{clip})", self.spec),
            None => format!("AWQ {} (grid {}{clip})", self.spec, self.config.grid),
        }
    }

    fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        let [_, cols] = weight.dims();
        let calib = CalibrationStats::require(calibration, &QuantMethod::<B>::name(self), cols)?;
        let s = self.search_scale(weight, calib, kernels)?;
        let ws = weight.clone() * s.clone().unsqueeze_dim(0);
        let ws = if self.config.clip {
            let inv = s.clone().recip();
            let h = calib.gram_per_token() * inv.clone().unsqueeze_dim(0) * inv.unsqueeze_dim(1);
            self.search_clip(ws, h, kernels)?
        } else {
            ws
        };
        group::check_col_scale("AWQ", cols, Some(&s))?;
        Ok(Prepared::Fixed(QuantizedLinear {
            weight: kernels.quantize(ws, None, &self.spec)?,
            input_scale: Some(s.recip()),
            low_rank: None,
        }))
    }
}
