//! TTQ with a test-time search over α (`ttqs`): per prompt and per layer, the exponent of
//! `D = (s + λ)^α` is picked from a small grid by the layer's estimated output error.
//!
//! Not in the paper, which fixes α for every prompt and layer. The estimate uses nothing but
//! what TTQ already computes from the prompt: the per-channel energy `s_i` (mean square over
//! the prompt's tokens). With inputs whose channels are uncorrelated, the expected squared
//! output error of a weight error `ΔW` is `Σ_i s_i Σ_r ΔW_ri²`; the search minimises that
//! (with `s_i + λ` in place of `s_i`, the same floor TTQ uses), over an evenly strided subset
//! of the weight's rows, and quantizes the whole weight with the winner. No calibration data,
//! and no host round trip: the choice stays on the device.
//!
//! Cost per layer and prompt: one quantize and one dequantize of `grid × sample_rows` rows
//! (all candidates stacked in one call), a few element-wise launches on `grid × cols`
//! vectors, then the same quantize of the whole weight as plain TTQ.

use super::ttq::{check_features, quantize_scaled};
use crate::stats::MAX_LOG_SCALE;
use crate::{
    ChannelStats, DynamicWeight, Prepared, QuantError, QuantKernels, QuantMethod, QuantSpec,
    QuantizedLinear, TtqScaleConfig,
};
use burn::tensor::{backend::Backend, s, FloatDType, Int, Tensor, TensorData};

/// TTQ whose α is chosen per prompt and layer from [`Self::alphas`].
#[derive(Debug, Clone)]
pub struct TtqSearch {
    spec: QuantSpec,
    alphas: Vec<f32>,
    lambda: f32,
    sample_rows: usize,
}

