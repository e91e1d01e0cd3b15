//! The TMA GEMVs ([`gemv_tma_kernel`]): codes, scales and zeros (and, with half2 products,
//! the activations and input scale) brought into shared memory by tensor copies (TMA,
//! sm_90 and later) through a pipeline of slots, with the products in half2 pairs
//! ([`tma_block_products`], opt-in) or on tensor cores (`super::tma_mma`, the default at
//! 2 to 16 tokens). The copies' bookkeeping is in `super::tma_copies`.

use burn::tensor::{f16, Shape, Tensor as BurnTensor};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime, FloatElement};
use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantizedWeight};

use super::half2::{h2_biases, h2_fold_parts, h2_word_products};
use super::tma_copies::{
    swizzled_128, tma_issue_slot, tma_slot, tma_wait_slot, TmaBarriers, TmaBlock, TmaSizes, TmaSlot,
};
use super::tma_mma::{mma_pair_activations, store_mma_rows, tma_block_mma};
use super::{line_operands, GemvCall, GemvOperands, LINE_VECTOR, LINE_WORDS};
use crate::cuda::operands::{aligned_16, weight_prims, wrap_float, Cb, WeightDims};
use crate::cuda::PLANE;
use crate::gemv_config::TmaTile;

/// The TMA half2 GEMV (f16 activations, 4-bit codes, the vector layout with groups of 32 to
/// `256 · U` columns and a multiple of 4 groups per row; `GemvKernel::Tma`):
/// [`gemv_h2_kernel`]'s decode and products, with the codes, scales, zeros, activations and
/// input scale brought into shared memory by the Tensor Memory Accelerator instead of
/// loaded into registers.
///
/// A row is cut into blocks of `32 · U` lines (`1024 · U` columns). For each block, lane 0
/// of a plane issues tensor copies (`cp.async.bulk.tensor`) into one of the plane's `S`
/// slots (`slots`, 2 to 4): the `R × 128 · U` words of the codes, the `R × 1024 · U / group`
/// scales and zero points, and the block's activations and input scale (`x` as
/// `[m, cols / 64, 64]`, `s` as `[cols / 64, 64]`: rows of 128 bytes, 128-byte swizzled so
/// that the lanes' 16-byte reads of vector `4 · l + w` hit distinct banks; see
/// [`swizzled_128`]). The cube's `P` planes form `P / K` row groups of `R` rows each
/// (`K = k_split`, which divides `P`): plane `p` takes rows `R · (p mod P / K)` onwards of
/// the cube's `R · P / K`, and its row's blocks `p div (P / K)`, then every `K`-th one
/// (split-K). One copy of a block's `x` and `s`, issued by the plane of row group 0 that
/// takes the block, serves every row group. `K = P` makes a cube of `R` rows, each plane
/// with its own copies of its blocks' activations: at one token and `R = 8` as many bytes
/// as of codes, 4 per column each); `K = 1` lets `P` planes of separate rows share every
/// copy. With more than one row group a slot is re-armed only after `sync_cube`, since
/// every row group reads its activations.
///
/// Reading `x` and `s` from global memory in the products, as [`gemv_h2_kernel`] does, left
/// them waiting on those loads (48% of the stall samples), and pairing
/// `x ⊙ s` in a kernel of its own cost a launch per call. The `S` slots keep `S − 1` blocks'
/// copies in flight while one is decoded, without holding registers (the register double
/// buffer of [`gemv_h2_kernel`] took 168 registers) and without one copy
/// instruction per lane and line (as a `cp.async` pipeline would issue). One cube-wide
/// mbarrier per slot expects one arrival per plane (its lane 0, with the bytes it asked
/// for): all planes run the same number of blocks, so every phase gets all of its arrivals,
/// and no plane gets more than one phase ahead of another (it re-arms a slot only after
/// waiting on it). Mbarriers cannot be indexed at run time, so the slot's barrier is picked
/// by [`tma_wait_slot`] and [`tma_issue_slot`] from four named ones (the unused ones cost
/// an initialisation).
///
/// Blocks and rows past the weight's edge are zero-filled by the copies (scale 0, so they
/// add nothing); their activations are never read (lines past the row are skipped) and
/// rows past `rows` are not stored.
///
/// With `mma` (`GemvKernel::TmaMma`) the products run on tensor cores instead
/// ([`tma_block_mma`]): `R` is 16 or 32, the codes are copied through a
/// `[words / 32, rows, 32]` view with the 128-byte swizzle, no activations are copied
/// (each plane reads its block's `x` and `s` from global memory, `xg` and `sg` with
/// `x_row_vectors` 4-column vectors per row, and pairs them once into shared memory,
/// [`mma_pair_activations`]), and the tail is [`store_mma_rows`].

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_tma_kernel<N: Size>(
    x: &TensorMap<f16, Tiled>,
    s: &TensorMap<f16, Tiled>,
    packed: &TensorMap<u32, Tiled>,
    scales: &TensorMap<f32, Tiled>,
    zeros: &TensorMap<f32, Tiled>,
    xg: &Tensor<Vector<f16, N>>,
    sg: &Tensor<Vector<f16, N>>,
    y: &mut Tensor<f16>,
    rows: u32,
    group_shift: u32,
    lines_per_row: u32,
    magic: u32,
    x_row_vectors: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] lines_per_lane: u32,
    #[comptime] planes: u32,
    #[comptime] groups_per_block: u32,
    #[comptime] slots: u32,
    #[comptime] k_split: u32,
    #[comptime] mma: bool,
) {
    let sizes = comptime!(TmaSizes {
        m,
        rows_per_plane,
        lines_per_lane,
        planes,
        groups_per_block,
        slots,
        k_split,
        mma,
    });
    let nacc = comptime!(sizes.accumulators() as usize);
    // The plane's row group and its place in the split of the row's blocks.
    let row_groups = comptime!(sizes.row_groups());
    let group = UNIT_POS_Y % row_groups;
    let kp = UNIT_POS_Y / row_groups;
    let cube_row0 = CUBE_POS_X * comptime!(rows_per_plane * sizes.row_groups());
    let row0 = cube_row0 + group * rows_per_plane;
    let block_lines = comptime!(PLANE * lines_per_lane);
    let blocks = lines_per_row.div_ceil(block_lines * k_split);
    let per_slot = comptime!(slots * planes);
    // 1 KiB-aligned: the tensor-core variant's codes are 128-byte swizzled.
    let mut wsm = SharedMemory::<Vector<u32, N>>::new_aligned(
        comptime!((per_slot * sizes.w_slot()) as usize),
        1024usize,
    );
    let mut ssm =
        SharedMemory::<f32>::new_aligned(comptime!((per_slot * sizes.g_slot()) as usize), 128usize);
    let mut zsm =
        SharedMemory::<f32>::new_aligned(comptime!((per_slot * sizes.g_slot()) as usize), 128usize);
    // A block's activations (`m` tokens) and input scale, 128-byte swizzled by the copies.
    // (None with tensor-core products, which read `x` and `s` from global memory.)
    let xs_slots = comptime!(slots * sizes.xs_copies());
    let mut xsm = SharedMemory::<Vector<f16, Const<8>>>::new_aligned(
        comptime!((xs_slots * sizes.x_slot()).max(1) as usize),
        1024usize,
    );
    let mut isc = SharedMemory::<Vector<f16, Const<8>>>::new_aligned(
        comptime!((xs_slots * sizes.s_slot()).max(1) as usize),
        1024usize,
    );
    // Tensor-core products: each plane's `x ⊙ s` of its block, paired for the B fragments.
    let mut xpair = SharedMemory::<Vector<f16, Const<8>>>::new_aligned(
        comptime!(if mma {
            (planes * sizes.x_slot()) as usize
        } else {
            1usize
        }),
        16usize,
    );
    let bars = TmaBarriers {
        b0: Barrier::shared(planes, UNIT_POS == 0),
        b1: Barrier::shared(planes, UNIT_POS == 0),
        b2: Barrier::shared(planes, UNIT_POS == 0),
        b3: Barrier::shared(planes, UNIT_POS == 0),
    };
    sync_async_proxy_shared();
    sync_cube();

    let mut acc = Array::<f32>::new(nacc);
    #[unroll]
    for i in 0..nacc {
        acc[i] = 0.0f32;
    }
    let mut pairs = Array::<Vector<f16, Const<2>>>::new(comptime!((m * 4) as usize));
    let mut part = Array::<Vector<f16, Const<2>>>::new(nacc);
    let mut wv = Array::<Vector<f16, Const<2>>>::new(4usize);
    let mut bias_even = Array::<Vector<f16, Const<2>>>::new(comptime!(rows_per_plane as usize));
    let mut bias_odd = Array::<Vector<f16, Const<2>>>::new(comptime!(rows_per_plane as usize));

    let dims = TmaBlock {
        row0,
        blocks,
        lines_per_row,
        group_shift,
        magic,
    };
    #[unroll]
    for sl in 0..slots {
        let slot = tma_slot(sl, sizes);
        tma_issue_slot(
            &bars, sl, x, s, packed, scales, zeros, &mut xsm, &mut isc, &mut wsm, &mut ssm,
            &mut zsm, &slot, sl, &dims, sizes,
        );
    }
    let mut k = 0u32;
    let mut sl = 0u32;
    let mut phase = 0u32;
    while k < blocks {
        let slot = tma_slot(sl, sizes);
        if mma {
            // Before the wait: the activations' loads overlap the codes' copies.
            mma_pair_activations(xg, sg, &mut xpair, k * k_split + kp, x_row_vectors, sizes);
        }
        tma_wait_slot(&bars, sl, phase);
        if mma {
            let blk = k * k_split + kp;
            sync_plane();
            tma_block_mma(&xpair, &wsm, &ssm, &zsm, &mut acc, &slot, blk, &dims, sizes);
            // The next block's pairing overwrites `xpair`.
            sync_plane();
        }
        if !mma {
            let blk = k * k_split + kp;
            tma_block_products(
                &xsm,
                &isc,
                &wsm,
                &ssm,
                &zsm,
                &mut acc,
                &mut pairs,
                &mut part,
                &mut wv,
                &mut bias_even,
                &mut bias_odd,
                &slot,
                blk,
                &dims,
                m,
                rows_per_plane,
                lines_per_lane,
                groups_per_block,
            );
        }
        // Every lane that reads the slot is done with it before it is refilled: the
        // plane's own (its codes), or the whole cube's (shared activations).
        if comptime!(sizes.row_groups() > 1) {
            sync_cube();
        } else {
            sync_plane();
        }
        tma_issue_slot(
            &bars,
            sl,
            x,
            s,
            packed,
            scales,
            zeros,
            &mut xsm,
            &mut isc,
            &mut wsm,
            &mut ssm,
            &mut zsm,
            &slot,
            k + slots,
            &dims,
            sizes,
        );
        k += 1;
        sl += 1;
        if sl == slots {
            sl = 0;
            phase ^= 1;
        }
    }
    if mma {
        store_mma_rows::<f16>(&acc, y, rows, cube_row0, sizes);
    } else {
        store_grouped_rows::<f16>(&acc, y, rows, cube_row0, m, rows_per_plane, planes, k_split);
    }
}

