//! Activation statistics and TTQ's diagonal scale.
//!
//! TTQ scales input channel `i` of a linear layer by `D_ii = (s_i + λ)^α`, where `s_i` is
//! the energy of channel `i` of the layer's input over the tokens of the prompt.
//!
//! **Normalisation (a deliberate deviation from the paper's notation).** The paper writes the
//! raw squared norm `s_i = ||X_i,:||²`. We use the *mean* square over tokens,
//! `s_i = ||X_i,:||² / T`. For `λ = 0` the two differ only by the global factor `T^α`, which
//! group-wise quantization with a per-group scale ignores (`Q(cW) = c·Q(W)`, and `D^-1` undoes
//! `c`). With `λ > 0`, the mean keeps λ's meaning fixed as prompts grow: λ is a floor on the
//! per-token mean square, i.e. channels whose RMS is below `sqrt(λ)` are treated alike,
//! whether the prompt has 10 tokens or 10,000. With the raw sum, the same λ would fade as T
//! grows and dominate short prompts.
//!
//! **Range.** Statistics are kept as `(max_abs, mean_sq of x / max_abs)` and `D` is computed
//! in the log domain, so all-zero channels, a single token and activations near `f32::MAX`
//! all give a finite, positive `D`.

use crate::QuantError;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// Smallest channel maximum the log-domain formula divides by; smaller maxima are treated
/// as this value (their channels are then dominated by λ anyway). Public so that fused
/// implementations of [`TtqScaleConfig::scale`] use the same constants.
pub const MIN_MAX_ABS: f32 = 1e-15;
/// `ln D` is clamped to ±this, so `D` and `1/D` stay finite in f32 (e^80 ≈ 5.5e34).
pub const MAX_LOG_SCALE: f32 = 80.0;
/// `ln(s + λ)` is clamped to ±this: finite (so `α · ln(s + λ)` is never `0 · ∞`), and far
/// outside anything `MAX_LOG_SCALE` lets through for α ≥ 1e-28.
pub const MAX_LOG_ENERGY: f32 = 1e30;

/// Per-input-channel statistics of a layer input `X` (tokens × channels).
///
/// `mean_sq_normalized[i] = mean_t (X[t,i] / max_abs[i])²`, so the mean square of the channel
/// is `mean_sq_normalized[i] * max_abs[i]²` without overflowing f32.
#[derive(Debug, Clone)]
pub struct ChannelStats<B: Backend> {
    /// `max_t |X[t,i]|`, shape `[d]`.
    pub max_abs: Tensor<B, 1>,
    /// `mean_t (X[t,i]/max_abs[i])²` (0 where the channel is all zero), shape `[d]`.
    pub mean_sq_normalized: Tensor<B, 1>,
    /// Number of tokens the statistics were taken over.
    pub tokens: usize,
}

impl<B: Backend> ChannelStats<B> {
    /// The statistics of `x` (shape `[tokens, d]`) with Burn tensor ops.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d]`
    pub fn from_activations(x: Tensor<B, 2>) -> Self {
        let [tokens, _] = x.dims();
        let max_abs = x.clone().abs().max_dim(0); // [1, d]
        let safe = max_abs.clone().clamp_min(MIN_MAX_ABS);
        let mean_sq_normalized = (x / safe).square().mean_dim(0);
        Self {
            max_abs: max_abs.squeeze_dim(0),
            mean_sq_normalized: mean_sq_normalized.squeeze_dim(0),
            tokens,
        }
    }

    /// The plain mean square per channel, `mean_t X[t,i]²` (may overflow to +inf for
    /// activations beyond ~1.8e19; use [`TtqScaleConfig::scale`] for D).
    pub fn mean_sq(&self) -> Tensor<B, 1> {
        self.mean_sq_normalized.clone() * self.max_abs.clone().square()
    }
}

/// α and λ of TTQ's scale `D = (s + λ)^α`, with `s` the per-token mean square (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TtqScaleConfig {
    /// Exponent α ≥ 0. The paper's default is 0.5; α = 0 gives D = 1 (plain RTN).
    pub alpha: f32,
    /// Floor λ ≥ 0 added to the mean square. Default 1e-4: channels with RMS below 0.01 are
    /// not told apart. Inputs of LLM linear layers (after RMSNorm/LayerNorm) have channel
    /// RMS of order 0.1–10, so the default leaves live channels untouched and keeps dead
    /// channels (RMS 0) at a finite `D = λ^α`.
    pub lambda: f32,
}

impl Default for TtqScaleConfig {
    fn default() -> Self {
        Self {
            alpha: 0.5,
            lambda: 1e-4,
        }
    }
}

impl TtqScaleConfig {
    /// A checked configuration.
    pub fn new(alpha: f32, lambda: f32) -> Result<Self, QuantError> {
        let c = Self { alpha, lambda };
        c.validate()?;
        Ok(c)
    }

    /// Checks that α and λ are finite and non-negative.
    pub fn validate(&self) -> Result<(), QuantError> {
        if !self.alpha.is_finite() || self.alpha < 0.0 {
            return Err(QuantError::InvalidScaleConfig(format!(
                "alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        if !self.lambda.is_finite() || self.lambda < 0.0 {
            return Err(QuantError::InvalidScaleConfig(format!(
                "lambda must be finite and >= 0, got {}",
                self.lambda
            )));
        }
        Ok(())
    }

    /// `ln(s_i + λ)` per channel, computed as `2 ln m_i + ln(n_i + λ / m_i²)` with
    /// `m = max_abs` and `n = mean_sq_normalized`, and clamped to ±[`MAX_LOG_ENERGY`] so that
    /// it is finite even for an all-zero channel with λ = 0 (whose energy is 0).
    ///
    /// Both TTQ's scale (`ln D = α · ln(s + λ)`) and the test-time α search
    /// ([`crate::methods::TtqSearch`], which weights the weight error of channel `i` by
    /// `s_i + λ`) start from it.
    pub fn log_energy<B: Backend>(&self, stats: &ChannelStats<B>) -> Tensor<B, 1> {
        let m = stats.max_abs.clone().clamp_min(MIN_MAX_ABS);
        let m_sq = m.clone().square();
        let log_s = m.log().mul_scalar(2.0)
            + (stats.mean_sq_normalized.clone() + m_sq.recip().mul_scalar(self.lambda)).log();
        // ln(0) = -inf only when λ = 0 and the channel is all zero; the clamp makes it finite.
        log_s.clamp(-MAX_LOG_ENERGY, MAX_LOG_ENERGY)
    }

    /// `D_i = (s_i + λ)^α`, computed as `exp(α · ln(s_i + λ))` ([`Self::log_energy`]) with
    /// `ln D` clamped to ±80. Always finite and positive; exactly 1 when α = 0.
    pub fn scale<B: Backend>(&self, stats: &ChannelStats<B>) -> Tensor<B, 1> {
        let log_d = self
            .log_energy(stats)
            .mul_scalar(self.alpha)
            .clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE);
        if self.alpha == 0.0 {
            // With α = 0 the scale is exactly one, whatever the statistics.
            return log_d.ones_like();
        }
        log_d.exp()
    }
}