impl TtqSearch {
    /// The default grid: α = 0 (RTN) to the paper's 0.5 in steps of 0.1.
    pub const DEFAULT_ALPHAS: [f32; 6] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5];
    /// Rows of the weight the error is estimated on, by default.
    pub const DEFAULT_SAMPLE_ROWS: usize = 128;
    /// Most α values a grid may hold (every one costs a slice of quantize work per prompt).
    pub const MAX_GRID: usize = 16;
    /// Smallest non-zero α of a grid: below it `D` is within 1% of one for any channel
    /// energy between 1e-4 and 1e4, so it is RTN by another name.
    pub const MIN_ALPHA: f32 = 1e-3;

    /// A search over `alphas` (sorted ascending; ties go to the smallest α) with floor
    /// `lambda`, estimating the error on `sample_rows` rows of each weight.
    pub fn new(
        spec: QuantSpec,
        alphas: &[f32],
        lambda: f32,
        sample_rows: usize,
    ) -> Result<Self, QuantError> {
        let bad = |m: String| Err(QuantError::InvalidScaleConfig(m));
        if alphas.is_empty() || alphas.len() > Self::MAX_GRID {
            return bad(format!(
                "the alpha grid must hold 1 to {} values, got {}",
                Self::MAX_GRID,
                alphas.len()
            ));
        }
        for &a in alphas {
            TtqScaleConfig::new(a, lambda)?;
            if a != 0.0 && a < Self::MIN_ALPHA {
                return bad(format!(
                    "grid alpha {a} is below {} (use 0 for RTN)",
                    Self::MIN_ALPHA
                ));
            }
        }
        let mut sorted = alphas.to_vec();
        sorted.sort_by(f32::total_cmp);
        sorted.dedup();
        if sample_rows == 0 {
            return bad("the search needs at least one sample row".into());
        }
        Ok(Self {
            spec,
            alphas: sorted,
            lambda,
            sample_rows,
        })
    }

    /// The default search ([`Self::DEFAULT_ALPHAS`], λ = 1e-4, [`Self::DEFAULT_SAMPLE_ROWS`]).
    pub fn with_defaults(spec: QuantSpec) -> Self {
        Self::new(
            spec,
            &Self::DEFAULT_ALPHAS,
            TtqScaleConfig::default().lambda,
            Self::DEFAULT_SAMPLE_ROWS,
        )
        .expect("the defaults are valid")
    }

    /// The α grid, ascending.
    pub fn alphas(&self) -> &[f32] {
        &self.alphas
    }

    /// λ.
    pub fn lambda(&self) -> f32 {
        self.lambda
    }

    /// Rows the error is estimated on.
    pub fn sample_rows(&self) -> usize {
        self.sample_rows
    }

    /// The rows of `weight` the error is estimated on: every `rows / n`-th row, `n` of them
    /// (all rows when there are at most `n`).
    ///
    /// # Shapes
    /// - `weight`: `[rows, cols]`; returns `[min(rows, n), cols]`
    pub fn sampled_rows<B: Backend>(&self, weight: &Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, _] = weight.dims();
        if rows <= self.sample_rows {
            return weight.clone();
        }
        let step = rows / self.sample_rows;
        weight
            .clone()
            .slice(s![0..step * self.sample_rows; step as isize, ..])
    }

    /// `ln D` for every grid α, `[grid, cols]`, and the estimated error of each, `[grid]`
    /// (f32, relative: scaled by a positive factor common to the grid; NaN read as +∞).
    ///
    /// The error of α is `Σ_i (s_i + λ) Σ_r (W_ri − D_i^-1 · deq(Q(W·D))_ri)²` over the
    /// sampled rows `r`.
    fn errors<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        stats: &ChannelStats<B>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<(Tensor<B, 2>, Tensor<B, 1>), QuantError> {
        let [_, cols] = weight.dims();
        let device = weight.device();
        let k = self.alphas.len();
        let config = TtqScaleConfig::new(1.0, self.lambda)?;
        // Beyond ±MAX_LOG_SCALE / (smallest non-zero α), every non-zero α clamps ln D to ±80
        // anyway; the tighter bound keeps 0 · ln(s + λ) finite in 16-bit floats too.
        let min_alpha = self
            .alphas
            .iter()
            .copied()
            .find(|&a| a > 0.0)
            .unwrap_or(1.0);
        let bound = MAX_LOG_SCALE / min_alpha;
        let log_e = config
            .log_energy(stats)
            .clamp(-bound, bound)
            .reshape([1, cols]);
        let alphas =
            Tensor::<B, 2>::from_data(TensorData::new(self.alphas.clone(), [k, 1]), &device)
                .cast(log_e.dtype());
        // Same operations, in the same order, as `TtqScaleConfig::scale`: the chosen α gives
        // the `D` plain TTQ would.
        let log_d = (alphas * log_e.clone()).clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE); // [k, cols]
        let rows = self.sampled_rows(weight);
        let [r, _] = rows.dims();
        let stacked = (rows.clone().unsqueeze_dim::<3>(0) * log_d.clone().exp().unsqueeze_dim(1))
            .reshape([k * r, cols]);
        let deq = kernels.dequantize(&kernels.quantize(stacked.clone(), None, &self.spec)?);
        // In the scaled space: (deq − W·D)² / D² = (Ŵ − W)²; weight (s + λ) / max(s + λ).
        let diff = (deq - stacked).cast(FloatDType::F32).reshape([k, r, cols]);
        let log_e = log_e.cast(FloatDType::F32);
        let top = log_e.clone().max().reshape([1, 1]);
        let factor = (log_e - top - log_d.clone().cast(FloatDType::F32).mul_scalar(2.0)).exp();
        let err = (diff.square() * factor.unsqueeze_dim(1))
            .sum_dim(2)
            .sum_dim(1)
            .reshape([k]);
        let err = err.clone().mask_fill(err.is_nan(), f32::INFINITY);
        Ok((log_d, err))
    }

    /// The estimated error of every grid α (see the module docs), in grid order, read back to
    /// the host (a synchronisation: for diagnostics and tests; [`QuantMethod::realize`] keeps
    /// the choice on the device).
    pub fn estimated_errors<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        stats: &ChannelStats<B>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Vec<f32>, QuantError> {
        let (_, err) = self.errors(weight, stats, kernels)?;
        err.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| QuantError::Method {
                method: QuantMethod::<B>::name(self),
                message: format!("reading the search errors back: {e:?}"),
            })
    }

    /// The α the search picks for `weight` under `stats` (host round trip, for diagnostics).
    pub fn choose_alpha<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        stats: &ChannelStats<B>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<f32, QuantError> {
        let err = self.estimated_errors(weight, stats, kernels)?;
        let best = err
            .iter()
            .enumerate()
            .fold(0, |best, (i, e)| if *e < err[best] { i } else { best });
        Ok(self.alphas[best])
    }

    /// Quantizes `weight` for activations `x` (`[tokens, cols]`): statistics through the
    /// kernels, then [`Self::quantize_with_stats`].
    pub fn quantize_for<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        x: &Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        check_features(weight, x)?;
        self.quantize_with_stats(weight, &kernels.channel_stats(x.clone()), kernels)
    }

    /// Quantizes `weight` for activation statistics `stats` with the α of least estimated
    /// error, chosen on the device.
    pub fn quantize_with_stats<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        stats: &ChannelStats<B>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        if let [alpha] = self.alphas[..] {
            // Nothing to search: plain TTQ.
            let scale = TtqScaleConfig::new(alpha, self.lambda)?;
            return quantize_scaled(weight, stats, &self.spec, &scale, kernels);
        }
        let (log_d, err) = self.errors(weight, stats, kernels)?;
        let [_, cols] = log_d.dims();
        let best: Tensor<B, 1, Int> = err.argmin(0);
        let log_d = log_d.select(0, best).reshape([cols]);
        let d = log_d.exp();
        // As the default `QuantKernels::ttq_scales` does.
        let d_inv = d.clone().recip();
        let q = kernels.quantize(weight.clone(), Some(d), &self.spec)?;
        Ok(QuantizedLinear {
            weight: q,
            input_scale: Some(d_inv),
            low_rank: None,
        })
    }
}

impl<B: Backend> QuantMethod<B> for TtqSearch {
    fn name(&self) -> String {
        format!(
            "TTQ-search {} (alpha in {:?}, lambda {:e}, {} sample rows)",
            self.spec, self.alphas, self.lambda, self.sample_rows
        )
    }

    fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        _calibration: Option<&crate::CalibrationStats<B>>,
        _kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        Ok(Prepared::whole_weight(weight))
    }

    fn realize(
        &self,
        prepared: &DynamicWeight<B>,
        x: &Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        let mut q = self.quantize_for(&prepared.weight, x, kernels)?;
        q.low_rank = prepared.low_rank.clone();
        Ok(q)
    }
}