/// [`gemv_tma_kernel`]'s products for block `blk` of the plane's rows, read from `slot`
/// (see [`gemv_h2_kernel`] for the decode), accumulated into `acc`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn tma_block_products<N: Size>(
    xsm: &SharedMemory<Vector<f16, Const<8>>>,
    isc: &SharedMemory<Vector<f16, Const<8>>>,
    wsm: &SharedMemory<Vector<u32, N>>,
    ssm: &SharedMemory<f32>,
    zsm: &SharedMemory<f32>,
    acc: &mut Array<f32>,
    pairs: &mut Array<Vector<f16, Const<2>>>,
    part: &mut Array<Vector<f16, Const<2>>>,
    wv: &mut Array<Vector<f16, Const<2>>>,
    bias_even: &mut Array<Vector<f16, Const<2>>>,
    bias_odd: &mut Array<Vector<f16, Const<2>>>,
    slot: &TmaSlot,
    blk: u32,
    dims: &TmaBlock,
    #[comptime] m: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] lines_per_lane: u32,
    #[comptime] groups_per_block: u32,
) {
    let lane = UNIT_POS_X;
    let nacc = comptime!((m * rows_per_plane) as usize);
    let block_lines = comptime!(PLANE * lines_per_lane);
    let k16 = Vector::<f16, Const<2>>::new(f16::cast_from(0.0625f32));
    let k256 = Vector::<f16, Const<2>>::new(f16::cast_from(0.00390625f32));
    let (w_at, g_at) = (slot.w, slot.g);
    // A run-time loop over the lane's lines, as in the half2 GEMV (unrolled, the
    // compiler hoists every line's shared-memory loads to the top).
    for u in 0..lines_per_lane {
        let l = u * PLANE + lane;
        let li = blk * block_lines + l;
        if li < dims.lines_per_row {
            // The line's group within the block (blocks hold whole groups).
            let gi = (l * 32) >> dims.group_shift;
            #[unroll]
            for r in 0..rows_per_plane {
                let (be, bo) = h2_biases(zsm[(g_at + r * groups_per_block + gi) as usize]);
                bias_even[r as usize] = be;
                bias_odd[r as usize] = bo;
            }
            #[unroll]
            for i in 0..nacc {
                part[i] = Vector::<f16, Const<2>>::new(f16::cast_from(0.0f32));
            }
            #[unroll]
            for w in 0..4u32 {
                // Vector `4 · l + w` of the block holds the word's 8 columns: `j` and
                // `j + 4` pair up as the decode pairs the codes.
                let v = l * 4 + w;
                let sv = isc[(slot.s + swizzled_128(v)) as usize];
                #[unroll]
                for t in 0..m {
                    let xv = xsm[(slot.x + swizzled_128(t * block_lines * 4 + v)) as usize] * sv;
                    #[unroll]
                    for j in 0..4u32 {
                        let mut pair = Vector::<f16, Const<2>>::empty();
                        pair[0] = xv[j as usize];
                        pair[1] = xv[(j + 4) as usize];
                        pairs[(t * 4 + j) as usize] = pair;
                    }
                }
                #[unroll]
                for r in 0..rows_per_plane {
                    let line = wsm[(w_at + r * block_lines + l) as usize];
                    h2_word_products(
                        line[w as usize],
                        bias_even[r as usize],
                        bias_odd[r as usize],
                        k16,
                        k256,
                        dims.magic,
                        pairs,
                        wv,
                        part,
                        r,
                        m,
                        rows_per_plane,
                    );
                }
            }
            #[unroll]
            for r in 0..rows_per_plane {
                h2_fold_parts(
                    part,
                    ssm[(g_at + r * groups_per_block + gi) as usize],
                    acc,
                    r,
                    m,
                    rows_per_plane,
                );
            }
        }
    }
}

