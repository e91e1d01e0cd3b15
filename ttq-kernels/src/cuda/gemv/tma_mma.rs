//! The tensor-core products of the TMA GEMV (`mma.sync` m16n8k16, f16 in, f32
//! accumulation): the weight is the A operand (16 rows × 16 columns per `mma`), the tokens
//! the B operand's 8 columns, so the products cost about the same at 2 to 8 tokens as at
//! one. Codes enter raw as `1024 + c` / `1024 + 16 · c` f16 pairs; two `mma`s with an A of
//! ones per step sum the activations so that [`mma_fold_row`] removes the 1024s, the 16s
//! and the zero point once per tile and step.

use burn::tensor::f16;
use cubecl::prelude::*;

use super::tma_copies::{swizzled_128, TmaBlock, TmaSizes, TmaSlot};
use crate::cuda::PLANE;

/// The first of the two rows of a 16-row tile that lane group `g` (lanes `4g` to `4g + 3`)
/// holds in [`tma_block_mma`]'s A fragments (the other is 8 rows on): `4 · (g mod 2) + g / 2`.
/// The two lane groups of each 8-lane phase of a 16-byte shared-memory read then take rows
/// that differ in bit 2, which the codes' 128-byte swizzle turns into distinct banks.
#[cube]
pub(super) fn mma_tile_row(g: u32) -> u32 {
    ((g & 1) << 2) | (g >> 1)
}

/// The codes `(j, j + 4)` of `word` as four f16 pairs into `q[at + j]`, j = 0..3, by one
/// mask-and-OR each into the mantissas of two f16 1024.0: the even pairs (j = 0, 2) hold
/// `1024 + c`, the odd ones `1024 + 16 · c`, exactly. [`tma_block_mma`] removes the 1024s,
/// the 16s and the zero point after the products, once per 16-row tile and step, instead
/// of with one more instruction per pair.
#[cube]
pub(super) fn mma_decode_word(
    word: u32,
    magic: u32,
    q: &mut Array<Vector<f16, Const<2>>>,
    #[comptime] at: u32,
) {
    let high = word >> 8;
    q[at as usize] = Vector::<f16, Const<2>>::reinterpret((word & 0x000F_000Fu32) | magic);
    q[(at + 1) as usize] = Vector::<f16, Const<2>>::reinterpret((word & 0x00F0_00F0u32) | magic);
    q[(at + 2) as usize] = Vector::<f16, Const<2>>::reinterpret((high & 0x000F_000Fu32) | magic);
    q[(at + 3) as usize] = Vector::<f16, Const<2>>::reinterpret((high & 0x00F0_00F0u32) | magic);
}

/// `x ⊙ s` of block `blk`, paired for [`tma_block_mma`]'s B fragments, into the plane's
/// part of `xpair`: for each token, the 16-byte vector of word `w` of line `L` (its 8
/// columns, as the pairs `(j, j + 4)` in the order j = 0, 2, 1, 3, so that the even pairs
/// and the odd pairs each fill two neighbouring registers, as an `mma`'s B operand must) at
/// `w · 32U + L`, so that the four lanes of a lane group, which read lines `L` to `L + 3`,
/// hit distinct banks. `x` (`[m, cols]`) and `s` are read from global memory (L2-resident:
/// the whole `x` is a few KiB), as 8-byte vectors `xg`, `sg` (`row4` of them per row of
/// `x`), lane `l` the word vectors `32 · i + l` of the block (coalesced); columns past the
/// row are not read (their products are never made). Each plane pairs its block once
/// instead of every lane group pairing its own lines at every step, as all eight do at one
/// token; and with no tensor copy of the activations per plane, a cube needs about 2 KiB of
/// shared memory per plane and slot less.
#[cube]
pub(super) fn mma_pair_activations<N: Size>(
    xg: &Tensor<Vector<f16, N>>,
    sg: &Tensor<Vector<f16, N>>,
    xpair: &mut SharedMemory<Vector<f16, Const<8>>>,
    blk: u32,
    row4: u32,
    #[comptime] sizes: TmaSizes,
) {
    let lane = UNIT_POS_X;
    let per_token = comptime!(sizes.lines_per_lane * 4 * PLANE);
    let lines = comptime!(sizes.lines_per_lane * PLANE);
    let base = UNIT_POS_Y * comptime!(sizes.x_slot());
    #[unroll]
    for i in 0..comptime!(sizes.lines_per_lane * 4) {
        let v = i * PLANE + lane;
        let at = (v & 3) * lines + (v >> 2);
        let c4 = (blk * per_token + v) * 2;
        if c4 < row4 {
            let sa = sg[c4 as usize];
            let sb = sg[(c4 + 1) as usize];
            #[unroll]
            for tk in 0..comptime!(sizes.m) {
                let xa = xg[(tk * row4 + c4) as usize] * sa;
                let xb = xg[(tk * row4 + c4 + 1) as usize] * sb;
                let mut p = Vector::<f16, Const<8>>::empty();
                #[unroll]
                for r in 0..4usize {
                    // Register `r` holds pair `j`: 0, 2, 1, 3.
                    let j = (r % 2) * 2 + r / 2;
                    p[2 * r] = f16::cast_from(xa[j]);
                    p[2 * r + 1] = f16::cast_from(xb[j]);
                }
                xpair[(base + tk * per_token + at) as usize] = p;
            }
        }
    }
}

