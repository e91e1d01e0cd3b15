//! The plain-Rust reference behind [`QuantKernels`], for any Burn backend.

use crate::reference::{self, HostQuantized};
use burn::tensor::{backend::Backend, Tensor};
use ttq_core::{
    group::check_col_scale,
    kernels::check_matmul_shapes,
    tensor_io::{exact_f32_tensor, f32_tensor, to_f32_vec, words_from_ints, words_tensor},
    ChannelStats, PackLayout, QuantError, QuantKernels, QuantSpec, QuantizedWeight,
};

/// Runs every kernel with the plain-Rust code of [`crate::reference`] on host copies of the
/// tensors. Slow, obvious, and the yardstick for the other implementations.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuReference;

/// Copies a quantized weight to host memory.
pub fn to_host<B: Backend>(q: &QuantizedWeight<B>) -> HostQuantized {
    HostQuantized {
        packed: words_from_ints(q.packed.clone()),
        scales: to_f32_vec(q.scales.clone()),
        zeros: to_f32_vec(q.zeros.clone()),
        spec: q.spec,
        shape: q.shape,
    }
}

/// Copies a host quantized weight to `device`.
pub fn from_host<B: Backend>(q: HostQuantized, device: &B::Device) -> QuantizedWeight<B> {
    let [rows, cols] = q.shape;
    let layout = PackLayout::new(q.spec.bits(), cols);
    let groups = q.spec.groups_per_row(cols);
    QuantizedWeight {
        packed: words_tensor(&q.packed, [rows, layout.words_per_row], device),
        scales: exact_f32_tensor(q.scales, [rows, groups], device),
        zeros: exact_f32_tensor(q.zeros, [rows, groups], device),
        spec: q.spec,
        shape: q.shape,
    }
}

impl<B: Backend> QuantKernels<B> for CpuReference {
    fn name(&self) -> &'static str {
        "cpu-reference"
    }

    fn channel_stats(&self, x: Tensor<B, 2>) -> ChannelStats<B> {
        let [tokens, d] = x.dims();
        let device = x.device();
        let (max_abs, mean) = reference::channel_stats(&to_f32_vec(x), tokens, d);
        ChannelStats {
            max_abs: f32_tensor(max_abs, [d], &device),
            mean_sq_normalized: f32_tensor(mean, [d], &device),
            tokens,
        }
    }

    fn quantize(
        &self,
        w: Tensor<B, 2>,
        col_scale: Option<Tensor<B, 1>>,
        spec: &QuantSpec,
    ) -> Result<QuantizedWeight<B>, QuantError> {
        let [rows, cols] = w.dims();
        check_col_scale("quantize", cols, col_scale.as_ref())?;
        let device = w.device();
        let d = col_scale.map(to_f32_vec);
        let host = reference::try_quantize(&to_f32_vec(w), rows, cols, d.as_deref(), spec)?;
        Ok(from_host(host, &device))
    }

    fn dequantize(&self, q: &QuantizedWeight<B>) -> Tensor<B, 2> {
        let device = q.scales.device();
        f32_tensor(reference::dequantize(&to_host(q)), q.shape, &device)
    }

    fn matmul(
        &self,
        x: Tensor<B, 2>,
        q: &QuantizedWeight<B>,
        input_scale: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 2>, QuantError> {
        check_matmul_shapes(&x, q, input_scale.as_ref())?;
        let [tokens, _] = x.dims();
        let device = x.device();
        let s = input_scale.map(to_f32_vec);
        let y = reference::matmul(&to_f32_vec(x), tokens, &to_host(q), s.as_deref());
        Ok(f32_tensor(y, [tokens, q.shape[0]], &device))
    }
}
