//! Rotary position embeddings, rotate-half convention (Hugging Face's Llama, Qwen, Gemma).

use crate::error::Result;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use ttq_core::QuantKernels;

/// Frequencies of one RoPE base.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f64>,
}

/// `cos` and `sin` tables for a run of positions, each `[tokens, head_dim]`.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl Rope {
    /// `inv_freq[i] = base^(-2i / head_dim)` for `i < head_dim / 2`.
    pub fn new(base: f64, head_dim: usize) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| base.powf(-(2.0 * i as f64) / head_dim as f64))
            .collect();
        Self { inv_freq }
    }

    /// Tables for positions `start .. start + tokens`.
    pub fn tables<B: Backend>(
        &self,
        start: usize,
        tokens: usize,
        device: &B::Device,
    ) -> RopeTables<B> {
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let mut cos = Vec::with_capacity(tokens * dim);
        let mut sin = Vec::with_capacity(tokens * dim);
        for p in start..start + tokens {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    // f32 angle, as the reference implementations compute it.
                    let angle = (p as f32) * (*f as f32);
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let make = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [tokens, dim]), device);
        RopeTables {
            cos: make(cos),
            sin: make(sin),
        }
    }
}

impl<B: Backend> RopeTables<B> {
    /// Rotates `x` by its positions with `ops`' fused [`QuantKernels::rope`].
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, heads, head_dim]`
    pub fn apply(&self, x: Tensor<B, 4>, ops: &dyn QuantKernels<B>) -> Result<Tensor<B, 4>> {
        Ok(ops.rope(x, self.cos.clone(), self.sin.clone())?)
    }
}
