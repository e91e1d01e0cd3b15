//! Parsing of the GGUF header: magic, version, metadata key/values and tensor infos.
//!
//! Layout (all little-endian; GGUF v2 and v3 are identical except that v3 may be big-endian,
//! which is rejected here):
//!
//! ```text
//! "GGUF"  u32 version  u64 n_tensors  u64 n_kv
//! n_kv    x { string key, u32 value_type, value }
//! n_tensors x { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }
//! padding to `general.alignment` (default 32)
//! tensor data (each tensor's offset is relative to here and aligned)
//! ```
//!
//! Strings are a `u64` byte length followed by UTF-8 bytes (no terminator). Arrays are a `u32`
//! element type, a `u64` count and the elements.
//!
//! Every count and length is checked against the bytes left in the file before anything is
//! allocated, so a corrupt header yields an error rather than a huge allocation.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::error::GgufError;
use super::types::{GgmlType, MetaArray, MetaType, MetaValue, TensorInfo};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are rejected (the format allows nesting; real files don't).
const MAX_ARRAY_DEPTH: u32 = 8;
/// Smallest possible tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Smallest possible key/value: key length (8) + value type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 13;

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute byte offset of the data section.
    pub data_offset: u64,
}

/// Parse and validate the header of `bytes`; `file` is only used in error messages.
///
/// Validation covers everything that can be checked without dequantising: tensor types are
/// known, shapes are sane, offsets are aligned and every tensor's bytes lie inside the file.
pub fn parse_header(file: &Path, bytes: &[u8]) -> Result<Header, GgufError> {
    let mut c = Cursor {
        file,
        bytes,
        pos: 0,
    };

    let magic = c.take(4, "magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            file: file.to_path_buf(),
            found: magic.to_vec(),
        });
    }
    let version = c.u32("version")?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            "; the file looks big-endian, which is not supported".to_string()
        } else if version == 1 {
            "; GGUF v1 is obsolete, re-convert the model".to_string()
        } else {
            String::new()
        };
        return Err(GgufError::UnsupportedVersion {
            file: file.to_path_buf(),
            version,
            hint,
        });
    }

    let n_tensors = c.count("tensor count", MIN_TENSOR_INFO_BYTES)?;
    let n_kv = c.count("metadata key/value count", MIN_KV_BYTES)?;

    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key_pos = c.pos;
        let key = c.string("metadata key")?;
        let type_pos = c.pos;
        let ty = c.u32("metadata value type")?;
        let ty = MetaType::from_id(ty).ok_or_else(|| {
            c.malformed(
                type_pos,
                format!("metadata key '{key}' has unknown value type {ty}"),
            )
        })?;
        let value = c.value(ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(c.malformed(key_pos, format!("duplicate metadata key '{key}'")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) if *a != 0 && a.is_power_of_two() => u64::from(*a),
        Some(other) => {
            return Err(c.malformed(
                0,
                format!("general.alignment must be a non-zero power of two u32, found {other:?}"),
            ))
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name_pos = c.pos;
        let name = c.string("tensor name")?;
        let dims_pos = c.pos;
        let n_dims = c.u32("tensor dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::ImplausibleCount {
                file: file.to_path_buf(),
                what: format!("dimension count of tensor '{name}'"),
                value: n_dims.into(),
                max: MAX_DIMS.into(),
                offset: dims_pos,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64("tensor dimension")?);
        }
        let type_id = c.u32("tensor type")?;
        let offset = c.u64("tensor data offset")?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType {
            file: file.to_path_buf(),
            tensor: name.clone(),
            type_id,
        })?;
        let (n_elements, n_bytes) = tensor_size(file, &name, &dims, ggml_type)?;
        if !names.insert(name.clone()) {
            return Err(c.malformed(name_pos, format!("duplicate tensor name '{name}'")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_elements,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment. When the file has no
    // tensors it may end right after the infos without padding.
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    let len = bytes.len() as u64;
    if !tensors.is_empty() && data_offset > len {
        return Err(GgufError::Truncated {
            file: file.to_path_buf(),
            what: "data section".to_string(),
            offset: c.pos,
            needed: data_offset - c.pos,
            len,
        });
    }

    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        let detail = if !t.offset.is_multiple_of(alignment) {
            Some(format!(
                "; offset {} is not a multiple of the alignment {alignment}",
                t.offset
            ))
        } else {
            match end {
                Some(e) if e <= len => None,
                _ => Some(String::new()),
            }
        };
        if let Some(detail) = detail {
            return Err(GgufError::DataOutOfBounds {
                file: file.to_path_buf(),
                tensor: t.name.clone(),
                start: start.unwrap_or(u64::MAX),
                end: end.unwrap_or(u64::MAX),
                len,
                detail,
            });
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Element count and byte size of a tensor, with overflow and block-alignment checks.
fn tensor_size(
    file: &Path,
    name: &str,
    dims: &[u64],
    ty: GgmlType,
) -> Result<(u64, u64), GgufError> {
    let bad_shape = |message: String| GgufError::BadShape {
        file: file.to_path_buf(),
        tensor: name.to_string(),
        dims: dims.to_vec(),
        message,
    };
    // ggml stores dimensions as signed 64-bit integers.
    if dims.iter().any(|&d| d > i64::MAX as u64) {
        return Err(bad_shape("dimension exceeds i64::MAX".to_string()));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad_shape("element count overflows".to_string()))?;
    let ne0 = dims.first().copied().unwrap_or(1);
    let block = ty.block_size();
    if !ne0.is_multiple_of(block) {
        return Err(GgufError::NotBlockAligned {
            file: file.to_path_buf(),
            tensor: name.to_string(),
            type_name: ty.name().to_string(),
            ne0,
            block_size: block,
        });
    }
    let n_bytes = (n_elements / block)
        .checked_mul(ty.type_size())
        .ok_or_else(|| bad_shape("byte size overflows".to_string()))?;
    Ok((n_elements, n_bytes))
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    file: &'a Path,
    bytes: &'a [u8],
    pos: u64,
}

impl<'a> Cursor<'a> {
    fn file(&self) -> PathBuf {
        self.file.to_path_buf()
    }

    fn remaining(&self) -> u64 {
        self.bytes.len() as u64 - self.pos
    }

    fn malformed(&self, offset: u64, message: String) -> GgufError {
        GgufError::Malformed {
            file: self.file(),
            offset,
            message,
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                file: self.file(),
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let start = self.pos as usize;
        self.pos += n;
        Ok(&self.bytes[start..start + n as usize])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, what)?;
        Ok(b.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `u64` count of items that each occupy at least `min_item_bytes`; rejected if the rest
    /// of the file cannot possibly hold that many.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<u64, GgufError> {
        let offset = self.pos;
        let n = self.u64(what)?;
        let max = self.remaining() / min_item_bytes.max(1);
        if n > max {
            return Err(GgufError::ImplausibleCount {
                file: self.file(),
                what: what.to_string(),
                value: n,
                max,
                offset,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len_pos = self.pos;
        let len = self.u64("string length")?;
        if len > self.remaining() {
            return Err(GgufError::ImplausibleCount {
                file: self.file(),
                what: format!("{what} length"),
                value: len,
                max: self.remaining(),
                offset: len_pos,
            });
        }
        let start = self.pos;
        let raw = self.take(len, what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                file: self.file(),
                what: what.to_string(),
                offset: start,
            }),
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        let pos = self.pos;
        match self.array::<1>("bool value")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.malformed(pos, format!("key '{key}': invalid bool byte {b}"))),
        }
    }

    fn value(&mut self, ty: MetaType, key: &str, depth: u32) -> Result<MetaValue, GgufError> {
        let what = "metadata value";
        Ok(match ty {
            MetaType::U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            MetaType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            MetaType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            MetaType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            MetaType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            MetaType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            MetaType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            MetaType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            MetaType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            MetaType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            MetaType::Bool => MetaValue::Bool(self.bool(key)?),
            MetaType::String => MetaValue::String(self.string(&format!("value of key '{key}'"))?),
            MetaType::Array => MetaValue::Array(self.meta_array(key, depth)?),
        })
    }

    fn meta_array(&mut self, key: &str, depth: u32) -> Result<MetaArray, GgufError> {
        let type_pos = self.pos;
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.malformed(
                type_pos,
                format!("key '{key}': arrays nested more than {MAX_ARRAY_DEPTH} deep"),
            ));
        }
        let ty = self.u32("array element type")?;
        let ty = MetaType::from_id(ty).ok_or_else(|| {
            self.malformed(
                type_pos,
                format!("key '{key}': array has unknown element type {ty}"),
            )
        })?;
        let n = self.count(
            &format!("element count of array '{key}'"),
            ty.min_encoded_size(),
        )?;
        // `count` bounded n by the bytes left, so these allocations are at most file-sized.
        let n = n as usize;

        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const SZ: usize = std::mem::size_of::<$t>();
                let raw = self.take((n * SZ) as u64, "array elements")?;
                MetaArray::$variant(
                    raw.chunks_exact(SZ)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of SZ bytes")))
                        .collect(),
                )
            }};
        }

        Ok(match ty {
            MetaType::U8 => fixed!(U8, u8),
            MetaType::I8 => fixed!(I8, i8),
            MetaType::U16 => fixed!(U16, u16),
            MetaType::I16 => fixed!(I16, i16),
            MetaType::U32 => fixed!(U32, u32),
            MetaType::I32 => fixed!(I32, i32),
            MetaType::F32 => fixed!(F32, f32),
            MetaType::U64 => fixed!(U64, u64),
            MetaType::I64 => fixed!(I64, i64),
            MetaType::F64 => fixed!(F64, f64),
            MetaType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(key)?);
                }
                MetaArray::Bool(v)
            }
            MetaType::String => {
                let mut v = Vec::with_capacity(n);
                let what = format!("element of string array '{key}'");
                for _ in 0..n {
                    v.push(self.string(&what)?);
                }
                MetaArray::String(v)
            }
            MetaType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.meta_array(key, depth + 1)?);
                }
                MetaArray::Array(v)
            }
        })
    }
}
