//! The fused GEMV ([`gemv_fused_kernel`]): one packed word per lane and load, any bit
//! width and group layout (words may straddle groups). The fallback of the GEMV chain, and
//! the kernel the line GEMVs fall back to when an operand is not 16-byte aligned.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::{CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantizedWeight};

use super::{store_gemv_rows, GemvOperands};
use crate::cuda::operands::{empty, wrap_float, Cb, WeightDims};
use crate::cuda::PLANE;
use crate::gemv_config::LineTile;

/// The code at bit `shift` of `word` (`mask` wide) as an exact f32: the code is OR-ed into
/// the mantissa of 2²³ (`0x4B00_0000`, whose mantissa unit is 1) and 2²³ is subtracted,
/// two full-rate instructions instead of the reduced-throughput integer-to-float
/// conversion; exact for any code below 2²³.
#[cube]
fn code_to_f32(word: u32, shift: u32, mask: u32) -> f32 {
    let code = (word >> shift) & mask;
    f32::reinterpret(code | 0x4B00_0000u32) - 8_388_608.0f32
}

/// The fused GEMV, for any bit width and group layout: `x` and the input scale `s` are read
/// directly (no padded copy of `x ⊙ s`), in a layout built for memory-level parallelism:
///
/// - a cube of `P` planes (`planes`) owns `R` rows (`rows_per_cube`) and splits their words
///   between its planes (split-K), so that long rows do not leave one plane looping alone;
/// - each plane step loads `U` (`unroll`) coalesced 128-byte runs of words for each of the
///   `R` rows (`U · R` independent loads per lane) before decoding any of them;
/// - the scaled activations of a word position (`x ⊙ s` for its `32 / bits` columns and all
///   `m` tokens) are loaded once and reused for all `R` rows, so the activation traffic per
///   weight byte falls as `1 / R` (each cube reads the whole activation row once);
/// - a word is decoded right before its products (only `32 / bits` code registers live at a
///   time, so `R` can grow without spilling);
/// - partial sums are reduced across lanes with `plane_sum`, then across the cube's planes
///   in shared memory.
///
/// Columns past `cols` in the last word of a row get a zero scale (their loads are clamped
/// to the last column), so they add nothing; words past the row's end are loaded from a
/// clamped index and skipped.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_fused_kernel<F: Float>(
    x: &Tensor<F>,
    s: &Tensor<F>,
    packed: &Tensor<u32>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    y: &mut Tensor<F>,
    rows: u32,
    cols: u32,
    group_shift: u32,
    groups: u32,
    words_per_row: u32,
    #[comptime] m: u32,
    #[comptime] bits: u32,
    #[comptime] rows_per_cube: u32,
    #[comptime] unroll: u32,
    #[comptime] planes: u32,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let mask = comptime!((1u32 << bits) - 1);
    let nacc = comptime!((m * rows_per_cube) as usize);
    let nwords = comptime!((unroll * rows_per_cube) as usize);
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let row0 = CUBE_POS_X * rows_per_cube;
    let wpr = words_per_row as usize;
    let cols_us = cols as usize;
    let g_us = groups as usize;

    let mut acc = Array::<f32>::new(nacc);
    #[unroll]
    for i in 0..nacc {
        acc[i] = 0.0f32;
    }
    let mut words = Array::<u32>::new(nwords);
    let mut codes = Array::<f32>::new(comptime!(cpw as usize));
    let mut sv = Array::<f32>::new(comptime!(cpw as usize));
    let mut cidx = Array::<u32>::new(comptime!(cpw as usize));
    let mut xv = Array::<f32>::new(comptime!((m * cpw) as usize));
    let mut xsum = Array::<f32>::new(comptime!(m as usize));

    let step = comptime!(PLANE * unroll * planes);
    let mut base = plane * comptime!(PLANE * unroll);
    while base < words_per_row {
        // All loads of the step first; indices past the row are clamped to its last word,
        // whose value is then not used.
        #[unroll]
        for u in 0..unroll {
            let wi = u32::min(base + u * PLANE + lane, words_per_row - 1);
            #[unroll]
            for r in 0..rows_per_cube {
                let row = u32::min(row0 + r, rows - 1);
                words[(u * rows_per_cube + r) as usize] = packed[row as usize * wpr + wi as usize];
            }
        }
        #[unroll]
        for u in 0..unroll {
            let wi = base + u * PLANE + lane;
            if wi < words_per_row {
                let c0 = wi * cpw;
                #[unroll]
                for k in 0..cpw {
                    let c = c0 + k;
                    let cc = u32::min(c, cols - 1);
                    cidx[k as usize] = cc;
                    sv[k as usize] = select(c < cols, f32::cast_from(s[cc as usize]), 0.0f32);
                }
                let g0 = u32::min(c0 >> group_shift, groups - 1);
                let g1 = u32::min((c0 + cpw - 1) >> group_shift, groups - 1);
                if g0 == g1 {
                    // x ⊙ s of this word's columns for every token, shared by the R rows.
                    #[unroll]
                    for t in 0..m {
                        let xb = t as usize * cols_us;
                        let mut sum = 0.0f32;
                        #[unroll]
                        for k in 0..cpw {
                            let v =
                                f32::cast_from(x[xb + cidx[k as usize] as usize]) * sv[k as usize];
                            xv[(t * cpw + k) as usize] = v;
                            sum += v;
                        }
                        xsum[t as usize] = sum;
                    }
                    #[unroll]
                    for r in 0..rows_per_cube {
                        let word = words[(u * rows_per_cube + r) as usize];
                        #[unroll]
                        for k in 0..cpw {
                            codes[k as usize] = code_to_f32(word, k * bits, mask);
                        }
                        let row = u32::min(row0 + r, rows - 1);
                        let p = row as usize * g_us + g0 as usize;
                        let sc = scales[p];
                        let z = zeros[p];
                        #[unroll]
                        for t in 0..m {
                            let mut dot = 0.0f32;
                            #[unroll]
                            for k in 0..cpw {
                                dot += xv[(t * cpw + k) as usize] * codes[k as usize];
                            }
                            acc[(t * rows_per_cube + r) as usize] +=
                                sc * (dot - z * xsum[t as usize]);
                        }
                    }
                } else {
                    #[unroll]
                    for r in 0..rows_per_cube {
                        let row = u32::min(row0 + r, rows - 1);
                        #[unroll]
                        for k in 0..cpw {
                            let g = u32::min((c0 + k) >> group_shift, groups - 1);
                            let p = row as usize * g_us + g as usize;
                            let code = code_to_f32(
                                words[(u * rows_per_cube + r) as usize],
                                k * bits,
                                mask,
                            );
                            let wq = (code - zeros[p]) * scales[p];
                            #[unroll]
                            for t in 0..m {
                                let xs = f32::cast_from(
                                    x[t as usize * cols_us + cidx[k as usize] as usize],
                                ) * sv[k as usize];
                                acc[(t * rows_per_cube + r) as usize] += xs * wq;
                            }
                        }
                    }
                }
            }
        }
        base += step;
    }

    store_gemv_rows::<F>(&acc, y, rows, row0, m, rows_per_cube, planes);
}

