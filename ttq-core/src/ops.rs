//! The element-wise operations of a decoder layer that sit between the quantized matmuls:
//! RMSNorm, rotate-half RoPE, the attention's scaled and masked softmax and the gated MLP
//! activation, in Burn tensor ops.
//!
//! They are here, next to [`crate::QuantKernels`], because at decode time (one token) a
//! layer is bound by the number of kernel launches, not by arithmetic: written as Burn ops
//! an RMSNorm is about eight launches, a RoPE six, a masked softmax seven and a GELU-tanh
//! gate eight. The trait's
//! provided methods call these functions; `ttq-kernels` overrides them with one fused
//! kernel each on CUDA, and checks those kernels against its plain-Rust reference.

use crate::QuantError;
use burn::tensor::{backend::Backend, FloatDType, Tensor};

/// The activation of a gated MLP: `act(gate) ⊙ up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    /// `x · sigmoid(x)` (SwiGLU: Llama, Qwen).
    Silu,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, GELU's tanh approximation (GeGLU:
    /// Gemma).
    GeluTanh,
}

/// `x · rsqrt(mean(x²) + eps) · weight` over each row, the statistics in f32 whatever the
/// float type of `x` (squares of f16 activations overflow: Gemma's residual stream reaches
/// the thousands).
///
/// # Shapes
/// - `x`: `[rows, d]`; `weight`: `[d]`; returns `[rows, d]`
pub fn rms_norm<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, 2>, QuantError> {
    check_rms_norm(&x, &weight, eps)?;
    let dtype = x.dtype();
    let ms = x.clone().cast(FloatDType::F32).square().mean_dim(1);
    let normed = x * ms.add_scalar(eps).sqrt().recip().cast(dtype);
    Ok(normed * weight.unsqueeze_dim(0))
}

/// Checks the operands of [`rms_norm`].
pub fn check_rms_norm<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Result<(), QuantError> {
    let [_, d] = x.dims();
    let [n] = weight.dims();
    if n != d {
        return Err(QuantError::shape(
            "rms norm weight",
            format!("{d} entries (the rows' width)"),
            format!("{n} entries"),
        ));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(QuantError::shape(
            "rms norm epsilon",
            "a finite value >= 0",
            eps.to_string(),
        ));
    }
    Ok(())
}

