//! Architectures by name, for random-weight models (speed does not depend on the weights'
//! values, so a benchmark of a large shape needs no checkpoint).
//!
//! Each preset is the architecture part of the model's published Hugging Face `config.json`
//! (sizes, head counts, norms, RoPE base), parsed by the same code as a real config.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hf_config::parse_config_text;
use std::path::Path;

/// Preset names, for help texts and errors.
pub const PRESETS: [&str; 4] = ["qwen3-8b", "qwen3-0.6b", "llama3-8b", "gemma3-270m"];

/// Qwen3-8B: 36 layers, width 4096, 32 query / 8 KV heads of 128, MLP 12288, vocab 151936.
const QWEN3_8B: &str = r#"{
  "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288,
  "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
  "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000, "tie_word_embeddings": false,
  "attention_bias": false, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645
}"#;

/// Qwen3-0.6B: 28 layers, width 1024, 16 query / 8 KV heads of 128, MLP 3072, tied head.
const QWEN3_0_6B: &str = r#"{
  "model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
  "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
  "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000, "tie_word_embeddings": true,
  "attention_bias": false, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645
}"#;

/// Llama-3-8B: 32 layers, width 4096, 32 query / 8 KV heads, MLP 14336, vocab 128256.
const LLAMA3_8B: &str = r#"{
  "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "vocab_size": 128256, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
  "rope_theta": 500000, "tie_word_embeddings": false, "attention_bias": false,
  "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128001
}"#;

/// Gemma 3 270M: 18 layers (every 6th global), width 640, 4 query / 1 KV head of 256, MLP
/// 2048, vocab 262144, 512-token sliding window; the values of the GGUF in `../shared`'s
/// DESIGN.md (context 32768, RMS eps 1e-6, global RoPE base 1e6, local 1e4).
const GEMMA3_270M: &str = r#"{
  "model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048,
  "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
  "head_dim": 256, "vocab_size": 262144, "max_position_embeddings": 32768,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000, "rope_local_base_freq": 10000,
  "sliding_window": 512, "sliding_window_pattern": 6, "query_pre_attn_scalar": 256,
  "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": true,
  "bos_token_id": 2, "eos_token_id": 1
}"#;

/// The configuration of preset `name` (one of [`PRESETS`]), or of the Hugging Face
/// `config.json` at path `name` when no preset has that name.
pub fn config_by_name(name: &str) -> Result<ModelConfig> {
    let text = match name {
        "qwen3-8b" => QWEN3_8B,
        "qwen3-0.6b" => QWEN3_0_6B,
        "llama3-8b" => LLAMA3_8B,
        "gemma3-270m" => GEMMA3_270M,
        path if Path::new(path).is_file() => {
            return crate::hf_config::parse_config(Path::new(path))
        }
        other => {
            return Err(ModelError::Config {
                path: other.into(),
                message: format!(
                    "neither a preset ({}) nor a config.json file",
                    PRESETS.join(", ")
                ),
            })
        }
    };
    parse_config_text(text.as_bytes(), Path::new(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Family;

    #[test]
    fn qwen3_8b_has_the_published_shape() {
        let c = config_by_name("qwen3-8b").unwrap();
        assert_eq!(c.family, Family::Qwen3);
        assert_eq!((c.hidden, c.layers, c.intermediate), (4096, 36, 12288));
        assert_eq!((c.heads, c.kv_heads, c.head_dim), (32, 8, 128));
        assert_eq!((c.q_dim(), c.kv_dim()), (4096, 1024));
        assert!(c.qk_norm && !c.tie_embeddings);
    }

    /// Against the facts of `../shared/DESIGN.md` about the Gemma 3 270M GGUF.
    #[test]
    fn gemma3_270m_has_the_published_shape() {
        let c = config_by_name("gemma3-270m").unwrap();
        assert_eq!(c.family, Family::Gemma3);
        assert_eq!(
            (c.hidden, c.layers, c.intermediate, c.vocab),
            (640, 18, 2048, 262_144)
        );
        assert_eq!((c.heads, c.kv_heads, c.head_dim), (4, 1, 256));
        let globals: Vec<usize> = (0..c.layers)
            .filter(|&i| c.layer_attention[i] == crate::config::LayerAttention::Global)
            .collect();
        assert_eq!(globals, vec![5, 11, 17]);
        assert!(c.layer_attention.iter().all(|a| matches!(
            a,
            crate::config::LayerAttention::Global
                | crate::config::LayerAttention::Local { window: 512 }
        )));
        assert_eq!((c.rope_theta, c.rope_local_theta), (1e6, Some(1e4)));
        assert!(c.qk_norm && c.tie_embeddings);
    }

    #[test]
    fn every_preset_parses() {
        for name in PRESETS {
            config_by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn unknown_names_are_clear_errors() {
        let e = config_by_name("gpt-5").unwrap_err().to_string();
        assert!(e.contains("qwen3-8b"), "{e}");
    }
}
