//! # ttq-core
//!
//! Backend-generic quantization math for test-time quantization (TTQ, Koike-Akino et al.,
//! arXiv 2603.19296). Everything here is written with Burn tensor operations only, so it
//! runs on any Burn backend; faster implementations of the hot paths plug in through the
//! [`QuantKernels`] trait (implemented in `ttq-kernels`).
//!
//! The pieces, bottom up:
//! - [`QuantSpec`]: bits, group size and scheme of a group-wise integer quantizer.
//! - [`stats`]: per-input-channel activation statistics and TTQ's diagonal scale
//!   `D_ii = (s_i + λ)^α`.
//! - [`group`]: the group-wise round-to-nearest quantizer, packing and dequantization.
//! - [`QuantKernels`]: the hot paths (statistics, quantize+pack, int-weight matmul), with a
//!   pure tensor-op default [`TensorOpsKernels`].
//! - [`QuantMethod`]: one trait for weight quantization methods ([`methods::Rtn`],
//!   [`methods::Ttq`], [`methods::TtqSearch`] with α chosen per prompt and layer); static and
//!   calibration-based methods fit it too.
//! - [`CalibrationStats`]: what calibration-based methods keep of a layer's calibration
//!   inputs (the Gram matrix `XᵀX` and `Σ|x|`).
//! - [`QuantLinear`]: a linear layer that keeps full-precision weights and runs a method.

pub mod calib;
pub mod error;
pub mod group;
pub mod kernels;
pub mod linear;
pub mod method;
pub mod methods;
pub mod ops;
pub mod spec;
pub mod stats;
pub mod tensor_io;

pub use calib::CalibrationStats;
pub use error::QuantError;
pub use group::{PackLayout, QuantizedWeight};
pub use kernels::{QuantKernels, TensorOpsKernels};
pub use linear::{CalibrationPolicy, QuantLinear};
pub use method::{DynamicWeight, LowRank, Prepared, QuantMethod, QuantizedLinear};
pub use ops::GateActivation;
pub use spec::{GroupSize, QuantScheme, QuantSpec};
pub use stats::{ChannelStats, TtqScaleConfig};
