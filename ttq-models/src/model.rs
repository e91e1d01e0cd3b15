//! The decoder-only transformer shared by every family, built from a [`TensorSource`].
//!
//! One block type serves OPT, Llama/Qwen and Gemma 3: the differences are switches in
//! [`ModelConfig`]. Every projection inside the blocks is a `ttq_core::QuantLinear`, so any
//! quantization method applies to any model; the LM head stays in full precision (as in
//! AWQ and GPTQ).

use crate::config::{Family, LayerAttention, ModelConfig, Positions};
use crate::error::{ModelError, Result};
use crate::naming::{tensor_name, Format, Role};
use crate::nn::{
    attention::{attention_mask, use_blocked_attention, Attention, AttentionMask, QUERY_BLOCK},
    kv_cache::{capacity_for, KvCache},
    mlp::Mlp,
    norm::Norm,
    rope::Rope,
    vocab::{Embedding, LmHead},
};
use crate::source::{HostTensor, TensorSource};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use ttq_core::{
    CalibrationPolicy, CalibrationStats, QuantKernels, QuantLinear, QuantMethod, TensorOpsKernels,
};
use ttq_kernels::Q8Rows;

/// One decoder block.
#[derive(Debug, Clone)]
pub struct Block<B: Backend> {
    /// Pre-attention norm.
    pub attn_norm: Norm<B>,
    /// Attention.
    pub attn: Attention<B>,
    /// Gemma's post-attention norm.
    pub post_attn_norm: Option<Norm<B>>,
    /// Pre-MLP norm.
    pub ffn_norm: Norm<B>,
    /// MLP.
    pub mlp: Mlp<B>,
    /// Gemma's post-MLP norm.
    pub post_ffn_norm: Option<Norm<B>>,
}

/// Which positions to compute logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every input position.
    All,
    /// Only the last one (generation).
    Last,
}

/// A causal language model.
#[derive(Debug, Clone)]
pub struct CausalLm<B: Backend> {
    config: ModelConfig,
    device: B::Device,
    embed: Embedding<B>,
    pos_embed: Option<Tensor<B, 2>>,
    blocks: Vec<Block<B>>,
    final_norm: Norm<B>,
    /// The head (the tied embedding's table when tied).
    lm_head: LmHead<B>,
    rope_global: Option<Rope>,
    rope_local: Option<Rope>,
    /// The kernels of the norms, RoPE and gated activations ([`Self::set_kernels`]; Burn
    /// ops until then).
    ops: Arc<dyn QuantKernels<B>>,
    /// When attention runs in blocks of query rows ([`Self::set_attention_blocking`]).
    blocking: AttentionBlocking,
}

/// When a forward pass computes attention in blocks of query rows instead of one
/// `tokens × capacity` score matrix per head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionBlocking {
    /// Blocks of [`QUERY_BLOCK`] rows when the whole score matrix would be large
    /// (`nn::attention::use_blocked_attention`); the default.
    Auto,
    /// Always, in blocks of this many query rows (for tests of the blocked path).
    Always(usize),
    /// Never (one score matrix however long the prompt).
    Never,
}

/// Where [`Loader`] takes weights from.
#[derive(Clone, Copy)]
enum Weights<'a> {
    /// A checkpoint.
    File(&'a dyn TensorSource),
    /// Random values of the right shapes, made on the device: matrices N(0, 0.02²), norm
    /// weights and biases 1 (for speed measurements, which do not depend on the values).
    Random,
}

impl Weights<'_> {
    /// The checkpoint's path, or a placeholder for random weights, for error messages.
    fn path(&self) -> std::path::PathBuf {
        match self {
            Weights::File(source) => source.path().to_path_buf(),
            Weights::Random => "(random weights)".into(),
        }
    }
}

