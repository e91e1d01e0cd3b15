//! # ttq-models
//!
//! OPT, Llama (SmolLM2, Qwen2), Qwen3 and Gemma 3 in Burn, generic over the backend, with
//! every projection a `ttq_core::QuantLinear` so that any quantization method plugs into
//! any model. Weights load from Hugging Face directories (safetensors) or GGUF files.

pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gguf_model;
pub mod hf_config;
pub mod load;
pub mod model;
pub mod naming;
pub mod nn;
pub mod presets;
pub mod resources;
pub mod source;
pub mod tokenizer;

pub use config::{Family, ModelConfig};
pub use error::{ModelError, Result};
pub use load::{load_model, load_model_with, LoadedModel};
pub use model::{CausalLm, Logits};
pub use tokenizer::TextTokenizer;
