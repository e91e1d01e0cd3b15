//! Hugging Face `config.json` → [`ModelConfig`], one typed struct per family.

use crate::config::{
    check_limits, Family, LayerAttention, MlpKind, ModelConfig, NormKind, Positions, MAX_HEADS,
    MAX_HEAD_DIM, MAX_LAYERS, MAX_POSITIONS, MAX_VOCAB, MAX_WIDTH,
};
use crate::error::{ModelError, Result};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// Token ids in configs are a number, a list of numbers, or null.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
    #[default]
    None,
}

impl TokenIds {
    fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(t) => vec![*t],
            TokenIds::Many(v) => v.clone(),
            TokenIds::None => vec![],
        }
    }
}

#[derive(Debug, Deserialize)]
struct OptConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    ffn_dim: usize,
    max_position_embeddings: usize,
    #[serde(default = "yes")]
    do_layer_norm_before: bool,
    word_embed_proj_dim: Option<usize>,
    #[serde(default = "relu")]
    activation_function: String,
    #[serde(default = "yes")]
    enable_bias: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: TokenIds,
    #[serde(default)]
    eos_token_id: TokenIds,
}

/// Llama, Qwen2 and Qwen3 share these keys.
#[derive(Debug, Deserialize)]
struct LlamaLikeConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    intermediate_size: usize,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    #[serde(default = "silu")]
    hidden_act: String,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: TokenIds,
    #[serde(default)]
    eos_token_id: TokenIds,
}

#[derive(Debug, Deserialize)]
struct Gemma3Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    intermediate_size: usize,
    #[serde(default = "default_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "gemma_global_theta")]
    rope_theta: f64,
    #[serde(default = "gemma_local_theta")]
    rope_local_base_freq: f64,
    rope_scaling: Option<Value>,
    sliding_window: usize,
    sliding_window_pattern: Option<usize>,
    layer_types: Option<Vec<String>>,
    query_pre_attn_scalar: f64,
    #[serde(default = "gelu_tanh")]
    hidden_activation: String,
    final_logit_softcapping: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: TokenIds,
    #[serde(default)]
    eos_token_id: TokenIds,
}

fn yes() -> bool {
    true
}
fn relu() -> String {
    "relu".into()
}
fn silu() -> String {
    "silu".into()
}
fn gelu_tanh() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_positions() -> usize {
    2048
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn gemma_global_theta() -> f64 {
    1_000_000.0
}
fn gemma_local_theta() -> f64 {
    10_000.0
}

/// Parses `config.json` of a Hugging Face model directory.
pub fn parse_config(path: &Path) -> Result<ModelConfig> {
    let text = crate::resources::read_regular(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config_text(&text, path)
}

/// Parses the text of a Hugging Face `config.json`; `path` names it in errors.
pub fn parse_config_text(text: &[u8], path: &Path) -> Result<ModelConfig> {
    let value: Value = serde_json::from_slice(text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })?;
    let model_type = value
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let bad = |message: String| ModelError::Config {
        path: path.to_path_buf(),
        message,
    };
    let config = match model_type.as_str() {
        "opt" => opt(parse(path, value)?).map_err(bad)?,
        "llama" | "qwen2" | "mistral" => {
            llama_like(Family::Llama, parse(path, value)?).map_err(bad)?
        }
        "qwen3" => llama_like(Family::Qwen3, parse(path, value)?).map_err(bad)?,
        "gemma3_text" | "gemma3" => {
            // Multimodal gemma3 configs nest the language model under `text_config`.
            let text = value.get("text_config").cloned().unwrap_or(value);
            gemma3(parse(path, text)?).map_err(bad)?
        }
        other => {
            return Err(ModelError::UnknownArchitecture {
                path: path.to_path_buf(),
                architecture: if other.is_empty() {
                    "(config has no model_type)".into()
                } else {
                    other.into()
                },
            })
        }
    };
    config.validate().map_err(|m| ModelError::Config {
        path: path.to_path_buf(),
        message: m,
    })?;
    Ok(config)
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn no_rope_scaling(v: &Option<Value>) -> std::result::Result<(), String> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(other) => Err(format!("rope_scaling {other} is not supported")),
    }
}

