//! The quantization methods implemented in this crate, one module each.

mod awq;
mod gptq;
mod rtn;
mod ttq;
mod ttq_lowrank;
mod ttq_search;

pub use awq::{Awq, AwqConfig};
pub use gptq::{Gptq, GptqConfig};
pub use rtn::Rtn;
pub use ttq::Ttq;
pub use ttq_lowrank::TtqLowRank;
pub use ttq_search::TtqSearch;
