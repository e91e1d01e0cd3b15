//! One module per subcommand.

pub mod bench_decode;
pub mod bench_kernels;
pub mod calib_batching;
pub mod common;
pub mod compare;
pub mod demo;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub mod device_timing;
pub mod eval;
pub mod generate;
pub mod output;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub mod peers;
pub mod ppl;
pub mod serve;
