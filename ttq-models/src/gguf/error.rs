//! Error type for everything GGUF: parsing, dequantisation, metadata lookup and tokenizer
//! construction. Every variant names the file; variants about a tensor also name the tensor.

use std::path::{Path, PathBuf};

/// An error while reading a GGUF file or interpreting its contents.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be read from disk.
    #[error("{}: cannot read file: {source}", .file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error("{}: not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")", .file.display())]
    BadMagic { file: PathBuf, found: Vec<u8> },

    /// A GGUF version other than 2 or 3 (version 1 used 32-bit counts and is obsolete).
    #[error("{}: unsupported GGUF version {version} (supported: 2 and 3){hint}", .file.display())]
    UnsupportedVersion {
        file: PathBuf,
        version: u32,
        /// Extra explanation, e.g. that the file looks big-endian. Empty or starting with "; ".
        hint: String,
    },

    /// The file ends before a header field that should be there.
    #[error(
        "{}: file is truncated: {what} needs {needed} bytes at offset {offset}, but the file has only {len} bytes",
        .file.display()
    )]
    Truncated {
        file: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },

    /// A count or length in the header that cannot be right (it would need more bytes than the
    /// file has, or exceeds a hard limit). Reported instead of attempting a huge allocation.
    #[error(
        "{}: implausible {what} {value} at offset {offset} (at most {max} is possible here); the header is corrupt",
        .file.display()
    )]
    ImplausibleCount {
        file: PathBuf,
        what: String,
        value: u64,
        max: u64,
        offset: u64,
    },

    /// A string (key, value or tensor name) is not valid UTF-8.
    #[error("{}: {what} at offset {offset} is not valid UTF-8", .file.display())]
    InvalidUtf8 {
        file: PathBuf,
        what: String,
        offset: u64,
    },

    /// Any other structural problem in the header (unknown value type, duplicate key, bad
    /// alignment, ...).
    #[error("{}: malformed header at offset {offset}: {message}", .file.display())]
    Malformed {
        file: PathBuf,
        offset: u64,
        message: String,
    },

    /// A tensor uses a ggml type id that this reader does not know at all.
    #[error("{}: tensor '{tensor}': unknown ggml type id {type_id}", .file.display())]
    UnknownType {
        file: PathBuf,
        tensor: String,
        type_id: u32,
    },

    /// A known ggml type that has no dequantizer here.
    #[error("{}: tensor '{tensor}': ggml type {type_name} is not supported for dequantization", .file.display())]
    UnsupportedType {
        file: PathBuf,
        tensor: String,
        type_name: String,
    },

    /// The tensor's rows cannot be split into whole quantisation blocks.
    #[error(
        "{}: tensor '{tensor}': row length ne0={ne0} is not a multiple of the {type_name} block size {block_size}",
        .file.display()
    )]
    NotBlockAligned {
        file: PathBuf,
        tensor: String,
        type_name: String,
        ne0: u64,
        block_size: u64,
    },

    /// Dimensions that are invalid (too many, or an element count that overflows).
    #[error("{}: tensor '{tensor}': invalid shape {dims:?}: {message}", .file.display())]
    BadShape {
        file: PathBuf,
        tensor: String,
        dims: Vec<u64>,
        message: String,
    },

    /// A tensor's data range is not inside the file's data section, or its offset is not aligned.
    #[error(
        "{}: tensor '{tensor}': data bytes [{start}, {end}) are outside the file ({len} bytes){detail}",
        .file.display()
    )]
    DataOutOfBounds {
        file: PathBuf,
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
        /// Empty or starting with "; ".
        detail: String,
    },

    /// `dequantize`/`tensor_data` was asked for a tensor the file does not have.
    #[error("{}: no tensor named '{tensor}'", .file.display())]
    TensorNotFound { file: PathBuf, tensor: String },

    /// A required metadata key is absent.
    #[error("{}: metadata key '{key}' is missing", .file.display())]
    MissingKey { file: PathBuf, key: String },

    /// A metadata key holds a value of the wrong type (or a value out of range for it).
    #[error("{}: metadata key '{key}' holds {found}, expected {expected}", .file.display())]
    WrongType {
        file: PathBuf,
        key: String,
        expected: String,
        found: String,
    },

    /// The tokenizer described by the metadata cannot be built.
    #[error("{}: cannot build tokenizer: {message}", .file.display())]
    Tokenizer { file: PathBuf, message: String },
}

impl GgufError {
    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            GgufError::Io { file, .. }
            | GgufError::BadMagic { file, .. }
            | GgufError::UnsupportedVersion { file, .. }
            | GgufError::Truncated { file, .. }
            | GgufError::ImplausibleCount { file, .. }
            | GgufError::InvalidUtf8 { file, .. }
            | GgufError::Malformed { file, .. }
            | GgufError::UnknownType { file, .. }
            | GgufError::UnsupportedType { file, .. }
            | GgufError::NotBlockAligned { file, .. }
            | GgufError::BadShape { file, .. }
            | GgufError::DataOutOfBounds { file, .. }
            | GgufError::TensorNotFound { file, .. }
            | GgufError::MissingKey { file, .. }
            | GgufError::WrongType { file, .. }
            | GgufError::Tokenizer { file, .. } => file,
        }
    }

    /// The tensor the error is about, if it is about one.
    pub fn tensor(&self) -> Option<&str> {
        match self {
            GgufError::UnknownType { tensor, .. }
            | GgufError::UnsupportedType { tensor, .. }
            | GgufError::NotBlockAligned { tensor, .. }
            | GgufError::BadShape { tensor, .. }
            | GgufError::DataOutOfBounds { tensor, .. }
            | GgufError::TensorNotFound { tensor, .. } => Some(tensor),
            _ => None,
        }
    }
}