fn opt(c: OptConfig) -> std::result::Result<ModelConfig, String> {
    check_limits(&[
        ("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS),
        ("hidden_size", c.hidden_size, MAX_WIDTH),
        ("ffn_dim", c.ffn_dim, MAX_WIDTH),
        ("num_attention_heads", c.num_attention_heads, MAX_HEADS),
        ("vocab_size", c.vocab_size, MAX_VOCAB),
        (
            "max_position_embeddings",
            c.max_position_embeddings,
            MAX_POSITIONS,
        ),
    ])?;
    if !c.do_layer_norm_before {
        return Err("OPT with do_layer_norm_before = false (OPT-350m) is not supported".into());
    }
    if c.word_embed_proj_dim.is_some_and(|d| d != c.hidden_size) {
        return Err(
            "OPT with word_embed_proj_dim != hidden_size (project_in/out) is not supported".into(),
        );
    }
    if c.activation_function != "relu" {
        return Err(format!(
            "OPT activation `{}` is not supported",
            c.activation_function
        ));
    }
    if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err("hidden_size must be a multiple of num_attention_heads".into());
    }
    let head_dim = c.hidden_size / c.num_attention_heads;
    Ok(ModelConfig {
        family: Family::Opt,
        hidden: c.hidden_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_attention_heads,
        head_dim,
        intermediate: c.ffn_dim,
        vocab: c.vocab_size,
        max_positions: c.max_position_embeddings,
        norm: NormKind::LayerNorm,
        norm_eps: 1e-5,
        mlp: MlpKind::Relu,
        positions: Positions::Learned { offset: 2 },
        rope_theta: 0.0,
        rope_local_theta: None,
        layer_attention: vec![LayerAttention::Global; c.num_hidden_layers],
        qk_norm: false,
        qkv_bias: c.enable_bias,
        o_bias: c.enable_bias,
        mlp_bias: c.enable_bias,
        sandwich_norms: false,
        scale_embeddings: false,
        attn_scale: (head_dim as f64).powf(-0.5),
        tie_embeddings: c.tie_word_embeddings,
        bos_token: c.bos_token_id.to_vec().first().copied(),
        eos_tokens: c.eos_token_id.to_vec(),
    })
}