/// Reads tensors by role and checks their shapes.
struct Loader<'a, B: Backend> {
    weights: Weights<'a>,
    family: Family,
    format: Format,
    device: &'a B::Device,
    /// Added to RMSNorm weights (Gemma's `1 + w` in Hugging Face files).
    norm_offset: f32,
    /// Undo llama.cpp's Q/K row permutation (Llama GGUF files).
    unpermute_qk: bool,
    /// Keep 8-bit tables of the file in host memory (see [`LoadOptions::host_tables`]).
    host_tables: bool,
    heads: usize,
    kv_heads: usize,
}

impl<B: Backend> Loader<'_, B> {
    fn name(&self, role: Role) -> String {
        tensor_name(self.family, self.format, role)
    }

    fn path(&self) -> std::path::PathBuf {
        self.weights.path()
    }

    fn has(&self, role: Role) -> bool {
        match self.weights {
            Weights::File(source) => source.contains(&self.name(role)),
            Weights::Random => true,
        }
    }

    /// A tensor of the checkpoint (only called for [`Weights::File`]), refused if any value
    /// is NaN or infinite: such a weight makes every output NaN and cannot be quantized.
    fn get(&self, name: &str) -> Result<HostTensor> {
        match self.weights {
            Weights::File(source) => {
                let t = source.get(name)?;
                if let Some(index) = t.data.iter().position(|v| !v.is_finite()) {
                    return Err(ModelError::NonFiniteWeight {
                        path: self.path(),
                        tensor: name.to_string(),
                        value: t.data[index],
                        index,
                    });
                }
                Ok(t)
            }
            Weights::Random => Err(ModelError::MissingTensor {
                path: self.path(),
                tensor: name.to_string(),
            }),
        }
    }

    fn host(&self, role: Role, shape: &[usize]) -> Result<HostTensor> {
        let name = self.name(role);
        let t = self.get(&name)?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                path: self.path(),
                tensor: name,
                expected: shape.to_vec(),
                got: t.shape,
            });
        }
        Ok(t)
    }

    fn vector(&self, role: Role, len: usize) -> Result<Tensor<B, 1>> {
        if let Weights::Random = self.weights {
            return Ok(Tensor::ones([len], self.device));
        }
        let t = self.host(role, &[len])?;
        Ok(Tensor::from_data(
            TensorData::new(t.data, [len]),
            self.device,
        ))
    }

    fn matrix(&self, role: Role, rows: usize, cols: usize) -> Result<Tensor<B, 2>> {
        if let Weights::Random = self.weights {
            return Ok(random_matrix(rows, cols, self.device));
        }
        let data = self.matrix_host(role, rows, cols)?;
        Ok(Tensor::from_data(
            TensorData::new(data, [rows, cols]),
            self.device,
        ))
    }

    /// `W` of `role` (`[rows, cols]`), row-major in host memory, un-permuted when needed.
    fn matrix_host(&self, role: Role, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let mut t = self.host(role, &[rows, cols])?;
        if self.unpermute_qk {
            match role {
                Role::Q(_) => t.data = unpermute_rows(&t.data, self.heads, rows, cols),
                Role::K(_) => t.data = unpermute_rows(&t.data, self.kv_heads, rows, cols),
                _ => {}
            }
        }
        Ok(t.data)
    }

    /// A `[rows, cols]` matrix whose row count is whatever the file holds (read once).
    fn table(&self, role: Role, cols: usize, random_rows: usize) -> Result<Tensor<B, 2>> {
        if let Weights::Random = self.weights {
            return Ok(random_matrix(random_rows, cols, self.device));
        }
        let name = self.name(role);
        let t = self.get(&name)?;
        let rows = t.shape.first().copied().unwrap_or(0);
        if t.shape.len() != 2 || t.shape[1] != cols || rows == 0 {
            return Err(ModelError::TensorShape {
                path: self.path(),
                tensor: name,
                expected: vec![rows.max(1), cols],
                got: t.shape,
            });
        }
        Ok(Tensor::from_data(
            TensorData::new(t.data, [rows, cols]),
            self.device,
        ))
    }

    /// The file's 8-bit table for `role`, when host tables are on and the file stores it
    /// that way (checked against `[rows, cols]`).
    fn host_table(&self, role: Role, rows: usize, cols: usize) -> Result<Option<Arc<Q8Rows>>> {
        let Weights::File(source) = self.weights else {
            return Ok(None);
        };
        if !self.host_tables {
            return Ok(None);
        }
        let name = self.name(role);
        match source.q8_rows(&name)? {
            Some(q) if q.dims() == [rows, cols] => Ok(Some(Arc::new(q))),
            Some(q) => Err(ModelError::TensorShape {
                path: self.path(),
                tensor: name,
                expected: vec![rows, cols],
                got: q.dims().to_vec(),
            }),
            None => Ok(None),
        }
    }

    /// A linear layer of `W` (`[rows, cols]`), built from `Wᵀ` transposed on the host.
    fn linear(&self, w: Role, b: Option<Role>, rows: usize, cols: usize) -> Result<QuantLinear<B>> {
        let weight_t = match self.weights {
            // Random values: the layout does not matter.
            Weights::Random => random_matrix(cols, rows, self.device),
            Weights::File(_) => {
                let t = transpose(&self.matrix_host(w, rows, cols)?, rows, cols);
                Tensor::from_data(TensorData::new(t, [cols, rows]), self.device)
            }
        };
        let bias = b.map(|b| self.vector(b, rows)).transpose()?;
        Ok(QuantLinear::from_transposed(weight_t, bias)?)
    }

    fn norm(&self, cfg: &ModelConfig, w: Role, b: Option<Role>, len: usize) -> Result<Norm<B>> {
        let mut weight = self.vector(w, len)?;
        if self.norm_offset != 0.0 {
            weight = weight.add_scalar(self.norm_offset);
        }
        let bias = b.map(|b| self.vector(b, len)).transpose()?;
        Ok(Norm::new(cfg.norm, weight, bias, cfg.norm_eps))
    }
}