/// Adds `scale · (ce + co / 16 − (1024 + z) · se − (64 + z) · so)` for one row and the two
/// tokens of a lane into `acc[at]`, `acc[at + 1]`: [`tma_block_mma`]'s even-pair products
/// `ce` (codes as `1024 + c`) and odd-pair products `co` (as `1024 + 16 · c`) of a step,
/// less the 1024s and the zero point times the step's column sums `se`, `so` of the same
/// pairs' activations.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn mma_fold_row(
    ce: Vector<f32, Const<2>>,
    co: Vector<f32, Const<2>>,
    se: Vector<f32, Const<2>>,
    so: Vector<f32, Const<2>>,
    z: f32,
    scale: f32,
    acc: &mut Array<f32>,
    #[comptime] at: u32,
) {
    let even = -1024.0f32 - z;
    let odd = -64.0f32 - z;
    #[unroll]
    for c in 0..2usize {
        let v = ce[c] + co[c] * 0.0625f32 + even * se[c] + odd * so[c];
        acc[at as usize + c] += scale * v;
    }
}

/// [`gemv_tma_kernel`]'s products on tensor cores (`mma.sync` m16n8k16, f16 in, f32
/// accumulation) for block `blk` of the plane's rows, read from `slot` (codes, scales,
/// zeros) and `xpair` (the block's `x ⊙ s`, paired by [`mma_pair_activations`]), into
/// `acc`.
///
/// The weight is the A operand (16 rows × 16 columns of the reduction per `mma`), the
/// activations the B operand (its 8 columns are 8 tokens; `m ≤ 16` as one or two blocks of
/// 8, each A operand serving both): one `mma` takes 256 weights. A step takes 128 columns
/// (one group, or part of one) of every 16-row tile: lane `4g + t` loads line
/// `4 · step + t` of its tile rows [`mma_tile_row`]`(g)` and that plus 8 (16 bytes, 32
/// codes each) and decodes each word into four pairs ([`mma_decode_word`]: `1024 + c` for
/// the even pairs, `1024 + 16 · c` for the odd ones), fed to the fragments in the order
/// they come out: the reduction's order inside an `mma` is free, so long as the B fragment
/// holds the activations of the same columns, which lane `4g + t` reads for token `g` of
/// each block (lanes past the last token repeat it; their output columns are dropped). A
/// word makes two `mma`s, one of its even pairs and one of its odd pairs, accumulated in
/// two chains; two more `mma`s per word with an A of ones sum the same activations (shared
/// by all tiles). [`mma_fold_row`] then removes the 1024s, the 16s and the zero point and
/// adds the results times the rows' group scales into `acc`. The codes and products are
/// exact, so besides `x ⊙ s` in f16 (as in the half2 GEMV) the only rounding is the f32
/// accumulation, whose terms are up to 1024 times the result's.
///
/// The codes lie in the slot as `[4 · U chunks][R rows][8 lines]`, 128-byte swizzled (the
/// tensor copy's `[words / 32, rows, 32]` view, see `gemv_tma`), so that the 8 lanes of a
/// read phase, which take the same line of two rows, hit distinct banks.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn tma_block_mma<N: Size>(
    xpair: &SharedMemory<Vector<f16, Const<8>>>,
    wsm: &SharedMemory<Vector<u32, N>>,
    ssm: &SharedMemory<f32>,
    zsm: &SharedMemory<f32>,
    acc: &mut Array<f32>,
    slot: &TmaSlot,
    blk: u32,
    dims: &TmaBlock,
    #[comptime] sizes: TmaSizes,
) {
    let lane = UNIT_POS_X;
    let g = lane >> 2;
    let t = lane & 3;
    let rpp = comptime!(sizes.rows_per_plane);
    let tiles = comptime!(sizes.rows_per_plane / 16);
    let nb = comptime!(sizes.token_blocks());
    let gpb = comptime!(sizes.groups_per_block);
    let block_lines = comptime!(PLANE * sizes.lines_per_lane);
    let steps = comptime!(sizes.lines_per_lane * 8);
    let row_a = mma_tile_row(g);
    let mut ones = Array::<Vector<f16, Const<2>>>::new(4usize);
    #[unroll]
    for i in 0..4usize {
        ones[i] = Vector::<f16, Const<2>>::new(f16::cast_from(1.0f32));
    }
    // Per block of 8 tokens: 16 B registers, and two f32 pairs per accumulator.
    let mut xb = Array::<Vector<f16, Const<2>>>::new(comptime!((16 * nb) as usize));
    let mut q0 = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut q1 = Array::<Vector<f16, Const<2>>>::new(16usize);
    let mut ra = Array::<Vector<f16, Const<2>>>::new(4usize);
    let mut se = Array::<Vector<f32, Const<2>>>::new(comptime!((2 * nb) as usize));
    let mut so = Array::<Vector<f32, Const<2>>>::new(comptime!((2 * nb) as usize));
    let mut ce = Array::<Vector<f32, Const<2>>>::new(comptime!((2 * nb) as usize));
    let mut co = Array::<Vector<f32, Const<2>>>::new(comptime!((2 * nb) as usize));
    // Unrolled: the steps' shared-memory offsets become constants (a run-time loop spent
    // about a quarter of its instructions on index arithmetic, offline SASS).
    #[unroll]
    for step in 0..steps {
        let line = step * 4 + t;
        if blk * block_lines + step * 4 < dims.lines_per_row {
            let gi = (step * 128) >> dims.group_shift;
            #[unroll]
            for tb in 0..nb {
                // Token `8 · tb + g` (the last one repeated past `m`).
                let x_at = UNIT_POS_Y * comptime!(sizes.x_slot())
                    + u32::min(tb * 8 + g, comptime!(sizes.m - 1)) * comptime!(block_lines * 4);
                #[unroll]
                for w in 0..4u32 {
                    // Registers: pairs 0 and 2 (the even B operand), then 1 and 3 (the odd).
                    let xv = xpair[(x_at + w * block_lines + line) as usize];
                    #[unroll]
                    for r in 0..4u32 {
                        let mut pair = Vector::<f16, Const<2>>::empty();
                        pair[0] = xv[(2 * r) as usize];
                        pair[1] = xv[(2 * r + 1) as usize];
                        xb[(tb * 16 + w * 4 + r) as usize] = pair;
                    }
                }
            }
            #[unroll]
            for i in 0..comptime!((2 * nb) as usize) {
                se[i] = Vector::<f32, Const<2>>::new(0.0f32);
                so[i] = Vector::<f32, Const<2>>::new(0.0f32);
            }
            #[unroll]
            for tb in 0..nb {
                #[unroll]
                for w in 0..4u32 {
                    mma_accumulate(&ones, &xb, tb * 16 + w * 4, &mut se, tb * 2);
                    mma_accumulate(&ones, &xb, tb * 16 + w * 4 + 2, &mut so, tb * 2);
                }
            }
            #[unroll]
            for tile in 0..tiles {
                let r0 = tile * 16 + row_a;
                let r1 = r0 + 8;
                let p0 = (slot.g + r0 * gpb + gi) as usize;
                let p1 = (slot.g + r1 * gpb + gi) as usize;
                let chunk = (line >> 3) * rpp;
                let l0 = wsm[(slot.w + swizzled_128((chunk + r0) * 8 + (line & 7))) as usize];
                let l1 = wsm[(slot.w + swizzled_128((chunk + r1) * 8 + (line & 7))) as usize];
                #[unroll]
                for w in 0..4u32 {
                    mma_decode_word(l0[w as usize], dims.magic, &mut q0, w * 4);
                    mma_decode_word(l1[w as usize], dims.magic, &mut q1, w * 4);
                }
                #[unroll]
                for i in 0..comptime!((2 * nb) as usize) {
                    ce[i] = Vector::<f32, Const<2>>::new(0.0f32);
                    co[i] = Vector::<f32, Const<2>>::new(0.0f32);
                }
                #[unroll]
                for w in 0..4u32 {
                    // Even pairs (0, 2) of both rows, then odd pairs (1, 3), each A operand
                    // serving every block of tokens.
                    mma_rows_operand(&q0, &q1, w * 4, &mut ra);
                    #[unroll]
                    for tb in 0..nb {
                        mma_accumulate(&ra, &xb, tb * 16 + w * 4, &mut ce, tb * 2);
                    }
                    mma_rows_operand(&q0, &q1, w * 4 + 1, &mut ra);
                    #[unroll]
                    for tb in 0..nb {
                        mma_accumulate(&ra, &xb, tb * 16 + w * 4 + 2, &mut co, tb * 2);
                    }
                }
                let (z0, s0, z1, s1) = (zsm[p0], ssm[p0], zsm[p1], ssm[p1]);
                #[unroll]
                for tb in 0..nb {
                    let c = (tb * 2) as usize;
                    let a = (tb * tiles + tile) * 4;
                    mma_fold_row(ce[c], co[c], se[c], so[c], z0, s0, acc, a);
                    mma_fold_row(
                        ce[c + 1],
                        co[c + 1],
                        se[c + 1],
                        so[c + 1],
                        z1,
                        s1,
                        acc,
                        a + 2,
                    );
                }
            }
        }
    }
}

