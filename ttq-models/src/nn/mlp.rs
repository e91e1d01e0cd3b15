//! The feed-forward sub-layer: ReLU (OPT) or gated (SwiGLU, GeGLU-tanh).

use crate::config::MlpKind;
use crate::error::Result;
use burn::tensor::{activation::relu, backend::Backend, Tensor};
use ttq_core::{GateActivation, QuantKernels, QuantLinear};

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

impl<B: Backend> Mlp<B> {
    /// The gated kinds run `ops`' fused [`QuantKernels::gated`] (one launch on CUDA).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, hidden]`; returns the same shape
    pub fn forward(&mut self, x: Tensor<B, 3>, ops: &dyn QuantKernels<B>) -> Result<Tensor<B, 3>> {
        let act = match self.kind {
            MlpKind::Relu => None,
            MlpKind::SwiGlu => Some(GateActivation::Silu),
            MlpKind::GeGluTanh => Some(GateActivation::GeluTanh),
        };
        let inner = match (act, &mut self.gate) {
            (None, _) => relu(self.up.forward(x)?),
            (Some(act), Some(gate)) => {
                let g = gate.forward(x.clone())?;
                let [b, t, d] = g.dims();
                let u = self.up.forward(x)?.reshape([b * t, d]);
                ops.gated(g.reshape([b * t, d]), u, act)?.reshape([b, t, d])
            }
            (Some(_), None) => {
                return Err(crate::ModelError::Invalid(format!(
                    "{:?} MLP built without a gate projection",
                    self.kind
                )))
            }
        };
        Ok(self.down.forward(inner)?)
    }
}
