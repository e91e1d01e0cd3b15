//! One module per subcommand.

pub mod common;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod ppl;