/// [`gemv_tma_kernel`]'s tail: each thread's `m · R` partial dot products (`acc[t · R + r]`,
/// token `t`, row `r` of its plane's rows) are summed over the plane's lanes with
/// `plane_sum`, then over the `K` planes of each row group in shared memory, and every
/// output of the cube (`P / K` row groups of `R` rows from `cube_row0`) is written by one
/// thread. With one row group this is [`store_gemv_rows`]. Rows past `rows` are not
/// written. Every thread of the cube must call it (it holds a barrier).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn store_grouped_rows<F: Float>(
    acc: &Array<f32>,
    y: &mut Tensor<F>,
    rows: u32,
    cube_row0: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] planes: u32,
    #[comptime] k_split: u32,
) {
    let nacc = comptime!(m * rows_per_plane);
    let row_groups = comptime!(planes / k_split);
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let mut partial = SharedMemory::<f32>::new(comptime!((planes * nacc) as usize));
    #[unroll]
    for i in 0..nacc {
        let v = plane_sum(acc[i as usize]);
        if lane == 0 {
            partial[(plane * nacc + i) as usize] = v;
        }
    }
    sync_cube();
    let mut o = plane * PLANE + lane;
    while o < comptime!(row_groups * nacc) {
        let g = o / nacc;
        let i = o % nacc;
        let mut sum = 0.0f32;
        #[unroll]
        for kp in 0..k_split {
            sum += partial[((kp * row_groups + g) * nacc + i) as usize];
        }
        let t = i / rows_per_plane;
        let row = cube_row0 + g * rows_per_plane + i % rows_per_plane;
        if row < rows {
            y[t as usize * rows as usize + row as usize] = F::cast_from(sum);
        }
        o += comptime!(PLANE * planes);
    }
}

