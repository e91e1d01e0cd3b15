//! One typed configuration for every supported decoder-only family.
//!
//! The families differ in a handful of switches (norm kind, activation, biases, q/k norms,
//! position encoding, sliding-window layers); [`ModelConfig`] names each switch so that one
//! transformer implementation serves them all. Family-specific parsers (Hugging Face
//! `config.json`, GGUF metadata) fill it in.

use serde::{Deserialize, Serialize};

/// The model family, which decides tensor names and a few conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// Meta's OPT: learned positions (offset 2), LayerNorm, ReLU MLP, biases.
    Opt,
    /// Llama, Qwen2, SmolLM2: RMSNorm, RoPE, GQA, SwiGLU.
    Llama,
    /// Qwen3: Llama plus per-head q/k RMSNorm and an explicit head dimension.
    Qwen3,
    /// Gemma 3: (1 + w) RMSNorm, four norms per block, GeGLU (tanh), q/k norm, scaled
    /// embeddings, interleaved local (sliding-window) and global layers.
    Gemma3,
}

/// Normalisation layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * w + b`.
    LayerNorm,
    /// `x / sqrt(mean(x²) + eps) * w` (Gemma's `1 + w` is folded into `w` at load time).
    RmsNorm,
}

/// MLP kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlpKind {
    /// `fc2(relu(fc1(x)))` (OPT).
    Relu,
    /// `down(silu(gate(x)) * up(x))` (Llama, Qwen).
    SwiGlu,
    /// `down(gelu_tanh(gate(x)) * up(x))` (Gemma).
    GeGluTanh,
}

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Positions {
    /// A learned table indexed by `position + offset` (OPT: offset 2).
    Learned {
        /// Added to every position.
        offset: usize,
    },
    /// Rotary embeddings, rotate-half convention.
    Rope,
}

/// Attention span of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerAttention {
    /// Full causal attention.
    Global,
    /// Causal attention to the last `window` positions (the query's own included).
    Local {
        /// Keys with `query_pos - key_pos < window` are visible.
        window: usize,
    },
}

/// A complete model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The family.
    pub family: Family,
    /// Model width.
    pub hidden: usize,
    /// Number of decoder blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP inner width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context the model was trained for.
    pub max_positions: usize,
    /// Norm kind.
    pub norm: NormKind,
    /// Norm epsilon.
    pub norm_eps: f64,
    /// MLP kind.
    pub mlp: MlpKind,
    /// Position encoding.
    pub positions: Positions,
    /// RoPE base of global layers.
    pub rope_theta: f64,
    /// RoPE base of local (sliding-window) layers; `rope_theta` when absent.
    pub rope_local_theta: Option<f64>,
    /// Attention span of every layer.
    pub layer_attention: Vec<LayerAttention>,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3, Gemma3).
    pub qk_norm: bool,
    /// Biases on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Gemma's post-attention and post-MLP norms (four norms per block).
    pub sandwich_norms: bool,
    /// Multiply embeddings by `sqrt(hidden)` (Gemma).
    pub scale_embeddings: bool,
    /// Attention logits are multiplied by this (usually `head_dim^-0.5`).
    pub attn_scale: f64,
    /// LM head shares the embedding matrix.
    pub tie_embeddings: bool,
    /// Beginning-of-sequence token.
    pub bos_token: Option<u32>,
    /// End-of-sequence tokens (generation stops on any of them).
    pub eos_tokens: Vec<u32>,
}

/// Largest number of layers ttq accepts (the largest open models have about 130).
pub const MAX_LAYERS: usize = 1024;
/// Largest hidden, intermediate or attention width.
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest number of (query or key/value) heads.
pub const MAX_HEADS: usize = 1 << 12;
/// Largest head dimension.
pub const MAX_HEAD_DIM: usize = 1 << 12;
/// Largest vocabulary.
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest context length.
pub const MAX_POSITIONS: usize = 1 << 28;

/// Checks `(name, value, limit)` triples before anything of those sizes is allocated: a
/// config that says `num_hidden_layers: 1000000000` is an error, not an allocation. Names
/// are the keys as written in the file.
pub fn check_limits(dims: &[(&str, usize, usize)]) -> Result<(), String> {
    for &(name, value, limit) in dims {
        if value > limit {
            return Err(format!(
                "{name} = {value} exceeds the largest supported value ({limit})"
            ));
        }
    }
    Ok(())
}

