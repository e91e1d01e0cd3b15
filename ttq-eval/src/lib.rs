//! # ttq-eval
//!
//! Evaluation of quantized models: the evaluation texts joined as the GPTQ reference code
//! joins them, non-overlapping windows, and perplexity.

pub mod data;
pub mod perplexity;

pub use data::{Dataset, EvalError};
pub use perplexity::{perplexity, windows, CalibrationMode, PerplexityOptions, PerplexityReport};
