//! The vector GEMV ([`gemv_vec_kernel`]): a 16-byte line of four packed words per lane and
//! load, decoded in f32; 2, 4 or 8 bits with lines inside one group. The default for f32
//! activations (and for f16 where the half2 GEMV does not fit).

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::{CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantizedWeight};

use super::{line_launch, store_gemv_rows, LINE_VECTOR, LINE_WORDS};
use crate::cuda::operands::{wrap_float, Cb, WeightDims};
use crate::cuda::PLANE;
use crate::gemv_config::LineTile;

/// The bits of the f32 2²³ (mantissa unit 1) that [`gemv_vec_kernel`] ORs codes into (its
/// `magic` argument).
const F32_MAGIC: u32 = 0x4B00_0000;

/// The vector GEMV: the fused GEMV's tiling (`super::fused`) with 16-byte loads.
///
/// Each lane owns a *line* of `N` consecutive packed words (`N = 4`: one 16-byte load per
/// row, `4 · 32 / bits` columns) instead of one word, so every load instruction moves four
/// times the bytes and one scale and zero serve the whole line (the launcher takes this
/// kernel only when a line never straddles a group and rows hold whole lines). The scaled
/// activations `x ⊙ s` of each word are loaded as `N`-element vectors too (8 bytes in f16,
/// 16 in f32), once per word position and shared by the cube's `R` rows.
///
/// - a cube of `P` planes owns `R` rows and splits their lines between its planes (split-K);
/// - each plane step loads `U` runs of 32 lines for each of the `R` rows before decoding any
///   (`U · R` 16-byte loads in flight per lane);
/// - per word: `s · (Σ xs·code − z · Σ xs)`, codes decoded with the 2²³ mantissa trick
///   without shifting each code (see the decode loop);
/// - lanes are reduced with `plane_sum`, planes in shared memory.
///
/// Lines past the row's end are loaded from a clamped index and skipped; rows past the end
/// are clamped for loads and not written. `magic` must be [`F32_MAGIC`].
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_vec_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    s: &Tensor<Vector<F, N>>,
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    y: &mut Tensor<F>,
    rows: u32,
    group_shift: u32,
    groups: u32,
    lines_per_row: u32,
    magic: u32,
    #[comptime] m: u32,
    #[comptime] bits: u32,
    #[comptime] vector: u32,
    #[comptime] rows_per_cube: u32,
    #[comptime] unroll: u32,
    #[comptime] planes: u32,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let mask = comptime!((1u32 << bits) - 1);
    // Activation vectors per word (`cpw` columns).
    let vpw = comptime!(cpw / vector);
    // Codes per 16-bit half of a word.
    let half = comptime!(16 / bits);
    let nacc = comptime!((m * rows_per_cube) as usize);
    let nwords = comptime!((unroll * rows_per_cube * vector) as usize);
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let row0 = CUBE_POS_X * rows_per_cube;
    let lpr = lines_per_row as usize;
    // Activation vectors per token row: `cols / vector`.
    let x_stride = (lines_per_row * cpw) as usize;
    let g_us = groups as usize;

    let mut acc = Array::<f32>::new(nacc);
    #[unroll]
    for i in 0..nacc {
        acc[i] = 0.0f32;
    }
    let mut words = Array::<u32>::new(nwords);
    let mut codes = Array::<f32>::new(comptime!(cpw as usize));
    let mut xv = Array::<f32>::new(comptime!((m * cpw) as usize));
    let mut xsum = Array::<f32>::new(comptime!(m as usize));
    let mut sc = Array::<f32>::new(comptime!(rows_per_cube as usize));
    let mut zp = Array::<f32>::new(comptime!(rows_per_cube as usize));

    let step = comptime!(PLANE * unroll * planes);
    let mut base = plane * comptime!(PLANE * unroll);
    while base < lines_per_row {
        // All 16-byte loads of the step first (clamped indices past the row's end).
        #[unroll]
        for u in 0..unroll {
            let li = u32::min(base + u * PLANE + lane, lines_per_row - 1);
            #[unroll]
            for r in 0..rows_per_cube {
                let row = u32::min(row0 + r, rows - 1);
                let line = packed[row as usize * lpr + li as usize];
                #[unroll]
                for w in 0..vector {
                    words[((u * rows_per_cube + r) * vector + w) as usize] = line[w as usize];
                }
            }
        }
        #[unroll]
        for u in 0..unroll {
            let li = base + u * PLANE + lane;
            if li < lines_per_row {
                // One group per line (the launcher's condition).
                let g = u32::min((li * comptime!(vector * cpw)) >> group_shift, groups - 1);
                #[unroll]
                for r in 0..rows_per_cube {
                    let row = u32::min(row0 + r, rows - 1);
                    let p = row as usize * g_us + g as usize;
                    sc[r as usize] = scales[p];
                    zp[r as usize] = zeros[p];
                }
                #[unroll]
                for w in 0..vector {
                    // x ⊙ s of word `w`'s columns for every token, shared by the R rows.
                    let xi = (li * cpw + w * vpw) as usize;
                    #[unroll]
                    for j in 0..vpw {
                        let sj = Vector::<f32, N>::cast_from(s[xi + j as usize]);
                        #[unroll]
                        for t in 0..m {
                            let xt = Vector::<f32, N>::cast_from(
                                x[t as usize * x_stride + xi + j as usize],
                            ) * sj;
                            #[unroll]
                            for e in 0..vector {
                                xv[(t * cpw + j * vector + e) as usize] = xt[e as usize];
                            }
                        }
                    }
                    #[unroll]
                    for t in 0..m {
                        let mut sum = 0.0f32;
                        #[unroll]
                        for k in 0..cpw {
                            sum += xv[(t * cpw + k) as usize];
                        }
                        xsum[t as usize] = sum;
                        // Pre-scale for the shift-free decode below: column `k` of the word
                        // is multiplied by 2^-(bits · (k mod half)) (exact: a power of two;
                        // `1 / 2^e` of constants, which the compiler folds. A `reinterpret`
                        // of the constant exponent bits does not compile: CubeCL 0.10 emits
                        // `reinterpret_cast<float const&>` of an rvalue).
                        #[unroll]
                        for k in 0..cpw {
                            let e = bits * (k % half);
                            xv[(t * cpw + k) as usize] *= 1.0f32 / f32::cast_from(1u32 << e);
                        }
                    }
                    #[unroll]
                    for r in 0..rows_per_cube {
                        let word = words[((u * rows_per_cube + r) * vector + w) as usize];
                        // Shift-free decode: code `k` is masked in place inside its 16-bit
                        // half (`word` or `word >> 16`, one shift per word) and OR-ed into
                        // the mantissa of 2²³, which gives `code · 2^(bits · (k mod half))`
                        // exactly (below 2¹⁶ < 2²³); the activations were pre-scaled by the
                        // inverse power, so every product is the same f32 value as with the
                        // shifted code. Two instructions per code before the multiply-add
                        // (mask-and-or, subtract) instead of three. `magic` is 2²³'s bits
                        // as a run-time argument: with both constants immediate ptxas emits
                        // two LOP3 per code; with one in a register they
                        // fuse into one, 5% faster.
                        #[unroll]
                        for k in 0..cpw {
                            let src = word >> (16 * (k / half));
                            let shifted = src & (mask << (bits * (k % half)));
                            codes[k as usize] = f32::reinterpret(shifted | magic) - 8_388_608.0f32;
                        }
                        #[unroll]
                        for t in 0..m {
                            let mut dot = 0.0f32;
                            #[unroll]
                            for k in 0..cpw {
                                dot += xv[(t * cpw + k) as usize] * codes[k as usize];
                            }
                            acc[(t * rows_per_cube + r) as usize] +=
                                sc[r as usize] * (dot - zp[r as usize] * xsum[t as usize]);
                        }
                    }
                }
            }
        }
        base += step;
    }

    store_gemv_rows::<F>(&acc, y, rows, row0, m, rows_per_cube, planes);
}

