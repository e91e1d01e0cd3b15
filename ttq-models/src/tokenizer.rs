//! Text ↔ token ids, with the beginning-of-sequence token under explicit control.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// A tokenizer plus the model's BOS convention.
pub struct TextTokenizer {
    inner: Tokenizer,
    origin: PathBuf,
    bos: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("origin", &self.origin)
            .field("bos", &self.bos)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path, bos: Option<u32>) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                message:
                    "file not found (a model directory needs tokenizer.json beside the weights)"
                        .into(),
            });
        }
        let bytes = crate::resources::read_regular(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            origin: path.to_path_buf(),
            bos,
        })
    }

    /// Wraps a tokenizer built elsewhere (e.g. from GGUF metadata).
    pub fn from_tokenizer(inner: Tokenizer, origin: PathBuf, bos: Option<u32>) -> Self {
        Self { inner, origin, bos }
    }

    /// Number of tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS token id, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Where the tokenizer came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Token ids of `text`, without special tokens; `<bos>` is prepended when `add_bos`
    /// and the model has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.origin.clone(),
                message: e.to_string(),
            })?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.origin.clone(),
                message: e.to_string(),
            })
    }

    /// The string of token `id` (e.g. `<bos>`), if it exists.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string such as `<end_of_turn>`, if it exists.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
