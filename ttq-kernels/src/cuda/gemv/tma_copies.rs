//! The tensor-copy pipeline of the TMA GEMVs: the compile-time sizes of a kernel variant
//! ([`TmaSizes`]), where each plane's slot lies in shared memory, and the issue of and wait
//! for one block's copies on its slot's mbarrier.

use burn::tensor::f16;
use cubecl::prelude::barrier::Barrier;
use cubecl::prelude::*;

use crate::cuda::PLANE;

/// The compile-time shape of a [`gemv_tma_kernel`] variant, as its helpers take it (one
/// compile-time argument instead of seven), with the sizes of one plane's slot in each
/// shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TmaSizes {
    pub(super) m: u32,
    pub(super) rows_per_plane: u32,
    pub(super) lines_per_lane: u32,
    pub(super) planes: u32,
    pub(super) groups_per_block: u32,
    pub(super) slots: u32,
    pub(super) k_split: u32,
    pub(super) mma: bool,
}

impl TmaSizes {
    /// f32 accumulators per thread: `m · R` dot products, or, with tensor-core products, 4
    /// per 16-row tile and block of 8 tokens (rows `g` and `g + 8` of lane `4 · g + t`,
    /// tokens `2t` and `2t + 1` of the block), `acc[(block · tiles + tile) · 4 + …]`.
    pub(super) fn accumulators(&self) -> u32 {
        if self.mma {
            4 * (self.rows_per_plane / 16) * self.token_blocks()
        } else {
            self.m * self.rows_per_plane
        }
    }
    /// Blocks of 8 tokens, the B operand's columns, of the tensor-core products.
    pub(super) fn token_blocks(&self) -> u32 {
        self.m.div_ceil(8)
    }
    /// Codes per plane and slot, in 16-byte lines.
    pub(super) fn w_slot(&self) -> u32 {
        self.rows_per_plane * PLANE * self.lines_per_lane
    }
    /// Scales (and zeros) per plane and slot, padded to 128 bytes, as tensor copies into
    /// shared memory want.
    pub(super) fn g_slot(&self) -> u32 {
        (self.rows_per_plane * self.groups_per_block).div_ceil(32) * 32
    }
    /// Activations per slot (`m` tokens), in 16-byte vectors of 8 columns: whole KiB, so
    /// the 128-byte swizzle starts afresh in each.
    pub(super) fn x_slot(&self) -> u32 {
        self.m * self.lines_per_lane * 4 * PLANE
    }
    /// Input scale per slot, in 16-byte vectors.
    pub(super) fn s_slot(&self) -> u32 {
        self.lines_per_lane * 4 * PLANE
    }
    /// Copies of the activations per slot: one per place in the split of the blocks (none
    /// with tensor-core products, which read them from global memory).
    pub(super) fn xs_copies(&self) -> u32 {
        if self.mma {
            0
        } else {
            self.k_split
        }
    }
    /// Row groups of a cube (planes with separate rows).
    pub(super) fn row_groups(&self) -> u32 {
        self.planes / self.k_split
    }
}

/// The four mbarriers of [`gemv_tma_kernel`]'s slots (those past `slots` are unused).
#[derive(CubeType)]
pub(super) struct TmaBarriers {
    pub(super) b0: Shared<Barrier>,
    pub(super) b1: Shared<Barrier>,
    pub(super) b2: Shared<Barrier>,
    pub(super) b3: Shared<Barrier>,
}

/// The run-time values [`gemv_tma_kernel`]'s block helpers share: the plane's first row
/// (the cube's, under split-K), the blocks per plane, lines per row, `log2` of the group
/// size and the half2 decode's bits.
#[derive(CubeType, Clone, Copy)]
pub(super) struct TmaBlock {
    pub(super) row0: u32,
    pub(super) blocks: u32,
    pub(super) lines_per_row: u32,
    pub(super) group_shift: u32,
    pub(super) magic: u32,
}

