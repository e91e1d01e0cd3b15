//! Multi-head attention with grouped key/value heads, optional q/k norms, RoPE, causal or
//! sliding-window masks and a KV cache.

use super::{kv_cache::LayerCache, norm::Norm, rope::RopeTables};
use crate::config::LayerAttention;
use crate::error::{ModelError, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use ttq_core::{QuantKernels, QuantLinear};

/// The attention sub-layer of one block.
#[derive(Debug, Clone)]
pub struct Attention<B: Backend> {
    /// Query projection, `[heads * head_dim, hidden]`.
    pub q: QuantLinear<B>,
    /// Key projection, `[kv_heads * head_dim, hidden]`.
    pub k: QuantLinear<B>,
    /// Value projection, `[kv_heads * head_dim, hidden]`.
    pub v: QuantLinear<B>,
    /// Output projection, `[hidden, heads * head_dim]`.
    pub o: QuantLinear<B>,
    /// Per-head norms of queries and keys (Qwen3, Gemma3).
    pub qk_norm: Option<(Norm<B>, Norm<B>)>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Factor on the attention logits.
    pub scale: f64,
    /// Global or sliding-window.
    pub span: LayerAttention,
}

impl<B: Backend> Attention<B> {
    /// Attends from the `tokens` new positions (starting at absolute position `start`) to
    /// every cached position and themselves. `mask` is [`attention_mask`] for this layer's
    /// span, `start`, `tokens` and the cache's capacity after this step (the same for every
    /// layer of a span, so the caller builds it once per forward). The q/k norms and RoPE
    /// run as `ops`' fused kernels, on the projections' own `[batch, tokens, heads,
    /// head_dim]` layout (contiguous: no copy before them).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, hidden]`; returns `[batch, tokens, hidden]`
    /// - `mask`: `[1, 1, tokens, capacity]`
    pub fn forward(
        &mut self,
        x: Tensor<B, 3>,
        rope: Option<&RopeTables<B>>,
        mask: Option<&Tensor<B, 4>>,
        cache: &mut LayerCache<B>,
        ops: &dyn QuantKernels<B>,
    ) -> Result<Tensor<B, 3>> {
        let [b, t, _] = x.dims();
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, hd]);
        let mut q = heads(self.q.forward(x.clone())?, h); // [b, t, h, hd]
        let mut k = heads(self.k.forward(x.clone())?, kvh);
        let v = heads(self.v.forward(x)?, kvh).swap_dims(1, 2); // [b, kvh, t, hd]
        if let Some((qn, kn)) = &self.qk_norm {
            q = qn.forward(q, ops)?;
            k = kn.forward(k, ops)?;
        }
        if let Some(r) = rope {
            q = r.apply(q, ops)?;
            k = r.apply(k, ops)?;
        }
        let q = q.swap_dims(1, 2); // [b, h, t, hd]
        let k = k.swap_dims(1, 2);
        // `filled` positions are filled, `capacity` allocated (the rest is masked below).
        let (k, v, filled) = cache.append(k, v);
        let capacity = k.dims()[2];
        // Grouped-query attention without copying keys and values per query head: the `n`
        // query heads of a key/value head are consecutive, so `[b, h, t, hd]` regroups as
        // `[b, kvh, n · t, hd]` and multiplies that head's keys directly.
        let n = h / kvh;
        let q = q.reshape([b, kvh, n * t, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)); // [b, kvh, n·t, capacity]
        let mask = match mask {
            Some(mask) => {
                if mask.dims() != [1, 1, t, capacity] {
                    return Err(ModelError::Invalid(format!(
                        "attention mask {:?} does not fit {t} tokens and a cache of {capacity}",
                        mask.dims()
                    )));
                }
                Some(mask.clone().reshape([t, capacity]))
            }
            None if capacity == filled => None,
            None => {
                return Err(ModelError::Invalid(format!(
                    "no attention mask for a cache of {capacity} positions with {filled} filled"
                )))
            }
        };
        // Score rows are (batch, kv head, query head of the group, token), token fastest:
        // row `r` takes mask row `r % t`.
        let probs = ops
            .masked_softmax(
                scores.reshape([b * kvh * n * t, capacity]),
                self.scale,
                mask,
            )?
            .reshape([b, kvh, n * t, capacity]);
        let out = probs
            .matmul(v) // [b, kvh, n·t, hd]
            .reshape([b, h, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, h * hd]);
        Ok(self.o.forward(out)?)
    }
}

/// Additive mask `[1, 1, tokens, capacity]`: 0 where visible, -inf elsewhere (in the
/// future, outside a local window, or not yet filled: positions `≥ total`); `None` when
/// every allocated position is visible (a decode step that fills the allocation exactly,
/// in a global layer or a local one whose window covers the cache).
pub fn attention_mask<B: Backend>(
    span: LayerAttention,
    start: usize,
    tokens: usize,
    capacity: usize,
    device: &B::Device,
) -> Option<Tensor<B, 4>> {
    let total = start + tokens;
    let all_visible = tokens == 1
        && capacity == total
        && match span {
            LayerAttention::Global => true,
            LayerAttention::Local { window } => total <= window,
        };
    if all_visible {
        return None;
    }
    // Filled positions are `0..total` and `start + tokens == total`, so `j ≤ qpos` also
    // hides the unfilled tail.
    let mut m = vec![0f32; tokens * capacity];
    for i in 0..tokens {
        let qpos = start + i;
        for j in 0..capacity {
            let visible = j <= qpos
                && match span {
                    LayerAttention::Global => true,
                    LayerAttention::Local { window } => qpos - j < window,
                };
            if !visible {
                m[i * capacity + j] = f32::NEG_INFINITY;
            }
        }
    }
    Some(Tensor::from_data(
        TensorData::new(m, [1, 1, tokens, capacity]),
        device,
    ))
}
