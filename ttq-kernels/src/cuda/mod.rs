//! CubeCL kernels for NVIDIA GPUs behind [`QuantKernels`] (feature `cuda`).
//!
//! [`CudaKernels`] implements the trait for Burn's plain `CubeBackend<R, F, i32, u8>` (for
//! CUDA: [`CudaBackend`]) with `F` = f32 or f16. The backend must not be wrapped in Burn's
//! fusion (`into_primitive` must hand out a `CubeTensor`).
//!
//! Each operation lives in its own module, each kernel beside its launcher:
//!
//! | operation | module |
//! | --- | --- |
//! | `channel_stats`, `ttq_scales` | [`stats`] |
//! | `quantize` | [`quantize`] |
//! | `dequantize`; `matmul` above `gemv_max_tokens` tokens (dequantize + cuBLAS) | [`dequantize`] |
//! | `dense_matmul` (full-precision layers, the LM head) | [`cublas`] |
//! | `matmul` up to `gemv_max_tokens` tokens | [`gemv`]: fused, vector, half2 and TMA GEMVs, picked by [`GemvPolicy`] |
//! | `rms_norm`, `rope`, `masked_softmax`, `gated` | [`decoder_ops`] |
//!
//! Scales and zero points are produced as f32 tensors whatever `F` is (the format of
//! `ttq_core::group`), and the kernels read them as f32 (a weight quantized elsewhere with
//! scales of another float type is converted first). The quantizers compute in f32, so
//! codes, scales and zeros are bit-identical to [`crate::reference::quantize`] for the same
//! inputs; the matmul kernels accumulate in f32, except the half2 GEMVs, which sum up to 16
//! products in f16 before they add them in f32 (f16 activations only).
//!
//! Conventions shared by all kernels:
//! - tensors are contiguous and row-major (the launchers make them so);
//! - packed words are read and written as `u32`, whatever the Int tensor's declared element
//!   (`i32` bit pattern, see `ttq_core::group`);
//! - no kernel leaves early before a barrier: threads with nothing to do skip their work
//!   but still reach every `sync_cube`;
//! - the group of column `c` is `c >> group_shift` (groups are powers of two; a row with a
//!   single group gets a shift of 31, so every column maps to group 0): a run-time integer
//!   division per code cost more than the rest of the decode;
//! - kernels are launched unchecked (no bounds check on each access, which doubled the
//!   instruction count of the loops); every index is kept in bounds by construction
//!   (guards or clamped indices), and the launchers check all shapes first.
//!
//! Degenerate shapes (a zero dimension) go through [`TensorOpsKernels`], which handles them
//! without launching anything of ours.

pub mod cublas;
pub mod decoder_ops;
pub mod dequantize;
pub mod gemv;
mod operands;
pub mod quantize;
pub mod stats;

use burn::tensor::Tensor;
use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement};
use ttq_core::{
    group::check_col_scale,
    kernels::{check_dense_shapes, check_matmul_shapes},
    ChannelStats, GateActivation, QuantError, QuantKernels, QuantSpec, QuantizedWeight,
    TensorOpsKernels, TtqScaleConfig,
};

use crate::gemv_config::{GemvPolicy, LineTile, TmaTile};
use operands::{float_prim, u32_of, wrap_float, Cb, WeightDims};

/// Burn's CUDA backend without fusion: the backend these kernels run on.
pub type CudaBackend<F = f32> = CubeBackend<cubecl::cuda::CudaRuntime, F, i32, u8>;

/// The most tokens a GEMV serves by default; above it, `matmul` dequantizes and calls the
/// dense matmul, whose tensor cores win once the weight is re-used enough.
pub const DEFAULT_GEMV_MAX_TOKENS: usize = 16;

/// Threads per plane (warp) the kernels assume; CUDA's warp size.
pub const PLANE: u32 = 32;

/// Largest grid dimension used for row-strided launches (CUDA's y/z limit).
const MAX_GRID_Y: usize = 65_535;

