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

/// Query rows per block when attention runs in blocks (see [`AttentionMask::Blocked`]).
pub const QUERY_BLOCK: usize = 256;

/// Attention whose whole score matrix (`heads × tokens × capacity` values) would exceed this
/// many elements runs in blocks of [`QUERY_BLOCK`] query rows: 2^24 values (64 MiB of f32)
/// per layer, reached by prompts above 2,048 tokens on a 4-head model. Shorter prompts and
/// decode steps keep the single-matrix path (the one the CUDA kernels are tuned for).
pub const BLOCKED_ABOVE: usize = 1 << 24;

/// Whether a forward of `tokens` new positions over a cache of `capacity` positions, with
/// `heads` query heads, runs its attention in blocks of query rows.
pub fn use_blocked_attention(heads: usize, tokens: usize, capacity: usize) -> bool {
    tokens > QUERY_BLOCK
        && heads
            .checked_mul(tokens)
            .and_then(|v| v.checked_mul(capacity))
            .is_none_or(|v| v > BLOCKED_ABOVE)
}

/// The mask of one attention call.
#[derive(Debug, Clone, Copy)]
pub enum AttentionMask<'a, B: Backend> {
    /// One mask for all query rows ([`attention_mask`]; `None` when every position is
    /// visible).
    Whole(Option<&'a Tensor<B, 4>>),
    /// Queries in blocks of `rows` rows, each block with its own mask rows built from the
    /// layer's span: memory O(rows · capacity) instead of O(tokens · capacity), the same
    /// values row by row.
    Blocked {
        /// Query rows per block.
        rows: usize,
    },
}

impl<B: Backend> Attention<B> {
    /// Attends from the `tokens` new positions (starting at absolute position `start`) to
    /// every cached position and themselves. `mask` is [`attention_mask`] for this layer's
    /// span, `start`, `tokens` and the cache's capacity after this step (the same for every
    /// layer of a span, so the caller builds it once per forward), or
    /// [`AttentionMask::Blocked`] for long prompts. The q/k norms and RoPE run as `ops`'
    /// fused kernels, on the projections' own `[batch, tokens, heads, head_dim]` layout
    /// (contiguous: no copy before them).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, hidden]`; returns `[batch, tokens, hidden]`
    /// - a whole mask: `[1, 1, tokens, capacity]`
    pub fn forward(
        &mut self,
        x: Tensor<B, 3>,
        rope: Option<&RopeTables<B>>,
        mask: AttentionMask<'_, B>,
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
        let out = match mask {
            AttentionMask::Whole(mask) => {
                let q = q.reshape([b, kvh, n * t, hd]);
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
                ops.attention(q, k, v, self.scale, mask)? // [b, kvh, n·t, hd]
            }
            AttentionMask::Blocked { rows } => {
                let rows = rows.max(1);
                let start = filled - t;
                let q = q.reshape([b, kvh, n, t, hd]);
                let device = q.device();
                let mut outs = Vec::with_capacity(t.div_ceil(rows));
                for i0 in (0..t).step_by(rows) {
                    let i1 = (i0 + rows).min(t);
                    let tb = i1 - i0;
                    let qb = q
                        .clone()
                        .slice([0..b, 0..kvh, 0..n, i0..i1, 0..hd])
                        .reshape([b, kvh, n * tb, hd]);
                    let mask = mask_rows::<B>(self.span, start + i0, tb, filled, capacity, &device);
                    let ob = ops.attention(qb, k.clone(), v.clone(), self.scale, Some(mask))?;
                    outs.push(ob.reshape([b, kvh, n, tb, hd]));
                }
                Tensor::cat(outs, 3).reshape([b, kvh, n * t, hd])
            }
        };
        let out = out
            .reshape([b, h, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, h * hd]);
        Ok(self.o.forward(out)?)
    }
}

/// Mask rows `[tokens, capacity]` for queries at positions `start..start + tokens` of a
/// cache with `filled` positions filled: 0 where visible, -inf elsewhere.
fn mask_rows<B: Backend>(
    span: LayerAttention,
    start: usize,
    tokens: usize,
    filled: usize,
    capacity: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut m = vec![0f32; tokens * capacity];
    for i in 0..tokens {
        let qpos = start + i;
        for j in 0..capacity {
            let visible = j <= qpos
                && j < filled
                && match span {
                    LayerAttention::Global => true,
                    LayerAttention::Local { window } => qpos - j < window,
                };
            if !visible {
                m[i * capacity + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [tokens, capacity]), device)
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