/// Rotate-half rotary embedding: `x · cos + rotate_half(x) · sin`, where
/// `rotate_half([a, b]) = [-b, a]` splits each head in two halves (Hugging Face's Llama,
/// Qwen and Gemma convention). Token `t` of every batch row and head uses row `t` of the
/// tables.
///
/// # Shapes
/// - `x`: `[batch, tokens, heads, head_dim]`; `cos`, `sin`: `[tokens, head_dim]`;
///   returns the shape of `x`
pub fn rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> Result<Tensor<B, 4>, QuantError> {
    check_rope(&x, &cos, &sin)?;
    let [b, t, h, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().slice([0..b, 0..t, 0..h, 0..half]);
    let x2 = x.clone().slice([0..b, 0..t, 0..h, half..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let table = |m: Tensor<B, 2>| m.reshape([1, t, 1, d]);
    Ok(x * table(cos) + rotated * table(sin))
}

/// Checks the operands of [`rope`].
pub fn check_rope<B: Backend>(
    x: &Tensor<B, 4>,
    cos: &Tensor<B, 2>,
    sin: &Tensor<B, 2>,
) -> Result<(), QuantError> {
    let [_, t, _, d] = x.dims();
    if !d.is_multiple_of(2) {
        return Err(QuantError::shape(
            "rope input",
            "an even head width",
            d.to_string(),
        ));
    }
    for (name, m) in [("rope cos table", cos), ("rope sin table", sin)] {
        if m.dims() != [t, d] {
            return Err(QuantError::shape(
                name,
                format!("[{t}, {d}] (tokens, head width)"),
                format!("{:?}", m.dims()),
            ));
        }
    }
    Ok(())
}

/// `act(gate) ⊙ up`, in the float type of the operands.
///
/// # Shapes
/// - `gate`, `up`: `[rows, d]`; returns `[rows, d]`
pub fn gated<B: Backend>(
    gate: Tensor<B, 2>,
    up: Tensor<B, 2>,
    act: GateActivation,
) -> Result<Tensor<B, 2>, QuantError> {
    check_gated(&gate, &up)?;
    let a = match act {
        GateActivation::Silu => burn::tensor::activation::silu(gate),
        GateActivation::GeluTanh => gelu_tanh(gate),
    };
    Ok(a * up)
}

/// Checks the operands of [`gated`].
pub fn check_gated<B: Backend>(gate: &Tensor<B, 2>, up: &Tensor<B, 2>) -> Result<(), QuantError> {
    if gate.dims() != up.dims() {
        return Err(QuantError::shape(
            "gated activation",
            format!("up projection of the gate's shape {:?}", gate.dims()),
            format!("{:?}", up.dims()),
        ));
    }
    Ok(())
}

/// `softmax(scale · scores + mask)` over each row, where row `r` takes mask row `r % t`
/// (`t` = the mask's rows: attention scores laid out with the query token fastest).
///
/// # Shapes
/// - `scores`: `[rows, cols]`; `mask`: `[t, cols]` with `rows % t == 0`; returns
///   `[rows, cols]`
pub fn masked_softmax<B: Backend>(
    scores: Tensor<B, 2>,
    scale: f64,
    mask: Option<Tensor<B, 2>>,
) -> Result<Tensor<B, 2>, QuantError> {
    check_masked_softmax(&scores, scale, mask.as_ref())?;
    let [rows, cols] = scores.dims();
    let s = scores.mul_scalar(scale);
    let s = match mask {
        Some(m) => {
            let t = m.dims()[0];
            (s.reshape([rows / t, t, cols]) + m.unsqueeze_dim(0)).reshape([rows, cols])
        }
        None => s,
    };
    Ok(burn::tensor::activation::softmax(s, 1))
}

/// Attention of query rows over keys and values: `softmax(scale · q kᵀ + mask) v` for each
/// `(batch, head)`, where score row `r` takes mask row `r % t` (see [`masked_softmax`]).
///
/// # Shapes
/// - `q`: `[b, h, rows, hd]`; `k`, `v`: `[b, h, cols, hd]`; `mask`: `[t, cols]` with
///   `rows % t == 0`; returns `[b, h, rows, hd]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    mask: Option<Tensor<B, 2>>,
) -> Result<Tensor<B, 4>, QuantError> {
    check_attention(&q, &k, &v)?;
    let [b, h, rows, _] = q.dims();
    let cols = k.dims()[2];
    let scores = q.matmul(k.swap_dims(2, 3));
    let probs = masked_softmax(scores.reshape([b * h * rows, cols]), scale, mask)?
        .reshape([b, h, rows, cols]);
    Ok(probs.matmul(v))
}

/// Checks the operands of [`attention`] (the mask and scale are checked by
/// [`check_masked_softmax`]).
pub fn check_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Result<(), QuantError> {
    let [b, h, _, hd] = q.dims();
    let [kb, kh, cols, khd] = k.dims();
    if [kb, kh, khd] != [b, h, hd] {
        return Err(QuantError::shape(
            "attention keys",
            format!("[{b}, {h}, positions, {hd}] (the queries' batch, heads and width)"),
            format!("{:?}", k.dims()),
        ));
    }
    if v.dims() != [b, h, cols, hd] {
        return Err(QuantError::shape(
            "attention values",
            format!("the keys' shape {:?}", k.dims()),
            format!("{:?}", v.dims()),
        ));
    }
    Ok(())
}

/// Checks the operands of [`masked_softmax`].
pub fn check_masked_softmax<B: Backend>(
    scores: &Tensor<B, 2>,
    scale: f64,
    mask: Option<&Tensor<B, 2>>,
) -> Result<(), QuantError> {
    check_softmax_operands(scores.dims(), scale, mask)
}

/// Checks the scale and mask of a masked softmax over scores of shape `[rows, cols]` (also
/// the scores of an [`attention`] call: `rows = b · h · query rows`).
pub fn check_softmax_operands<B: Backend>(
    [rows, cols]: [usize; 2],
    scale: f64,
    mask: Option<&Tensor<B, 2>>,
) -> Result<(), QuantError> {
    if !scale.is_finite() {
        return Err(QuantError::shape(
            "softmax scale",
            "a finite value",
            scale.to_string(),
        ));
    }
    if let Some(m) = mask {
        let [t, c] = m.dims();
        if c != cols || t == 0 || !rows.is_multiple_of(t) {
            return Err(QuantError::shape(
                "softmax mask",
                format!("[t, {cols}] with t dividing the {rows} score rows"),
                format!("{:?}", m.dims()),
            ));
        }
    }
    Ok(())
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, the tanh approximation of GELU.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let c = (2.0f64 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(c);
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}