/// Most shared memory one cube may take (of an H100's or H200's 227 KiB per block).
const TMA_MAX_SMEM: usize = 200 << 10;

/// Shared memory of one [`gemv_tma_kernel`] cube: `S` slots, each with every plane's codes
/// (`R · U · 512` bytes), scales and zeros (each padded to 128 bytes), and `K` copies of a
/// block's activations (`tokens · U · 2048` bytes) and input scale (`U · 2048`); with
/// tensor-core products each plane's paired `x ⊙ s` and the tail's partial sums instead of
/// the activation copies; and 1 KiB of alignment.
fn smem_bytes(tokens: usize, lines_per_row: u32, tile: &TmaTile, mma: bool, group: u32) -> usize {
    let (rows, planes, unroll) = tile.resolve(tokens, lines_per_row, mma);
    let (rows, planes, unroll) = (rows as usize, planes as usize, unroll as usize);
    let slots = tile.resolve_slots(mma) as usize;
    let groups_per_block = 1024 * unroll / group.max(1) as usize;
    let params = (rows * groups_per_block * 4).div_ceil(128) * 128;
    if mma {
        return slots * planes * (rows * unroll * 512 + 2 * params)
            + planes * (tokens * unroll * 2048 + rows * 32 * tokens.div_ceil(8))
            + 1024;
    }
    let xs_copies = tile.resolve_k_split(tokens, lines_per_row, mma) as usize;
    slots * (planes * (rows * unroll * 512 + 2 * params) + xs_copies * (tokens + 1) * unroll * 2048)
        + 1024
}