/// Where this plane's slot of [`gemv_tma_kernel`]'s pipeline starts in each of its shared
/// memories: codes (`w`, 16-byte lines), scales and zeros (`g`), activations (`x`) and
/// input scale (`s`, both 16-byte vectors of 8 columns).
#[derive(CubeType, Clone, Copy)]
pub(super) struct TmaSlot {
    pub(super) w: u32,
    pub(super) g: u32,
    pub(super) x: u32,
    pub(super) s: u32,
}

/// This plane's part of slot `sl` (slots hold every plane's codes, scales and zeros side
/// by side; activations once per plane under split-K, once per cube when shared).
#[cube]
pub(super) fn tma_slot(sl: u32, #[comptime] sizes: TmaSizes) -> TmaSlot {
    let own = sl * comptime!(sizes.planes) + UNIT_POS_Y;
    let xs = sl * comptime!(sizes.xs_copies()) + UNIT_POS_Y / comptime!(sizes.row_groups());
    TmaSlot {
        w: own * comptime!(sizes.w_slot()),
        g: own * comptime!(sizes.g_slot()),
        x: xs * comptime!(sizes.x_slot()),
        s: xs * comptime!(sizes.s_slot()),
    }
}

/// Waits for the copies of slot `sl` (phase `phase`).
#[cube]
pub(super) fn tma_wait_slot(bars: &TmaBarriers, sl: u32, phase: u32) {
    if sl == 0 {
        bars.b0.wait_parity(phase);
    } else if sl == 1 {
        bars.b1.wait_parity(phase);
    } else if sl == 2 {
        bars.b2.wait_parity(phase);
    } else {
        bars.b3.wait_parity(phase);
    }
}

/// [`issue_tma_block`] of block `k` into slot `sl`, on that slot's mbarrier.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn tma_issue_slot<N: Size>(
    bars: &TmaBarriers,
    sl: u32,
    x: &TensorMap<f16, Tiled>,
    s: &TensorMap<f16, Tiled>,
    packed: &TensorMap<u32, Tiled>,
    scales: &TensorMap<f32, Tiled>,
    zeros: &TensorMap<f32, Tiled>,
    xsm: &mut SharedMemory<Vector<f16, Const<8>>>,
    isc: &mut SharedMemory<Vector<f16, Const<8>>>,
    wsm: &mut SharedMemory<Vector<u32, N>>,
    ssm: &mut SharedMemory<f32>,
    zsm: &mut SharedMemory<f32>,
    slot: &TmaSlot,
    k: u32,
    dims: &TmaBlock,
    #[comptime] sizes: TmaSizes,
) {
    if sl == 0 {
        issue_tma_block(
            &bars.b0, x, s, packed, scales, zeros, xsm, isc, wsm, ssm, zsm, slot, k, dims, sizes,
        );
    } else if sl == 1 {
        issue_tma_block(
            &bars.b1, x, s, packed, scales, zeros, xsm, isc, wsm, ssm, zsm, slot, k, dims, sizes,
        );
    } else if sl == 2 {
        issue_tma_block(
            &bars.b2, x, s, packed, scales, zeros, xsm, isc, wsm, ssm, zsm, slot, k, dims, sizes,
        );
    } else {
        issue_tma_block(
            &bars.b3, x, s, packed, scales, zeros, xsm, isc, wsm, ssm, zsm, slot, k, dims, sizes,
        );
    }
}

/// The shared-memory index of 16-byte vector `v` of a slot filled by a tensor copy with
/// 128-byte swizzling: its 16-byte unit within each 128-byte row is XORed with the row's
/// index modulo 8 (slots start on 1 KiB boundaries). A plane's lanes read vectors `4 · l + w`,
/// which this spreads over all 32 banks.
#[cube]
pub(super) fn swizzled_128(v: u32) -> u32 {
    v ^ ((v >> 3) & 7)
}

