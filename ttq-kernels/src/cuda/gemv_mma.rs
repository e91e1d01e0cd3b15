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
//!
//! Measured (H200, session 17, docs/kernels.md): correct, and not faster than the TMA
//! half2 GEMV at one token (16.8-17.5 µs on 4096×14336 against 14.1), so it is opt-in.

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
/// kernel makes those sums with `mma`s of ones at every step). Per chunk every lane loads,
/// for each step and tile, line `4 · step + t` of its two tile rows (lane `4g + t`, rows
/// [`mma_tile_row`]`(g)` and that plus 8, as in `tma_block_mma`) and their scales and
/// zeros into one of two register buffers ([`load_chunk`]): the first chunk's before the
/// staging, each next chunk's before the current one's products, which decode and multiply
/// step by step as `tma_block_mma` does ([`chunk_products`]). Rows past `rows` re-read the
/// last row and are not stored; steps past the row are clamped in the loads and scaled by
/// 0 in the products.
///
/// `loads` and `products` are both true for the GEMV; `bench kernels` turns one off to
/// time the other half (`super::GemvProbe`; the output is then not the product; the loads
/// alone measured faster than the memory allows in session 17 call 2, so that probe is not
/// trustworthy in this form). Without
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
    zero: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_warp: u32,
    #[comptime] warps: u32,
    #[comptime] chunk_steps: u32,
    #[comptime] lines_per_row: u32,
    #[comptime] loads: bool,
    #[comptime] products: bool,
) {
    let sizes = comptime!(MmaSizes {
        m,
        tiles: rows_per_warp / 16,
        chunk_steps,
        lines_per_row,
        loads,
        products,
    });
    let steps = comptime!(sizes.steps());
    let words = comptime!(lines_per_row * 4);
    let chunks = comptime!(steps.div_ceil(chunk_steps));
    let per_chunk = comptime!(sizes.per_chunk() as usize);
    let lane = UNIT_POS_X;
    let g = lane >> 2;
    let t = lane & 3;
    let cube_row0 = CUBE_POS_X * rows_per_warp;
    let dims = MmaRows {
        cube_row0,
        row_a: mma_tile_row(g),
        t,
        rows,
        group_shift,
        groups,
        magic,
        // Token `g` for the B operand, tokens `2t`, `2t + 1` for the accumulators (the
        // last one repeated past `m`; those columns are dropped).
        x_at: u32::min(g, comptime!(m - 1)) * words,
        t0: u32::min(2 * t, comptime!(m - 1)) * steps,
        t1: u32::min(2 * t + 1, comptime!(m - 1)) * steps,
    };

    // Two register buffers of a chunk's codes, scales and zeros: the next chunk's loads
    // are in flight while one chunk is multiplied, and the first chunk's while the cube
    // stages the activations.
    let mut wa = Array::<u32>::new(comptime!(per_chunk * 4));
    let mut sa = Array::<f32>::new(per_chunk);
    let mut za = Array::<f32>::new(per_chunk);
    let mut wb = Array::<u32>::new(comptime!(per_chunk * 4));
    let mut sb = Array::<f32>::new(per_chunk);
    let mut zb = Array::<f32>::new(per_chunk);
    let first = UNIT_POS_Y;
    if first < chunks {
        load_chunk(
            packed, scales, zeros, &mut wa, &mut sa, &mut za, first, 0u32, &dims, sizes,
        );
    }

    let mut xpair = SharedMemory::<Vector<f16, Const<8>>>::new_aligned(
        comptime!((m * words) as usize),
        16usize,
    );
    let mut sums = SharedMemory::<f32>::new(comptime!((m * steps * 2) as usize));
    stage_pairs(x, s, &mut xpair, m, lines_per_row, warps);
    sync_cube();
    stage_column_sums(&xpair, &mut sums, m, lines_per_row, warps);
    sync_cube();

    let mut acc = Array::<f32>::new(comptime!((4 * sizes.tiles) as usize));
    #[unroll]
    for i in 0..comptime!(4 * sizes.tiles) {
        acc[i as usize] = 0.0f32;
    }
    let mut seen = 0u32;
    let mut c = first;
    // The next chunk's loads are unconditional (past the last chunk they re-read the
    // row's last step): a branch around them would make ptxas wait for every outstanding
    // load at the join.
    while c < chunks {
        load_chunk(
            packed,
            scales,
            zeros,
            &mut wb,
            &mut sb,
            &mut zb,
            c + warps,
            wa[0usize] & zero,
            &dims,
            sizes,
        );
        chunk_products(
            &xpair, &sums, &wa, &sa, &za, &mut acc, &mut seen, c, &dims, sizes,
        );
        c += warps;
        if c < chunks {
            load_chunk(
                packed,
                scales,
                zeros,
                &mut wa,
                &mut sa,
                &mut za,
                c + warps,
                wb[0usize] & zero,
                &dims,
                sizes,
            );
            chunk_products(
                &xpair, &sums, &wb, &sb, &zb, &mut acc, &mut seen, c, &dims, sizes,
            );
            c += warps;
        }
    }
    if !products {
        acc[0usize] += f32::cast_from(seen & 1u32);
    }
    let tail = comptime!(TmaSizes::mma_tail(m, rows_per_warp, warps));
    store_mma_rows::<f16>(&acc, y, rows, cube_row0, tail);
}

