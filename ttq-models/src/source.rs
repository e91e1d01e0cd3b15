//! Where weights come from: a safetensors file or shard set, or a GGUF file, each behind
//! [`TensorSource`] and converted to f32 on the CPU.

use crate::error::{ModelError, Result};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tensor in host memory, row-major, f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// Named tensors, as a model loader asks for them.
pub trait TensorSource {
    /// The file or directory, for error messages.
    fn path(&self) -> &Path;
    /// Whether a tensor of this name exists.
    fn contains(&self, name: &str) -> bool;
    /// The tensor `name`, converted to f32.
    fn get(&self, name: &str) -> Result<HostTensor>;
    /// The 2-D tensor `name` as 8-bit blocks without loss, if the file stores it that way
    /// (GGUF's Q8_0); `None` for every other storage type.
    fn q8_rows(&self, name: &str) -> Result<Option<ttq_kernels::Q8Rows>> {
        let _ = name;
        Ok(None)
    }
}

/// One or more safetensors files (a single `model.safetensors` or the shards listed in
/// `model.safetensors.index.json`), read fully into memory.
pub struct SafetensorsSource {
    dir: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Tensor name → index into `files`.
    index: BTreeMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens the weights of a Hugging Face model directory.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let shard_names: Vec<PathBuf> = if single.exists() {
            vec![single.clone()]
        } else if index_path.exists() {
            let text = read(&index_path)?;
            let json: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| ModelError::Config {
                    path: index_path.clone(),
                    message: format!("not valid JSON: {e}"),
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Config {
                    path: index_path.clone(),
                    message: "no `weight_map` object".into(),
                })?;
            let mut names = map
                .values()
                .map(|v| {
                    let name = v.as_str().ok_or_else(|| ModelError::Config {
                        path: index_path.clone(),
                        message: format!("`weight_map` value {v} is not a file name"),
                    })?;
                    // Shards must be files of this directory: an index is not allowed to
                    // make ttq open `../../etc/passwd`.
                    crate::resources::confined_join(dir, name).map_err(|message| {
                        ModelError::Config {
                            path: index_path.clone(),
                            message: format!("shard {message}"),
                        }
                    })
                })
                .collect::<Result<Vec<PathBuf>>>()?;
            names.sort();
            names.dedup();
            names
        } else {
            return Err(ModelError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in the model directory",
                ),
            });
        };
        let files = shard_names
            .into_iter()
            .map(|path| read(&path).map(|bytes| (path, bytes)))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(dir, files)
    }

    /// The weights in `files` (path, bytes) already in memory; `dir` names them in errors.
    pub fn from_files(dir: &Path, shards: Vec<(PathBuf, Vec<u8>)>) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for (path, bytes) in shards {
            let st = SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for t in st.names() {
                index.insert(t.to_string(), files.len());
            }
            files.push((path, bytes));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            index,
        })
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::resources::read_regular(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl TensorSource for SafetensorsSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<HostTensor> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.dir.clone(),
                tensor: name.to_string(),
            })?;
        let (path, bytes) = &self.files[i];
        let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: format!("tensor `{name}`: {e}"),
        })?;
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::TensorDtype {
                    path: path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(HostTensor {
            shape: view.shape().to_vec(),
            data,
        })
    }
}