/// The A operand of a tile's two rows from their decoded pairs `q0`, `q1`
/// ([`mma_decode_word`]): pair `at` (reduction columns of `k` 0-7) and pair `at + 2` (8-15)
/// of the first row, each followed by the second row's, as `mma.sync` orders them.
#[cube]
pub(super) fn mma_rows_operand(
    q0: &Array<Vector<f16, Const<2>>>,
    q1: &Array<Vector<f16, Const<2>>>,
    #[comptime] at: u32,
    a: &mut Array<Vector<f16, Const<2>>>,
) {
    let at = at as usize;
    a[0] = q0[at];
    a[1] = q1[at];
    a[2] = q0[at + 2];
    a[3] = q1[at + 2];
}

/// `c += a · b` by one `mma.sync` m16n8k16 (f16 in, f32 accumulation), with the A operand
/// `a`, the B operand `xb[b_at]`, `xb[b_at + 1]` (two f16 pairs of [`tma_block_mma`]'s
/// activations) and the accumulator `c[c_at]`, `c[c_at + 1]`, updated in place.
#[cube]
pub(super) fn mma_accumulate(
    a: &Array<Vector<f16, Const<2>>>,
    xb: &Array<Vector<f16, Const<2>>>,
    #[comptime] b_at: u32,
    c: &mut Array<Vector<f32, Const<2>>>,
    #[comptime] c_at: u32,
) {
    let def = cmma::MmaDefinition::<f16, f16, f32>::new(16usize, 8usize, 16usize);
    let mut b = Array::<Vector<f16, Const<2>>>::new(2usize);
    b[0] = xb[b_at as usize];
    b[1] = xb[(b_at + 1) as usize];
    let mut acc = Array::<Vector<f32, Const<2>>>::new(2usize);
    acc[0] = c[c_at as usize];
    acc[1] = c[(c_at + 1) as usize];
    let d = def.execute(a, &b, &acc);
    c[c_at as usize] = d[0];
    c[(c_at + 1) as usize] = d[1];
}