/// The compile-time shape of a [`gemv_mma_kernel`] variant, as its helpers take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MmaSizes {
    m: u32,
    tiles: u32,
    chunk_steps: u32,
    lines_per_row: u32,
    loads: bool,
    products: bool,
}

impl MmaSizes {
    /// 128-column steps per row.
    fn steps(&self) -> u32 {
        self.lines_per_row / 4
    }
    /// Lines (16 bytes) a lane loads per chunk: two rows per tile and step.
    fn per_chunk(&self) -> u32 {
        self.chunk_steps * self.tiles * 2
    }
}

/// The run-time values [`gemv_mma_kernel`]'s helpers share: the cube's first row, the
/// lane's first tile row (`mma_tile_row`) and line within a step, the weight's rows,
/// `log2` of the group size, groups per row, the decode's bits, and where the lane's
/// token of the B operand (`x_at`) and its accumulators' two tokens (`t0`, `t1`) start in
/// the staged pairs and column sums.
#[derive(CubeType, Clone, Copy)]
pub struct MmaRows {
    cube_row0: u32,
    row_a: u32,
    t: u32,
    rows: u32,
    group_shift: u32,
    groups: u32,
    magic: u32,
    x_at: u32,
    t0: u32,
    t1: u32,
}

/// Every load of chunk `c` for this lane into `wds`, `sc`, `zp`: per step and tile, line
/// `4 · step + t` of its two rows and their scale and zero. Steps past the row re-read the
/// last one and rows past the weight the last row (never used). `dep` is added to every
/// index: zero, but made from the other buffer's first word (`word & zero`, `zero` a
/// run-time 0), so that these loads are issued only once the other buffer's loads have
/// landed. ptxas puts all of a warp's global loads on one scoreboard, so without it the
/// first use of the current chunk would wait for the next chunk's loads too (the
/// offline SASS, session 17; session 12's rolling prefetch failed the same way). Without `sizes.loads`,
/// made-up codes instead (the products alone).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_chunk<N: Size>(
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    wds: &mut Array<u32>,
    sc: &mut Array<f32>,
    zp: &mut Array<f32>,
    c: u32,
    dep: u32,
    dims: &MmaRows,
    #[comptime] sizes: MmaSizes,
) {
    let lines_per_row = comptime!(sizes.lines_per_row);
    #[unroll]
    for j in 0..comptime!(sizes.chunk_steps) {
        let step = u32::min(
            c * comptime!(sizes.chunk_steps) + j,
            comptime!(sizes.steps() - 1),
        );
        let gi = (step * 128) >> dims.group_shift;
        #[unroll]
        for tile in 0..comptime!(sizes.tiles) {
            #[unroll]
            for h in 0..2u32 {
                let slot = (j * comptime!(sizes.tiles) + tile) * 2 + h;
                let row = u32::min(
                    dims.cube_row0 + tile * 16 + h * 8 + dims.row_a,
                    dims.rows - 1,
                );
                if comptime!(sizes.loads) {
                    let line = packed[(row * lines_per_row + step * 4 + dims.t + dep) as usize];
                    #[unroll]
                    for w in 0..4u32 {
                        wds[(slot * 4 + w) as usize] = line[w as usize];
                    }
                    let p = (row * dims.groups + gi + dep) as usize;
                    sc[slot as usize] = scales[p];
                    zp[slot as usize] = zeros[p];
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
}

/// The products of chunk `c` from its loaded codes, scales and zeros (`load_chunk`), the
/// staged pairs and column sums, into `acc`, as `tma_block_mma` makes them: per step and
/// tile, the lane's two lines decoded into the A operands, 8 `mma`s (even and odd pairs of
/// 4 words), then `mma_fold_row`. Steps past the row add nothing (scale 0). Without
/// `sizes.products`, the loaded words are XOR-ed into `seen` instead (the loads alone).
#[cube]
#[allow(clippy::too_many_arguments)]
fn chunk_products(
    xpair: &SharedMemory<Vector<f16, Const<8>>>,
    sums: &SharedMemory<f32>,
    wds: &Array<u32>,
    sc: &Array<f32>,
    zp: &Array<f32>,
    acc: &mut Array<f32>,
    seen: &mut u32,
    c: u32,
    dims: &MmaRows,
    #[comptime] sizes: MmaSizes,
) {
    let lines_per_row = comptime!(sizes.lines_per_row);
    let steps = comptime!(sizes.steps());
    let tiles = comptime!(sizes.tiles);
    let mut xb = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut q0 = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut q1 = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut ra = Array::<Vector<f16, Const<2>>>::new(4usize);
    let mut ce = Array::<Vector<f32, Const<2>>>::new(2usize);
    let mut co = Array::<Vector<f32, Const<2>>>::new(2usize);
    #[unroll]
    for j in 0..comptime!(sizes.chunk_steps) {
        // Steps past the row are made on the clamped step and scaled by 0: no branch (a
        // branch makes ptxas wait for every outstanding load after it).
        let step_at = c * comptime!(sizes.chunk_steps) + j;
        let step = u32::min(step_at, comptime!(steps - 1));
        let keep = select(step_at < steps, 1.0f32, 0.0f32);
        {
            if comptime!(sizes.products) {
                let line = step * 4 + dims.t;
                #[unroll]
                for w in 0..4u32 {
                    // Registers: pairs 0 and 2 (the even B operand), then 1 and 3.
                    let xv = xpair[(dims.x_at + w * lines_per_row + line) as usize];
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
                se[0] = sums[((dims.t0 + step) * 2) as usize];
                se[1] = sums[((dims.t1 + step) * 2) as usize];
                so[0] = sums[((dims.t0 + step) * 2 + 1) as usize];
                so[1] = sums[((dims.t1 + step) * 2 + 1) as usize];
                #[unroll]
                for tile in 0..tiles {
                    let s0 = ((j * tiles + tile) * 2) as usize;
                    let s1 = s0 + 1;
                    #[unroll]
                    for w in 0..4u32 {
                        mma_decode_word(wds[s0 * 4 + w as usize], dims.magic, &mut q0, w * 4);
                        mma_decode_word(wds[s1 * 4 + w as usize], dims.magic, &mut q1, w * 4);
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
                    mma_fold_row(ce[0], co[0], se, so, zp[s0], sc[s0] * keep, acc, a);
                    mma_fold_row(ce[1], co[1], se, so, zp[s1], sc[s1] * keep, acc, a + 2);
                }
            } else {
                #[unroll]
                for i in 0..comptime!(sizes.per_chunk() * 4) {
                    *seen ^= wds[i as usize];
                }
                #[unroll]
                for i in 0..comptime!(sizes.per_chunk()) {
                    *seen ^= u32::cast_from(sc[i as usize] + zp[i as usize]);
                }
            }
        }
    }
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
    let total = comptime!(m * words);
    let threads = comptime!(PLANE * warps);
    // Batches of up to 8 words per thread, unrolled so that their loads are all in flight
    // (a run-time loop waited for each word's loads in turn: the cube's start).
    let batch = comptime!(total.div_ceil(threads).min(8));
    let mut v0 = UNIT_POS_Y * PLANE + UNIT_POS_X;
    while v0 < total {
        #[unroll]
        for i in 0..batch {
            let v = v0 + i * threads;
            // Clamped loads, guarded stores.
            let vc = u32::min(v, comptime!(total - 1));
            let tk = vc / words;
            let wv = vc % words;
            let c4 = wv * 2;
            let sa = s[c4 as usize];
            let sb = s[(c4 + 1) as usize];
            let xa = x[(tk * row4 + c4) as usize] * sa;
            let xb = x[(tk * row4 + c4 + 1) as usize] * sb;
            if v < total {
                let mut p = Vector::<f16, Const<8>>::empty();
                #[unroll]
                for r in 0..4usize {
                    // Register `r` holds pair `j`: 0, 2, 1, 3.
                    let j = (r % 2) * 2 + r / 2;
                    p[2 * r] = xa[j];
                    p[2 * r + 1] = xb[j];
                }
                xpair[(tk * words + (wv & 3) * lines_per_row + (wv >> 2)) as usize] = p;
            }
        }
        v0 += comptime!(threads * batch);
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
