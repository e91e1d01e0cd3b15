//! Evaluation texts, joined as the GPTQ reference code joins them
//! (see `../shared/data/README.md`).

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of the evaluation harness.
#[derive(Debug, Error)]
pub enum EvalError {
    /// A data file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A data file with unexpected content.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A bad option.
    #[error("{0}")]
    Invalid(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ttq_models::ModelError),
    /// A method could not be built or applied.
    #[error(transparent)]
    Quant(#[from] ttq_core::QuantError),
}

/// A text to evaluate on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dataset {
    /// WikiText-2 raw, test split (`wiki.test.raw`).
    WikiText2,
    /// Penn Treebank, test split (`ptb.test.txt`).
    Ptb,
    /// C4 (train-00000 sample of 1,000 documents; not the GPTQ validation shard).
    C4,
    /// Any text file, used as it is.
    TextFile(PathBuf),
    /// A JSON-lines file whose objects have a `text` field, joined with `" "`.
    Jsonl(PathBuf),
}

impl Dataset {
    /// `wikitext2`, `ptb`, `c4`, or a path (`.jsonl` files are read as JSON lines).
    pub fn parse(name: &str) -> Self {
        match name {
            "wikitext2" | "wikitext" | "wiki" => Self::WikiText2,
            "ptb" => Self::Ptb,
            "c4" => Self::C4,
            path if path.ends_with(".jsonl") => Self::Jsonl(path.into()),
            path => Self::TextFile(path.into()),
        }
    }

    /// The name to print in tables.
    pub fn label(&self) -> String {
        match self {
            Self::WikiText2 => "WikiText-2".into(),
            Self::Ptb => "PTB".into(),
            Self::C4 => "C4 (train-00000 sample)".into(),
            Self::TextFile(p) | Self::Jsonl(p) => p.display().to_string(),
        }
    }

    /// The file this text is read from (`data_dir` holds the standard ones).
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        match self {
            Self::WikiText2 => data_dir.join("wiki.test.raw"),
            Self::Ptb => data_dir.join("ptb.test.txt"),
            Self::C4 => data_dir.join("c4-train.00000-sample-1000.jsonl"),
            Self::TextFile(p) | Self::Jsonl(p) => p.clone(),
        }
    }

    /// Checks, without reading it, that the text's file is a regular file: a missing file,
    /// a directory or a device (`/dev/urandom`) is an error before any model is loaded.
    pub fn check_file(&self, data_dir: &Path) -> Result<(), EvalError> {
        let path = self.file(data_dir);
        ttq_models::resources::regular_file_len(&path)
            .map(|_| ())
            .map_err(|source| EvalError::Io { path, source })
    }

    /// The joined text. `data_dir` holds the standard files (`../shared/data`).
    pub fn load(&self, data_dir: &Path) -> Result<String, EvalError> {
        match self {
            Self::WikiText2 => Ok(join_wikitext(&read(&data_dir.join("wiki.test.raw"))?)),
            Self::Ptb => Ok(join_ptb(&read(&data_dir.join("ptb.test.txt"))?)),
            Self::C4 => {
                let p = data_dir.join("c4-train.00000-sample-1000.jsonl");
                join_jsonl(&p, &read(&p)?)
            }
            Self::TextFile(p) => read(p),
            Self::Jsonl(p) => join_jsonl(p, &read(p)?),
        }
    }
}

/// Reads a text: regular files only (not `/dev/urandom` or a pipe), at most their size, and
/// only when that fits the available memory.
fn read(path: &Path) -> Result<String, EvalError> {
    ttq_models::resources::read_regular_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// WikiText-2: each line is a row; a whitespace-only line is the empty row, every other row
/// keeps its trailing `"\n"`; rows are joined with `"\n\n"`.
pub fn join_wikitext(raw: &str) -> String {
    let rows: Vec<&str> = raw
        .split_inclusive('\n')
        .map(|line| if line.trim().is_empty() { "" } else { line })
        .collect();
    rows.join("\n\n")
}

/// PTB: the sentences (lines) joined with `" "`.
pub fn join_ptb(raw: &str) -> String {
    raw.lines().collect::<Vec<_>>().join(" ")
}

/// JSON lines: the `text` fields joined with `" "`.
pub fn join_jsonl(path: &Path, raw: &str) -> Result<String, EvalError> {
    let mut texts = Vec::new();
    for (i, line) in raw
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| EvalError::Format {
            path: path.to_path_buf(),
            message: format!("line {}: not JSON: {e}", i + 1),
        })?;
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| EvalError::Format {
                path: path.to_path_buf(),
                message: format!("line {}: no string field `text`", i + 1),
            })?;
        texts.push(text.to_string());
    }
    Ok(texts.join(" "))
}
