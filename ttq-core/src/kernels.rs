//! The hot paths of quantized inference behind one trait, so that faster implementations
//! (the plain-Rust CPU reference and the CUDA kernels of `ttq-kernels`) plug into
//! [`crate::QuantLinear`] without this crate depending on them.
//!
//! The trait lives here rather than in `ttq-kernels` so that the dependency arrows keep
//! pointing down (core ← kernels): `ttq-kernels` implements it for its own types.

use crate::ops::{self, GateActivation};
use crate::{group, ChannelStats, QuantError, QuantSpec, QuantizedWeight, TtqScaleConfig};
use burn::tensor::{backend::Backend, Tensor};

/// The operations TTQ runs on every prompt, and the element-wise operations of a decoder
/// layer between its matmuls (provided as Burn ops, see [`crate::ops`]; a backend with fused
/// kernels overrides them: at decode time a layer is bound by its number of launches).
pub trait QuantKernels<B: Backend>: std::fmt::Debug + Send + Sync {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// Per-input-channel statistics of `x` over its tokens.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d]`
    fn channel_stats(&self, x: Tensor<B, 2>) -> ChannelStats<B>;

    /// TTQ's scale `D` for `stats` and its reciprocal, the input scale of the quantized
    /// layer: `(config.scale(stats), 1 / D)` ([`TtqScaleConfig::scale`]), as Burn ops by
    /// default (about a dozen element-wise launches per layer); a backend with a fused
    /// kernel overrides it (one launch).
    ///
    /// # Shapes
    /// - returns two `[d]` tensors
    fn ttq_scales(
        &self,
        stats: &ChannelStats<B>,
        config: &TtqScaleConfig,
    ) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let d = config.scale(stats);
        let inv = d.clone().recip();
        (d, inv)
    }

    /// Group-wise quantization of `w · diag(col_scale)` with packing.
    ///
    /// # Shapes
    /// - `w`: `[rows, cols]`; `col_scale`: `[cols]`
    fn quantize(
        &self,
        w: Tensor<B, 2>,
        col_scale: Option<Tensor<B, 1>>,
        spec: &QuantSpec,
    ) -> Result<QuantizedWeight<B>, QuantError>;

    /// The dense matrix a quantized weight stands for.
    fn dequantize(&self, q: &QuantizedWeight<B>) -> Tensor<B, 2>;

    /// `y = (x ⊙ input_scale) · dequant(q)ᵀ`, where `input_scale` (TTQ's `D^-1`) multiplies
    /// each input channel.
    ///
    /// # Shapes
    /// - `x`: `[tokens, cols]`; `input_scale`: `[cols]`; returns `[tokens, rows]`
    fn matmul(
        &self,
        x: Tensor<B, 2>,
        q: &QuantizedWeight<B>,
        input_scale: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 2>, QuantError>;

    /// `x · w_t` for a full-precision weight stored transposed (`w_t` `[cols, rows]`): the
    /// layers that are not quantized and the LM head. Burn's matmul by default; a backend
    /// with a faster dense product (cuBLAS on the GPU) overrides it.
    ///
    /// # Shapes
    /// - `x`: `[tokens, cols]`; `w_t`: `[cols, rows]`; returns `[tokens, rows]`
    fn dense_matmul(&self, x: Tensor<B, 2>, w_t: Tensor<B, 2>) -> Result<Tensor<B, 2>, QuantError> {
        check_dense_shapes(&x, &w_t)?;
        Ok(x.matmul(w_t))
    }

    /// RMSNorm of each row, statistics in f32 ([`ops::rms_norm`]).
    ///
    /// # Shapes
    /// - `x`: `[rows, d]`; `weight`: `[d]`; returns `[rows, d]`
    fn rms_norm(
        &self,
        x: Tensor<B, 2>,
        weight: Tensor<B, 1>,
        eps: f64,
    ) -> Result<Tensor<B, 2>, QuantError> {
        ops::rms_norm(x, weight, eps)
    }

    /// Rotate-half rotary embedding ([`ops::rope`]).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, heads, head_dim]`; `cos`, `sin`: `[tokens, head_dim]`
    fn rope(
        &self,
        x: Tensor<B, 4>,
        cos: Tensor<B, 2>,
        sin: Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>, QuantError> {
        ops::rope(x, cos, sin)
    }

    /// `softmax(scale · scores + mask)` per row, mask row `r % t` for score row `r`
    /// ([`ops::masked_softmax`]).
    ///
    /// # Shapes
    /// - `scores`: `[rows, cols]`; `mask`: `[t, cols]`
    fn masked_softmax(
        &self,
        scores: Tensor<B, 2>,
        scale: f64,
        mask: Option<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 2>, QuantError> {
        ops::masked_softmax(scores, scale, mask)
    }

    /// `act(gate) ⊙ up` of a gated MLP ([`ops::gated`]).
    ///
    /// # Shapes
    /// - `gate`, `up`: `[rows, d]`; returns `[rows, d]`
    fn gated(
        &self,
        gate: Tensor<B, 2>,
        up: Tensor<B, 2>,
        act: GateActivation,
    ) -> Result<Tensor<B, 2>, QuantError> {
        ops::gated(gate, up, act)
    }

    /// `softmax(scale · q kᵀ + mask) v` per `(batch, head)`, mask row `r % t` for query row
    /// `r` ([`ops::attention`]).
    ///
    /// # Shapes
    /// - `q`: `[b, h, rows, hd]`; `k`, `v`: `[b, h, cols, hd]`; `mask`: `[t, cols]`; returns
    ///   `[b, h, rows, hd]`
    fn attention(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        scale: f64,
        mask: Option<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 4>, QuantError> {
        ops::attention(q, k, v, scale, mask)
    }
}

/// Checks the shapes of a [`QuantKernels::dense_matmul`] call: `x`'s columns are `w_t`'s
/// rows.
pub fn check_dense_shapes<B: Backend>(
    x: &Tensor<B, 2>,
    w_t: &Tensor<B, 2>,
) -> Result<(), QuantError> {
    let [_, cols] = x.dims();
    let [k, _] = w_t.dims();
    if cols != k {
        return Err(QuantError::shape(
            "dense matmul",
            format!("a weight of {cols} input features"),
            format!("{k}"),
        ));
    }
    Ok(())
}

/// Checks the shapes of a [`QuantKernels::matmul`] call.
pub fn check_matmul_shapes<B: Backend>(
    x: &Tensor<B, 2>,
    q: &QuantizedWeight<B>,
    input_scale: Option<&Tensor<B, 1>>,
) -> Result<(), QuantError> {
    let [_, cols] = x.dims();
    if cols != q.shape[1] {
        return Err(QuantError::shape(
            "quantized matmul",
            format!("inputs with {} features", q.shape[1]),
            format!("{cols} features"),
        ));
    }
    group::check_col_scale("quantized matmul", cols, input_scale)
}

/// The reference semantics, in Burn tensor ops: runs on any backend, dequantizes the whole
/// weight and uses the backend's dense matmul.
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorOpsKernels;

impl<B: Backend> QuantKernels<B> for TensorOpsKernels {
    fn name(&self) -> &'static str {
        "tensor-ops"
    }

    fn channel_stats(&self, x: Tensor<B, 2>) -> ChannelStats<B> {
        ChannelStats::from_activations(x)
    }

    fn quantize(
        &self,
        w: Tensor<B, 2>,
        col_scale: Option<Tensor<B, 1>>,
        spec: &QuantSpec,
    ) -> Result<QuantizedWeight<B>, QuantError> {
        group::quantize(w, col_scale, spec)
    }

    fn dequantize(&self, q: &QuantizedWeight<B>) -> Tensor<B, 2> {
        group::dequantize(q)
    }

    fn matmul(
        &self,
        x: Tensor<B, 2>,
        q: &QuantizedWeight<B>,
        input_scale: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 2>, QuantError> {
        check_matmul_shapes(&x, q, input_scale.as_ref())?;
        let x = match input_scale {
            Some(s) => x * s.unsqueeze_dim(0),
            None => x,
        };
        Ok(x.matmul(group::dequantize(q).transpose()))
    }
}
