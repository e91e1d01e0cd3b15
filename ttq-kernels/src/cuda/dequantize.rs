//! Dequantization, and the dense path of `matmul` for more than `gemv_max_tokens` tokens:
//! the weight dequantized straight into a contiguous `[cols, rows]` operand (input scale
//! folded into its columns), then cuBLAS's dense product ([`super::cublas`]).
//!
//! | kernel | serves |
//! | --- | --- |
//! | [`dequantize_kernel`] | `dequantize`: one thread per element |
//! | [`dequantize_t_lines_kernel`] | the dense path, rows of whole 16-byte lines inside one group (the vector GEMV's layouts) |
//! | [`dequantize_t_kernel`] | the dense path, any other layout |

use burn::tensor::{DType, Tensor as BurnTensor};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantizedWeight};

use super::cublas;
use super::gemv::{line_layout_fits, LINE_VECTOR, LINE_WORDS};
use super::operands::{aligned_16, empty, float_prim, weight_prims, wrap_float, Cb, WeightDims};
use super::{MAX_GRID_Y, PLANE};

/// Below this many output columns Burn's matmul is replaced by an element-wise product
/// (see [`burn_matmul`]).
const DENSE_MIN_ROWS: usize = 8;

/// `(x ⊙ s) · dequant(Q)ᵀ` for any number of tokens: the weight dequantized, transposed,
/// with the input scale `s` folded into its columns, then cuBLAS (Burn's matmul where
/// cuBLAS is not available).
///
/// The weight takes `x`'s own dtype, not `F`'s: Burn 0.21 makes tensors in the device's
/// default float dtype, which the first tensor made on the device fixes whatever the
/// backend type, so `x` is not `F` in a process that used the device through another
/// backend type first (the GPU tests do), and Burn's product needs both operands in one
/// dtype.
pub(super) fn dense_matmul<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    let dtype = x.dtype();
    let wt = dequantize_t_prim::<R, F>(q, dims, input_scale, dtype);
    let [tokens, cols] = x.dims();
    let x = float_prim::<R, F, 2>(x, dtype);
    if let Some(y) = cublas::matmul(&x, &wt, tokens, cols, dims.rows as usize)? {
        return Ok(wrap_float(y));
    }
    Ok(burn_matmul(wrap_float(x), wrap_float(wt)))
}

/// Burn's `x · wt` (`[m, k]` x `[k, n]`), the fallback where cuBLAS cannot serve a product.
pub(super) fn burn_matmul<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    wt: BurnTensor<Cb<R, F>, 2>,
) -> BurnTensor<Cb<R, F>, 2> {
    let [tokens, _] = x.dims();
    let [_, n] = wt.dims();
    if n < DENSE_MIN_ROWS {
        // Burn's matmul gave wrong, varying results for a `[cols, 1]` right-hand side in
        // the property tests (f16 and f32), so very narrow outputs are summed element-wise
        // instead (`m · cols · rows` products, a few per weight).
        let prod = x.unsqueeze_dim::<3>(2) * wt.unsqueeze_dim::<3>(0); // [m, cols, rows]
        return prod.sum_dim(1).reshape([tokens, n]);
    }
    x.matmul(wt)
}

/// Dense `(code - z) · s` of a packed weight: one thread per output element, 256 columns
/// per cube along x, rows along y (grid-strided when there are more than 65535 rows).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_kernel<F: Float>(
    packed: &Tensor<u32>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    out: &mut Tensor<F>,
    rows: u32,
    cols: u32,
    group_shift: u32,
    groups: u32,
    words_per_row: u32,
    #[comptime] bits: u32,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let mask = comptime!((1u32 << bits) - 1);
    let c = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
    if c < cols {
        let mut row = CUBE_POS_Y;
        while row < rows {
            let word = packed[row as usize * words_per_row as usize + (c / cpw) as usize];
            let code = (word >> ((c % cpw) * bits)) & mask;
            let p = row as usize * groups as usize + (c >> group_shift) as usize;
            let v = (f32::cast_from(code) - zeros[p]) * scales[p];
            out[row as usize * cols as usize + c as usize] = F::cast_from(v);
            row += CUBE_COUNT_Y;
        }
    }
}