/// Which quantize-pack kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantizeVariant {
    /// [`quantize::quantize_pack_groups_kernel`] (one read of `W`, a plane per group)
    /// where the layout allows it (groups of 32 to 512 columns, a power of two, holding
    /// whole words: 2, 4 or 8 bits), [`QuantizeVariant::Generic`] otherwise.
    #[default]
    Auto,
    /// [`quantize::quantize_pack_kernel`] (a cube per row; any layout).
    Generic,
}

/// The CubeCL implementation of [`QuantKernels`]; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct CudaKernels {
    /// `matmul` uses a GEMV for `tokens ≤ gemv_max_tokens` (at most 16; larger values are
    /// treated as 16) and the dense path above.
    pub gemv_max_tokens: usize,
    /// Which GEMV kernel runs.
    pub gemv: GemvPolicy,
    /// Tile of the fused, vector and half2 GEMVs.
    pub line_tile: LineTile,
    /// Tile of the TMA GEMVs.
    pub tma_tile: TmaTile,
    /// Which quantize-pack kernel runs.
    pub quantize_variant: QuantizeVariant,
    /// Whether `rms_norm`, `rope`, `masked_softmax` and `gated` run as the fused kernels of
    /// [`decoder_ops`], and `ttq_scales` as [`stats::ttq_scale_kernel`] (the default), or
    /// as the trait's Burn ops (for A/B timings).
    pub fused_decoder_ops: bool,
}

impl Default for CudaKernels {
    fn default() -> Self {
        Self {
            gemv_max_tokens: DEFAULT_GEMV_MAX_TOKENS,
            gemv: GemvPolicy::Auto,
            line_tile: LineTile::default(),
            tma_tile: TmaTile::default(),
            quantize_variant: QuantizeVariant::Auto,
            fused_decoder_ops: true,
        }
    }
}

impl CudaKernels {
    /// The dense weight of `q`, transposed to a contiguous `[cols, rows]` in `F`: the right
    /// operand that the dense path hands to Burn's matmul. Public so that the GPU tests and
    /// the benchmark can check and time it on its own.
    pub fn dequantize_transposed<R: CubeRuntime, F: FloatElement>(
        &self,
        q: &QuantizedWeight<Cb<R, F>>,
    ) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
        let [rows, cols] = q.shape;
        let dims = WeightDims::new(q.shape, &q.spec)?;
        u32_of(rows.saturating_mul(cols), "weight elements")?;
        if rows == 0 || cols == 0 {
            return Ok(TensorOpsKernels.dequantize(q).transpose());
        }
        Ok(wrap_float(dequantize::dequantize_t_prim::<R, F>(
            q,
            &dims,
            None,
            F::dtype(),
        )))
    }
}

