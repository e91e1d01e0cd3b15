//! # ttq-eval
//!
//! Evaluation of quantized models: the evaluation texts joined as the GPTQ reference code
//! joins them, non-overlapping windows, perplexity, calibration sampling for AWQ and GPTQ,
//! method specs by name, a grid runner (methods × datasets × calibration sets), the named
//! experiments of `docs/results.md`, and paired bootstrap intervals of perplexity ratios
//! between methods.

pub mod batch_calibration;
pub mod bootstrap;
pub mod calibration;
pub mod compare;
pub mod data;
pub mod experiments;
pub mod grid;
pub mod method_spec;
pub mod perplexity;

pub use bootstrap::{ratio_interval, BootstrapConfig, PairedText, RatioInterval, Verdict};
pub use calibration::{collect_statistics, sample_windows, CalibrationSampling};
pub use compare::{compare, comparison_table, Comparison};
pub use data::{Dataset, EvalError};
pub use grid::{markdown_table, run_grid, EvalText, GridConfig, Record};
pub use method_spec::{MethodKind, MethodSpec};
pub use perplexity::{perplexity, windows, CalibrationMode, PerplexityOptions, PerplexityReport};