/// The fused GEMV on `x` (at most 16 tokens) with `tile`.
pub(super) fn gemv<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: LineTile,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    Ok(launch::<R, F>(
        GemvOperands::new(x, q, input_scale)?,
        dims,
        tile,
    ))
}

/// Launches [`gemv_fused_kernel`] on prepared operands.
pub(super) fn launch<R: CubeRuntime, F: FloatElement>(
    ops: GemvOperands<R>,
    dims: &WeightDims,
    tile: LineTile,
) -> BurnTensor<Cb<R, F>, 2> {
    let GemvOperands {
        x,
        s,
        packed,
        scales,
        zeros,
        tokens,
        tokens_u,
    } = ops;
    let y = empty(&x, vec![tokens, dims.rows as usize], F::dtype());
    let (rows_per_cube, planes, unroll) = tile.resolve_fused(tokens, dims.bits);
    // SAFETY: the launcher of `matmul` checked the shapes, and every index in the kernel
    // is guarded or clamped.
    unsafe {
        gemv_fused_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1),
            CubeDim {
                x: PLANE,
                y: planes,
                z: 1,
            },
            x.clone().into_tensor_arg(),
            s.into_tensor_arg(),
            packed.into_tensor_arg(),
            scales.into_tensor_arg(),
            zeros.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            dims.rows,
            dims.cols,
            dims.group_shift,
            dims.groups,
            dims.words_per_row,
            tokens_u,
            dims.bits,
            rows_per_cube,
            unroll,
            planes,
            F::dtype().into(),
        );
    }
    wrap_float(y)
}
