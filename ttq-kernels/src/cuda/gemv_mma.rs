//! The direct tensor-core GEMV ([`gemv_mma_kernel`], `super::GemvVariant::Mma`): the
//! tensor-core products of [`super::kernels`]' TMA GEMV (`tma_block_mma`), with the codes
//! loaded straight from global memory into registers instead of through shared memory.
//!
//! Why another GEMV (session 17): at one token the TMA tensor-core GEMV runs 2-8 warps per
//! SM (each plane's slot of 16 rows' codes takes 8 KiB of shared memory, and there are only
//! `rows / 16` row tiles to split), and its products alone took 16-17 µs on 4096×14336,
//! longer than its copies alone: bound by latency, not by its instructions. Here no weight
//! byte passes through shared memory, so a cube's shared memory is its activations only and
//! the warps per SM are limited by registers; every warp issues all the 16-byte loads of a
//! chunk of steps before it uses any (`U` steps × 2 rows × 16 bytes per lane and tile in
//! flight), and the activations, paired once per cube, cost no global load in the loop.

use burn::tensor::f16;
use cubecl::prelude::*;

use super::kernels::{
    mma_accumulate, mma_decode_word, mma_fold_row, mma_rows_operand, mma_tile_row, store_mma_rows,
    TmaSizes, PLANE,
};

