//! A decoder layer's operations between its matmuls, on host slices: RMSNorm, rotary
//! embedding, gated activations and attention over a key/value cache. [`crate::CpuKernels`]
//! runs them instead of the Burn-op defaults of [`ttq_core::ops`].
//!
//! At decode time each of those defaults is several burn-ndarray operations on a few hundred
//! values (an allocation and a pass each; RMSNorm is six, GELU's tanh form seven), and the
//! attention's matmuls first copy the whole key cache into a transposed layout: together
//! about a third of a CPU decode step of Gemma 3 270M before these loops. Each function here
//! is one pass that writes a fresh output (inputs are never overwritten), with the same f32
//! operations as its default except where noted; the tests
//! (`ttq-kernels/tests/cpu_ops_match_defaults.rs`) compare every one with its default.

use crate::cpu_fast::dot;
use rayon::prelude::*;
use ttq_core::ops::GateActivation;

/// Elements per parallel task of the element-wise functions: below this a call runs on one
/// thread (a decode step's vectors are a few thousand values).
const ELEMENTWISE_CHUNK: usize = 16_384;

/// `x · rsqrt(mean(x²) + eps) · weight` for each row of `x` (`[rows, d]`). The mean of
/// squares is summed in f32 like the default's, in a different order.
pub fn rms_norm(x: &[f32], d: usize, weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if d == 0 {
        return out;
    }
    let rows_per_task = (ELEMENTWISE_CHUNK / d).max(1);
    out.par_chunks_mut(rows_per_task * d)
        .zip(x.par_chunks(rows_per_task * d))
        .for_each(|(out, x)| {
            for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                let ms = sum_of_squares(x) / d as f32;
                let r = (ms + eps).sqrt().recip();
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(weight) {
                    *o = (x * r) * w;
                }
            }
        });
    out
}

/// `Σ x²` in 16 independent lanes (vectorisable without reassociation).
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// Rotate-half rotary embedding of `x` (`[batch, tokens, heads, d]`) with tables `cos`,
/// `sin` (`[tokens, d]`): `x · cos + rotate_half(x) · sin`, where `rotate_half(x) = [-x₂,
/// x₁]` for the two halves of each head; the default's f32 operations exactly.
pub fn rope(x: &[f32], dims: [usize; 4], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let [_, t, h, d] = dims;
    let half = d / 2;
    let mut out = vec![0f32; x.len()];
    if d == 0 || t == 0 || h == 0 {
        return out;
    }
    // One task per (batch, token): all heads of one position share a row of the tables.
    out.par_chunks_mut(h * d)
        .zip(x.par_chunks(h * d))
        .enumerate()
        .with_min_len((ELEMENTWISE_CHUNK / (h * d)).max(1))
        .for_each(|(i, (out, x))| {
            let pos = i % t;
            let (c, s) = (&cos[pos * d..(pos + 1) * d], &sin[pos * d..(pos + 1) * d]);
            for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                for j in 0..d {
                    let rotated = if j < half { -x[j + half] } else { x[j - half] };
                    o[j] = x[j] * c[j] + rotated * s[j];
                }
            }
        });
    out
}

/// `act(gate) ⊙ up`, element by element.
pub fn gated(gate: &[f32], up: &[f32], act: GateActivation) -> Vec<f32> {
    let mut out = vec![0f32; gate.len()];
    out.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(gate.par_chunks(ELEMENTWISE_CHUNK))
        .zip(up.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((out, g), u)| match act {
            GateActivation::Silu => {
                for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
            GateActivation::GeluTanh => {
                let c = (2.0f64 / std::f64::consts::PI).sqrt() as f32;
                for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                    let inner = (g + g * g * g * 0.044715) * c;
                    // tanh in f64, as burn-ndarray computes it: near `tanh = -1` the sum
                    // below cancels and an f32 tanh moved results by 1e-3 relative.
                    *o = g * 0.5 * ((f64::from(inner).tanh() as f32) + 1.0) * u;
                }
            }
        });
    out
}

/// The sizes of an [`attention`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// Independent `(batch, head)` slices.
    pub heads: usize,
    /// Query rows per slice.
    pub rows: usize,
    /// Key/value positions per slice.
    pub cols: usize,
    /// Width of a head.
    pub head_dim: usize,
}

/// `softmax(scale · q kᵀ + mask) v` for each slice: `q` is `[heads, rows, hd]`, `k` and `v`
/// are `[heads, cols, hd]` (keys in their cache layout, read in place), `mask` is `[t,
/// cols]` with row `i % t` for query row `i` of all slices (`i = slice · rows + r`). Positions whose mask is `-inf` are skipped
/// (their weight is exactly 0), so a cache allocated ahead of its fill costs nothing past
/// the filled positions. A row masked everywhere gives NaN, as the default does.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: AttentionDims,
    scale: f32,
    mask: Option<(&[f32], usize)>,
) -> Vec<f32> {
    let AttentionDims {
        rows,
        cols,
        head_dim: hd,
        ..
    } = dims;
    debug_assert_eq!(q.len(), dims.heads * rows * hd);
    let mut out = vec![0f32; q.len()];
    if hd == 0 || rows == 0 {
        return out;
    }
    // Rows per task: about 4 · ELEMENTWISE_CHUNK multiply-adds of keys.
    out.par_chunks_mut(hd)
        .enumerate()
        .with_min_len((ELEMENTWISE_CHUNK * 4 / (cols * hd).max(1)).max(1))
        .for_each_init(
            || vec![0f32; cols],
            |scores, (i, o)| {
                let slice = i / rows;
                let qr = &q[i * hd..(i + 1) * hd];
                let ks = &k[slice * cols * hd..(slice + 1) * cols * hd];
                let vs = &v[slice * cols * hd..(slice + 1) * cols * hd];
                let m = mask.map(|(m, t)| &m[(i % t) * cols..(i % t + 1) * cols]);
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    let bias = m.map_or(0.0, |m| m[j]);
                    *s = if bias == f32::NEG_INFINITY {
                        f32::NEG_INFINITY
                    } else {
                        dot(qr, &ks[j * hd..(j + 1) * hd]) * scale + bias
                    };
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                for (j, &e) in scores.iter().enumerate() {
                    if e == 0.0 {
                        continue;
                    }
                    let p = e / sum;
                    for (o, &x) in o.iter_mut().zip(&vs[j * hd..(j + 1) * hd]) {
                        *o += p * x;
                    }
                }
            },
        );
    out
}