impl<R: CubeRuntime, F: FloatElement> QuantKernels<Cb<R, F>> for CudaKernels {
    fn name(&self) -> &'static str {
        if self.fused_decoder_ops {
            "cubecl"
        } else {
            "cubecl-unfused-ops"
        }
    }

    fn channel_stats(&self, x: Tensor<Cb<R, F>, 2>) -> ChannelStats<Cb<R, F>> {
        stats::channel_stats(x)
    }

    fn ttq_scales(
        &self,
        stats: &ChannelStats<Cb<R, F>>,
        config: &TtqScaleConfig,
    ) -> (Tensor<Cb<R, F>, 1>, Tensor<Cb<R, F>, 1>) {
        // α = 0 is D = 1 exactly (the default handles it); `--unfused-ops` times Burn's ops.
        let [channels] = stats.max_abs.dims();
        let fused = (channels > 0 && config.alpha != 0.0 && self.fused_decoder_ops)
            .then(|| stats::ttq_scales(stats, config))
            .flatten();
        fused.unwrap_or_else(|| {
            <TensorOpsKernels as QuantKernels<Cb<R, F>>>::ttq_scales(
                &TensorOpsKernels,
                stats,
                config,
            )
        })
    }

    fn quantize(
        &self,
        w: Tensor<Cb<R, F>, 2>,
        col_scale: Option<Tensor<Cb<R, F>, 1>>,
        spec: &QuantSpec,
    ) -> Result<QuantizedWeight<Cb<R, F>>, QuantError> {
        let [rows, cols] = w.dims();
        check_col_scale("quantize", cols, col_scale.as_ref())?;
        if rows == 0 || cols == 0 {
            return TensorOpsKernels.quantize(w, col_scale, spec);
        }
        let col_scale = col_scale.unwrap_or_else(|| Tensor::ones([cols], &w.device()));
        quantize::quantize(w, col_scale, spec, self.quantize_variant)
    }

    fn dequantize(&self, q: &QuantizedWeight<Cb<R, F>>) -> Tensor<Cb<R, F>, 2> {
        let [rows, cols] = q.shape;
        let Ok(dims) = WeightDims::new(q.shape, &q.spec) else {
            return TensorOpsKernels.dequantize(q);
        };
        if rows == 0 || cols == 0 || rows.saturating_mul(cols) > u32::MAX as usize {
            return TensorOpsKernels.dequantize(q);
        }
        wrap_float(dequantize::dequantize_prim::<R, F>(q, &dims, F::dtype()))
    }

    fn matmul(
        &self,
        x: Tensor<Cb<R, F>, 2>,
        q: &QuantizedWeight<Cb<R, F>>,
        input_scale: Option<Tensor<Cb<R, F>, 1>>,
    ) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
        check_matmul_shapes(&x, q, input_scale.as_ref())?;
        let [tokens, cols] = x.dims();
        let [rows, _] = q.shape;
        if tokens == 0 || rows == 0 || cols == 0 {
            return TensorOpsKernels.matmul(x, q, input_scale);
        }
        let dims = WeightDims::new(q.shape, &q.spec)?;
        u32_of(rows.saturating_mul(cols), "weight elements")?;
        if tokens <= self.gemv_max_tokens.min(DEFAULT_GEMV_MAX_TOKENS) {
            return gemv::gemv(
                x,
                q,
                input_scale,
                &dims,
                self.gemv,
                self.line_tile,
                self.tma_tile,
            );
        }
        dequantize::dense_matmul(x, q, input_scale, &dims)
    }

    fn dense_matmul(
        &self,
        x: Tensor<Cb<R, F>, 2>,
        w_t: Tensor<Cb<R, F>, 2>,
    ) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
        check_dense_shapes(&x, &w_t)?;
        let [tokens, cols] = x.dims();
        let [_, rows] = w_t.dims();
        let dtype = x.dtype();
        if w_t.dtype() == dtype {
            let xp = float_prim::<R, F, 2>(x.clone(), dtype);
            let wp = float_prim::<R, F, 2>(w_t.clone(), dtype);
            if let Some(y) = cublas::matmul(&xp, &wp, tokens, cols, rows)? {
                return Ok(wrap_float(y));
            }
        }
        Ok(dequantize::burn_matmul(x, w_t))
    }

    fn rms_norm(
        &self,
        x: Tensor<Cb<R, F>, 2>,
        weight: Tensor<Cb<R, F>, 1>,
        eps: f64,
    ) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
        if !self.fused_decoder_ops {
            return ttq_core::ops::rms_norm(x, weight, eps);
        }
        decoder_ops::rms_norm(x, weight, eps)
    }

    fn rope(
        &self,
        x: Tensor<Cb<R, F>, 4>,
        cos: Tensor<Cb<R, F>, 2>,
        sin: Tensor<Cb<R, F>, 2>,
    ) -> Result<Tensor<Cb<R, F>, 4>, QuantError> {
        if !self.fused_decoder_ops {
            return ttq_core::ops::rope(x, cos, sin);
        }
        decoder_ops::rope(x, cos, sin)
    }

    fn masked_softmax(
        &self,
        scores: Tensor<Cb<R, F>, 2>,
        scale: f64,
        mask: Option<Tensor<Cb<R, F>, 2>>,
    ) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
        if !self.fused_decoder_ops {
            return ttq_core::ops::masked_softmax(scores, scale, mask);
        }
        decoder_ops::masked_softmax(scores, scale, mask)
    }

    fn gated(
        &self,
        gate: Tensor<Cb<R, F>, 2>,
        up: Tensor<Cb<R, F>, 2>,
        act: GateActivation,
    ) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
        if !self.fused_decoder_ops {
            return ttq_core::ops::gated(gate, up, act);
        }
        decoder_ops::gated(gate, up, act)
    }
}