/// The vector GEMV on `x` (at most 16 tokens; layouts of [`super::line_layout_fits`],
/// checked by the caller) with `tile`; the fused GEMV where an operand is not 16-byte
/// aligned.
pub(super) fn gemv<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: LineTile,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    let l = match line_launch::<R, F>(x, q, input_scale, dims, tile)? {
        Ok(launch) => launch,
        Err(fallback) => return Ok(fallback),
    };
    // SAFETY: the caller checked the layout (rows of whole lines, activations of whole
    // vectors), the operands are 16-byte aligned (`line_launch`), and every index in the
    // kernel is guarded or clamped.
    unsafe {
        gemv_vec_kernel::launch_unchecked::<R>(
            &l.ops.x.client,
            l.cubes,
            l.cube_dim,
            LINE_VECTOR,
            l.ops.x.clone().into_tensor_arg(),
            l.ops.s.into_tensor_arg(),
            l.ops.packed.into_tensor_arg(),
            l.ops.scales.into_tensor_arg(),
            l.ops.zeros.into_tensor_arg(),
            l.y.clone().into_tensor_arg(),
            dims.rows,
            dims.group_shift,
            dims.groups,
            dims.words_per_row / LINE_WORDS,
            F32_MAGIC,
            l.ops.tokens_u,
            dims.bits,
            LINE_WORDS,
            l.rows_per_cube,
            l.unroll,
            l.planes,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(l.y))
}