/// Dequantizes into the transposed, contiguous layout `out[c, row]` (`[cols, rows]`), the
/// right-hand operand of `x · Wᵀ` as a dense matmul wants it, with each column `c`
/// multiplied by `col_scale[c]` when `scaled` (the TTQ input scale `D⁻¹` folded into the
/// weight: `(x ⊙ s) · Wᵀ = x · (W · diag(s))ᵀ`, which saves the activation pass).
///
/// A cube of `32 × 8` threads covers 32 rows × 8 words: thread `(tx, ty)` loads word `ty`
/// of row `tx` (the 8 threads of a row share one 32-byte sector) and writes its `32 / bits`
/// codes, each store instruction of a plane covering 32 consecutive rows of one column
/// (coalesced). One word per thread instead of one element keeps 8× fewer threads and
/// blocks in flight for the same work. Words are grid-strided along y.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_t_kernel<F: Float>(
    packed: &Tensor<u32>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    col_scale: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    cols: u32,
    group_shift: u32,
    groups: u32,
    words_per_row: u32,
    #[comptime] bits: u32,
    #[comptime] scaled: bool,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let mask = comptime!((1u32 << bits) - 1);
    let row = CUBE_POS_X * PLANE + UNIT_POS_X;
    if row < rows {
        let mut wi = CUBE_POS_Y * CUBE_DIM_Y + UNIT_POS_Y;
        while wi < words_per_row {
            let word = packed[row as usize * words_per_row as usize + wi as usize];
            #[unroll]
            for k in 0..cpw {
                let c = wi * cpw + k;
                if c < cols {
                    let p = row as usize * groups as usize + (c >> group_shift) as usize;
                    let code = (word >> (k * bits)) & mask;
                    let mut v = (f32::cast_from(code) - zeros[p]) * scales[p];
                    if scaled {
                        v *= f32::cast_from(col_scale[c as usize]);
                    }
                    out[c as usize * rows as usize + row as usize] = F::cast_from(v);
                }
            }
            wi += CUBE_COUNT_Y * CUBE_DIM_Y;
        }
    }
}

/// [`dequantize_t_kernel`] for the vector layout (rows of whole 16-byte lines, groups of
/// whole lines, as the vector GEMV needs; the launcher checks it): thread `(tx, ty)` of a
/// `32 × 8` cube owns line `ty` (grid-strided) of row `tx`, loads it with one 16-byte load
/// and the line's scale and zero point once, and writes its `4 · 32 / bits` values, each
/// store of a plane covering 32 consecutive rows of one column (coalesced).
///
/// Why not the word kernel: there every lane of a plane reads a different row, so each
/// load instruction touches 32 cache lines, and it reloaded the scale and zero point for
/// every code (17 such loads per word, a few L1 cycles per weight: about 150 µs for a
/// 4096 × 4096 weight under Burn's prefill matmul). Here a lane makes 3
/// such loads per 32 to 128 weights. Same arithmetic, so the values are identical.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn dequantize_t_lines_kernel<F: Float, N: Size>(
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    col_scale: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    group_shift: u32,
    groups: u32,
    lines_per_row: u32,
    #[comptime] bits: u32,
    #[comptime] vector: u32,
    #[comptime] scaled: bool,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let mask = comptime!((1u32 << bits) - 1);
    let row = CUBE_POS_X * PLANE + UNIT_POS_X;
    if row < rows {
        let rows_us = rows as usize;
        let mut li = CUBE_POS_Y * CUBE_DIM_Y + UNIT_POS_Y;
        while li < lines_per_row {
            let line = packed[row as usize * lines_per_row as usize + li as usize];
            let c0 = li * comptime!(vector * cpw);
            // One group per line (the launcher's condition).
            let g = u32::min(c0 >> group_shift, groups - 1);
            let p = row as usize * groups as usize + g as usize;
            let zero = zeros[p];
            let scale = scales[p];
            #[unroll]
            for w in 0..vector {
                let word = line[w as usize];
                #[unroll]
                for k in 0..cpw {
                    let c = c0 + w * cpw + k;
                    let code = (word >> (k * bits)) & mask;
                    let mut v = (f32::cast_from(code) - zero) * scale;
                    if scaled {
                        v *= f32::cast_from(col_scale[c as usize]);
                    }
                    out[c as usize * rows_us + row as usize] = F::cast_from(v);
                }
            }
            li += CUBE_COUNT_Y * CUBE_DIM_Y;
        }
    }
}