fn llama_like(family: Family, c: LlamaLikeConfig) -> std::result::Result<ModelConfig, String> {
    check_limits(&[
        ("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS),
        ("hidden_size", c.hidden_size, MAX_WIDTH),
        ("intermediate_size", c.intermediate_size, MAX_WIDTH),
        ("num_attention_heads", c.num_attention_heads, MAX_HEADS),
        (
            "num_key_value_heads",
            c.num_key_value_heads.unwrap_or(0),
            MAX_HEADS,
        ),
        ("head_dim", c.head_dim.unwrap_or(0), MAX_HEAD_DIM),
        ("vocab_size", c.vocab_size, MAX_VOCAB),
        (
            "max_position_embeddings",
            c.max_position_embeddings,
            MAX_POSITIONS,
        ),
    ])?;
    no_rope_scaling(&c.rope_scaling)?;
    if c.hidden_act != "silu" {
        return Err(format!("activation `{}` is not supported", c.hidden_act));
    }
    if c.num_attention_heads == 0 {
        return Err("num_attention_heads must be positive".into());
    }
    let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
    let rope_theta = c
        .rope_theta
        .or_else(|| {
            c.rope_parameters
                .as_ref()
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
        })
        .unwrap_or(10_000.0);
    Ok(ModelConfig {
        family,
        hidden: c.hidden_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        head_dim,
        intermediate: c.intermediate_size,
        vocab: c.vocab_size,
        max_positions: c.max_position_embeddings,
        norm: NormKind::RmsNorm,
        norm_eps: c.rms_norm_eps,
        mlp: MlpKind::SwiGlu,
        positions: Positions::Rope,
        rope_theta,
        rope_local_theta: None,
        layer_attention: vec![LayerAttention::Global; c.num_hidden_layers],
        qk_norm: family == Family::Qwen3,
        qkv_bias: c.attention_bias,
        o_bias: c.attention_bias && family == Family::Llama,
        mlp_bias: c.mlp_bias,
        sandwich_norms: false,
        scale_embeddings: false,
        attn_scale: (head_dim as f64).powf(-0.5),
        tie_embeddings: c.tie_word_embeddings,
        bos_token: c.bos_token_id.to_vec().first().copied(),
        eos_tokens: c.eos_token_id.to_vec(),
    })
}

fn gemma3(c: Gemma3Config) -> std::result::Result<ModelConfig, String> {
    check_limits(&[
        ("num_hidden_layers", c.num_hidden_layers, MAX_LAYERS),
        ("hidden_size", c.hidden_size, MAX_WIDTH),
        ("intermediate_size", c.intermediate_size, MAX_WIDTH),
        ("num_attention_heads", c.num_attention_heads, MAX_HEADS),
        ("num_key_value_heads", c.num_key_value_heads, MAX_HEADS),
        ("head_dim", c.head_dim, MAX_HEAD_DIM),
        ("vocab_size", c.vocab_size, MAX_VOCAB),
        (
            "max_position_embeddings",
            c.max_position_embeddings,
            MAX_POSITIONS,
        ),
    ])?;
    no_rope_scaling(&c.rope_scaling)?;
    if c.hidden_activation != "gelu_pytorch_tanh" {
        return Err(format!(
            "activation `{}` is not supported",
            c.hidden_activation
        ));
    }
    if c.final_logit_softcapping.is_some() || c.attn_logit_softcapping.is_some() {
        return Err("logit soft-capping is not supported (Gemma 3 does not use it)".into());
    }
    let local = LayerAttention::Local {
        window: c.sliding_window,
    };
    let layer_attention = match (&c.layer_types, c.sliding_window_pattern) {
        (Some(types), _) => types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(local),
                "full_attention" => Ok(LayerAttention::Global),
                other => Err(format!("unknown layer type `{other}`")),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        (None, pattern) => {
            gemma3_layer_pattern(c.num_hidden_layers, pattern.unwrap_or(6), c.sliding_window)
        }
    };
    Ok(ModelConfig {
        family: Family::Gemma3,
        hidden: c.hidden_size,
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
        intermediate: c.intermediate_size,
        vocab: c.vocab_size,
        max_positions: c.max_position_embeddings,
        norm: NormKind::RmsNorm,
        norm_eps: c.rms_norm_eps,
        mlp: MlpKind::GeGluTanh,
        positions: Positions::Rope,
        rope_theta: c.rope_theta,
        rope_local_theta: Some(c.rope_local_base_freq),
        layer_attention,
        qk_norm: true,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        sandwich_norms: true,
        scale_embeddings: true,
        attn_scale: c.query_pre_attn_scalar.powf(-0.5),
        tie_embeddings: c.tie_word_embeddings,
        bos_token: c.bos_token_id.to_vec().first().copied(),
        eos_tokens: c.eos_token_id.to_vec(),
    })
}

/// Gemma 3's default layout: layer `i` is global when `(i + 1) % pattern == 0`, else local.
pub fn gemma3_layer_pattern(layers: usize, pattern: usize, window: usize) -> Vec<LayerAttention> {
    (0..layers)
        .map(|i| {
            if pattern > 0 && (i + 1) % pattern == 0 {
                LayerAttention::Global
            } else {
                LayerAttention::Local { window }
            }
        })
        .collect()
}
