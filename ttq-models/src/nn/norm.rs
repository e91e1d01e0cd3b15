//! LayerNorm and RMSNorm over the last dimension.

use crate::config::NormKind;
use crate::error::Result;
use burn::tensor::{backend::Backend, FloatDType, Tensor};
use ttq_core::QuantKernels;

/// A normalisation layer. Gemma's `(1 + w)` convention is folded into `weight` when loading.
#[derive(Debug, Clone)]
pub struct Norm<B: Backend> {
    kind: NormKind,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> Norm<B> {
    /// A norm of `kind` with `weight` (and `bias` for LayerNorm).
    pub fn new(kind: NormKind, weight: Tensor<B, 1>, bias: Option<Tensor<B, 1>>, eps: f64) -> Self {
        Self {
            kind,
            weight,
            bias,
            eps,
        }
    }

    /// Normalises over the last dimension. RMSNorm runs as `ops`' fused
    /// [`QuantKernels::rms_norm`] (one launch on CUDA); LayerNorm (OPT) in Burn ops.
    ///
    /// # Shapes
    /// - `x`: `[..., d]`; returns the same shape
    pub fn forward<const D: usize>(
        &self,
        x: Tensor<B, D>,
        ops: &dyn QuantKernels<B>,
    ) -> Result<Tensor<B, D>> {
        let last = D - 1;
        let dims = x.dims();
        let shape = {
            let mut s = [1usize; D];
            s[last] = self.weight.dims()[0];
            s
        };
        let y = match self.kind {
            NormKind::RmsNorm => {
                let d = dims[last];
                let rows = dims[..last].iter().product::<usize>();
                let y = ops.rms_norm(x.reshape([rows, d]), self.weight.clone(), self.eps)?;
                y.reshape(dims)
            }
            NormKind::LayerNorm => {
                // Statistics in f32 whatever the model's float type (see `ops::rms_norm`).
                let dtype = x.dtype();
                let xf = x.cast(FloatDType::F32);
                let (var, mean) = xf.clone().var_mean_bias(last);
                let normed = ((xf - mean) * var.add_scalar(self.eps).sqrt().recip()).cast(dtype);
                normed * self.weight.clone().reshape(shape)
            }
        };
        Ok(match &self.bias {
            Some(b) => y + b.clone().reshape(shape),
            None => y,
        })
    }
}
