//! One entry point for every model file ttq reads.

use crate::error::{ModelError, Result};
use crate::gguf::{tokenizer_from_gguf, GgufFile};
use crate::gguf_model::{gguf_config, GgufSource};
use crate::hf_config::parse_config;
use crate::model::{CausalLm, LoadOptions};
use crate::naming::Format;
use crate::source::SafetensorsSource;
use crate::tokenizer::TextTokenizer;
use crate::Family;
use burn::tensor::backend::Backend;
use std::path::{Path, PathBuf};

/// A model with its tokenizer.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The network.
    pub model: CausalLm<B>,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// The file or directory the weights came from.
    pub weights: PathBuf,
}

/// Loads a model from
/// - a Hugging Face directory (`config.json`, safetensors, `tokenizer.json`),
/// - a directory holding `model.gguf` (and optionally `tokenizer.json`), as
///   `cargo xtask fetch-model` writes it, or
/// - a `.gguf` file (tokenizer: `tokenizer.json` beside it, else built from the GGUF metadata).
///
/// Every weight becomes an f32 tensor on `device`; [`load_model_with`] can keep 8-bit
/// token tables in host memory instead (the CPU's choice).
pub fn load_model<B: Backend>(path: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    load_model_with(path, device, false)
}

/// [`load_model`], keeping the token embedding and LM head in host memory in the file's
/// 8-bit blocks when `host_tables` is on and the file stores them so (see
/// [`LoadOptions::host_tables`]).
pub fn load_model_with<B: Backend>(
    path: &Path,
    device: &B::Device,
    host_tables: bool,
) -> Result<LoadedModel<B>> {
    if path.is_dir() {
        if path.join("config.json").exists() {
            return load_hf_dir(path, device);
        }
        let gguf = path.join("model.gguf");
        if gguf.exists() {
            return load_gguf(&gguf, device, host_tables);
        }
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "model directory has neither config.json (Hugging Face) nor model.gguf",
            ),
        });
    }
    if !path.exists() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    load_gguf(path, device, host_tables)
}

/// The network of a Hugging Face directory (`config.json` + safetensors), without its
/// tokenizer.
pub fn load_hf_weights<B: Backend>(dir: &Path, device: &B::Device) -> Result<CausalLm<B>> {
    let config = parse_config(&dir.join("config.json"))?;
    let source = SafetensorsSource::open_dir(dir)?;
    let options = LoadOptions {
        format: Format::HuggingFace,
        // Hugging Face files store Gemma's norm weights without the `1 +`.
        norm_offset: if config.family == Family::Gemma3 {
            1.0
        } else {
            0.0
        },
        unpermute_qk: false,
        host_tables: false,
    };
    CausalLm::load(config, &source, options, device)
}

fn load_hf_dir<B: Backend>(dir: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    let config = parse_config(&dir.join("config.json"))?;
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), config.bos_token)?;
    check_tokenizer_fits(&tokenizer, config.vocab)?;
    Ok(LoadedModel {
        model: load_hf_weights(dir, device)?,
        tokenizer,
        weights: dir.to_path_buf(),
    })
}

fn load_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
    host_tables: bool,
) -> Result<LoadedModel<B>> {
    let file = GgufFile::open(path)?;
    let (config, quirks) = gguf_config(&file)?;
    let beside = path.with_file_name("tokenizer.json");
    let bos = config.bos_token;
    let vocab = config.vocab;
    let source = GgufSource::new(file);
    let read_tokenizer = || -> Result<TextTokenizer> {
        let tokenizer = if beside.is_file() {
            TextTokenizer::from_file(&beside, bos)?
        } else {
            let t = tokenizer_from_gguf(source.file()).map_err(|e| ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: format!("{e}; put the model's tokenizer.json beside the GGUF file"),
            })?;
            TextTokenizer::from_tokenizer(t, path.to_path_buf(), bos)
        };
        check_tokenizer_fits(&tokenizer, vocab)?;
        Ok(tokenizer)
    };
    let options = LoadOptions {
        format: Format::Gguf,
        norm_offset: 0.0,
        unpermute_qk: quirks.unpermute_qk,
        host_tables,
    };
    // The tokenizer (seconds for Gemma's 262k-entry vocabulary) is read on a thread of its
    // own while the weights load; its errors are reported first.
    let (tokenizer, model) = std::thread::scope(|s| {
        let tokenizer = s.spawn(read_tokenizer);
        let model = CausalLm::load(config, &source, options, device);
        let tokenizer = tokenizer
            .join()
            .unwrap_or_else(|_| Err(ModelError::Invalid("reading the tokenizer panicked".into())));
        (tokenizer, model)
    });
    let tokenizer = tokenizer?;
    let model = model?;
    Ok(LoadedModel {
        model,
        tokenizer,
        weights: path.to_path_buf(),
    })
}

/// Refuses a tokenizer whose vocabulary is less than half or more than twice the model's:
/// it belongs to another model (checkpoints pad their vocabulary a little beyond the
/// tokenizer's, never by a factor of two).
pub fn check_tokenizer_fits(tokenizer: &TextTokenizer, model_vocab: usize) -> Result<()> {
    let n = tokenizer.vocab_size();
    if n.saturating_mul(2) < model_vocab || n > model_vocab.saturating_mul(2) {
        return Err(ModelError::Tokenizer {
            path: tokenizer.origin().to_path_buf(),
            message: format!(
                "has {n} tokens but the model's vocabulary has {model_vocab}: it belongs to \
                 another model (allowed: between half and twice the model's vocabulary)"
            ),
        });
    }
    Ok(())
}

/// Whether the tokenizer of `loaded` should see a `<bos>` at the start of every window by
/// default: on for Gemma (which degrades badly without it), and for models whose GGUF says
/// so; off otherwise.
pub fn default_add_bos<B: Backend>(loaded: &LoadedModel<B>) -> bool {
    loaded.model.config().family == Family::Gemma3
}
