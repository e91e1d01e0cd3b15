//! The half2 GEMV ([`gemv_h2_kernel`]): the vector GEMV's loads with the decode and the
//! products in packed f16 pairs; f16 activations and 4-bit codes. The default at one token
//! for f16. Its pair helpers are shared with the TMA GEMV's half2 products.

use burn::tensor::{f16, Tensor as BurnTensor};
use burn_cubecl::{CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantizedWeight};

use super::{line_launch, line_layout_fits, store_gemv_rows, GemvCall, LINE_VECTOR, LINE_WORDS};
use crate::cuda::operands::{wrap_float, Cb, WeightDims};
use crate::cuda::PLANE;
use crate::gemv_config::LineTile;

/// The bits of two f16 1024.0 (one per 16-bit half) that code pairs are OR-ed into (the
/// `magic` argument of the half2 kernels).
pub(super) const H2_MAGIC: u32 = 0x6400_6400;

/// Whether the half2 GEMV can serve `call`: f16 activations and 4-bit codes in the line
/// layout.
pub(super) fn fits(call: GemvCall<'_>) -> bool {
    call.f16 && call.dims.bits == 4 && line_layout_fits(call.dims)
}

/// The half2 GEMV on `x` (f16, at most 16 tokens; layouts of [`fits`], checked by the
/// caller) with `tile`; the fused GEMV where an operand is not 16-byte aligned.
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
    // SAFETY: the caller checked f16 and the layout (4-bit codes, rows of whole lines,
    // groups of whole lines), the operands are 16-byte aligned (`line_launch`), and every
    // index in the kernel is guarded or clamped.
    unsafe {
        gemv_h2_kernel::launch_unchecked::<R>(
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
            H2_MAGIC,
            l.ops.tokens_u,
            l.rows_per_cube,
            l.unroll,
            l.planes,
        );
    }
    Ok(wrap_float(l.y))
}

