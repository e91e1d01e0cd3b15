//! GGUF files as a [`TensorSource`], and GGUF metadata → [`ModelConfig`].
//!
//! Conventions that GGUF leaves implicit follow llama.cpp: Gemma 3's local layers use RoPE
//! base 10,000 and every 6th layer is global; Gemma 3's attention scale is `head_dim^-0.5`
//! except for the 27B model; Gemma norm weights already include the `+1`; Llama-architecture
//! Q/K rows are permuted for interleaved RoPE and must be un-permuted for rotate-half.

use crate::config::{Family, LayerAttention, MlpKind, ModelConfig, NormKind, Positions};
use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile};
use crate::hf_config::gemma3_layer_pattern;
use crate::source::{HostTensor, TensorSource};
use rayon::prelude::*;
use std::path::Path;
use ttq_kernels::Q8Rows;

/// A GGUF file whose tensors are dequantized to f32 on request.
pub struct GgufSource {
    file: GgufFile,
}

impl GgufSource {
    /// Wraps an opened GGUF file.
    pub fn new(file: GgufFile) -> Self {
        Self { file }
    }

    /// The parsed file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl TensorSource for GgufSource {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn contains(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn get(&self, name: &str) -> Result<HostTensor> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.file.path().to_path_buf(),
                tensor: name.to_string(),
            })?;
        let shape = info.shape();
        let data = self.file.dequantize(name)?;
        Ok(HostTensor { shape, data })
    }

    fn q8_rows(&self, name: &str) -> Result<Option<Q8Rows>> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let shape = info.shape();
        if info.ggml_type != GgmlType::Q8_0 || shape.len() != 2 {
            return Ok(None);
        }
        let (rows, cols) = (shape[0], shape[1]);
        let data = self.file.tensor_data(name)?;
        // Q8_0 blocks: an f16 scale, then 32 `i8` values (`x = q · d`), never across rows
        // (ggml requires rows of whole blocks). The header check made `data` whole blocks.
        let n = data.len() / 34;
        let mut scales = vec![0f32; n];
        let mut qs = vec![0i8; n * 32];
        scales
            .par_iter_mut()
            .zip(qs.par_chunks_mut(32))
            .zip(data.par_chunks_exact(34))
            .for_each(|((d, q), b)| {
                *d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                for (q, &v) in q.iter_mut().zip(&b[2..34]) {
                    *q = v as i8;
                }
            });
        Q8Rows::new(rows, cols, scales, qs)
            .map(Some)
            .map_err(|e| ModelError::Invalid(format!("{} in {}: {e}", name, self.path().display())))
    }
}

/// What the loader must do besides reading tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufQuirks {
    /// Undo llama.cpp's Q/K permutation.
    pub unpermute_qk: bool,
}

/// The model configuration a GGUF file describes.
pub fn gguf_config(file: &GgufFile) -> Result<(ModelConfig, GgufQuirks)> {
    let arch = file.architecture()?.to_string();
    let family = match arch.as_str() {
        "llama" | "qwen2" => Family::Llama,
        "qwen3" => Family::Qwen3,
        "gemma3" => Family::Gemma3,
        _ => {
            return Err(ModelError::UnknownArchitecture {
                path: file.path().to_path_buf(),
                architecture: arch,
            })
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let u = |k: &str| -> Result<usize> { Ok(file.meta_u64(&key(k))? as usize) };
    let u_opt =
        |k: &str| -> Result<Option<usize>> { Ok(file.meta_u64_opt(&key(k))?.map(|v| v as usize)) };
    let hidden = u("embedding_length")?;
    let layers = u("block_count")?;
    let heads = u("attention.head_count")?;
    let kv_heads = u_opt("attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = match u_opt("attention.key_length")? {
        Some(d) => d,
        None => u_opt("rope.dimension_count")?.unwrap_or(hidden / heads.max(1)),
    };
    let embed = file
        .tensor("token_embd.weight")
        .ok_or_else(|| ModelError::MissingTensor {
            path: file.path().to_path_buf(),
            tensor: "token_embd.weight".into(),
        })?;
    let vocab = embed.dims.get(1).copied().unwrap_or(0) as usize;
    let rope_theta = f64::from(
        file.meta_f32_opt(&key("rope.freq_base"))?
            .unwrap_or(10_000.0),
    );
    let eps = f64::from(
        file.meta_f32_opt(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6),
    );
    let max_positions = u_opt("context_length")?.unwrap_or(2048);
    let bos = file
        .meta_u64_opt("tokenizer.ggml.bos_token_id")?
        .map(|v| v as u32);
    let eos: Vec<u32> = file
        .meta_u64_opt("tokenizer.ggml.eos_token_id")?
        .map(|v| v as u32)
        .into_iter()
        .collect();
    let tie = file.tensor("output.weight").is_none();
    let intermediate = u("feed_forward_length")?;
    // Before `layers` sizes any allocation (a corrupt block_count of 4e9 is an error).
    {
        use crate::config::*;
        check_limits(&[
            (&key("block_count"), layers, MAX_LAYERS),
            (&key("embedding_length"), hidden, MAX_WIDTH),
            (&key("feed_forward_length"), intermediate, MAX_WIDTH),
            (&key("attention.head_count"), heads, MAX_HEADS),
            (&key("attention.head_count_kv"), kv_heads, MAX_HEADS),
            (&key("attention.key_length"), head_dim, MAX_HEAD_DIM),
            ("token_embd.weight rows", vocab, MAX_VOCAB),
            (&key("context_length"), max_positions, MAX_POSITIONS),
        ])
        .map_err(|message| ModelError::Config {
            path: file.path().to_path_buf(),
            message,
        })?;
    }
    let base = ModelConfig {
        family,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        intermediate,
        vocab,
        max_positions,
        norm: NormKind::RmsNorm,
        norm_eps: eps,
        mlp: MlpKind::SwiGlu,
        positions: Positions::Rope,
        rope_theta,
        rope_local_theta: None,
        layer_attention: vec![LayerAttention::Global; layers],
        qk_norm: family == Family::Qwen3,
        qkv_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        o_bias: file.tensor("blk.0.attn_output.bias").is_some(),
        mlp_bias: false,
        sandwich_norms: false,
        scale_embeddings: false,
        attn_scale: (head_dim as f64).powf(-0.5),
        tie_embeddings: tie,
        bos_token: bos,
        eos_tokens: eos,
    };
    let config = match family {
        Family::Gemma3 => {
            let window = u("attention.sliding_window")?;
            ModelConfig {
                mlp: MlpKind::GeGluTanh,
                rope_local_theta: Some(10_000.0),
                layer_attention: gemma3_layer_pattern(layers, 6, window),
                qk_norm: true,
                sandwich_norms: true,
                scale_embeddings: true,
                ..base
            }
        }
        _ => base,
    };
    config.validate().map_err(|message| ModelError::Config {
        path: file.path().to_path_buf(),
        message,
    })?;
    let quirks = GgufQuirks {
        unpermute_qk: arch == "llama",
    };
    Ok((config, quirks))
}
