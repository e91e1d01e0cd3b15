//! LayerNorm and RMSNorm over the last dimension.

use crate::config::NormKind;
use burn::tensor::{backend::Backend, Tensor};

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
        let normed = match self.kind {
            NormKind::RmsNorm => {
                let ms = x.clone().square().mean_dim(last);
                x * ms.add_scalar(self.eps).sqrt().recip()
            }
            NormKind::LayerNorm => {
                let (var, mean) = x.clone().var_mean_bias(last);
                (x - mean) * var.add_scalar(self.eps).sqrt().recip()
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