/// The half2 GEMV for f16 activations and 4-bit codes (the f16 default where the layout
/// allows it, see `GemvPolicy::Auto`): [`gemv_vec_kernel`]'s tiling and loads with
/// the decode and the dot products in packed f16 pairs (`__half2`, two values per
/// instruction), about half the instructions per weight of the f32 decode (5.8 per weight
/// there).
///
/// Per packed word (codes `c0 … c7`, code `k` in bits `4k … 4k+3`) and row:
/// - one mask-and-OR per pair puts codes `j` and `j + 4` (the same nibble of the word's two
///   16-bit halves) into the mantissas of a pair of f16 1024.0: `(1024 + c_j, 1024 + c_{j+4})`
///   for even `j`, `(1024 + 16 c_j, …)` for odd `j` (codes 2, 3, 6, 7 from `word >> 8`);
/// - one multiply-add per pair turns them into `((c − z) / 16, …)`, exactly (small integers
///   over 16 are exact in f16; `z` is the group's integer zero point);
/// - one multiply-add per pair accumulates `x ⊙ s` (paired the same way: columns `j` and
///   `j + 4` of the word) times those weights into an f16 pair per row, token and line.
///
/// After each line (32 columns) the pair is converted to f32 and added, times `16 · scale`,
/// into the f32 accumulator, so at most 16 f16 products are summed in f16: with weights of
/// at most 15/16 in magnitude, a partial sum stays finite while the 16 values of `|x ⊙ s|`
/// that meet in it sum to less than about 70 000 (all below 4000, say), and `x ⊙ s` itself
/// is computed in f16. Larger activations give an infinite output, which generation
/// reports as an error.
/// The tail is [`store_gemv_rows`]. `magic` must be [`H2_MAGIC`] (a run-time argument so
/// that it sits in a register and each mask-and-OR is one instruction).
///
/// Each step loads all its lines first, then decodes them, so a lane has no load in flight
/// while it computes. Two ways to overlap them in registers were measured and dropped:
/// - a register double buffer (the whole next step loaded before the current one is
///   decoded): 168 registers instead of 95, slower on every shape;
/// - a rolling prefetch (each row's line reloaded for the next step as soon as the row is
///   done): correct, 1.1-3.7× slower. ptxas put every reload
///   on one scoreboard, so each row's first use waited for all outstanding reloads, the
///   previous row's included: a full memory latency per row. Written without branches,
///   ptxas moved all reloads to the end of the loop body instead: this kernel's schedule
///   with 128 registers. (`scripts/offline-cuda/sass_ctrl.py` shows the scoreboards.)
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_h2_kernel<N: Size>(
    x: &Tensor<Vector<f16, N>>,
    s: &Tensor<Vector<f16, N>>,
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    y: &mut Tensor<f16>,
    rows: u32,
    group_shift: u32,
    groups: u32,
    lines_per_row: u32,
    magic: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_cube: u32,
    #[comptime] unroll: u32,
    #[comptime] planes: u32,
) {
    // Fixed layout: 4-bit codes, lines of 4 words (32 columns), activation vectors of 4.
    let nacc = comptime!((m * rows_per_cube) as usize);
    let nline = comptime!((unroll * rows_per_cube) as usize);
    let lane = UNIT_POS_X;
    let row0 = CUBE_POS_X * rows_per_cube;
    let lines = H2Lines {
        lpr: lines_per_row as usize,
        g_us: groups as usize,
        group_shift,
        groups,
        lines_per_row,
    };
    // Activation vectors (of 4) per token row: `cols / 4`.
    let x_stride = (lines_per_row * 8) as usize;

    let mut acc = Array::<f32>::new(nacc);
    #[unroll]
    for i in 0..nacc {
        acc[i] = 0.0f32;
    }
    let mut words = Array::<u32>::new(comptime!(nline * 4));
    let mut sc = Array::<f32>::new(nline);
    let mut zp = Array::<f32>::new(nline);
    let mut pairs = Array::<Vector<f16, Const<2>>>::new(comptime!((m * 4) as usize));
    let mut part = Array::<Vector<f16, Const<2>>>::new(nacc);
    let mut wv = Array::<Vector<f16, Const<2>>>::new(4usize);
    let mut bias_even = Array::<Vector<f16, Const<2>>>::new(comptime!(rows_per_cube as usize));
    let mut bias_odd = Array::<Vector<f16, Const<2>>>::new(comptime!(rows_per_cube as usize));
    let k16 = Vector::<f16, Const<2>>::new(f16::cast_from(0.0625f32));
    let k256 = Vector::<f16, Const<2>>::new(f16::cast_from(0.00390625f32));

    let step = comptime!(PLANE * unroll * planes);
    let mut base = UNIT_POS_Y * comptime!(PLANE * unroll);
    while base < lines_per_row {
        // All of the step's loads first; clamped indices past the end re-read the last
        // line, never used.
        #[unroll]
        for u in 0..unroll {
            #[unroll]
            for r in 0..rows_per_cube {
                load_h2_line(
                    packed,
                    scales,
                    zeros,
                    &mut words,
                    &mut sc,
                    &mut zp,
                    u * rows_per_cube + r,
                    base + u * PLANE + lane,
                    u32::min(row0 + r, rows - 1),
                    &lines,
                );
            }
        }
        #[unroll]
        for u in 0..unroll {
            let li = base + u * PLANE + lane;
            if li < lines_per_row {
                #[unroll]
                for r in 0..rows_per_cube {
                    let (be, bo) = h2_biases(zp[(u * rows_per_cube + r) as usize]);
                    bias_even[r as usize] = be;
                    bias_odd[r as usize] = bo;
                }
                #[unroll]
                for i in 0..nacc {
                    part[i] = Vector::<f16, Const<2>>::new(f16::cast_from(0.0f32));
                }
                #[unroll]
                for w in 0..4u32 {
                    h2_activation_pairs(x, s, (li * 8 + w * 2) as usize, x_stride, &mut pairs, m);
                    #[unroll]
                    for r in 0..rows_per_cube {
                        h2_word_products(
                            words[((u * rows_per_cube + r) * 4 + w) as usize],
                            bias_even[r as usize],
                            bias_odd[r as usize],
                            k16,
                            k256,
                            magic,
                            &pairs,
                            &mut wv,
                            &mut part,
                            r,
                            m,
                            rows_per_cube,
                        );
                    }
                }
                #[unroll]
                for r in 0..rows_per_cube {
                    h2_fold_parts(
                        &part,
                        sc[(u * rows_per_cube + r) as usize],
                        &mut acc,
                        r,
                        m,
                        rows_per_cube,
                    );
                }
            }
        }
        base += step;
    }
    store_gemv_rows::<f16>(&acc, y, rows, row0, m, rows_per_cube, planes);
}

/// The half2 products of one packed word (codes `c0 … c7`) of row `r` with the paired
/// activations `pairs[t · 4 + j] = (xs_j, xs_{j+4})` of its 8 columns, for every token `t`,
/// accumulated into `part[t · R + r]` (see [`gemv_h2_kernel`] for the decode: `be` and `bo`
/// are the even and odd nibbles' biases `−64 − z/16` and `−4 − z/16`, `k16` and `k256` the
/// pairs `(1/16, 1/16)` and `(1/256, 1/256)`, made once by the caller: made here, each call
/// converted them from f32 again, 62 conversions more in the PTX; `wv` is scratch).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn h2_word_products(
    word: u32,
    be: Vector<f16, Const<2>>,
    bo: Vector<f16, Const<2>>,
    k16: Vector<f16, Const<2>>,
    k256: Vector<f16, Const<2>>,
    magic: u32,
    pairs: &Array<Vector<f16, Const<2>>>,
    wv: &mut Array<Vector<f16, Const<2>>>,
    part: &mut Array<Vector<f16, Const<2>>>,
    r: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_cube: u32,
) {
    let high = word >> 8;
    wv[0] = Vector::<f16, Const<2>>::reinterpret((word & 0x000F_000Fu32) | magic) * k16 + be;
    wv[1] = Vector::<f16, Const<2>>::reinterpret((word & 0x00F0_00F0u32) | magic) * k256 + bo;
    wv[2] = Vector::<f16, Const<2>>::reinterpret((high & 0x000F_000Fu32) | magic) * k16 + be;
    wv[3] = Vector::<f16, Const<2>>::reinterpret((high & 0x00F0_00F0u32) | magic) * k256 + bo;
    #[unroll]
    for t in 0..m {
        let i = (t * rows_per_cube + r) as usize;
        let mut d = part[i];
        #[unroll]
        for j in 0..4u32 {
            d += pairs[(t * 4 + j) as usize] * wv[j as usize];
        }
        part[i] = d;
    }
}