/// The direct tensor-core GEMV: `y = x · Wᵀ` for `m ≤ 8` tokens of f16 activations and a
/// 4-bit weight with groups of at least 128 columns (a power of two) and a multiple of 128
/// columns per row, with the products on tensor cores (`mma.sync` m16n8k16, f16 in, f32
/// accumulation).
///
/// A cube of `P` planes (`warps`) owns `R` rows (`rows_per_warp`, 16 or 32: one or two
/// 16-row tiles) and splits their 128-column steps between its planes in chunks of `U`
/// steps (`chunk_steps`): plane `p` takes chunks `p`, `p + P`, … (split-K; the tail,
/// [`store_mma_rows`], sums the planes). First the cube pairs `x ⊙ s` for the whole row
/// into shared memory in the `mma`'s B operand order ([`stage_pairs`]) and sums each step's
/// even and odd pairs ([`stage_column_sums`]), which remove the decode's offsets (the TMA
/// kernel makes those sums with `mma`s of ones at every step). Then per chunk every lane
/// loads, for each step and tile, line `4 · step + t` of its two tile rows (lane `4g + t`,
/// rows [`mma_tile_row`]`(g)` and that plus 8, as in `tma_block_mma`) and their scales and
/// zeros, all before the first product; then it decodes and multiplies step by step as
/// `tma_block_mma` does. Rows past `rows` re-read the last row and are not stored; steps
/// past the row are clamped in the loads and skipped in the products.
///
/// `loads` and `products` are both true for the GEMV; `bench kernels` turns one off to
/// time the other half (`super::GemvProbe`; the output is then not the product). Without
/// products every loaded word still reaches the output (XOR-ed into it), so the loads are
/// not removed as dead code.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_mma_kernel<N: Size>(
    x: &Tensor<Vector<f16, N>>,
    s: &Tensor<Vector<f16, N>>,
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    y: &mut Tensor<f16>,
    rows: u32,
    group_shift: u32,
    groups: u32,
    magic: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_warp: u32,
    #[comptime] warps: u32,
    #[comptime] chunk_steps: u32,
    #[comptime] lines_per_row: u32,
    #[comptime] loads: bool,
    #[comptime] products: bool,
) {
    let steps = comptime!(lines_per_row / 4);
    let words = comptime!(lines_per_row * 4);
    let tiles = comptime!(rows_per_warp / 16);
    let chunks = comptime!(steps.div_ceil(chunk_steps));
    let per_chunk = comptime!((chunk_steps * tiles * 2) as usize);
    let lane = UNIT_POS_X;
    let g = lane >> 2;
    let t = lane & 3;
    let row_a = mma_tile_row(g);
    let cube_row0 = CUBE_POS_X * rows_per_warp;

    let mut xpair = SharedMemory::<Vector<f16, Const<8>>>::new_aligned(
        comptime!((m * words) as usize),
        16usize,
    );
    let mut sums = SharedMemory::<f32>::new(comptime!((m * steps * 2) as usize));
    stage_pairs(x, s, &mut xpair, m, lines_per_row, warps);
    sync_cube();
    stage_column_sums(&xpair, &mut sums, m, lines_per_row, warps);
    sync_cube();

    let mut acc = Array::<f32>::new(comptime!((4 * tiles) as usize));
    #[unroll]
    for i in 0..comptime!(4 * tiles) {
        acc[i as usize] = 0.0f32;
    }
    let mut wds = Array::<u32>::new(comptime!(per_chunk * 4));
    let mut sc = Array::<f32>::new(per_chunk);
    let mut zp = Array::<f32>::new(per_chunk);
    let mut xb = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut q0 = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut q1 = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut ra = Array::<Vector<f16, Const<2>>>::new(4usize);
    let mut ce = Array::<Vector<f32, Const<2>>>::new(2usize);
    let mut co = Array::<Vector<f32, Const<2>>>::new(2usize);
    let mut seen = 0u32;
    // Token `g` for the B operand, tokens `2t`, `2t + 1` for the accumulators (the last one
    // repeated past `m`; those columns are dropped).
    let x_at = u32::min(g, comptime!(m - 1)) * words;
    let t0 = u32::min(2 * t, comptime!(m - 1)) * steps;
    let t1 = u32::min(2 * t + 1, comptime!(m - 1)) * steps;

    let mut c = UNIT_POS_Y;
    while c < chunks {
        // Every load of the chunk first.
        #[unroll]
        for j in 0..chunk_steps {
            let step = u32::min(c * chunk_steps + j, comptime!(steps - 1));
            let gi = (step * 128) >> group_shift;
            #[unroll]
            for tile in 0..tiles {
                #[unroll]
                for h in 0..2u32 {
                    let slot = (j * tiles + tile) * 2 + h;
                    let row = u32::min(cube_row0 + tile * 16 + h * 8 + row_a, rows - 1);
                    if loads {
                        let line = packed[(row * lines_per_row + step * 4 + t) as usize];
                        #[unroll]
                        for w in 0..4u32 {
                            wds[(slot * 4 + w) as usize] = line[w as usize];
                        }
                        sc[slot as usize] = scales[(row * groups + gi) as usize];
                        zp[slot as usize] = zeros[(row * groups + gi) as usize];
                    } else {
                        #[unroll]
                        for w in 0..4u32 {
                            wds[(slot * 4 + w) as usize] = (row + step * 4 + w) * 0x0101_0101u32;
                        }
                        sc[slot as usize] = 1.0f32;
                        zp[slot as usize] = 8.0f32;
                    }
                }
            }
        }
        #[unroll]
        for j in 0..chunk_steps {
            let step = c * chunk_steps + j;
            if step < steps {
                if products {
                    let line = step * 4 + t;
                    #[unroll]
                    for w in 0..4u32 {
                        // Registers: pairs 0 and 2 (the even B operand), then 1 and 3.
                        let xv = xpair[(x_at + w * lines_per_row + line) as usize];
                        #[unroll]
                        for r in 0..4u32 {
                            let mut pair = Vector::<f16, Const<2>>::empty();
                            pair[0] = xv[(2 * r) as usize];
                            pair[1] = xv[(2 * r + 1) as usize];
                            xb[(w * 4 + r) as usize] = pair;
                        }
                    }
                    let mut se = Vector::<f32, Const<2>>::empty();
                    let mut so = Vector::<f32, Const<2>>::empty();
                    se[0] = sums[((t0 + step) * 2) as usize];
                    se[1] = sums[((t1 + step) * 2) as usize];
                    so[0] = sums[((t0 + step) * 2 + 1) as usize];
                    so[1] = sums[((t1 + step) * 2 + 1) as usize];
                    #[unroll]
                    for tile in 0..tiles {
                        let s0 = ((j * tiles + tile) * 2) as usize;
                        let s1 = s0 + 1;
                        #[unroll]
                        for w in 0..4u32 {
                            mma_decode_word(wds[s0 * 4 + w as usize], magic, &mut q0, w * 4);
                            mma_decode_word(wds[s1 * 4 + w as usize], magic, &mut q1, w * 4);
                        }
                        #[unroll]
                        for i in 0..2usize {
                            ce[i] = Vector::<f32, Const<2>>::new(0.0f32);
                            co[i] = Vector::<f32, Const<2>>::new(0.0f32);
                        }
                        #[unroll]
                        for w in 0..4u32 {
                            mma_rows_operand(&q0, &q1, w * 4, &mut ra);
                            mma_accumulate(&ra, &xb, w * 4, &mut ce, 0u32);
                            mma_rows_operand(&q0, &q1, w * 4 + 1, &mut ra);
                            mma_accumulate(&ra, &xb, w * 4 + 2, &mut co, 0u32);
                        }
                        let a = tile * 4;
                        mma_fold_row(ce[0], co[0], se, so, zp[s0], sc[s0], &mut acc, a);
                        mma_fold_row(ce[1], co[1], se, so, zp[s1], sc[s1], &mut acc, a + 2);
                    }
                } else {
                    #[unroll]
                    for i in 0..comptime!(chunk_steps * tiles * 2 * 4) {
                        seen ^= wds[i as usize];
                    }
                    #[unroll]
                    for i in 0..per_chunk {
                        seen ^= u32::cast_from(sc[i] + zp[i]);
                    }
                }
            }
        }
        c += warps;
    }
    if !products {
        acc[0usize] += f32::cast_from(seen & 1u32);
    }
    let sizes = comptime!(TmaSizes::mma_tail(m, rows_per_warp, warps));
    store_mma_rows::<f16>(&acc, y, rows, cube_row0, sizes);
}

