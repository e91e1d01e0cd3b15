//! Test-time quantization: quantize `W·D` with `D` from the live prompt's activations.

use crate::{
    ChannelStats, DynamicWeight, Prepared, QuantError, QuantKernels, QuantMethod, QuantSpec,
    QuantizedLinear, TtqScaleConfig,
};
use burn::tensor::{backend::Backend, Tensor};

/// Activation-aware test-time quantization (Koike-Akino et al.): for input `X`,
/// `D = (s + λ)^α` per input channel, `y = Q(W·D) · (D^-1 x)`.
#[derive(Debug, Clone, Copy)]
pub struct Ttq {
    /// The quantizer applied to `W·D`.
    pub spec: QuantSpec,
    /// α and λ.
    pub scale: TtqScaleConfig,
}

impl Ttq {
    /// TTQ with `spec` and a checked scale configuration.
    pub fn new(spec: QuantSpec, scale: TtqScaleConfig) -> Result<Self, QuantError> {
        scale.validate()?;
        Ok(Self { spec, scale })
    }

    /// Quantizes `weight` for activations `x`: the step shared by TTQ and TTQ + low-rank.
    pub fn quantize_for<B: Backend>(
        &self,
        weight: &Tensor<B, 2>,
        x: &Tensor<B, 2>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<QuantizedLinear<B>, QuantError> {
        check_features(weight, x)?;
        let stats = kernels.channel_stats(x.clone());
        quantize_scaled(weight, &stats, &self.spec, &self.scale, kernels)
    }
}

/// Checks that activations `x` (`[tokens, cols]`) fit `weight` (`[rows, cols]`).
pub(crate) fn check_features<B: Backend>(
    weight: &Tensor<B, 2>,
    x: &Tensor<B, 2>,
) -> Result<(), QuantError> {
    let [_, cols] = weight.dims();
    let [_, x_cols] = x.dims();
    if x_cols != cols {
        return Err(QuantError::shape(
            "TTQ calibration",
            format!("activations with {cols} features"),
            format!("{x_cols} features"),
        ));
    }
    Ok(())
}

/// `Q(W·D)` with `D = (s + λ)^α` from `stats`, and `D^-1` as the layer's input scale: the
/// quantize step of TTQ and of its α search.
pub(crate) fn quantize_scaled<B: Backend>(
    weight: &Tensor<B, 2>,
    stats: &ChannelStats<B>,
    spec: &QuantSpec,
    scale: &TtqScaleConfig,
    kernels: &dyn QuantKernels<B>,
) -> Result<QuantizedLinear<B>, QuantError> {
    let (d, d_inv) = kernels.ttq_scales(stats, scale);
    let weight = kernels.quantize(weight.clone(), Some(d), spec)?;
    Ok(QuantizedLinear {
        weight,
        input_scale: Some(d_inv),
        low_rank: None,
    })
}

impl<B: Backend> QuantMethod<B> for Ttq {
    fn name(&self) -> String {
        format!(
            "TTQ {} (alpha {}, lambda {:e})",
            self.spec, self.scale.alpha, self.scale.lambda
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
