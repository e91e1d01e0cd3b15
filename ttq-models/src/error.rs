//! Errors of model loading and running. Every error about a file names the file, and the
//! tensor where one is involved.

use std::path::PathBuf;
use thiserror::Error;
use ttq_core::QuantError;

/// What can go wrong while loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A safetensors file that does not parse.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A GGUF file that does not parse or holds something unsupported.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A config that is missing fields or has impossible values.
    #[error("{path}: bad model config: {message}")]
    Config {
        /// The config file (or model file carrying the metadata).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A model architecture ttq does not implement.
    #[error("{path}: unsupported architecture `{architecture}` (supported: OPT, Llama/Qwen2/SmolLM2, Qwen3, Gemma3)")]
    UnknownArchitecture {
        /// The file naming it.
        path: PathBuf,
        /// The architecture as named in the file.
        architecture: String,
    },
    /// A tensor the architecture needs is not in the weights.
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The weights file (or directory).
        path: PathBuf,
        /// The tensor's name in that file.
        tensor: String,
    },
    /// A tensor whose shape does not fit the config.
    #[error("{path}: tensor `{tensor}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape in the file.
        got: Vec<usize>,
    },
    /// A tensor stored in a type the loader cannot convert.
    #[error("{path}: tensor `{tensor}` has unsupported dtype {dtype}")]
    TensorDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
    /// The tokenizer is missing or does not load.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// Where it was looked for.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A quantization error from a layer.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A quantization error in a named layer.
    #[error("{layer}: {source}")]
    QuantLayer {
        /// The layer's name.
        layer: String,
        /// What went wrong.
        source: QuantError,
    },
    /// A weight that is NaN or infinite: it would make every output NaN (and cannot be
    /// quantized), so the model is refused at load.
    #[error("{path}: tensor `{tensor}` holds a non-finite value ({value} at flat index {index}); the weights are corrupt")]
    NonFiniteWeight {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The first bad value.
        value: f32,
        /// Its flat (row-major) index.
        index: usize,
    },
    /// Something would need more memory than the machine has.
    #[error("{0}")]
    OutOfMemory(String),
    /// A bad request at run time (empty prompt, token id out of range, …).
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand result type.
pub type Result<T> = std::result::Result<T, ModelError>;
