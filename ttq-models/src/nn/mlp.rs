//! The feed-forward sub-layer: ReLU (OPT) or gated (SwiGLU, GeGLU-tanh).

use crate::config::MlpKind;
use crate::error::Result;
use burn::tensor::{
    activation::{relu, silu},
    backend::Backend,
    Tensor,
};
use ttq_core::QuantLinear;

/// The MLP of one block.
#[derive(Debug, Clone)]
pub struct Mlp<B: Backend> {
    /// Kind.
    pub kind: MlpKind,
    /// Gate projection (gated kinds only), `[intermediate, hidden]`.
    pub gate: Option<QuantLinear<B>>,
    /// Up projection (OPT's `fc1`), `[intermediate, hidden]`.
    pub up: QuantLinear<B>,
    /// Down projection (OPT's `fc2`), `[hidden, intermediate]`.
    pub down: QuantLinear<B>,
}

/// `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`, the tanh approximation of GELU.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(c);
    x.clone().mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, tokens, hidden]`; returns the same shape
    pub fn forward(&mut self, x: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let inner = match (self.kind, &mut self.gate) {
            (MlpKind::Relu, _) => relu(self.up.forward(x)?),
            (MlpKind::SwiGlu, Some(gate)) => silu(gate.forward(x.clone())?) * self.up.forward(x)?,
            (MlpKind::GeGluTanh, Some(gate)) => {
                gelu_tanh(gate.forward(x.clone())?) * self.up.forward(x)?
            }
            (kind, None) => {
                return Err(crate::ModelError::Invalid(format!(
                    "{kind:?} MLP built without a gate projection"
                )))
            }
        };
        Ok(self.down.forward(inner)?)
    }
}
