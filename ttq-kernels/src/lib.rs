//! # ttq-kernels
//!
//! Implementations of [`ttq_core::QuantKernels`], the hot paths of test-time quantization:
//! per-channel activation statistics, quantize+pack, and the integer-weight matmul
//! `y = (x ⊙ D^-1) · dequant(Q)ᵀ`.
//!
//! - [`crate::reference`]: plain-Rust functions on slices, written for clarity (f64 accumulation
//!   where it matters). They define what every faster kernel must compute.
//! - [`CpuReference`]: those functions behind the trait, for any Burn backend (data makes a
//!   round trip through host memory).
//! - [`CpuKernels`] ([`cpu_fast`]): fast kernels for burn-ndarray (f32) that work on the
//!   packed codes in host memory, multithreaded with rayon; what the CPU backend runs.
//! - [`cpu_dense`]: full-precision products for a few tokens (the unquantized layers at
//!   decode), which [`CpuKernels::dense_matmul`](QuantKernels::dense_matmul) runs.
//! - [`cpu_ops`]: a decoder layer's element-wise operations and attention on host slices,
//!   which [`CpuKernels`] runs instead of Burn ops.
//! - [`pool`]: keeps rayon's threads polling for work during a forward pass.
//! - [`Q8Rows`] ([`q8_rows`]): an 8-bit row table in host memory (a GGUF's Q8_0 token
//!   embedding and LM head) with its lookup and its matmul.
//! - [`TensorOpsKernels`] (re-exported from `ttq-core`): the same semantics in Burn tensor ops.
//! - `CudaKernels` (feature `cuda`): CubeCL kernels for NVIDIA GPUs; [`gemv_config`] holds
//!   the choice of GEMV kernel and tiles, which every build can parse.

pub mod cpu;
pub mod cpu_dense;
pub mod cpu_fast;
pub mod cpu_ops;
pub mod gemv_config;
pub mod pool;
pub mod q8_rows;
pub mod reference;

pub use cpu::CpuReference;
pub use cpu_fast::CpuKernels;
pub use q8_rows::Q8Rows;
pub use ttq_core::{QuantKernels, TensorOpsKernels};

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaKernels, QuantizeVariant};
pub use gemv_config::{GemvKernel, GemvPolicy, GemvTileSpec, LineTile, TmaTile};