/// The run-time dimensions [`load_h2_line`] indexes with: lines per row (also as `usize`),
/// groups per row (also as `usize`) and `log2` of the group size.
#[derive(CubeType, Clone, Copy)]
pub struct H2Lines {
    lpr: usize,
    g_us: usize,
    group_shift: u32,
    groups: u32,
    lines_per_row: u32,
}

/// Loads line `li` of row `row` (the lane's 16-byte line as 4 words, at `words[slot · 4 …]`)
/// and the scale and zero point of its group (`sc[slot]`, `zp[slot]`), for the half2
/// GEMVs. A line index past the row's end is clamped (the load is valid, its values are not
/// used); the caller clamps `row`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn load_h2_line<N: Size>(
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    words: &mut Array<u32>,
    sc: &mut Array<f32>,
    zp: &mut Array<f32>,
    slot: u32,
    li: u32,
    row: u32,
    dims: &H2Lines,
) {
    let li = u32::min(li, dims.lines_per_row - 1);
    // One group per line (the launcher's condition); 32 columns per line.
    let g = u32::min((li * 32) >> dims.group_shift, dims.groups - 1);
    let line = packed[row as usize * dims.lpr + li as usize];
    #[unroll]
    for w in 0..4u32 {
        words[(slot * 4 + w) as usize] = line[w as usize];
    }
    let p = row as usize * dims.g_us + g as usize;
    sc[slot as usize] = scales[p];
    zp[slot as usize] = zeros[p];
}

/// The biases `(−64 − z/16, −4 − z/16)` of the even and odd nibbles' decode for zero point
/// `z` (see [`gemv_h2_kernel`]), each as a pair.
#[cube]
pub(super) fn h2_biases(z: f32) -> (Vector<f16, Const<2>>, Vector<f16, Const<2>>) {
    let z16 = z * 0.0625f32;
    (
        Vector::<f16, Const<2>>::new(f16::cast_from(-64.0f32 - z16)),
        Vector::<f16, Const<2>>::new(f16::cast_from(-4.0f32 - z16)),
    )
}

/// `x ⊙ s` of the 8 columns of one word (activation vectors `xi` and `xi + 1`), paired
/// `(j, j + 4)` as the decode pairs the codes, into `pairs[t · 4 + j]` for every token `t`
/// (rows of `x_stride` vectors).
#[cube]
pub(super) fn h2_activation_pairs<N: Size>(
    x: &Tensor<Vector<f16, N>>,
    s: &Tensor<Vector<f16, N>>,
    xi: usize,
    x_stride: usize,
    pairs: &mut Array<Vector<f16, Const<2>>>,
    #[comptime] m: u32,
) {
    let sa = s[xi];
    let sb = s[xi + 1];
    #[unroll]
    for t in 0..m {
        let xa = x[t as usize * x_stride + xi] * sa;
        let xb = x[t as usize * x_stride + xi + 1] * sb;
        h2_pair_up(xa, xb, pairs, t);
    }
}

/// Pairs `(xa_j, xb_j)` of token `t`'s two activation vectors (a word's columns `j` and
/// `j + 4`) into `pairs[t · 4 + j]`.
#[cube]
pub(super) fn h2_pair_up<N: Size>(
    xa: Vector<f16, N>,
    xb: Vector<f16, N>,
    pairs: &mut Array<Vector<f16, Const<2>>>,
    t: u32,
) {
    #[unroll]
    for j in 0..4u32 {
        let mut pair = Vector::<f16, Const<2>>::empty();
        pair[0] = xa[j as usize];
        pair[1] = xb[j as usize];
        pairs[(t * 4 + j) as usize] = pair;
    }
}

/// Adds row `r`'s f16 partial sums of a line, `part[t · R + r]` for every token `t`, times
/// `16 · scale` into the f32 accumulators `acc[t · R + r]`.
#[cube]
pub(super) fn h2_fold_parts(
    part: &Array<Vector<f16, Const<2>>>,
    scale: f32,
    acc: &mut Array<f32>,
    r: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_cube: u32,
) {
    let s16 = scale * 16.0f32;
    #[unroll]
    for t in 0..m {
        let i = (t * rows_per_cube + r) as usize;
        let d = part[i];
        acc[i] += s16 * (f32::cast_from(d[0]) + f32::cast_from(d[1]));
    }
}
