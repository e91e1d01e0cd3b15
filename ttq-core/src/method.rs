//! One trait for weight quantization methods.
//!
//! A method turns a layer's full-precision weight into something the layer multiplies with,
//! in up to two stages:
//! - [`QuantMethod::prepare`], once per layer: from the weight and, for calibration-based
//!   methods (AWQ, GPTQ), the calibration activations of that layer. Static methods finish
//!   here ([`Prepared::Fixed`]); test-time methods keep what they need for later
//!   ([`Prepared::Dynamic`], e.g. the weight, or the residual of a static low-rank part).
//! - [`QuantMethod::realize`], for dynamic methods only, whenever the layer (re)calibrates:
//!   from the prepared state and the live activations of the prompt.

use crate::{CalibrationStats, QuantError, QuantKernels, QuantSpec, QuantizedWeight};
use burn::tensor::{backend::Backend, Tensor};

/// A static low-rank part `B·A` of a weight (`W ≈ B·A + residual`).
#[derive(Debug, Clone)]
pub struct LowRank<B: Backend> {
    /// `[rows, rank]`.
    pub b: Tensor<B, 2>,
    /// `[rank, cols]`.
    pub a: Tensor<B, 2>,
}

impl<B: Backend> LowRank<B> {
    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// Bytes of the two factors when stored in f32: the extra memory of a low-rank part.
    pub fn f32_bytes(&self) -> usize {
        let [rows, r] = self.b.dims();
        let [_, cols] = self.a.dims();
        4 * r * (rows + cols)
    }
}

/// What a quantized layer multiplies with:
/// `y = (x ⊙ input_scale) · dequant(weight)ᵀ + (x · Aᵀ) · Bᵀ`.
#[derive(Debug, Clone)]
pub struct QuantizedLinear<B: Backend> {
    /// Quantized weight (of `W·diag(D)` for scaled methods).
    pub weight: QuantizedWeight<B>,
    /// Per-input-channel factor applied to `x` first (`D^-1` for TTQ and AWQ), `[cols]`.
    pub input_scale: Option<Tensor<B, 1>>,
    /// Optional static low-rank part kept in full precision.
    pub low_rank: Option<LowRank<B>>,
}

impl<B: Backend> QuantizedLinear<B> {
    /// The dense weight this stands for: `dequant(q) ⊙ input_scale (per column) + B·A`.
    pub fn effective_weight(&self, kernels: &dyn QuantKernels<B>) -> Tensor<B, 2> {
        let mut w = kernels.dequantize(&self.weight);
        if let Some(s) = &self.input_scale {
            w = w * s.clone().unsqueeze_dim(0);
        }
        if let Some(lr) = &self.low_rank {
            w = w + lr.b.clone().matmul(lr.a.clone());
        }
        w
    }

    /// `y = x · W_effᵀ` through the kernels (bias not included).
    ///
    /// # Shapes
    /// - `x`: `[tokens, cols]`; returns `[tokens, rows]`
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Tensor<B, 2>, QuantError> {
        let y = kernels.matmul(x.clone(), &self.weight, self.input_scale.clone())?;
        Ok(match &self.low_rank {
            Some(lr) => {
                y + x
                    .matmul(lr.a.clone().transpose())
                    .matmul(lr.b.clone().transpose())
            }
            None => y,
        })
    }
}

/// State a dynamic method keeps between calibrations of one layer.
#[derive(Debug, Clone)]
pub struct DynamicWeight<B: Backend> {
    /// The part of the weight quantized at test time, `[rows, cols]`.
    pub weight: Tensor<B, 2>,
    /// A static part kept beside it.
    pub low_rank: Option<LowRank<B>>,
}

/// The result of [`QuantMethod::prepare`].
#[derive(Debug, Clone)]
pub enum Prepared<B: Backend> {
    /// Quantized once and for all.
    Fixed(QuantizedLinear<B>),
    /// Quantized again from live activations by [`QuantMethod::realize`].
    Dynamic(DynamicWeight<B>),
}

impl<B: Backend> Prepared<B> {
    /// The dynamic state of a test-time method that quantizes the whole weight at every
    /// calibration (TTQ, TTQ-search).
    pub fn whole_weight(weight: &Tensor<B, 2>) -> Self {
        Prepared::Dynamic(DynamicWeight {
            weight: weight.clone(),
            low_rank: None,
        })
    }
}

/// A weight quantization method (RTN, TTQ, AWQ, GPTQ, TTQ + low-rank, …).
pub trait QuantMethod<B: Backend>: std::fmt::Debug + Send + Sync {
    /// A name for tables and logs, including the method's parameters.
    fn name(&self) -> String;

    /// The group-wise spec the method quantizes with.
    fn spec(&self) -> &QuantSpec;

    /// Once per layer. `calibration` holds statistics of this layer's calibration inputs
    /// for methods that need them (AWQ, GPTQ); others ignore it.
    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError>;

    /// For methods whose `prepare` returns [`Prepared::Dynamic`]: the weights for the live
    /// activations `x` (`[tokens, cols]`).
    fn realize(
        &self,
        prepared: &DynamicWeight<B>,
        x: &Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        let _ = (prepared, x, kernels);
        Err(QuantError::Method {
            method: self.name(),
            message: "this method is static and has no test-time calibration".into(),
        })
    }
}