/// [`gemv_tma_kernel`]'s tail with tensor-core products: each lane's four results per
/// 16-row tile and block of 8 tokens ([`tma_block_mma`]) go to shared memory as
/// `[plane][R rows][8 · blocks tokens]`, then
/// every output of the cube (`P / K` row groups of `R` rows from `cube_row0`, `m` tokens)
/// is the sum over its row group's `K` planes, written by one thread. Rows past `rows` are
/// not written. Every thread of the cube must call it (it holds a barrier).
#[cube]
pub(super) fn store_mma_rows<F: Float>(
    acc: &Array<f32>,
    y: &mut Tensor<F>,
    rows: u32,
    cube_row0: u32,
    #[comptime] sizes: TmaSizes,
) {
    let rpp = comptime!(sizes.rows_per_plane);
    let m = comptime!(sizes.m);
    let planes = comptime!(sizes.planes);
    let row_groups = comptime!(sizes.row_groups());
    let tiles = comptime!(sizes.rows_per_plane / 16);
    let cols = comptime!(8 * sizes.token_blocks());
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let t = lane & 3;
    let row_a = mma_tile_row(lane >> 2);
    let mut partial = SharedMemory::<f32>::new(comptime!((planes * rpp * cols) as usize));
    #[unroll]
    for tb in 0..comptime!(sizes.token_blocks()) {
        #[unroll]
        for tile in 0..tiles {
            #[unroll]
            for half in 0..2u32 {
                let r = tile * 16 + half * 8 + row_a;
                #[unroll]
                for c in 0..2u32 {
                    partial[((plane * rpp + r) * cols + tb * 8 + 2 * t + c) as usize] =
                        acc[((tb * tiles + tile) * 4 + half * 2 + c) as usize];
                }
            }
        }
    }
    sync_cube();
    let mut o = plane * PLANE + lane;
    while o < comptime!(row_groups * rpp * m) {
        let rg = o / comptime!(rpp * m);
        let i = o % comptime!(rpp * m);
        let r = i / m;
        let tk = i % m;
        let mut sum = 0.0f32;
        #[unroll]
        for kp in 0..comptime!(sizes.k_split) {
            sum += partial[(((kp * row_groups + rg) * rpp + r) * cols + tk) as usize];
        }
        let row = cube_row0 + rg * rpp + r;
        if row < rows {
            y[tk as usize * rows as usize + row as usize] = F::cast_from(sum);
        }
        o += comptime!(PLANE * planes);
    }
}
