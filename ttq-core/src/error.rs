//! Error type shared by the quantization code.

use thiserror::Error;

/// Everything that can go wrong when configuring or running a quantizer.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum QuantError {
    /// A quantization spec with values outside what the quantizer supports.
    #[error("invalid quantization spec: {0}")]
    InvalidSpec(String),
    /// A TTQ scale configuration (alpha, lambda) that cannot give a finite positive scale.
    #[error("invalid TTQ scale configuration: {0}")]
    InvalidScaleConfig(String),
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch in {context}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Where the mismatch was found.
        context: String,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// Weights (or weights times a column scale) that are NaN, infinite, or so large that a
    /// group's range overflows f32: no finite scale can represent them.
    #[error("cannot quantize {context}: {message}")]
    NonFinite {
        /// What was being quantized.
        context: String,
        /// What is wrong (NaN, infinite, or range overflow) and where.
        message: String,
    },
    /// A method was asked for something it cannot do (e.g. a calibration-based method without
    /// calibration data).
    #[error("{method}: {message}")]
    Method {
        /// The method's name.
        method: String,
        /// What went wrong.
        message: String,
    },
    /// A device library or driver call failed (e.g. cuBLAS on the GPU).
    #[error("device operation failed: {0}")]
    Device(String),
}

impl QuantError {
    /// Shorthand for a [`QuantError::ShapeMismatch`].
    pub fn shape(
        context: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Self::ShapeMismatch {
            context: context.into(),
            expected: expected.into(),
            got: got.into(),
        }
    }
}