impl ModelConfig {
    /// The size limits of [`check_limits`] under this struct's field names.
    pub fn check_limits(&self) -> Result<(), String> {
        check_limits(&[
            ("layers", self.layers, MAX_LAYERS),
            ("hidden", self.hidden, MAX_WIDTH),
            ("intermediate", self.intermediate, MAX_WIDTH),
            ("heads", self.heads, MAX_HEADS),
            ("kv_heads", self.kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            ("vocab", self.vocab, MAX_VOCAB),
            ("max_positions", self.max_positions, MAX_POSITIONS),
        ])
    }

    /// Bytes of the model's f32 weights in memory, the LM head's transposed copy included
    /// (`None` if the count overflows).
    pub fn weight_bytes(&self) -> Option<u64> {
        use crate::resources::{product, sum};
        let (h, q, kv, i) = (self.hidden, self.q_dim(), self.kv_dim(), self.intermediate);
        let mlp_mats = if self.mlp == MlpKind::Relu { 2 } else { 3 };
        let per_layer = sum(&[
            product(&[2, q, h]),
            product(&[2, kv, h]),
            product(&[mlp_mats, i, h]),
            product(&[8, h]),
            product(&[2, self.head_dim]),
            product(&[2, q + kv + i]),
        ]);
        let learned = match self.positions {
            Positions::Learned { offset } => product(&[self.max_positions + offset, h]),
            Positions::Rope => Some(0),
        };
        let params = sum(&[
            per_layer.and_then(|p| p.checked_mul(self.layers as u64)),
            // Embedding, LM head (a second copy when untied) and its transpose.
            product(&[3, self.vocab, h]),
            learned,
        ]);
        params.and_then(|p| p.checked_mul(4))
    }

    /// Bytes of the calibration statistics AWQ and GPTQ keep (`None` on overflow): per block
    /// linear a Gram matrix `cols × cols` and a `cols` vector, in f32, for q, k, v, gate and up
    /// (`hidden` columns), o (`heads · head_dim`) and down (`intermediate`).
    pub fn calibration_bytes(&self) -> Option<u64> {
        use crate::resources::{product, sum};
        let (h, q, i) = (self.hidden, self.q_dim(), self.intermediate);
        let per_layer = sum(&[
            product(&[5, h, h + 1]),
            product(&[q, q + 1]),
            product(&[i, i + 1]),
        ]);
        per_layer
            .and_then(|p| p.checked_mul(self.layers as u64))
            .and_then(|p| p.checked_mul(4))
    }

    /// Bytes a forward pass of `tokens` new positions after `start` cached ones allocates
    /// (`None` if the count overflows): the KV cache at its new capacity and its regrown
    /// copy, the activations of a layer, attention scores, probabilities and mask for
    /// `query_rows` query rows at a time, and `logit_rows` rows of logits (twice: a
    /// log-softmax follows in evaluation).
    pub fn forward_bytes(
        &self,
        start: usize,
        tokens: usize,
        query_rows: usize,
        logit_rows: usize,
    ) -> Option<u64> {
        use crate::resources::{product, sum};
        let capacity = start
            .checked_add(tokens)?
            .checked_add(crate::nn::kv_cache::KV_BLOCK)?;
        let (h, q, kv, i) = (self.hidden, self.q_dim(), self.kv_dim(), self.intermediate);
        let cache = product(&[self.layers + 2, 2, kv, capacity]);
        let activations = product(&[tokens, 6 * h + 3 * q + 4 * kv + 4 * i]);
        let attention = product(&[3, self.heads, query_rows.min(tokens), capacity]);
        let logits = product(&[2, logit_rows, self.vocab]);
        sum(&[cache, activations, attention, logits]).and_then(|n| n.checked_mul(4))
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Checks the invariants the transformer relies on, and the size limits.
    pub fn validate(&self) -> Result<(), String> {
        self.check_limits()?;
        let positive = [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate", self.intermediate),
            ("vocab", self.vocab),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "heads ({}) must be a multiple of kv_heads ({})",
                self.heads, self.kv_heads
            ));
        }
        if self.positions == Positions::Rope && !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "RoPE needs an even head_dim, got {}",
                self.head_dim
            ));
        }
        if self.layer_attention.len() != self.layers {
            return Err(format!(
                "{} layer attention kinds for {} layers",
                self.layer_attention.len(),
                self.layers
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(format!("norm epsilon must be >= 0, got {}", self.norm_eps));
        }
        Ok(())
    }
}
