//! LayerNorm and RMSNorm over the last dimension.

use crate::config::NormKind;
use burn::tensor::{backend::Backend, FloatDType, Tensor};

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

    /// Normalises over the last dimension.
    ///
    /// # Shapes
    /// - `x`: `[..., d]`; returns the same shape
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let last = D - 1;
        // Statistics in f32 whatever the model's float type: squares of f16 activations
        // overflow f16 (Gemma's residual stream reaches the thousands). A no-op on f32.
        let dtype = x.dtype();
        let xf = x.clone().cast(FloatDType::F32);
        let normed = match self.kind {
            NormKind::RmsNorm => {
                let ms = xf.square().mean_dim(last);
                x * ms.add_scalar(self.eps).sqrt().recip().cast(dtype)
            }
            NormKind::LayerNorm => {
                let (var, mean) = xf.clone().var_mean_bias(last);
                ((xf - mean) * var.add_scalar(self.eps).sqrt().recip()).cast(dtype)
            }
        };
        let shape = {
            let mut s = [1usize; D];
            s[last] = self.weight.dims()[0];
            s
        };
        let y = normed * self.weight.clone().reshape(shape);
        match &self.bias {
            Some(b) => y + b.clone().reshape(shape),
            None => y,
        }
    }
}