/// What the TMA GEMV needs, for error messages.
pub(super) fn needs(mma: bool) -> String {
    let mut text = format!(
        "a device with tensor copies (TMA), f16 activations, 4-bit codes, a multiple of 64 \
         columns, groups of 32 to 256 · U columns (a power of two), a multiple of 4 groups \
         per row, 16-byte aligned operands and at most {} KiB of shared memory per cube \
         (fewer planes or tokens)",
        TMA_MAX_SMEM >> 10
    );
    if mma {
        text.push_str(
            "; with tensor-core products also at most 16 tokens, groups of at least 128 \
             columns, a multiple of 256 columns and mma.sync m16n8k16 in f16",
        );
    }
    text
}

/// Whether [`gemv_tma_kernel`] can serve `call` (which the half2 GEMV fits: f16, 4-bit
/// codes, the line layout) with `tile`: the device has tensor copies (and `mma.sync`
/// m16n8k16 in f16 with `mma`); groups are a power of two from 32 columns to a block's
/// `1024 · U` / 4 (a block's scales must be at least 16 bytes) and a row holds a multiple of
/// 4 of them (the scales' row pitch must be a multiple of 16 bytes); rows of whole
/// 64-column units (the activations' copies are rows of 128 bytes); with `mma` at most 16
/// tokens, steps of 128 columns inside one group and rows of whole 256-column chunks; the
/// cube's shared memory within [`TMA_MAX_SMEM`]; scales and zeros on 16-byte boundaries;
/// `[rows, words]` codes.
pub(super) fn fits<R: CubeRuntime, F: FloatElement>(
    x: &BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    call: GemvCall<'_>,
    tile: TmaTile,
    mma: bool,
) -> bool {
    let (dims, tokens) = (call.dims, call.tokens);
    let lines_per_row = dims.words_per_row / LINE_WORDS;
    let (_, _, unroll) = tile.resolve(tokens, lines_per_row, mma);
    let block_cols = PLANE * unroll * LINE_WORDS * 8;
    let layout = dims.groups > 1
        && dims.group.is_power_of_two()
        && (32..=block_cols / 4).contains(&dims.group)
        && dims.groups.is_multiple_of(4)
        && dims.cols.is_multiple_of(64)
        && q.packed.dims() == [dims.rows as usize, dims.words_per_row as usize];
    let mma_layout = !mma || (tokens <= 16 && dims.group >= 128 && dims.cols.is_multiple_of(256));
    if !(layout && mma_layout) {
        return false;
    }
    if smem_bytes(tokens, lines_per_row, &tile, mma, dims.group) > TMA_MAX_SMEM {
        return false;
    }
    let (_, scales, zeros) = weight_prims(q);
    if !(aligned_16(&scales) && aligned_16(&zeros)) {
        return false;
    }
    let client = R::client(&x.device());
    let features = &client.properties().features;
    features.tma.contains(cubecl::ir::features::Tma::Base)
        && (!mma || features.matmul.mma.contains(&MMA_F16_M16N8K16))
}