/// `Wᵀ` (`[cols, rows]`) of a row-major `[rows, cols]` matrix, in tiles of 32 × 32 (each
/// read and written a cache line at a time), bands of output rows in parallel.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; w.len()];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, dst)| {
            let c0 = band * TILE;
            let c1 = (c0 + TILE).min(cols);
            for r0 in (0..rows).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for c in c0..c1 {
                        dst[(c - c0) * rows + r] = w[r * cols + c];
                    }
                }
            }
        });
    out
}

/// Inverse of llama.cpp's `permute` of Q/K rows: GGUF stores, per head, the rows of the two
/// rotary halves interleaved (`[h, d/2, 2]`); Hugging Face's rotate-half layout is `[h, 2, d/2]`.
fn unpermute_rows(data: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for two in 0..2 {
                let src = h * hd + i * 2 + two;
                let dst = h * hd + two * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Options of [`CausalLm::load`] that depend on the file format.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Naming scheme of the file.
    pub format: Format,
    /// Add 1 to RMSNorm weights (Gemma in Hugging Face files; GGUF already includes it).
    pub norm_offset: f32,
    /// Undo llama.cpp's Q/K permutation (Llama-architecture GGUF).
    pub unpermute_qk: bool,
    /// Keep the token embedding and LM head in host memory in the file's 8-bit blocks when
    /// it stores them so (GGUF Q8_0): a quarter of the bytes of f32 and the same values, for
    /// the CPU; off, they are f32 tensors on the device.
    pub host_tables: bool,
}

/// A `[rows, cols]` matrix of N(0, 0.02²) values made on the device.
fn random_matrix<B: Backend>(rows: usize, cols: usize, device: &B::Device) -> Tensor<B, 2> {
    Tensor::random(
        [rows, cols],
        burn::tensor::Distribution::Normal(0.0, 0.02),
        device,
    )
}

impl<B: Backend> CausalLm<B> {
    /// Builds the model from `source`, checking every tensor's shape against `config`.
    pub fn load(
        config: ModelConfig,
        source: &dyn TensorSource,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        Self::build(config, Weights::File(source), options, device)
    }

    /// A model of architecture `config` with random weights made on the device without a
    /// checkpoint (matrices N(0, 0.02²), norm weights and biases 1): for speed measurements
    /// of shapes whose weights are not at hand. Its outputs mean nothing.
    pub fn random(config: ModelConfig, device: &B::Device) -> Result<Self> {
        let options = LoadOptions {
            format: Format::HuggingFace,
            norm_offset: 0.0,
            unpermute_qk: false,
            host_tables: false,
        };
        Self::build(config, Weights::Random, options, device)
    }

    fn build(
        config: ModelConfig,
        weights: Weights<'_>,
        options: LoadOptions,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate().map_err(|message| ModelError::Config {
            path: weights.path(),
            message,
        })?;
        // Before the first allocation: the f32 weights must fit the machine's memory.
        crate::resources::check_memory(
            &format!(
                "the f32 weights of this {:?} model ({} layers, width {}, vocabulary {})",
                config.family, config.layers, config.hidden, config.vocab
            ),
            config.weight_bytes(),
        )
        .map_err(ModelError::OutOfMemory)?;
        let c = &config;
        let ld = Loader::<B> {
            weights,
            family: c.family,
            format: options.format,
            device,
            norm_offset: options.norm_offset,
            unpermute_qk: options.unpermute_qk,
            host_tables: options.host_tables,
            heads: c.heads,
            kv_heads: c.kv_heads,
        };
        let ln_bias = |r: Role| (c.norm == crate::config::NormKind::LayerNorm).then_some(r);
        let embed = match ld.host_table(Role::Embed, c.vocab, c.hidden)? {
            Some(q) => Embedding::Host(q),
            None => Embedding::Dense(ld.matrix(Role::Embed, c.vocab, c.hidden)?),
        };
        let pos_embed = match c.positions {
            // The table's length is the file's (positions + offset); only its width is fixed.
            Positions::Learned { offset } => {
                Some(ld.table(Role::PosEmbed, c.hidden, c.max_positions + offset)?)
            }
            Positions::Rope => None,
        };
        let mut blocks = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let qkv_bias = |r: Role| c.qkv_bias.then_some(r);
            let attn = Attention {
                q: ld.linear(Role::Q(i), qkv_bias(Role::QBias(i)), c.q_dim(), c.hidden)?,
                k: ld.linear(Role::K(i), qkv_bias(Role::KBias(i)), c.kv_dim(), c.hidden)?,
                v: ld.linear(Role::V(i), qkv_bias(Role::VBias(i)), c.kv_dim(), c.hidden)?,
                o: ld.linear(
                    Role::O(i),
                    c.o_bias.then_some(Role::OBias(i)),
                    c.hidden,
                    c.q_dim(),
                )?,
                qk_norm: if c.qk_norm {
                    Some((
                        ld.norm(c, Role::QNorm(i), None, c.head_dim)?,
                        ld.norm(c, Role::KNorm(i), None, c.head_dim)?,
                    ))
                } else {
                    None
                },
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                scale: c.attn_scale,
                span: c.layer_attention[i],
            };
            let mlp_bias = |r: Role| c.mlp_bias.then_some(r);
            let gated = c.mlp != crate::config::MlpKind::Relu;
            let mlp = Mlp {
                kind: c.mlp,
                gate: if gated {
                    Some(ld.linear(Role::Gate(i), None, c.intermediate, c.hidden)?)
                } else {
                    None
                },
                up: ld.linear(
                    Role::Up(i),
                    mlp_bias(Role::UpBias(i)),
                    c.intermediate,
                    c.hidden,
                )?,
                down: ld.linear(
                    Role::Down(i),
                    mlp_bias(Role::DownBias(i)),
                    c.hidden,
                    c.intermediate,
                )?,
            };
            blocks.push(Block {
                attn_norm: ld.norm(
                    c,
                    Role::AttnNorm(i),
                    ln_bias(Role::AttnNormBias(i)),
                    c.hidden,
                )?,
                attn,
                post_attn_norm: if c.sandwich_norms {
                    Some(ld.norm(c, Role::PostAttnNorm(i), None, c.hidden)?)
                } else {
                    None
                },
                ffn_norm: ld.norm(c, Role::FfnNorm(i), ln_bias(Role::FfnNormBias(i)), c.hidden)?,
                mlp,
                post_ffn_norm: if c.sandwich_norms {
                    Some(ld.norm(c, Role::PostFfnNorm(i), None, c.hidden)?)
                } else {
                    None
                },
            });
        }
        let final_norm = ld.norm(c, Role::FinalNorm, ln_bias(Role::FinalNormBias), c.hidden)?;
        let lm_head = if c.tie_embeddings || !ld.has(Role::LmHead) {
            if !c.tie_embeddings && c.family != Family::Opt {
                // Untied config without a head tensor: a broken file, not a tied model.
                return Err(ModelError::MissingTensor {
                    path: ld.path(),
                    tensor: ld.name(Role::LmHead),
                });
            }
            match &embed {
                Embedding::Dense(t) => LmHead::dense(t.clone()),
                Embedding::Host(q) => LmHead::Host(q.clone()),
            }
        } else {
            match ld.host_table(Role::LmHead, c.vocab, c.hidden)? {
                Some(q) => LmHead::Host(q),
                None => LmHead::dense(ld.matrix(Role::LmHead, c.vocab, c.hidden)?),
            }
        };
        let (rope_global, rope_local) = match c.positions {
            Positions::Rope => (
                Some(Rope::new(c.rope_theta, c.head_dim)),
                Some(Rope::new(
                    c.rope_local_theta.unwrap_or(c.rope_theta),
                    c.head_dim,
                )),
            ),
            Positions::Learned { .. } => (None, None),
        };
        Ok(Self {
            config,
            device: device.clone(),
            embed,
            pos_embed,
            blocks,
            final_norm,
            lm_head,
            rope_global,
            rope_local,
            ops: Arc::new(TensorOpsKernels),
            blocking: AttentionBlocking::Auto,
        })
    }

    /// Chooses when attention runs in blocks of query rows (default
    /// [`AttentionBlocking::Auto`]). Results are the same either way, up to float rounding.
    pub fn set_attention_blocking(&mut self, blocking: AttentionBlocking) {
        self.blocking = blocking;
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.device.clone()
    }

    /// A fresh KV cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.blocks.len())
    }

    /// Runs `tokens` (one sequence) after the positions already in `cache`, appending to it.
    ///
    /// # Shapes
    /// - returns `[1, tokens, vocab]` for [`Logits::All`], `[1, 1, vocab]` for [`Logits::Last`]
    pub fn forward(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        logits: Logits,
    ) -> Result<Tensor<B, 3>> {
        let t = tokens.len();
        if t == 0 {
            return Err(ModelError::Invalid(
                "cannot run the model on zero tokens".into(),
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= self.config.vocab) {
            return Err(ModelError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab
            )));
        }
        let start = cache.len();
        let limit = self.config.max_positions;
        if start.checked_add(t).is_none_or(|end| end > limit) {
            return Err(ModelError::Invalid(format!(
                "{start} cached + {t} new positions exceed the model's context of {limit}"
            )));
        }
        let capacity = capacity_for(start + t);
        let blocked = match self.blocking {
            AttentionBlocking::Auto => {
                use_blocked_attention(self.config.heads, t, capacity).then_some(QUERY_BLOCK)
            }
            AttentionBlocking::Always(rows) => Some(rows.max(1)),
            AttentionBlocking::Never => None,
        };
        let logit_rows = match logits {
            Logits::All => t,
            Logits::Last => 1,
        };
        let needed = self
            .config
            .forward_bytes(start, t, blocked.unwrap_or(t), logit_rows);
        // Reading /proc/meminfo costs microseconds: only for passes that could matter.
        if needed.is_none_or(|n| n > 256 << 20) {
            crate::resources::check_memory(
                &format!("a forward pass of {t} tokens after {start} cached"),
                needed,
            )
            .map_err(ModelError::OutOfMemory)?;
        }
        // On the CPU the pass is hundreds of short parallel loops: keep the pool's other
        // threads polling for them (no effect on the GPU's work).
        ttq_kernels::pool::with_polling_workers(|| {
            self.run_layers(tokens, cache, start, capacity, blocked, logits)
        })
    }

    /// The forward pass after [`CausalLm::forward`]'s checks: `tokens` at positions `start..`
    /// with a cache of `capacity` positions.
    fn run_layers(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        start: usize,
        capacity: usize,
        blocked: Option<usize>,
        logits: Logits,
    ) -> Result<Tensor<B, 3>> {
        let t = tokens.len();
        let device = self.device();
        let mut h = self.embed.lookup(tokens, &device)?;
        if self.config.scale_embeddings {
            // In f32, as the reference computes it for f32 weights.
            h = h.mul_scalar((self.config.hidden as f32).sqrt());
        }
        if let (Some(pe), Positions::Learned { offset }) = (&self.pos_embed, self.config.positions)
        {
            let rows = pe.dims()[0];
            if start + t + offset > rows {
                return Err(ModelError::Invalid(format!(
                    "sequence of {} positions is longer than the model's {} learned positions",
                    start + t,
                    rows - offset
                )));
            }
            h = h + pe
                .clone()
                .slice([start + offset..start + t + offset, 0..self.config.hidden]);
        }
        let mut h: Tensor<B, 3> = h.unsqueeze_dim(0);
        let rope_g = self
            .rope_global
            .as_ref()
            .map(|r| r.tables::<B>(start, t, &device));
        let rope_l = self
            .rope_local
            .as_ref()
            .map(|r| r.tables::<B>(start, t, &device));
        // One mask per attention span, shared by its layers: every layer's cache has the
        // same capacity after this step. Blocked attention builds its mask rows per block.
        let mut masks: Vec<(LayerAttention, Option<Tensor<B, 4>>)> = Vec::new();
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let span = block.attn.span;
            let rope = match span {
                LayerAttention::Global => rope_g.as_ref(),
                LayerAttention::Local { .. } => rope_l.as_ref(),
            };
            let mask = match blocked {
                Some(rows) => AttentionMask::Blocked { rows },
                None => {
                    let j = match masks.iter().position(|(s, _)| *s == span) {
                        Some(j) => j,
                        None => {
                            let m = attention_mask::<B>(span, start, t, capacity, &device);
                            masks.push((span, m));
                            masks.len() - 1
                        }
                    };
                    AttentionMask::Whole(masks[j].1.as_ref())
                }
            };
            let ops = self.ops.as_ref();
            let a = block.attn.forward(
                block.attn_norm.forward(h.clone(), ops)?,
                rope,
                mask,
                cache.layer(i),
                ops,
            )?;
            let a = match &block.post_attn_norm {
                Some(n) => n.forward(a, ops)?,
                None => a,
            };
            h = h + a;
            let m = block
                .mlp
                .forward(block.ffn_norm.forward(h.clone(), ops)?, ops)?;
            let m = match &block.post_ffn_norm {
                Some(n) => n.forward(m, ops)?,
                None => m,
            };
            h = h + m;
        }
        cache.advance(t);
        let h = match logits {
            Logits::All => h,
            Logits::Last => h.slice([0..1, t - 1..t, 0..self.config.hidden]),
        };
        let h = self.final_norm.forward(h, self.ops.as_ref())?;
        let [_, rows, hidden] = h.dims();
        let out = self
            .lm_head
            .forward(h.reshape([rows, hidden]), self.ops.as_ref())?;
        Ok(out.unsqueeze_dim(0))
    }

    /// Every quantizable linear layer with a readable name (`layers.3.self_attn.q_proj`);
    /// the LM head is not among them.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut QuantLinear<B>)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let a = &mut b.attn;
            out.push((format!("layers.{i}.self_attn.q_proj"), &mut a.q));
            out.push((format!("layers.{i}.self_attn.k_proj"), &mut a.k));
            out.push((format!("layers.{i}.self_attn.v_proj"), &mut a.v));
            out.push((format!("layers.{i}.self_attn.o_proj"), &mut a.o));
            if let Some(g) = &mut b.mlp.gate {
                out.push((format!("layers.{i}.mlp.gate_proj"), g));
            }
            out.push((format!("layers.{i}.mlp.up_proj"), &mut b.mlp.up));
            out.push((format!("layers.{i}.mlp.down_proj"), &mut b.mlp.down));
        }
        out
    }

    /// Quantizes every block linear with a data-free method (RTN, TTQ, …).
    pub fn quantize(
        &mut self,
        method: Arc<dyn QuantMethod<B>>,
        policy: CalibrationPolicy,
    ) -> Result<()> {
        for (_, l) in self.linears_mut() {
            l.set_method(method.clone(), policy, None)?;
        }
        Ok(())
    }

    /// Quantizes every block linear with `method`, giving each layer its calibration
    /// statistics from `calibration` (by the names of [`Self::linears_mut`]) when present.
    /// Calls `progress(done, total, name)` after each layer: calibration-based methods can
    /// take seconds per layer.
    pub fn quantize_calibrated(
        &mut self,
        method: Arc<dyn QuantMethod<B>>,
        policy: CalibrationPolicy,
        calibration: &BTreeMap<String, CalibrationStats<B>>,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<()> {
        let mut layers = self.linears_mut();
        let total = layers.len();
        for (i, (name, l)) in layers.iter_mut().enumerate() {
            l.set_method(method.clone(), policy, calibration.get(name.as_str()))
                .map_err(|e| ModelError::QuantLayer {
                    layer: name.clone(),
                    source: e,
                })?;
            progress(i + 1, total, name);
        }
        Ok(())
    }

    /// Starts accumulating calibration statistics of every block linear's input (see
    /// [`QuantLinear::observe`]); run forwards, then [`Self::take_calibration`].
    pub fn observe_calibration(&mut self) {
        for (_, l) in self.linears_mut() {
            l.observe();
        }
    }

    /// Stops observing and returns each block linear's statistics by name.
    pub fn take_calibration(&mut self) -> BTreeMap<String, CalibrationStats<B>> {
        self.linears_mut()
            .into_iter()
            .filter_map(|(name, l)| l.take_observed().map(|s| (name, s)))
            .collect()
    }

    /// Bytes of static low-rank parts kept beside quantized weights (f32), over all layers.
    pub fn low_rank_bytes(&mut self) -> usize {
        self.linears_mut()
            .iter()
            .map(|(_, l)| l.low_rank_bytes())
            .sum()
    }

    /// Back to full precision everywhere.
    pub fn dequantize_all(&mut self) {
        for (_, l) in self.linears_mut() {
            l.clear_method();
        }
    }

    /// Runs the quantization hot paths with `kernels` in every layer, and the norms, RoPE
    /// and gated activations with its fused versions.
    pub fn set_kernels(&mut self, kernels: Arc<dyn QuantKernels<B>>) -> Result<()> {
        for (_, l) in self.linears_mut() {
            l.set_kernels(kernels.clone())?;
        }
        self.ops = kernels;
        Ok(())
    }

    /// Forgets test-time calibrations (call between prompts).
    pub fn reset_calibration(&mut self) {
        for (_, l) in self.linears_mut() {
            l.reset();
        }
    }

    /// Parameters in the block linears (the part that gets quantized).
    pub fn quantizable_parameters(&mut self) -> usize {
        self.linears_mut()
            .iter()
            .map(|(_, l)| l.in_features() * l.out_features())
            .sum()
    }
}
