//! One module per subcommand.

pub mod bench_decode;
pub mod bench_kernels;
pub mod common;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod ppl;
