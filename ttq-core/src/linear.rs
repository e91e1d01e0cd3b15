//! A linear layer that keeps its full-precision weight and runs a quantization method.

use crate::{
    kernels::TensorOpsKernels, CalibrationStats, Prepared, QuantError, QuantKernels, QuantMethod,
    QuantizedLinear,
};
use burn::tensor::{backend::Backend, Tensor};
use std::sync::Arc;

/// When a test-time (dynamic) method recomputes its quantized weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CalibrationPolicy {
    /// On every forward call, from that call's activations (the paper's evaluation setting).
    EveryCall,
    /// On the first call after construction or [`QuantLinear::reset`] (the prompt, i.e.
    /// prefill); later calls (decode) reuse those weights. The serving setting.
    #[default]
    FirstCall,
}

/// The active quantization of a layer.
#[derive(Debug, Clone)]
struct Active<B: Backend> {
    method: Arc<dyn QuantMethod<B>>,
    policy: CalibrationPolicy,
    prepared: Prepared<B>,
    calibrated: Option<QuantizedLinear<B>>,
}

/// `y = x · Wᵀ + b`, with `W` optionally replaced by a method's quantized weights.
///
/// The full-precision weight is always kept, so the method can be swapped or removed, and
/// test-time methods can re-quantize it for each prompt.
#[derive(Debug, Clone)]
pub struct QuantLinear<B: Backend> {
    /// `Wᵀ`, `[in, out]`, stored contiguously: dense matmuls on some backends (burn-ndarray)
    /// are several times slower on a transposed view.
    weight_t: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    kernels: Arc<dyn QuantKernels<B>>,
    active: Option<Active<B>>,
    /// Statistics of the inputs seen while observing (see [`Self::observe`]).
    observed: Option<CalibrationStats<B>>,
}

