//! Round-to-nearest: group-wise quantization of the weight as it is, no data.

use crate::{Prepared, QuantError, QuantKernels, QuantMethod, QuantSpec, QuantizedLinear};
use burn::tensor::{backend::Backend, Tensor};

/// Plain group-wise round-to-nearest (the data-free baseline).
#[derive(Debug, Clone, Copy)]
pub struct Rtn {
    /// The quantizer.
    pub spec: QuantSpec,
}

impl Rtn {
    /// RTN with `spec`.
    pub fn new(spec: QuantSpec) -> Self {
        Self { spec }
    }
}

impl<B: Backend> QuantMethod<B> for Rtn {
    fn name(&self) -> String {
        format!("RTN {}", self.spec)
    }

    fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        _calibration: Option<&crate::CalibrationStats<B>>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        Ok(Prepared::Fixed(QuantizedLinear {
            weight: kernels.quantize(weight.clone(), None, &self.spec)?,
            input_scale: None,
            low_rank: None,
        }))
    }
}