/// Lane 0 of the plane issues the tensor copies of its step `k` (if `k < blocks`) into
/// `slot` and arrives on `bar` expecting their bytes: the codes, scales and zeros of its
/// rows, and the block's activations and input scale (only the plane of row group 0 that
/// takes the block copies those, for every row group); see [`gemv_tma_kernel`].
#[cube]
// `is_multiple_of` has no CubeCL expansion; `%` does.
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)]
pub(super) fn issue_tma_block<N: Size>(
    bar: &Shared<Barrier>,
    x: &TensorMap<f16, Tiled>,
    s: &TensorMap<f16, Tiled>,
    packed: &TensorMap<u32, Tiled>,
    scales: &TensorMap<f32, Tiled>,
    zeros: &TensorMap<f32, Tiled>,
    xsm: &mut SharedMemory<Vector<f16, Const<8>>>,
    isc: &mut SharedMemory<Vector<f16, Const<8>>>,
    wsm: &mut SharedMemory<Vector<u32, N>>,
    ssm: &mut SharedMemory<f32>,
    zsm: &mut SharedMemory<f32>,
    slot: &TmaSlot,
    k: u32,
    dims: &TmaBlock,
    #[comptime] sizes: TmaSizes,
) {
    if k < dims.blocks && UNIT_POS_X == 0 {
        let blk = k * comptime!(sizes.k_split) + UNIT_POS_Y / comptime!(sizes.row_groups());
        let w_len = comptime!(sizes.w_slot());
        let g_len = comptime!(sizes.rows_per_plane * sizes.groups_per_block);
        let s_len = comptime!(sizes.s_slot());
        let x_len = comptime!(sizes.x_slot());
        let row = dims.row0 as i32;
        let (w_at, g_at, x_at, s_at) = (slot.w, slot.g, slot.x, slot.s);
        // The plane of row group 0 copies the block's activations for every row group.
        let copies_xs = comptime!(!sizes.mma) && UNIT_POS_Y % comptime!(sizes.row_groups()) == 0;
        if copies_xs {
            // `x` and `s` are viewed as rows of 64 columns (128 bytes, the swizzle's span):
            // a block is `16 · U` of them.
            let v0 = (blk * comptime!(sizes.lines_per_lane * 16)) as i32;
            bar.tma_load_3d(
                x,
                &mut xsm.slice_mut(x_at as usize, (x_at + x_len) as usize),
                0,
                v0,
                0,
            );
            bar.tma_load_2d(
                s,
                &mut isc.slice_mut(s_at as usize, (s_at + s_len) as usize),
                v0,
                0,
            );
        }
        let bytes = comptime!(w_len * 16 + 2 * g_len * 4)
            + select(copies_xs, comptime!((x_len + s_len) * 16), 0u32);
        if comptime!(sizes.mma) {
            // `[words / 32, rows, 32]`: a block is `4 · U` chunks of 128 bytes of each row.
            bar.tma_load_3d(
                packed,
                &mut wsm.slice_mut(w_at as usize, (w_at + w_len) as usize),
                (blk * comptime!(sizes.lines_per_lane * 4)) as i32,
                row,
                0,
            );
        } else {
            bar.tma_load_2d(
                packed,
                &mut wsm.slice_mut(w_at as usize, (w_at + w_len) as usize),
                row,
                (blk * comptime!(PLANE * sizes.lines_per_lane * 4)) as i32,
            );
        }
        let g_col = (blk * comptime!(sizes.groups_per_block)) as i32;
        bar.tma_load_2d(
            scales,
            &mut ssm.slice_mut(g_at as usize, (g_at + g_len) as usize),
            row,
            g_col,
        );
        bar.tma_load_2d(
            zeros,
            &mut zsm.slice_mut(g_at as usize, (g_at + g_len) as usize),
            row,
            g_col,
        );
        bar.arrive_and_expect_tx(1, bytes);
    }
}
