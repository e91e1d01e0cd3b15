//! Reading GGUF model files (llama.cpp's format): header, metadata, tensor infos, and
//! dequantisation of tensor data to `f32`.
//!
//! ```no_run
//! # fn main() -> Result<(), ttq_models::gguf::GgufError> {
//! use ttq_models::gguf::GgufFile;
//! let f = GgufFile::open(std::path::Path::new("model.gguf"))?;
//! let n_layers = f.meta_u64(&f.arch_key("block_count")?)?;
//! let emb = f.dequantize("token_embd.weight")?; // [vocab, hidden], hidden fastest
//! # let _ = (n_layers, emb); Ok(()) }
//! ```

pub mod dequant;
mod error;
pub mod reader;
pub mod tokenizer;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use dequant::DequantError;
pub use error::GgufError;
pub use tokenizer::tokenizer_from_gguf;
pub use types::{GgmlType, MetaArray, MetaType, MetaValue, TensorInfo};

/// The bytes of a file: mapped from disk, or owned (files built in memory, tests).
enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// A GGUF file, memory-mapped (or held in memory), with its header parsed and validated.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
    bytes: FileBytes,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("n_bytes", &self.bytes.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file into memory and parses its header: only the pages of the tensors a
    /// loader reads are ever read from disk, and nothing is copied up front.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            file: path.to_path_buf(),
            source,
        };
        // A regular file only (not a pipe or a device, which cannot be mapped); an empty one
        // cannot be mapped either, and is refused by the header check like a short one.
        if crate::resources::regular_file_len(path).map_err(io)? == 0 {
            return Self::from_bytes(path.to_path_buf(), Vec::new());
        }
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives as long as `GgufFile`. Another process
        // truncating or rewriting the model file while it is in use would make reads of the
        // map fault or see new bytes, as with any memory-mapped model file; ttq never writes
        // to its inputs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), FileBytes::Mapped(map))
    }

    /// Parse a GGUF file already in memory; `path` is only used in error messages.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path, FileBytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: FileBytes) -> Result<Self, GgufError> {
        let h = reader::parse_header(&path, &bytes)?;
        let index = h
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            index,
            alignment: h.alignment,
            data_offset: h.data_offset,
            bytes,
        })
    }

    /// The path given to [`GgufFile::open`] / [`GgufFile::from_bytes`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data section alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor info for `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn tensor_or_err(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::TensorNotFound {
            file: self.path.clone(),
            tensor: name.to_string(),
        })
    }

    /// The raw (possibly quantised) bytes of a tensor.
    pub fn tensor_data(&self, name: &str) -> Result<&[u8], GgufError> {
        let t = self.tensor_or_err(name)?;
        // Bounds were validated when the header was parsed.
        let start = (self.data_offset + t.offset) as usize;
        Ok(&self.bytes[start..start + t.n_bytes as usize])
    }

    /// Dequantise a tensor to `f32`, in storage order: `dims[0]` (ne0) varies fastest, so a
    /// 2-D tensor comes out row-major with shape `[ne1, ne0]` (see [`TensorInfo::shape`]).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let t = self.tensor_or_err(name)?;
        if !t.ggml_type.is_dequantizable() {
            return Err(self.unsupported(t));
        }
        let mut out = vec![0f32; t.n_elements as usize];
        self.dequantize_into(name, &mut out)?;
        Ok(out)
    }

    /// Like [`GgufFile::dequantize`], into a caller-provided buffer of exactly
    /// `n_elements` values.
    pub fn dequantize_into(&self, name: &str, out: &mut [f32]) -> Result<(), GgufError> {
        let t = self.tensor_or_err(name)?;
        let data = self.tensor_data(name)?;
        dequant::dequantize_into(t.ggml_type, data, out).map_err(|e| match e {
            DequantError::Unsupported(_) => self.unsupported(t),
            DequantError::SizeMismatch { dst_len, .. } => GgufError::BadShape {
                file: self.path.clone(),
                tensor: t.name.clone(),
                dims: t.dims.clone(),
                message: format!(
                    "output buffer has {dst_len} values, the tensor has {}",
                    t.n_elements
                ),
            },
        })
    }

    fn unsupported(&self, t: &TensorInfo) -> GgufError {
        GgufError::UnsupportedType {
            file: self.path.clone(),
            tensor: t.name.clone(),
            type_name: t.ggml_type.name().to_string(),
        }
    }

    // ---- metadata ------------------------------------------------------------------------

    /// The raw metadata value for `key`.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// `general.architecture`, e.g. `"llama"` or `"gemma3"`.
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.meta_str("general.architecture")
    }

    /// `"{architecture}.{suffix}"`, e.g. `arch_key("block_count")` -> `"llama.block_count"`.
    pub fn arch_key(&self, suffix: &str) -> Result<String, GgufError> {
        Ok(format!("{}.{suffix}", self.architecture()?))
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        get: impl FnOnce(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        let Some(v) = self.metadata.get(key) else {
            return Ok(None);
        };
        match get(v) {
            Some(t) => Ok(Some(t)),
            None => Err(GgufError::WrongType {
                file: self.path.clone(),
                key: key.to_string(),
                expected: expected.to_string(),
                found: match v.as_i128() {
                    Some(i) => format!("{} {i}", v.type_description()),
                    None => v.type_description(),
                },
            }),
        }
    }

    fn required<T>(&self, key: &str, v: Result<Option<T>, GgufError>) -> Result<T, GgufError> {
        v?.ok_or_else(|| GgufError::MissingKey {
            file: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// An unsigned integer stored as any integer type (negative values are an error).
    pub fn meta_u64_opt(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "a non-negative integer", |v| {
            v.as_i128().and_then(|i| u64::try_from(i).ok())
        })
    }

    /// Required [`GgufFile::meta_u64_opt`].
    pub fn meta_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.required(key, self.meta_u64_opt(key))
    }

    /// A signed integer stored as any integer type.
    pub fn meta_i64_opt(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "an integer", |v| {
            v.as_i128().and_then(|i| i64::try_from(i).ok())
        })
    }

    /// Required [`GgufFile::meta_i64_opt`].
    pub fn meta_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.required(key, self.meta_i64_opt(key))
    }

    /// A float stored as f32 or f64.
    pub fn meta_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "f32", |v| match *v {
            MetaValue::F32(x) => Some(x),
            MetaValue::F64(x) => Some(x as f32),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_f32_opt`].
    pub fn meta_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.required(key, self.meta_f32_opt(key))
    }

    /// A bool.
    pub fn meta_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", |v| match *v {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_bool_opt`].
    pub fn meta_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.required(key, self.meta_bool_opt(key))
    }

    /// A string.
    pub fn meta_str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", |v| match v {
            MetaValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_str_opt`].
    pub fn meta_str(&self, key: &str) -> Result<&str, GgufError> {
        self.required(key, self.meta_str_opt(key))
    }

    /// An array of strings.
    pub fn meta_str_array_opt(&self, key: &str) -> Result<Option<&[String]>, GgufError> {
        self.typed(key, "array<string>", |v| match v {
            MetaValue::Array(MetaArray::String(a)) => Some(a.as_slice()),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_str_array_opt`].
    pub fn meta_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        self.required(key, self.meta_str_array_opt(key))
    }

    /// An array of f32.
    pub fn meta_f32_array_opt(&self, key: &str) -> Result<Option<&[f32]>, GgufError> {
        self.typed(key, "array<f32>", |v| match v {
            MetaValue::Array(MetaArray::F32(a)) => Some(a.as_slice()),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_f32_array_opt`].
    pub fn meta_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        self.required(key, self.meta_f32_array_opt(key))
    }

    /// An array of i32.
    pub fn meta_i32_array_opt(&self, key: &str) -> Result<Option<&[i32]>, GgufError> {
        self.typed(key, "array<i32>", |v| match v {
            MetaValue::Array(MetaArray::I32(a)) => Some(a.as_slice()),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_i32_array_opt`].
    pub fn meta_i32_array(&self, key: &str) -> Result<&[i32], GgufError> {
        self.required(key, self.meta_i32_array_opt(key))
    }

    /// An array of any integer type, widened to i64 (e.g. per-layer head counts).
    pub fn meta_int_array_opt(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        self.typed(key, "array of integers", |v| match v {
            MetaValue::Array(a) => a.to_i64_vec(),
            _ => None,
        })
    }

    /// Required [`GgufFile::meta_int_array_opt`].
    pub fn meta_int_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        self.required(key, self.meta_int_array_opt(key))
    }
}