impl<B: Backend> QuantLinear<B> {
    /// A full-precision layer with `weight` (`[out, in]`, PyTorch layout) and optional
    /// `bias` (`[out]`), using the tensor-op kernels until [`Self::set_kernels`] is called.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Result<Self, QuantError> {
        let device = weight.device();
        let weight_t = Tensor::from_data(weight.transpose().into_data(), &device);
        Self::from_transposed(weight_t, bias)
    }

    /// [`Self::new`] from `Wᵀ` (`[in, out]`, contiguous), the layout the layer stores: for
    /// loaders that can transpose on the host faster than a backend copies a transposed view.
    pub fn from_transposed(
        weight_t: Tensor<B, 2>,
        bias: Option<Tensor<B, 1>>,
    ) -> Result<Self, QuantError> {
        let [_, out] = weight_t.dims();
        if let Some(b) = &bias {
            let [n] = b.dims();
            if n != out {
                return Err(QuantError::shape(
                    "linear bias",
                    format!("{out} entries (one per output feature)"),
                    format!("{n} entries"),
                ));
            }
        }
        Ok(Self {
            weight_t,
            bias,
            kernels: Arc::new(TensorOpsKernels),
            active: None,
            observed: None,
        })
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight_t.dims()[0]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight_t.dims()[1]
    }

    /// The full-precision weight, `[out, in]` (a transposed view of the stored `Wᵀ`).
    pub fn weight(&self) -> Tensor<B, 2> {
        self.weight_t.clone().transpose()
    }

    /// The bias, `[out]`.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }

    /// The kernels the layer runs its hot paths with.
    pub fn kernels(&self) -> &Arc<dyn QuantKernels<B>> {
        &self.kernels
    }

    /// Uses `kernels` for statistics, quantization and matmuls from now on. Drops weights
    /// already quantized (they may be in another kernel's format) and prepares again.
    pub fn set_kernels(&mut self, kernels: Arc<dyn QuantKernels<B>>) -> Result<(), QuantError> {
        self.kernels = kernels;
        if let Some(active) = self.active.take() {
            if matches!(active.prepared, Prepared::Dynamic(_)) {
                self.set_method(active.method, active.policy, None)?;
            } else {
                return Err(QuantError::Method {
                    method: active.method.name(),
                    message: "set kernels before quantizing with a static method".into(),
                });
            }
        }
        Ok(())
    }

    /// Quantizes with `method` from now on. `calibration` holds statistics of this layer's
    /// calibration inputs for methods that use them (see [`Self::observe`]).
    pub fn set_method(
        &mut self,
        method: Arc<dyn QuantMethod<B>>,
        policy: CalibrationPolicy,
        calibration: Option<&CalibrationStats<B>>,
    ) -> Result<(), QuantError> {
        if let Some(c) = calibration {
            self.check_input_features("calibration statistics", c.channels())?;
        }
        let prepared = method.prepare(&self.weight(), calibration, self.kernels.as_ref())?;
        self.active = Some(Active {
            method,
            policy,
            prepared,
            calibrated: None,
        });
        Ok(())
    }

    /// Starts accumulating statistics of every input this layer sees (calibration for AWQ
    /// and GPTQ), discarding earlier ones. Outputs are unchanged.
    pub fn observe(&mut self) {
        let device = self.weight_t.device();
        self.observed = Some(CalibrationStats::new(self.in_features(), &device));
    }

    /// Stops observing and returns what was accumulated since [`Self::observe`].
    pub fn take_observed(&mut self) -> Option<CalibrationStats<B>> {
        self.observed.take()
    }

    /// Bytes of a static low-rank part kept beside the quantized weight (f32), or 0.
    pub fn low_rank_bytes(&self) -> usize {
        let Some(a) = &self.active else { return 0 };
        let lr = match &a.prepared {
            Prepared::Fixed(q) => q.low_rank.as_ref(),
            Prepared::Dynamic(d) => d.low_rank.as_ref(),
        };
        lr.map_or(0, |l| l.f32_bytes())
    }

    /// Back to full precision.
    pub fn clear_method(&mut self) {
        self.active = None;
    }

    /// The name of the active method, or `"fp"`.
    pub fn method_name(&self) -> String {
        self.active
            .as_ref()
            .map_or_else(|| "fp".to_string(), |a| a.method.name())
    }

    /// Forgets test-time calibrated weights: with [`CalibrationPolicy::FirstCall`], the next
    /// call calibrates again (call this between prompts).
    pub fn reset(&mut self) {
        if let Some(a) = &mut self.active {
            a.calibrated = None;
        }
    }

    /// The weights the layer multiplies with right now, if quantized and calibrated.
    pub fn quantized(&self) -> Option<&QuantizedLinear<B>> {
        let a = self.active.as_ref()?;
        match &a.prepared {
            Prepared::Fixed(q) => Some(q),
            Prepared::Dynamic(_) => a.calibrated.as_ref(),
        }
    }

    fn check_input_features(&self, what: &str, got: usize) -> Result<(), QuantError> {
        if got != self.in_features() {
            return Err(QuantError::shape(
                what,
                format!("{} input features", self.in_features()),
                format!("{got}"),
            ));
        }
        Ok(())
    }

    /// Applies the layer to `x` of any rank ≥ 1 whose last dimension is `in`.
    /// For TTQ, the statistics are taken over all leading positions (batch × tokens).
    ///
    /// # Shapes
    /// - `x`: `[..., in]`; returns `[..., out]`
    pub fn forward<const D: usize>(&mut self, x: Tensor<B, D>) -> Result<Tensor<B, D>, QuantError> {
        let dims = x.dims();
        let in_features = dims[D - 1];
        self.check_input_features("linear input", in_features)?;
        let tokens: usize = dims[..D - 1].iter().product();
        let x2: Tensor<B, 2> = x.reshape([tokens, in_features]);
        let y = self.forward_2d(x2)?;
        let mut out_dims = dims;
        out_dims[D - 1] = self.out_features();
        Ok(y.reshape(out_dims))
    }

    fn forward_2d(&mut self, x: Tensor<B, 2>) -> Result<Tensor<B, 2>, QuantError> {
        if let Some(stats) = &mut self.observed {
            stats.accumulate(x.clone())?;
        }
        let kernels = self.kernels.clone();
        let y = match &mut self.active {
            None => kernels.dense_matmul(x, self.weight_t.clone())?,
            Some(active) => match &active.prepared {
                Prepared::Fixed(q) => q.forward(x, kernels.as_ref())?,
                Prepared::Dynamic(dynamic) => {
                    let reuse = active.policy == CalibrationPolicy::FirstCall
                        && active.calibrated.is_some();
                    if !reuse {
                        let q = active.method.realize(dynamic, &x, kernels.as_ref())?;
                        active.calibrated = Some(q);
                    }
                    let q = active.calibrated.as_ref().expect("calibrated just above");
                    q.forward(x, kernels.as_ref())?
                }
            },
        };
        Ok(match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        })
    }
}