pub(super) fn dequantize_prim<R: CubeRuntime, F: FloatElement>(
    q: &QuantizedWeight<Cb<R, F>>,
    dims: &WeightDims,
    dtype: DType,
) -> CubeTensor<R> {
    let (packed, scales, zeros) = weight_prims(q);
    let out = empty(&packed, vec![dims.rows as usize, dims.cols as usize], dtype);
    let threads = 256u32;
    // SAFETY: shapes were checked above and every index in the kernel is guarded or
    // clamped (see `kernels`).
    unsafe {
        dequantize_kernel::launch_unchecked::<R>(
            &packed.client,
            CubeCount::Static(
                dims.cols.div_ceil(threads),
                (dims.rows as usize).min(MAX_GRID_Y) as u32,
                1,
            ),
            CubeDim {
                x: threads,
                y: 1,
                z: 1,
            },
            packed.clone().into_tensor_arg(),
            scales.into_tensor_arg(),
            zeros.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            dims.rows,
            dims.cols,
            dims.group_shift,
            dims.groups,
            dims.words_per_row,
            dims.bits,
            dtype.into(),
        );
    }
    out
}

/// Launches the transposed dequantize kernel into a new `[cols, rows]` tensor of float
/// `dtype`, each column multiplied by `col_scale` when given (`[cols]`, checked by the
/// caller): [`dequantize_t_lines_kernel`] in the vector GEMV's layout,
/// [`dequantize_t_kernel`] otherwise.
pub(super) fn dequantize_t_prim<R: CubeRuntime, F: FloatElement>(
    q: &QuantizedWeight<Cb<R, F>>,
    dims: &WeightDims,
    col_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dtype: DType,
) -> CubeTensor<R> {
    let (packed, scales, zeros) = weight_prims(q);
    let out = empty(&packed, vec![dims.cols as usize, dims.rows as usize], dtype);
    let scaled = col_scale.is_some();
    // Without a scale the kernel does not read `col_scale`; a one-element tensor fills
    // the slot.
    let col_scale = match col_scale {
        Some(s) => float_prim(s, dtype),
        None => empty(&packed, vec![1], dtype),
    };
    // A cube covers 32 rows × 8 units of a row (16-byte lines in the line kernel, words in
    // the word kernel), the units grid-strided along y.
    let units_per_cube = 8u32;
    let lines = line_layout_fits(dims) && aligned_16(&packed);
    let units_per_row = if lines {
        dims.words_per_row / LINE_WORDS
    } else {
        dims.words_per_row
    };
    let cubes = CubeCount::Static(
        dims.rows.div_ceil(PLANE),
        units_per_row
            .div_ceil(units_per_cube)
            .min(MAX_GRID_Y as u32),
        1,
    );
    let cube_dim = CubeDim {
        x: PLANE,
        y: units_per_cube,
        z: 1,
    };
    // SAFETY: shapes were checked by the caller; the line kernel runs only where
    // `line_layout_fits` (rows of whole lines, groups of whole lines) and the 16-byte
    // alignment hold (above); both kernels guard every row and unit, and read `col_scale`
    // (of `cols` entries) only when `scaled`.
    unsafe {
        if lines {
            dequantize_t_lines_kernel::launch_unchecked::<R>(
                &packed.client,
                cubes,
                cube_dim,
                LINE_VECTOR,
                packed.clone().into_tensor_arg(),
                scales.into_tensor_arg(),
                zeros.into_tensor_arg(),
                col_scale.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                dims.rows,
                dims.group_shift,
                dims.groups,
                units_per_row,
                dims.bits,
                LINE_WORDS,
                scaled,
                dtype.into(),
            );
        } else {
            dequantize_t_kernel::launch_unchecked::<R>(
                &packed.client,
                cubes,
                cube_dim,
                packed.clone().into_tensor_arg(),
                scales.into_tensor_arg(),
                zeros.into_tensor_arg(),
                col_scale.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                dims.rows,
                dims.cols,
                dims.group_shift,
                dims.groups,
                dims.words_per_row,
                dims.bits,
                scaled,
                dtype.into(),
            );
        }
    }
    out
}
