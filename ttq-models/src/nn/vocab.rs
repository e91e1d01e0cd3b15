//! The token embedding and the LM head: f32 tensors on the model's device, or one host
//! table of 8-bit blocks ([`Q8Rows`]) shared by both when the embedding is tied.
//!
//! On the CPU the f32 head is the largest read of every decode step (Gemma 3 270M: 262,144 ×
//! 640 values, 671 MB); a GGUF file that stores the table as Q8_0 is kept in that format
//! ([`crate::source::TensorSource::q8_rows`]), a quarter of the bytes, with exactly the
//! file's values. Host tables are chosen when loading ([`crate::model::LoadOptions`]); the
//! model code only calls [`Embedding::lookup`] and [`LmHead::forward`].

use crate::error::Result;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use std::sync::Arc;
use ttq_core::{tensor_io::to_f32_vec, QuantKernels};
use ttq_kernels::Q8Rows;

/// Up to this many rows of hidden states, host-table logits run on the 8-bit blocks
/// directly (one read of the table for all rows), with the hidden states rounded to 8-bit
/// blocks too ([`Q8Rows::matmul_t_int8`], llama.cpp's Q8_0 dot: three times faster than f32
/// inputs, which made the head arithmetic-bound); more rows (perplexity windows) go through
/// the backend's dense matmul on f32 slices of [`HEAD_SLICE_ROWS`] vocabulary rows, without
/// that rounding.
pub const HOST_HEAD_MAX_TOKENS: usize = 32;

/// Vocabulary rows dequantized per dense matmul when many rows need logits.
pub const HEAD_SLICE_ROWS: usize = 16_384;

/// The token embedding, `[vocab, hidden]`.
#[derive(Debug, Clone)]
pub enum Embedding<B: Backend> {
    /// An f32 tensor on the device.
    Dense(Tensor<B, 2>),
    /// 8-bit blocks in host memory.
    Host(Arc<Q8Rows>),
}

impl<B: Backend> Embedding<B> {
    /// `[vocab, hidden]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Embedding::Dense(t) => t.dims(),
            Embedding::Host(q) => q.dims(),
        }
    }

    /// The rows of `tokens` (ids already checked against the vocabulary).
    ///
    /// # Shapes
    /// - returns `[tokens, hidden]`
    pub fn lookup(&self, tokens: &[u32], device: &B::Device) -> Result<Tensor<B, 2>> {
        let t = tokens.len();
        match self {
            Embedding::Dense(table) => {
                let ids: Vec<i64> = tokens.iter().map(|&id| i64::from(id)).collect();
                let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [t]), device);
                Ok(table.clone().select(0, ids))
            }
            Embedding::Host(q) => {
                let rows = q.gather(tokens)?;
                Ok(Tensor::from_data(
                    TensorData::new(rows, [t, q.dims()[1]]),
                    device,
                ))
            }
        }
    }
}

/// The output projection to vocabulary logits.
#[derive(Debug, Clone)]
pub enum LmHead<B: Backend> {
    /// `Wᵀ`, `[hidden, vocab]`, an f32 tensor on the device, contiguous (burn-ndarray's
    /// matmul is several times slower on a transposed view).
    Dense(Tensor<B, 2>),
    /// `W`, `[vocab, hidden]`, 8-bit blocks in host memory.
    Host(Arc<Q8Rows>),
}

impl<B: Backend> LmHead<B> {
    /// A dense head from `W` (`[vocab, hidden]`).
    pub fn dense(w: Tensor<B, 2>) -> Self {
        let device = w.device();
        LmHead::Dense(Tensor::from_data(w.transpose().into_data(), &device))
    }

    /// Logits of hidden states `h`; a dense head runs through `ops.dense_matmul` (cuBLAS on
    /// the GPU).
    ///
    /// # Shapes
    /// - `h`: `[rows, hidden]`; returns `[rows, vocab]`
    pub fn forward(&self, h: Tensor<B, 2>, ops: &dyn QuantKernels<B>) -> Result<Tensor<B, 2>> {
        match self {
            LmHead::Dense(wt) => Ok(ops.dense_matmul(h, wt.clone())?),
            LmHead::Host(q) => {
                let [rows, hidden] = h.dims();
                let [vocab, _] = q.dims();
                let device = h.device();
                if rows <= HOST_HEAD_MAX_TOKENS {
                    let y = q.matmul_t_int8(&to_f32_vec(h), rows)?;
                    return Ok(Tensor::from_data(
                        TensorData::new(y, [rows, vocab]),
                        &device,
                    ));
                }
                let mut parts = Vec::with_capacity(vocab.div_ceil(HEAD_SLICE_ROWS));
                let mut row = vec![0f32; hidden];
                for r0 in (0..vocab).step_by(HEAD_SLICE_ROWS) {
                    let n = HEAD_SLICE_ROWS.min(vocab - r0);
                    // `Wᵀ` of rows `r0..r0 + n`, `[hidden, n]`, contiguous.
                    let mut wt = vec![0f32; hidden * n];
                    for i in 0..n {
                        q.row_into(r0 + i, &mut row);
                        for (c, &v) in row.iter().enumerate() {
                            wt[c * n + i] = v;
                        }
                    }
                    let wt = Tensor::from_data(TensorData::new(wt, [hidden, n]), &device);
                    parts.push(h.clone().matmul(wt));
                }
                Ok(Tensor::cat(parts, 1))
            }
        }
    }
}