/// The `mma` shape and types of the tensor-core products.
const MMA_F16_M16N8K16: cubecl::ir::features::MmaConfig = cubecl::ir::features::MmaConfig {
    a_type: cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(
        cubecl::ir::FloatKind::F16,
    )),
    b_type: cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(
        cubecl::ir::FloatKind::F16,
    )),
    cd_type: cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(
        cubecl::ir::FloatKind::F32,
    )),
    m: 16,
    n: 8,
    k: 16,
};

/// The TMA GEMV on `x` (layouts of [`fits`], checked by the caller) with `tile`, its
/// products on tensor cores with `mma`; the fused GEMV where `x`, the input scale or the
/// codes do not start on a 16-byte boundary.
pub(super) fn gemv<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: TmaTile,
    mma: bool,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    let (ops, y) = match line_operands::<R, F>(x, q, input_scale, dims)? {
        Ok(prepared) => prepared,
        Err(fallback) => return Ok(fallback),
    };
    let GemvOperands {
        x: xp,
        s: sp,
        packed,
        scales,
        zeros,
        tokens,
        tokens_u,
    } = ops;
    let lines_per_row = dims.words_per_row / LINE_WORDS;
    let (rows_per_plane, planes, unroll) = tile.resolve(tokens, lines_per_row, mma);
    let block_cols = PLANE * unroll * LINE_WORDS * 8;
    let groups_per_block = block_cols / dims.group;
    let map = |t: CubeTensor<R>, inner: u32, ty: cubecl::ir::StorageType| {
        cubecl::prelude::TensorMapArg::new(
            cubecl::prelude::TiledArgs {
                tile_size: Shape::from(vec![rows_per_plane as usize, inner as usize]),
            },
            t.into_tensor_arg(),
            ty,
        )
    };
    let u32_ty =
        cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::UInt(cubecl::ir::UIntKind::U32));
    let f32_ty =
        cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32));
    // `x` as `[tokens, cols / 64, 64]` and the input scale as `[cols / 64, 64]` (views of
    // the contiguous operands): a block's `32 · U` lines are one box of `16 · U` rows of 128
    // bytes, which the copies swizzle by 128 bytes so that the lanes' 16-byte reads hit
    // distinct banks. (Boxes of 16-byte rows faulted with an illegal address under the
    // swizzle: the swizzle lays out whole 128-byte rows.)
    let f16_ty =
        cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F16));
    let rows64 = (dims.cols / 64) as usize;
    let box_rows = (16 * unroll) as usize;
    let x3: CubeTensor<R> = wrap_float::<R, F, 2>(xp.clone())
        .reshape([tokens, rows64, 64])
        .into_primitive()
        .tensor();
    let s2: CubeTensor<R> = wrap_float::<R, F, 1>(sp.clone())
        .reshape([rows64, 64])
        .into_primitive()
        .tensor();
    let x_map = cubecl::prelude::TensorMapArg::new(
        cubecl::prelude::TiledArgs {
            tile_size: Shape::from(vec![tokens, box_rows, 64]),
        },
        x3.into_tensor_arg(),
        f16_ty,
    )
    .with_swizzle(cubecl::prelude::TensorMapSwizzle::B128);
    let s_map = cubecl::prelude::TensorMapArg::new(
        cubecl::prelude::TiledArgs {
            tile_size: Shape::from(vec![box_rows, 64]),
        },
        s2.into_tensor_arg(),
        f16_ty,
    )
    .with_swizzle(cubecl::prelude::TensorMapSwizzle::B128);
    let cube_dim = CubeDim {
        x: PLANE,
        y: planes,
        z: 1,
    };
    let k_split = tile.resolve_k_split(tokens, lines_per_row, mma);
    let rows_per_cube = rows_per_plane * planes / k_split;
    let packed_map = if mma {
        // The codes as `[words / 32, rows, 32]` (a view with the rows' own pitch): a box
        // of `4 · U` chunks of 128 bytes per row, swizzled by 128 bytes, lays a block out
        // as `[chunk][row][8 lines]` (see `super::tma_mma::tma_block_mma`).
        let wpr = dims.words_per_row as usize;
        // SAFETY: the view covers exactly the contiguous `[rows, words]` codes
        // (`fits`: `[rows, words]` codes, words a multiple of 32).
        let view = unsafe {
            cubecl::prelude::TensorArg::<R>::from_raw_parts(
                packed.handle.clone(),
                [32, wpr, 1].into(),
                [wpr / 32, dims.rows as usize, 32].into(),
            )
        };
        cubecl::prelude::TensorMapArg::new(
            cubecl::prelude::TiledArgs {
                tile_size: Shape::from(vec![(4 * unroll) as usize, rows_per_plane as usize, 32]),
            },
            view,
            u32_ty,
        )
        .with_swizzle(cubecl::prelude::TensorMapSwizzle::B128)
    } else {
        map(packed, PLANE * unroll * LINE_WORDS, u32_ty)
    };
    // SAFETY: `fits` checked the layout (f16 and `gemv_half2_fits` by the caller;
    // groups that tile a block, scales rows of whole 16-byte units, `[rows, words]` codes),
    // the operands are 16-byte aligned (above), and the kernel guards every index it
    // computes itself; the tensor copies zero-fill what lies past the weight's edges.
    unsafe {
        gemv_tma_kernel::launch_unchecked::<R>(
            &xp.client,
            CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1),
            cube_dim,
            LINE_VECTOR,
            x_map,
            s_map,
            packed_map,
            map(scales, groups_per_block, f32_ty),
            map(zeros, groups_per_block, f32_ty),
            xp.clone().into_tensor_arg(),
            sp.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            dims.rows,
            dims.group_shift,
            lines_per_row,
            super::half2::H2_MAGIC,
            dims.cols / 4,
            tokens_u,
            rows_per_plane,
            unroll,
            planes,
            groups_per_block,
            tile.resolve_slots(mma),
            k_split,
            mma,
        );
    }
    Ok(wrap_float(y))
}