/// `x ⊙ s` of the whole row, paired for the `mma`'s B operand, into `xpair`: for token
/// `tk` and word `w` of line `L` (its 8 columns, as the pairs `(j, j + 4)` in the order
/// j = 0, 2, 1, 3, as `mma_pair_activations` of the TMA kernel lays out a block) at
/// `tk · 4L_row + w · L_row + L`. `x` and `s` are 4-column vectors (8 bytes); each thread
/// of the cube takes every `32 · P`-th word of the `m` rows (coalesced).
#[cube]
fn stage_pairs<N: Size>(
    x: &Tensor<Vector<f16, N>>,
    s: &Tensor<Vector<f16, N>>,
    xpair: &mut SharedMemory<Vector<f16, Const<8>>>,
    #[comptime] m: u32,
    #[comptime] lines_per_row: u32,
    #[comptime] warps: u32,
) {
    let words = comptime!(lines_per_row * 4);
    let row4 = comptime!(lines_per_row * 8);
    let mut v = UNIT_POS_Y * PLANE + UNIT_POS_X;
    while v < comptime!(m * words) {
        let tk = v / words;
        let wv = v % words;
        let c4 = wv * 2;
        let sa = s[c4 as usize];
        let sb = s[(c4 + 1) as usize];
        let xa = x[(tk * row4 + c4) as usize] * sa;
        let xb = x[(tk * row4 + c4 + 1) as usize] * sb;
        let mut p = Vector::<f16, Const<8>>::empty();
        #[unroll]
        for r in 0..4usize {
            // Register `r` holds pair `j`: 0, 2, 1, 3.
            let j = (r % 2) * 2 + r / 2;
            p[2 * r] = xa[j];
            p[2 * r + 1] = xb[j];
        }
        xpair[(tk * words + (wv & 3) * lines_per_row + (wv >> 2)) as usize] = p;
        v += comptime!(PLANE * warps);
    }
}

/// Per token and 128-column step, the f32 sums of the step's even pairs (`sums[2i]`) and
/// odd pairs (`sums[2i + 1]`) of `xpair` ([`stage_pairs`]), `i = tk · steps + step`: what
/// the TMA kernel's `mma`s with an A of ones compute at every step.
#[cube]
fn stage_column_sums(
    xpair: &SharedMemory<Vector<f16, Const<8>>>,
    sums: &mut SharedMemory<f32>,
    #[comptime] m: u32,
    #[comptime] lines_per_row: u32,
    #[comptime] warps: u32,
) {
    let steps = comptime!(lines_per_row / 4);
    let words = comptime!(lines_per_row * 4);
    let mut i = UNIT_POS_Y * PLANE + UNIT_POS_X;
    while i < comptime!(m * steps) {
        let tk = i / steps;
        let step = i % steps;
        let mut even = 0.0f32;
        let mut odd = 0.0f32;
        #[unroll]
        for w in 0..4u32 {
            #[unroll]
            for l in 0..4u32 {
                let p = xpair[(tk * words + w * lines_per_row + step * 4 + l) as usize];
                #[unroll]
                for k in 0..4usize {
                    even += f32::cast_from(p[k]);
                    odd += f32::cast_from(p[k + 4]);
                }
            }
        }
        sums[(i * 2) as usize] = even;
        sums[(i * 2 + 1) as usize] = odd;
        i += comptime!(PLANE * warps);
    }
}
