//! The quantization methods implemented in this crate, one module each.

mod rtn;
mod ttq;

pub use rtn::Rtn;
pub use ttq::Ttq;
