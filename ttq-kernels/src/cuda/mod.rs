//! CubeCL kernels for NVIDIA GPUs behind [`QuantKernels`] (feature `cuda`).
//!
//! [`CudaKernels`] implements the trait for Burn's plain `CubeBackend<R, F, i32, u8>` (for
//! CUDA: [`CudaBackend`]) with `F` = f32 or f16. The backend must not be wrapped in Burn's
//! fusion (`into_primitive` must hand out a `CubeTensor`).
//!
//! | operation | kernel | notes |
//! | --- | --- | --- |
//! | `channel_stats` | [`kernels::channel_stats_split_kernel`] + [`kernels::channel_stats_combine_kernel`] (channels in whole 16-byte vectors) or [`kernels::channel_stats_kernel`] | 16-byte loads, tokens split across cubes, each split's sum rescaled to the common maximum; two passes over each split |
//! | `ttq_scales` | [`kernels::ttq_scale_kernel`] | `D` and `D⁻¹` from the statistics, a thread per channel, one launch instead of a dozen Burn ops |
//! | `quantize` | [`kernels::quantize_pack_groups_kernel`] (common layouts) or [`kernels::quantize_pack_kernel`] | column scale, group params and packing fused in one pass over `W` (vector loads of up to 16 bytes in the first) |
//! | `dequantize` | [`kernels::dequantize_kernel`] | one thread per element |
//! | `matmul`, `tokens ≤ gemv_max_tokens` | [`kernels::gemv_h2_kernel`] (f16, 4 bits) or [`kernels::gemv_vec_kernel`] where the layout allows it, else [`kernels::gemv_fused_kernel`] (or [`kernels::gemv_kernel`], see [`GemvVariant`]) | dequantization fused into a GEMV; 16-byte loads of four words per lane in the first two; the first decodes and multiplies in packed f16 pairs |
//! | `matmul`, more tokens | [`kernels::dequantize_t_lines_kernel`] (the vector GEMV's layouts) or [`kernels::dequantize_t_kernel`] + Burn's dense matmul (or [`kernels::gemm_cmma_kernel`], see [`DenseVariant`]) | the input scale folded into the dequantized weight |
//! | `rms_norm`, `rope`, `masked_softmax`, `gated` | [`decoder_ops`] | one launch each instead of six to eight Burn ops |
//!
//! Scales and zero points are produced as f32 tensors whatever `F` is (the format of
//! `ttq_core::group`), and the kernels read them as f32 (a weight quantized elsewhere with
//! scales of another float type is converted first). The quantizers compute in f32, so
//! codes, scales and zeros are bit-identical to [`crate::reference::quantize`] for the same
//! inputs; the matmul kernels accumulate in f32, except [`kernels::gemv_h2_kernel`], which
//! sums up to 16 products in f16 before it adds them in f32 (f16 activations only).
//!
//! Degenerate shapes (a zero dimension) go through [`TensorOpsKernels`], which handles them
//! without launching anything of ours.

pub mod decoder_ops;
pub mod gemv_mma;
pub mod kernels;

use burn::tensor::{DType, Int, Shape, Tensor, TensorPrimitive};
use burn_cubecl::{
    kernel::{cast, into_contiguous},
    ops::numeric::empty_device_contiguous_dtype,
    tensor::CubeTensor,
    CubeBackend, CubeRuntime, FloatElement,
};
use cubecl::prelude::{CubeCount, CubeDim};
use ttq_core::{
    group::check_col_scale, kernels::check_matmul_shapes, ChannelStats, GateActivation, PackLayout,
    QuantError, QuantKernels, QuantScheme, QuantSpec, QuantizedWeight, TensorOpsKernels,
    TtqScaleConfig,
};

/// Burn's CUDA backend without fusion: the backend these kernels run on.
pub type CudaBackend<F = f32> = CubeBackend<cubecl::cuda::CudaRuntime, F, i32, u8>;

/// The most tokens the fused GEMV serves by default; above it, `matmul` dequantizes and
/// calls the dense matmul, whose tensor cores win once the weight is re-used enough.
pub const DEFAULT_GEMV_MAX_TOKENS: usize = 16;

/// Below this many output rows the dequantize + Burn matmul path multiplies element-wise
/// (see `CudaKernels::matmul`).
const DENSE_MIN_ROWS: usize = 8;

/// Threads per cube of [`kernels::ttq_scale_kernel`] (a thread per channel).
const SCALE_THREADS: u32 = 256;

/// Planes per cube of the fallback statistics kernel (each takes every 32nd token).
const STATS_PLANES: u32 = 32;

/// Planes per cube of [`kernels::channel_stats_split_kernel`].
const STATS_SPLIT_PLANES: u32 = 8;

/// Planes per cube of [`kernels::channel_stats_combine_kernel`] (each folds every 8th split;
/// 2048 tokens make 32 splits, 4 per plane: one step of loads).
const STATS_COMBINE_PLANES: u32 = 8;

/// Tokens per split of [`kernels::channel_stats_split_kernel`]: short enough that a cube's
/// re-read of its split hits L1 (see the kernel), long enough for 8 planes × 4 loads in
/// flight; 2048 tokens of 4096 channels make 512 cubes.
const STATS_SPLIT_TOKENS: u32 = 64;

/// Planes per cube of the group-parallel quantize-pack kernel (each owns whole groups).
const QUANT_GROUP_PLANES: u32 = 8;

/// Columns of a group each lane of [`kernels::quantize_pack_groups_kernel`] quantizes (at
/// most the group): 32 instead of `group / 32` (4 at g128), so the group's reductions,
/// parameters and word assembly are paid per 32 values (session 8, H200, 4096×14336 g128:
/// 4 per lane 137.5 µs and 63.5 instructions per weight, 16 per lane 67.0 µs and 29.7,
/// 32 per lane 63.0 µs and 27.0).
const QUANT_PER_LANE: u32 = 32;

/// Planes per cube of the group quantizer for a row of `plane_tasks` plane-sized tasks:
/// all of them when they fit one cube of [`QUANT_GROUP_PLANES`] (4 for g128 over 4096
/// columns), else the count between 4 and 8 that leaves the fewest idle planes in the
/// row's last cube (ties to more planes): 7 for 14 tasks (g128 over 14336 columns)
/// instead of 8 with 2 idle.
fn quant_group_planes(plane_tasks: u32) -> u32 {
    if plane_tasks <= QUANT_GROUP_PLANES {
        return plane_tasks.max(1);
    }
    (4..=QUANT_GROUP_PLANES)
        .rev()
        .min_by_key(|p| plane_tasks.div_ceil(*p) * p - plane_tasks)
        .unwrap_or(QUANT_GROUP_PLANES)
}

/// The tile of [`kernels::gemv_fused_kernel`]: rows per cube `R`, planes per cube `P` (they
/// split the words of the cube's rows) and word runs each lane loads per step and row `U`.
/// `None` fields take the defaults of [`GemvTile::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GemvTile {
    /// Rows per cube (`R`, 1..=32).
    pub rows: Option<u32>,
    /// Planes per cube (`P`, 1..=32).
    pub planes: Option<u32>,
    /// Word runs per lane, step and row (`U`, 1..=8).
    pub unroll: Option<u32>,
    /// Decode codes with the integer-to-float conversion instead of the default 2²³
    /// mantissa trick (kept to measure one against the other).
    pub convert: bool,
    /// Load the next step's words before the current step's products (a register double
    /// buffer; the scalar fused GEMV only). The vector and half2 GEMVs ignore it: both
    /// register prefetches measured slower there (see [`kernels::gemv_h2_kernel`]).
    pub prefetch: bool,
    /// Resident cubes per SM that [`kernels::gemv_stream_kernel`]'s persistent grid is
    /// sized for (1..=32); by default as many as 16 warps and the shared memory allow.
    pub cubes_per_sm: Option<u32>,
    /// [`kernels::gemv_stream_kernel`] reads `x` and `s` from global memory (through L1)
    /// in its products instead of staging `x ⊙ s` in each cube's shared memory: cubes of
    /// one or two planes then fit 16-32 per SM (session 12).
    pub stream_global_x: bool,
    /// A measurement aid for [`kernels::gemv_tma_kernel`] only (see [`GemvProbe`]).
    pub probe: GemvProbe,
    /// Pipeline slots per plane of [`kernels::gemv_tma_kernel`] (2..=4, or 1..=4 with
    /// [`GemvTile::tma_mma`]; default 2): blocks whose copies can be in flight while one is
    /// decoded, plus that one.
    pub tma_slots: Option<u32>,
    /// Planes of a [`kernels::gemv_tma_kernel`] cube that split each row's blocks between
    /// them (`K`, a divisor of `P`; the other `P / K` planes own separate rows and share
    /// each block's copy of the activations and input scale). Default `P`: every plane of
    /// the cube takes other blocks of the same `R` rows, with its own copies.
    pub tma_k_split: Option<u32>,
    /// [`kernels::gemv_tma_kernel`] runs its products on tensor cores (`mma.sync` m16n8k16,
    /// f16 in, f32 accumulation; see `tma_block_mma` there) instead of packed f16
    /// multiply-adds: `R` is then 16 or 32 rows per plane (tiles of 16), at most 16 tokens,
    /// groups of at least 128 columns and rows of whole 256-column chunks (bench `:mma`).
    pub tma_mma: bool,
}

/// Half of [`kernels::gemv_tma_kernel`]'s work to run alone, for timing: what the copies
/// cost without the decode, and the decode without the copies (`bench kernels` tiles
/// `:lo` and `:co`). Anything but [`GemvProbe::Off`] makes `matmul` return a wrong result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemvProbe {
    /// The GEMV.
    #[default]
    Off,
    /// Copies and waits only; no products (the output holds zeros).
    LoadsOnly,
    /// Products on whatever the shared memory holds; no copies and no waits.
    ComputeOnly,
}

impl GemvTile {
    /// `(R, P, U)` for `tokens` tokens and `bits`-bit codes: explicit fields as given
    /// (clamped to their ranges), defaults otherwise: `R` = 8 while `tokens · 32 / bits ≤ 8`,
    /// else 4 (more rows share each activation load; fewer keep the `tokens · R`
    /// accumulators in registers).
    ///
    /// Explicit values are clamped too: `tokens · R ≤ 64` accumulators and `U · R ≤ 32`
    /// words in flight. The kernel is fully unrolled over them, and beyond that NVRTC took
    /// minutes to compile one variant (R = 16 or 32 at 16 tokens stalled `ttq bench kernels`
    /// and the `gemv_tiles` test on an H100 and an H200, run 6).
    pub fn resolve(&self, tokens: usize, bits: u32) -> (u32, u32, u32) {
        let codes_per_word = 32 / bits as usize;
        // Run 6's sweep (H200): at 16 tokens R = 4 beat R = 2 by 12-27% on all four layer
        // shapes, with no register spills yet (64 accumulators).
        let default_rows = match tokens * codes_per_word {
            0..=8 => 8,
            _ => 4,
        };
        let max_rows = (64 / tokens.max(1)).clamp(1, 32) as u32;
        let rows = self.rows.unwrap_or(default_rows).clamp(1, max_rows);
        let unroll = self.unroll.unwrap_or(2).clamp(1, 8).min((32 / rows).max(1));
        (rows, self.planes.unwrap_or(4).clamp(1, 32), unroll)
    }

    /// `(R, P, U)` for [`kernels::gemv_vec_kernel`]: explicit `R` and `P` as in
    /// [`GemvTile::resolve`]; by default `R` = 8 up to 4 tokens, else 4, and `P` = 4. `U`
    /// (16-byte lines per lane, step and row) defaults to 1 and is clamped to `U · R ≤ 8`
    /// lines (32 words) in flight per lane, the register budget of the scalar kernel's
    /// `U · R ≤ 32` words.
    ///
    /// Session 7's sweep (H200, device-timed, `results/gpu-2026-12-01/s7-call2-h200`): at
    /// one token 8:4:1 took 20.8-23.0 µs on the two large shapes, 4:4:2 21.0-25.9, eight
    /// planes 36-50; at four tokens 8:4:1 took 58-59 µs, and 4:4:1 (then the default)
    /// 69-72 in the same call's main table.
    pub fn resolve_vector(&self, tokens: usize, bits: u32) -> (u32, u32, u32) {
        let default_rows = if tokens <= 4 { 8 } else { 4 };
        let tile = GemvTile {
            rows: Some(self.rows.unwrap_or(default_rows)),
            ..*self
        };
        let (rows, planes, _) = tile.resolve(tokens, bits);
        let unroll = self.unroll.unwrap_or(1).clamp(1, 8).min((8 / rows).max(1));
        (rows, planes, unroll)
    }
}

impl GemvTile {
    /// `(R, P, U)` for [`kernels::gemv_stream_kernel`]: rows per plane `R` (default 4),
    /// planes per cube `P` (default 4) and lines per lane and tile `U` (default 2), clamped
    /// to `R · tokens ≤ 32` (lane `i` stores output `i`), `P ≤ 16` and `U · R ≤ 16`.
    pub fn resolve_stream(&self, tokens: usize) -> (u32, u32, u32) {
        let max_rows = (32 / tokens.max(1)).clamp(1, 8) as u32;
        let rows = self.rows.unwrap_or(4).clamp(1, max_rows);
        let planes = self.planes.unwrap_or(4).clamp(1, 16);
        let unroll = self.unroll.unwrap_or(2).clamp(1, 8).min((16 / rows).max(1));
        (rows, planes, unroll)
    }
}

impl GemvTile {
    /// `(R, P, U)` for [`kernels::gemv_tma_kernel`] on rows of `lines_per_row` 32-column
    /// lines: rows per plane `R`, planes per cube `P` (1..=16) and lines per lane and block
    /// `U` (1 or 2, default 1). `R` is clamped to `R · tokens ≤ 64` and to 1..=32, a power of
    /// two as tensor copies want.
    ///
    /// Defaults, from Nsight Compute sweeps on an H200 (docs/kernels.md, sessions 13-14):
    /// - one token: `R` = 4; `P` = 8 (with `K` = 2 planes per row's blocks, see
    ///   [`GemvTile::resolve_tma_k_split`]) where a row has at least 6 blocks of `32 · U`
    ///   lines, else `P` = 4 (`K` = 1). Session 14 call 2: 13.9 µs on 4096×14336 (session
    ///   13's 8:2:1: 14.6 in the same call) and 14.5 on 14336×4096 (19.1; the half2 GEMV:
    ///   17.4 and 19.7);
    /// - more tokens (not re-measured in session 14): `R` = 8 up to 4 tokens, else 4; `P` = 2
    ///   from 6 blocks, else 1, at most `8 / tokens` (each copy of a block's activations is
    ///   `tokens · U · 2 KiB`), and `K` = `P`.
    pub fn resolve_tma(&self, tokens: usize, lines_per_row: u32) -> (u32, u32, u32) {
        let unroll = self.unroll.unwrap_or(1).clamp(1, 2);
        if self.tma_mma {
            // Whole 16-row tiles; 32 rows hold 8 accumulators and 64 code registers.
            let rows = if self.rows.unwrap_or(16) > 16 { 32 } else { 16 };
            let planes = self
                .planes
                .unwrap_or_else(|| tma_mma_default_planes(lines_per_row, unroll).0)
                .clamp(1, 16);
            return (rows, planes, unroll);
        }
        let max_rows = (64 / tokens.max(1)).clamp(1, 32) as u32;
        let default_rows = match tokens {
            0 | 1 => 4,
            2..=4 => 8,
            _ => 4,
        };
        let rows = self
            .rows
            .unwrap_or(default_rows)
            .clamp(1, max_rows)
            .next_power_of_two()
            .min(prev_power_of_two(max_rows));
        let planes = self
            .planes
            .unwrap_or_else(|| tma_default_planes(tokens, lines_per_row, unroll).0)
            .clamp(1, 16);
        (rows, planes, unroll)
    }

    /// `(R, P, U)` of the direct tensor-core GEMV ([`gemv_mma::gemv_mma_kernel`]): `R` = 16
    /// or 32 rows per cube (one or two 16-row tiles), `P` planes (1..=16) splitting the
    /// rows' 128-column steps, in chunks of `U` steps (1..=8) whose loads are all in flight
    /// before the chunk's products. Defaults 16:8:4.
    pub fn resolve_mma(&self) -> (u32, u32, u32) {
        let rows = if self.rows.unwrap_or(16) > 16 { 32 } else { 16 };
        let planes = self.planes.unwrap_or(8).clamp(1, 16);
        let unroll = self.unroll.unwrap_or(4).clamp(1, 8);
        (rows, planes, unroll)
    }

    /// Pipeline slots per plane of [`kernels::gemv_tma_kernel`]: as given, clamped to
    /// 2..=4 (four named mbarriers; 1..=4 with tensor-core products, whose smaller cubes
    /// then fit more per SM), 2 by default (deeper pipelines were no faster in session 14
    /// call 1), 1 with tensor-core products.
    pub fn resolve_tma_slots(&self) -> u32 {
        // Tensor-core products default to one slot: 0.3-4.5 µs faster than two on all
        // four bench shapes (session 15 call 3), their smaller cubes fitting more per SM.
        let (least, default) = if self.tma_mma { (1, 1) } else { (2, 2) };
        self.tma_slots.unwrap_or(default).clamp(least, 4)
    }

    /// `K` of [`kernels::gemv_tma_kernel`] (see [`GemvTile::tma_k_split`]) for the tile that
    /// [`GemvTile::resolve_tma`] gives: as given, lowered to the nearest divisor of `P`; by
    /// default the default tile's where `P` is not given either (see
    /// [`GemvTile::resolve_tma`]), else `P` (split-K, session 13's kernel, so that an
    /// explicit `R:P:U` means what it did there).
    pub fn resolve_tma_k_split(&self, tokens: usize, lines_per_row: u32) -> u32 {
        let (_, planes, unroll) = self.resolve_tma(tokens, lines_per_row);
        let default = match self.planes {
            None if self.tma_mma => tma_mma_default_planes(lines_per_row, unroll).1,
            None => tma_default_planes(tokens, lines_per_row, unroll).1,
            Some(_) => planes,
        };
        let k = self.tma_k_split.unwrap_or(default).clamp(1, planes);
        (1..=k)
            .rev()
            .find(|d| planes.is_multiple_of(*d))
            .unwrap_or(1)
    }
}

/// The default `(P, K)` of [`kernels::gemv_tma_kernel`] (see [`GemvTile::resolve_tma`]).
fn tma_default_planes(tokens: usize, lines_per_row: u32, unroll: u32) -> (u32, u32) {
    let blocks = lines_per_row.div_ceil(kernels::PLANE * unroll);
    if tokens <= 1 {
        return if blocks >= 6 { (8, 2) } else { (4, 1) };
    }
    let by_tokens = (8 / tokens as u32).max(1);
    let planes = if blocks >= 6 { 2 } else { 1 }.min(by_tokens);
    (planes, planes)
}

/// The default `(P, K)` of [`kernels::gemv_tma_kernel`] with tensor-core products (16 rows
/// per plane, one slot): four planes split each row's blocks, or as many as the row has
/// blocks. Session 15 call 3 (m = 1): 7.9 / 9.0 / 17.9 / 17.5 µs on 4096×4096 / 2048×8192
/// / 4096×14336 / 14336×4096, within 0.1-1.2 µs of the best tile tried on each shape.
fn tma_mma_default_planes(lines_per_row: u32, unroll: u32) -> (u32, u32) {
    let blocks = lines_per_row.div_ceil(kernels::PLANE * unroll).max(1);
    let planes = blocks.min(4);
    (planes, planes)
}

/// Rows per plane of the tensor-core TMA GEMV that [`GemvVariant::Auto`] takes for
/// `tokens` tokens of a weight of `rows` rows (where the layout and the device allow it,
/// see [`tma_fits`]), or `None` where it keeps the half2 GEMV.
///
/// Session 16 call 2 (H200, Nsight Compute, `results/gpu-2026-12-02/s16-call2-h200`): at
/// 2, 4 and 8 tokens the half2 GEMV's products grow with the tokens (every token's products
/// are their own half2 FMAs) and the tensor-core GEMV's do not (the tokens are an `mma`'s
/// B columns). On 4096×4096 / 2048×8192 / 4096×14336 / 14336×4096 its default tile (16
/// rows, `P = K = 4`, one slot) took 8.8 / 11.6 / 22.0 / 18.3 µs at 2 tokens against 10.6 /
/// 11.8 / 23.5 / 28.2 for the half2 default, 9.4 / 12.1 / 24.0 / 26.6 against 20.2 / 15.1
/// / 45.3 / 48.0 at 4, and 11.3 / 13.5 / 29.4 / 33.5 against 36.1 / 36.2 / 85.8 / 114.2 at
/// 8. Thirty-two rows per plane were faster on 14336×4096 from 4 tokens on (21.1 and 26.0
/// µs), within about 1 µs either way on the other shapes. At one token the half2 GEMV ties
/// or wins (session 15). Past 8 tokens the products take a second block of 8 B columns
/// (twice the accumulators: 16 rows per plane), where the half2 GEMV took 188-273 µs
/// device-timed at 16 tokens on the large shapes (session 16 call 3).
fn auto_mma_rows(tokens: usize, rows: usize) -> Option<u32> {
    match tokens {
        2..=3 | 9..=16 => Some(16),
        4..=8 => Some(if rows >= 8192 { 32 } else { 16 }),
        _ => None,
    }
}

/// The largest power of two not above `n` (`n ≥ 1`).
fn prev_power_of_two(n: u32) -> u32 {
    1 << (31 - n.max(1).leading_zeros())
}

/// Shared memory per SM that [`gemv_stream`] sizes its persistent grid against (an H100's
/// or H200's 228 KiB, less 1 KiB reserved per cube and some slack).
const STREAM_SMEM_PER_SM: usize = 220 << 10;

/// Largest `x ⊙ s` staging of [`kernels::gemv_stream_kernel`] (tokens × padded columns ×
/// 2 bytes): 64 KiB, 16384 columns at one token; wider or more tokens use the half2 GEMV.
const STREAM_MAX_XS_BYTES: usize = 64 << 10;

/// Largest grid dimension used for row-strided launches (CUDA's y/z limit).
const MAX_GRID_Y: usize = 65_535;

/// Which GEMV kernel serves `tokens ≤ gemv_max_tokens` (all give the same results up to
/// f32 rounding order; kept side by side so that the benchmark can compare them on one
/// card).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemvVariant {
    /// [`GemvVariant::Half2`] for f16 activations and 4-bit codes, else
    /// [`GemvVariant::Vector`], where the layout allows it (see
    /// [`gemv_vector_fits_layout`]); [`GemvVariant::Fused`] otherwise. With f16 activations,
    /// 4-bit codes, 2 to 16 tokens and the default [`GemvTile`], the tensor-core TMA GEMV
    /// ([`GemvVariant::Tma`] with [`GemvTile::tma_mma`]) where the layout and the device
    /// allow it: 1.0-3.4× faster than the half2 GEMV at 2 to 8 tokens (H200, session 16;
    /// see `auto_mma_rows`).
    #[default]
    Auto,
    /// [`kernels::gemv_h2_kernel`]: the vector GEMV's loads with the decode and the dot
    /// products in packed f16 pairs. Needs f16 activations, 4-bit codes and the vector
    /// layout; `matmul` returns an error otherwise.
    Half2,
    /// [`kernels::gemv_stream_kernel`]: the half2 decode with `x ⊙ s` staged in shared
    /// memory and the codes, scales and zeros streamed through double-buffered `cp.async`
    /// copies by a persistent grid. Same layouts as [`GemvVariant::Half2`], and `x ⊙ s` must
    /// fit its staging (`tokens · cols` up to 32768, rows of whole 32-line blocks counted);
    /// `matmul` returns an error otherwise. Opt-in: correct, but 1.05-1.9× slower than
    /// [`GemvVariant::Half2`] at one token on the bench shapes (H200, docs/kernels.md,
    /// session 11).
    Stream,
    /// [`GemvVariant::Stream`] where it can serve the call, [`GemvVariant::Auto`] otherwise.
    AutoStream,
    /// [`kernels::gemv_tma_kernel`]: the half2 decode with the codes, scales and zeros
    /// double-buffered in shared memory by tensor copies (TMA, sm_90 and later). Needs what
    /// [`GemvVariant::Half2`] needs, groups of 32 to `256 · U` columns (a power of two), a
    /// multiple of 4 groups per row, 16-byte aligned operands and a device with TMA;
    /// `matmul` returns an error otherwise.
    Tma,
    /// [`GemvVariant::Tma`] where it can serve the call, [`GemvVariant::Auto`] otherwise.
    AutoTma,
    /// [`gemv_mma::gemv_mma_kernel`]: tensor-core products (`mma.sync` m16n8k16) on codes
    /// loaded straight into registers, `x ⊙ s` staged once per cube (session 17). Needs f16
    /// activations, 4-bit codes, at most 8 tokens, a multiple of 128 columns, groups of at
    /// least 128 columns (or one per row), `[rows, words]` codes, 16-byte aligned operands,
    /// at most [`MMA_MAX_STAGE`] bytes of staged activations and a device with that `mma`;
    /// `matmul` returns an error otherwise. `GemvTile` as [`GemvTile::resolve_mma`].
    Mma,
    /// [`GemvVariant::Mma`] where it can serve the call, [`GemvVariant::Auto`] otherwise.
    AutoMma,
    /// [`kernels::gemv_vec_kernel`]: 16-byte loads of four packed words per lane and
    /// vector loads of `x` and the input scale. Needs 2, 4 or 8 bits, rows of whole
    /// four-word lines and groups holding whole lines; `matmul` returns an error otherwise.
    Vector,
    /// One kernel reads `x` and the input scale directly, one word per lane and load
    /// ([`kernels::gemv_fused_kernel`]); any layout.
    Fused,
    /// A first kernel writes `x ⊙ s` as a zero-padded f32 copy, which the GEMV
    /// ([`kernels::gemv_kernel`]) then reads without bounds checks.
    Padded,
}

/// How `matmul` serves more than `gemv_max_tokens` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenseVariant {
    /// [`DenseVariant::DequantMatmul`], on f16 and f32: it was 1.3-4.2× faster than the
    /// cmma kernel at 2048 tokens (docs/kernels.md, run 8 call 1). On f16 it used to fail
    /// the GPU tests whenever f32 work had run earlier in the process (runs 6-8), because
    /// Burn then made the tests' "f16" activations in f32 (the device's default dtype) while
    /// the weight was dequantized in f16; it now dequantizes in the activations' dtype, and
    /// the f16 tests pass (session 7, call 1).
    #[default]
    Auto,
    /// [`kernels::gemm_cmma_kernel`] (dequantization fused into a tensor-core GEMM; f16
    /// operands, f32 accumulation), whatever `F`.
    Cmma,
    /// Dequantize into a dense `[cols, rows]` tensor ([`kernels::dequantize_t_kernel`]) and
    /// call Burn's matmul on it (element-wise below 8 output rows, where Burn's f32 matmul
    /// was wrong).
    DequantMatmul,
}

/// Which quantize-pack kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantizeVariant {
    /// [`kernels::quantize_pack_groups_kernel`] (one read of `W`, a plane per group) where
    /// the layout allows it (groups of 32 to 512 columns, a power of two, holding whole
    /// words: 2, 4 or 8 bits, or 7), [`QuantizeVariant::Generic`] otherwise.
    #[default]
    Auto,
    /// [`kernels::quantize_pack_kernel`] (a cube per row; any layout).
    Generic,
}

/// The CubeCL implementation of [`QuantKernels`]; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct CudaKernels {
    /// `matmul` uses the fused GEMV for `tokens ≤ gemv_max_tokens` (at most 16; larger
    /// values are treated as 16) and the dense path above.
    pub gemv_max_tokens: usize,
    /// Which GEMV kernel runs.
    pub gemv_variant: GemvVariant,
    /// Tile of the fused GEMV.
    pub gemv_tile: GemvTile,
    /// Which dense path runs.
    pub dense_variant: DenseVariant,
    /// Which quantize-pack kernel runs.
    pub quantize_variant: QuantizeVariant,
    /// Whether `rms_norm`, `rope`, `masked_softmax` and `gated` run as the fused kernels of
    /// [`decoder_ops`], and `ttq_scales` as [`kernels::ttq_scale_kernel`] (the default), or
    /// as the trait's Burn ops (for A/B timings).
    pub fused_decoder_ops: bool,
}

impl Default for CudaKernels {
    fn default() -> Self {
        Self {
            gemv_max_tokens: DEFAULT_GEMV_MAX_TOKENS,
            gemv_variant: GemvVariant::Auto,
            gemv_tile: GemvTile::default(),
            dense_variant: DenseVariant::Auto,
            quantize_variant: QuantizeVariant::Auto,
            fused_decoder_ops: true,
        }
    }
}

type Cb<R, F> = CubeBackend<R, F, i32, u8>;

impl CudaKernels {
    /// The dense weight of `q`, transposed to a contiguous `[cols, rows]` in `F`: the right
    /// operand that the `DenseVariant::DequantMatmul` path hands to Burn's matmul
    /// ([`kernels::dequantize_t_kernel`]). Public so that the GPU tests can check it on its
    /// own.
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
        Ok(wrap_float(dequantize_t_prim::<R, F>(
            q,
            &dims,
            None,
            F::dtype(),
        )))
    }
}

/// The contiguous `CubeTensor` behind a float tensor, converted to `dtype`.
fn float_prim<R: CubeRuntime, F: FloatElement, const D: usize>(
    t: Tensor<Cb<R, F>, D>,
    dtype: DType,
) -> CubeTensor<R> {
    // Cast first: `cast` may hand back a row-pitched tensor, which `into_contiguous` packs.
    let t = t.into_primitive().tensor();
    let t = if t.dtype == dtype { t } else { cast(t, dtype) };
    into_contiguous(t)
}

/// The contiguous `CubeTensor` behind an int tensor of packed words, as 32-bit ints.
fn int_prim<R: CubeRuntime, F: FloatElement, const D: usize>(
    t: Tensor<Cb<R, F>, D, Int>,
) -> CubeTensor<R> {
    let t = t.into_primitive();
    let t = if t.dtype.size() == 4 {
        t
    } else {
        cast(t, DType::I32)
    };
    into_contiguous(t)
}

fn wrap_float<R: CubeRuntime, F: FloatElement, const D: usize>(
    t: CubeTensor<R>,
) -> Tensor<Cb<R, F>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A new contiguous tensor on the device of `like`, contents undefined.
fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: Vec<usize>, dtype: DType) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        dtype,
    )
}

fn u32_of(n: usize, what: &str) -> Result<u32, QuantError> {
    u32::try_from(n)
        .map_err(|_| QuantError::shape("cuda kernels", format!("{what} below 2^32"), n.to_string()))
}

/// Parameters of a quantized weight that every kernel takes.
struct WeightDims {
    rows: u32,
    cols: u32,
    group: u32,
    /// `log2(group)`, or 31 when a row has a single group (then every column maps to 0).
    group_shift: u32,
    groups: u32,
    words_per_row: u32,
    bits: u32,
    codes_per_word: u32,
}

impl WeightDims {
    fn new(shape: [usize; 2], spec: &QuantSpec) -> Result<Self, QuantError> {
        let [rows, cols] = shape;
        let layout = PackLayout::new(spec.bits(), cols);
        // Every element index must fit the kernels' 32-bit arithmetic on columns.
        u32_of(rows.saturating_mul(layout.words_per_row), "rows × words")?;
        let groups = spec.groups_per_row(cols);
        let group = spec.group_len(cols);
        if cols >= 1 << 31 {
            return Err(QuantError::shape(
                "cuda kernels",
                "fewer than 2^31 columns",
                cols.to_string(),
            ));
        }
        // Several groups only happen for a power-of-two group length shorter than the row.
        let group_shift = if groups == 1 {
            31
        } else {
            group.trailing_zeros()
        };
        Ok(Self {
            group_shift,
            rows: u32_of(rows, "rows")?,
            cols: u32_of(cols, "columns")?,
            group: u32_of(spec.group_len(cols), "group length")?,
            groups: u32_of(spec.groups_per_row(cols), "groups per row")?,
            words_per_row: u32_of(layout.words_per_row, "words per row")?,
            bits: spec.bits(),
            codes_per_word: layout.codes_per_word as u32,
        })
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
        let [tokens, d] = x.dims();
        let (Ok(tokens_u), Ok(d_u)) = (u32::try_from(tokens), u32::try_from(d)) else {
            return TensorOpsKernels.channel_stats(x);
        };
        if d == 0 || tokens.saturating_mul(d) > u32::MAX as usize {
            return TensorOpsKernels.channel_stats(x);
        }
        let x = float_prim(x, F::dtype());
        let max_abs = empty(&x, vec![d], DType::F32);
        let mean_sq = empty(&x, vec![d], DType::F32);
        let dtype = x.dtype;
        let vector = 16 / dtype.size();
        if d.is_multiple_of(vector) && aligned_16(&x) {
            launch_stats_split(&x, &max_abs, &mean_sq, tokens_u, d_u, vector);
        } else {
            // SAFETY: shapes were checked above and every index in the kernel is guarded or
            // clamped (see `kernels`).
            unsafe {
                kernels::channel_stats_kernel::launch_unchecked::<R>(
                    &x.client,
                    CubeCount::Static(d_u.div_ceil(kernels::PLANE), 1, 1),
                    CubeDim {
                        x: kernels::PLANE,
                        y: STATS_PLANES,
                        z: 1,
                    },
                    x.clone().into_tensor_arg(),
                    max_abs.clone().into_tensor_arg(),
                    mean_sq.clone().into_tensor_arg(),
                    tokens_u,
                    d_u,
                    dtype.into(),
                );
            }
        }
        ChannelStats {
            max_abs: wrap_float(max_abs),
            mean_sq_normalized: wrap_float(mean_sq),
            tokens,
        }
    }

    fn ttq_scales(
        &self,
        stats: &ChannelStats<Cb<R, F>>,
        config: &TtqScaleConfig,
    ) -> (Tensor<Cb<R, F>, 1>, Tensor<Cb<R, F>, 1>) {
        let [channels] = stats.max_abs.dims();
        let unfused = || {
            <TensorOpsKernels as QuantKernels<Cb<R, F>>>::ttq_scales(
                &TensorOpsKernels,
                stats,
                config,
            )
        };
        let Ok(channels_u) = u32::try_from(channels) else {
            return unfused();
        };
        // α = 0 is D = 1 exactly (the default handles it); `--unfused-ops` times Burn's ops.
        if channels == 0 || config.alpha == 0.0 || !self.fused_decoder_ops {
            return unfused();
        }
        let max_abs = float_prim(stats.max_abs.clone(), DType::F32);
        let mean_sq = float_prim(stats.mean_sq_normalized.clone(), DType::F32);
        let d = empty(&max_abs, vec![channels], DType::F32);
        let d_inv = empty(&max_abs, vec![channels], DType::F32);
        let cubes = channels_u.div_ceil(SCALE_THREADS).min(MAX_GRID_Y as u32);
        // SAFETY: every thread stays below `channels` elements of four tensors of
        // `channels` elements.
        unsafe {
            kernels::ttq_scale_kernel::launch_unchecked::<R>(
                &max_abs.client,
                CubeCount::Static(cubes, 1, 1),
                CubeDim {
                    x: SCALE_THREADS,
                    y: 1,
                    z: 1,
                },
                max_abs.clone().into_tensor_arg(),
                mean_sq.into_tensor_arg(),
                d.clone().into_tensor_arg(),
                d_inv.clone().into_tensor_arg(),
                channels_u,
                config.alpha,
                config.lambda,
                ttq_core::stats::MIN_MAX_ABS,
                ttq_core::stats::MAX_LOG_SCALE,
            );
        }
        (wrap_float(d), wrap_float(d_inv))
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
        let dims = WeightDims::new([rows, cols], spec)?;
        u32_of(rows.saturating_mul(cols), "weight elements")?;
        let device = w.device();
        let col_scale = col_scale.unwrap_or_else(|| Tensor::ones([cols], &device));
        let w = float_prim(w, F::dtype());
        let d = float_prim(col_scale, F::dtype());
        let groups = dims.groups as usize;
        let scales = empty(&w, vec![rows, groups], DType::F32);
        let zeros = empty(&w, vec![rows, groups], DType::F32);
        let packed = empty(&w, vec![rows, dims.words_per_row as usize], DType::I32);
        let dtype = w.dtype;
        let group_parallel = self.quantize_variant == QuantizeVariant::Auto
            && dims.group.is_power_of_two()
            && (32..=512).contains(&dims.group)
            && dims.codes_per_word.is_power_of_two()
            && dims.group % dims.codes_per_word == 0;
        if group_parallel {
            let per_lane = QUANT_PER_LANE.min(dims.group);
            let steps = 1;
            let slots = kernels::PLANE / (dims.group / per_lane);
            let planes = quant_group_planes(dims.groups.div_ceil(slots));
            // Columns per load: up to 16 bytes, dividing the lane's run and the row, with
            // both operands starting on a boundary of the load's size.
            let elem = dtype.size() as u32;
            let mut vector = per_lane.min(16 / elem).max(1);
            while vector > 1
                && (dims.cols % vector != 0
                    || !aligned_to(&w, (vector * elem) as u64)
                    || !aligned_to(&d, (vector * elem) as u64))
            {
                vector /= 2;
            }
            // SAFETY: shapes were checked above; every load index is clamped and every
            // store guarded (see the kernel).
            unsafe {
                kernels::quantize_pack_groups_kernel::launch_unchecked::<R>(
                    &w.client,
                    CubeCount::Static(
                        dims.groups.div_ceil(planes * steps * slots),
                        dims.rows.min(MAX_GRID_Y as u32),
                        1,
                    ),
                    CubeDim {
                        x: kernels::PLANE,
                        y: planes,
                        z: 1,
                    },
                    vector as usize,
                    w.clone().into_tensor_arg(),
                    d.into_tensor_arg(),
                    scales.clone().into_tensor_arg(),
                    zeros.clone().into_tensor_arg(),
                    packed.clone().into_tensor_arg(),
                    dims.rows,
                    dims.cols,
                    dims.groups,
                    dims.words_per_row,
                    dims.group,
                    dims.bits,
                    spec.scheme() == QuantScheme::Symmetric,
                    steps,
                    vector,
                    per_lane,
                    dims.cols % dims.group != 0,
                    dtype.into(),
                );
            }
        } else {
            // SAFETY: shapes were checked above and every index in the kernel is guarded or
            // clamped (see `kernels`).
            unsafe {
                kernels::quantize_pack_kernel::launch_unchecked::<R>(
                    &w.client,
                    CubeCount::Static(rows.min(i32::MAX as usize) as u32, 1, 1),
                    CubeDim {
                        x: kernels::PLANE,
                        y: 8,
                        z: 1,
                    },
                    w.clone().into_tensor_arg(),
                    d.into_tensor_arg(),
                    scales.clone().into_tensor_arg(),
                    zeros.clone().into_tensor_arg(),
                    packed.clone().into_tensor_arg(),
                    dims.rows,
                    dims.cols,
                    dims.group,
                    dims.group_shift,
                    dims.groups,
                    dims.words_per_row,
                    dims.bits,
                    spec.scheme() == QuantScheme::Symmetric,
                    dtype.into(),
                );
            }
        }
        Ok(QuantizedWeight {
            packed: Tensor::from_primitive(packed),
            scales: wrap_float(scales),
            zeros: wrap_float(zeros),
            spec: *spec,
            shape: [rows, cols],
        })
    }

    fn dequantize(&self, q: &QuantizedWeight<Cb<R, F>>) -> Tensor<Cb<R, F>, 2> {
        let [rows, cols] = q.shape;
        let Ok(dims) = WeightDims::new(q.shape, &q.spec) else {
            return TensorOpsKernels.dequantize(q);
        };
        if rows == 0 || cols == 0 || rows.saturating_mul(cols) > u32::MAX as usize {
            return TensorOpsKernels.dequantize(q);
        }
        wrap_float(dequantize_prim::<R, F>(q, &dims, F::dtype()))
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
            let half2_fits = F::dtype() == DType::F16 && gemv_half2_fits(&dims);
            let stream_ok = half2_fits && stream_fits(tokens, &dims);
            // Only the TMA variants pay for this check (it looks at the device and the
            // operands' alignment).
            let tma_ok = || half2_fits && tma_fits(&x, q, &dims, self.gemv_tile, tokens);
            let mma_ok = || half2_fits && mma_fits(&x, q, &dims, tokens);
            return match self.gemv_variant {
                GemvVariant::AutoMma if mma_ok() => {
                    gemv_mma::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::Mma => {
                    if !mma_ok() {
                        return Err(QuantError::Method {
                            method: "cuda GEMV".into(),
                            message: format!(
                                "GemvVariant::Mma needs f16 activations, 4-bit codes, at most 8 \
                                 tokens, a multiple of 128 columns, groups of at least 128 \
                                 columns (a power of two) or one per row, at most {} KiB of \
                                 staged activations (tokens · columns · 2 bytes) and mma.sync \
                                 m16n8k16 in f16 (got {:?}, {} bits, {} columns, groups of {}, \
                                 {} tokens); use GemvVariant::Auto",
                                MMA_MAX_STAGE >> 10,
                                F::dtype(),
                                dims.bits,
                                dims.cols,
                                dims.group,
                                tokens
                            ),
                        });
                    }
                    gemv_mma::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::AutoTma if tma_ok() => {
                    gemv_tma::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::Tma => {
                    if !tma_ok() {
                        return Err(QuantError::Method {
                            method: "cuda GEMV".into(),
                            message: format!(
                                "GemvVariant::Tma needs a device with tensor copies (TMA), f16 \
                                 activations, 4-bit codes, a multiple of 64 columns, groups \
                                 of 32 to 256 · U columns (a power of two), a multiple of 4 \
                                 groups per row, 16-byte aligned operands and at most {} KiB of \
                                 shared memory per cube (fewer planes or tokens){} (got \
                                 {:?}, {} bits, {} columns, groups of {}, {} tokens); use \
                                 GemvVariant::Auto",
                                TMA_MAX_SMEM >> 10,
                                if self.gemv_tile.tma_mma {
                                    "; with tensor-core products (GemvTile::tma_mma) also at \
                                     most 16 tokens, groups of at least 128 columns, a \
                                     multiple of 256 columns and mma.sync m16n8k16 in f16"
                                } else {
                                    ""
                                },
                                F::dtype(),
                                dims.bits,
                                dims.cols,
                                dims.group,
                                tokens
                            ),
                        });
                    }
                    gemv_tma::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::AutoStream if stream_ok => {
                    gemv_stream::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::Auto
                | GemvVariant::AutoStream
                | GemvVariant::AutoTma
                | GemvVariant::AutoMma
                    if half2_fits =>
                {
                    // With the default tile, 2 to 16 tokens go to the tensor-core products
                    // where they fit (an explicit tile is the half2 GEMV's).
                    let mma_tile = auto_mma_rows(tokens, rows)
                        .filter(|_| self.gemv_tile == GemvTile::default())
                        .map(|plane_rows| GemvTile {
                            rows: Some(plane_rows),
                            tma_mma: true,
                            ..GemvTile::default()
                        })
                        .filter(|&tile| tma_fits(&x, q, &dims, tile, tokens));
                    match mma_tile {
                        Some(tile) => gemv_tma::<R, F>(x, q, input_scale, &dims, tile),
                        None => gemv_vector::<R, F>(
                            x,
                            q,
                            input_scale,
                            &dims,
                            self.gemv_tile,
                            LineDecode::Half2,
                        ),
                    }
                }
                GemvVariant::Half2 => {
                    if !half2_fits {
                        return Err(QuantError::Method {
                            method: "cuda GEMV".into(),
                            message: format!(
                                "GemvVariant::Half2 needs f16 activations, 4-bit codes, a \
                                 multiple of 32 columns and groups of whole 32-column lines \
                                 (got {:?}, {} bits, {} columns, groups of {}); use \
                                 GemvVariant::Auto",
                                F::dtype(),
                                dims.bits,
                                dims.cols,
                                dims.group
                            ),
                        });
                    }
                    gemv_vector::<R, F>(x, q, input_scale, &dims, self.gemv_tile, LineDecode::Half2)
                }
                GemvVariant::Stream => {
                    if !stream_ok {
                        return Err(QuantError::Method {
                            method: "cuda GEMV".into(),
                            message: format!(
                                "GemvVariant::Stream needs f16 activations, 4-bit codes, a \
                                 multiple of 32 columns, groups of whole 32-column lines and \
                                 at most {} bytes of staged activations (got {:?}, {} bits, \
                                 {} columns, groups of {}, {} tokens); use GemvVariant::Auto",
                                STREAM_MAX_XS_BYTES,
                                F::dtype(),
                                dims.bits,
                                dims.cols,
                                dims.group,
                                tokens
                            ),
                        });
                    }
                    gemv_stream::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::Auto
                | GemvVariant::AutoStream
                | GemvVariant::AutoTma
                | GemvVariant::AutoMma
                    if gemv_vector_fits(&dims) =>
                {
                    gemv_vector::<R, F>(x, q, input_scale, &dims, self.gemv_tile, LineDecode::F32)
                }
                GemvVariant::Vector => {
                    if !gemv_vector_fits(&dims) {
                        return Err(QuantError::Method {
                            method: "cuda GEMV".into(),
                            message: format!(
                                "GemvVariant::Vector needs 2, 4 or 8 bits, a multiple of {} \
                                 columns and groups of whole lines (got {} bits, {} columns, \
                                 groups of {}); use GemvVariant::Auto",
                                GEMV_LINE_WORDS * 32 / dims.bits.max(1),
                                dims.bits,
                                dims.cols,
                                dims.group
                            ),
                        });
                    }
                    gemv_vector::<R, F>(x, q, input_scale, &dims, self.gemv_tile, LineDecode::F32)
                }
                GemvVariant::Auto
                | GemvVariant::AutoStream
                | GemvVariant::AutoTma
                | GemvVariant::AutoMma
                | GemvVariant::Fused => {
                    gemv_fused::<R, F>(x, q, input_scale, &dims, self.gemv_tile)
                }
                GemvVariant::Padded => gemv::<R, F>(x, q, input_scale, &dims),
            };
        }
        let cmma = match self.dense_variant {
            DenseVariant::Cmma => true,
            DenseVariant::DequantMatmul => false,
            DenseVariant::Auto => false,
        };
        if cmma {
            if !has_f16_cmma::<R, F>(&x) {
                return Err(QuantError::Method {
                    method: "cuda dense matmul".into(),
                    message: "DenseVariant::Cmma needs 16x16x16 f16 tensor cores (cmma) \
                              on the device; use DenseVariant::Auto"
                        .into(),
                });
            }
            return gemm_cmma::<R, F>(x, q, input_scale, &dims);
        }
        // Dequantize, already transposed to `[cols, rows]` and contiguous, with the input
        // scale folded into the weight's columns, and let Burn's matmul do the rest. The
        // weight takes `x`'s own dtype, not `F`'s: Burn 0.21 makes tensors in the device's
        // default float dtype, which the first tensor made on the device fixes whatever
        // the backend type, so `x` is not `F` in a process that used the device through
        // another backend type first (the GPU tests do), and Burn's product needs both
        // operands in one dtype (docs/kernels.md, run 8).
        let dtype = x.dtype();
        let wt = wrap_float::<R, F, 2>(dequantize_t_prim::<R, F>(q, &dims, input_scale, dtype));
        if (dims.rows as usize) < DENSE_MIN_ROWS {
            // Burn's matmul gave wrong, varying results for a `[cols, 1]` right-hand side
            // in the property tests (f16 and f32, run 6: `17x1x576 element 0: -30288 vs
            // -227`), so very narrow outputs are summed element-wise instead (`m · cols ·
            // rows` products, a few per weight).
            let [tokens, _] = x.dims();
            let prod = x.unsqueeze_dim::<3>(2) * wt.unsqueeze_dim::<3>(0); // [m, cols, rows]
            return Ok(prod.sum_dim(1).reshape([tokens, dims.rows as usize]));
        }
        Ok(x.matmul(wt))
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

/// Launches [`kernels::channel_stats_split_kernel`] and [`kernels::channel_stats_combine_kernel`]
/// on `x` (`[tokens, d]`, contiguous, 16-byte aligned, `d` a multiple of `vector`, checked
/// by the caller), writing `max_abs` and `mean_sq` (`[d]`, f32).
fn launch_stats_split<R: CubeRuntime>(
    x: &CubeTensor<R>,
    max_abs: &CubeTensor<R>,
    mean_sq: &CubeTensor<R>,
    tokens_u: u32,
    d_u: u32,
    vector: usize,
) {
    let d = d_u as usize;
    let dtype = x.dtype;
    let d_vectors = (d / vector) as u32;
    let cubes_x = d_vectors.div_ceil(kernels::PLANE);
    // Splits of STATS_SPLIT_TOKENS tokens (fewer where the grid would exceed its y limit).
    let splits = tokens_u
        .div_ceil(STATS_SPLIT_TOKENS)
        .clamp(1, MAX_GRID_Y as u32);
    let split_tokens = tokens_u.div_ceil(splits).max(1);
    let splits = tokens_u.div_ceil(split_tokens).max(1);
    let part_max = empty(x, vec![splits as usize, d], DType::F32);
    let part_sum = empty(x, vec![splits as usize, d], DType::F32);
    // SAFETY: `d` is a whole number of vectors and `x` 16-byte aligned (the caller's
    // conditions); every load index is clamped to `x`, and only lanes of existing vectors
    // write, inside `[splits, d]`.
    unsafe {
        kernels::channel_stats_split_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(cubes_x, splits, 1),
            CubeDim {
                x: kernels::PLANE,
                y: STATS_SPLIT_PLANES,
                z: 1,
            },
            vector,
            x.clone().into_tensor_arg(),
            part_max.clone().into_tensor_arg(),
            part_sum.clone().into_tensor_arg(),
            tokens_u,
            d_vectors,
            split_tokens,
            vector as u32,
            STATS_SPLIT_PLANES,
            dtype.into(),
        );
        kernels::channel_stats_combine_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(d_u.div_ceil(kernels::PLANE), 1, 1),
            CubeDim {
                x: kernels::PLANE,
                y: STATS_COMBINE_PLANES,
                z: 1,
            },
            part_max.into_tensor_arg(),
            part_sum.into_tensor_arg(),
            max_abs.clone().into_tensor_arg(),
            mean_sq.clone().into_tensor_arg(),
            d_u,
            splits,
            tokens_u,
            STATS_COMBINE_PLANES,
        );
    }
}

/// The packed words (as 32-bit ints), scales and zeros (f32) of `q`, contiguous: the weight
/// operands every kernel that reads a quantized weight takes.
fn weight_prims<R: CubeRuntime, F: FloatElement>(
    q: &QuantizedWeight<Cb<R, F>>,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    (
        int_prim(q.packed.clone()),
        float_prim(q.scales.clone(), DType::F32),
        float_prim(q.zeros.clone(), DType::F32),
    )
}

/// `x` and its input scale (ones when absent) in `F`, contiguous: the activation operands of
/// the matmul kernels.
fn activation_prims<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [_, cols] = x.dims();
    let s = input_scale.unwrap_or_else(|| Tensor::ones([cols], &x.device()));
    (float_prim(x, F::dtype()), float_prim(s, F::dtype()))
}

/// Whether the device of `x` runs 16 × 16 × 16 f16 cmma with f32 accumulation.
fn has_f16_cmma<R: CubeRuntime, F: FloatElement>(x: &Tensor<Cb<R, F>, 2>) -> bool {
    let client = R::client(&x.device());
    let f16_ty =
        cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F16));
    let f32_ty =
        cubecl::ir::StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32));
    client
        .properties()
        .features
        .matmul
        .cmma
        .contains(&cubecl::ir::features::MmaConfig {
            a_type: f16_ty,
            b_type: f16_ty,
            cd_type: f32_ty,
            m: 16,
            k: 16,
            n: 16,
        })
}

/// The tensor-core dense path of [`CudaKernels::matmul`] ([`kernels::gemm_cmma_kernel`]).
fn gemm_cmma<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    let [tokens, cols] = x.dims();
    let (x, s) = activation_prims(x, input_scale);
    let tokens_u = u32_of(tokens, "tokens")?;
    u32_of(tokens.saturating_mul(cols), "activation elements")?;
    u32_of(tokens.saturating_mul(dims.rows as usize), "output elements")?;
    let (packed, scales, zeros) = weight_prims(q);
    let y = empty(&x, vec![tokens, dims.rows as usize], F::dtype());
    let token_tiles = tokens_u.div_ceil(kernels::GEMM_BM);
    if token_tiles as usize > MAX_GRID_Y {
        return Err(QuantError::shape(
            "cuda dense matmul",
            format!("at most {} tokens", MAX_GRID_Y * kernels::GEMM_BM as usize),
            tokens.to_string(),
        ));
    }
    // SAFETY: shapes were checked above; the kernel stages zeros for every index past the
    // end of a dimension and bounds-checks every store.
    unsafe {
        kernels::gemm_cmma_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(dims.rows.div_ceil(kernels::GEMM_BN), token_tiles, 1),
            CubeDim {
                x: kernels::PLANE,
                y: kernels::GEMM_PLANES,
                z: 1,
            },
            x.clone().into_tensor_arg(),
            s.into_tensor_arg(),
            packed.into_tensor_arg(),
            scales.into_tensor_arg(),
            zeros.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            tokens_u,
            dims.rows,
            dims.cols,
            dims.group_shift,
            dims.groups,
            dims.words_per_row,
            dims.bits,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(y))
}

/// Launches the dequantize kernel into a new `[rows, cols]` tensor of `dtype`.
fn dequantize_prim<R: CubeRuntime, F: FloatElement>(
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
        kernels::dequantize_kernel::launch_unchecked::<R>(
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
/// caller): [`kernels::dequantize_t_lines_kernel`] in the vector GEMV's layout,
/// [`kernels::dequantize_t_kernel`] otherwise.
fn dequantize_t_prim<R: CubeRuntime, F: FloatElement>(
    q: &QuantizedWeight<Cb<R, F>>,
    dims: &WeightDims,
    col_scale: Option<Tensor<Cb<R, F>, 1>>,
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
    let lines = gemv_vector_fits(dims) && aligned_16(&packed);
    let units_per_row = if lines {
        dims.words_per_row / GEMV_LINE_WORDS
    } else {
        dims.words_per_row
    };
    let cubes = CubeCount::Static(
        dims.rows.div_ceil(kernels::PLANE),
        units_per_row
            .div_ceil(units_per_cube)
            .min(MAX_GRID_Y as u32),
        1,
    );
    let cube_dim = CubeDim {
        x: kernels::PLANE,
        y: units_per_cube,
        z: 1,
    };
    // SAFETY: shapes were checked by the caller; the line kernel runs only where
    // `gemv_vector_fits` (rows of whole lines, groups of whole lines) and the 16-byte
    // alignment hold (above); both kernels guard every row and unit, and read `col_scale`
    // (of `cols` entries) only when `scaled`.
    unsafe {
        if lines {
            kernels::dequantize_t_lines_kernel::launch_unchecked::<R>(
                &packed.client,
                cubes,
                cube_dim,
                GEMV_VECTOR,
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
                GEMV_LINE_WORDS,
                scaled,
                dtype.into(),
            );
        } else {
            kernels::dequantize_t_kernel::launch_unchecked::<R>(
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

/// Rows each plane of the GEMV computes: more rows share each load of the activations,
/// fewer keep the accumulators (`tokens × rows`) in registers.
fn gemv_rows_per_plane(tokens: usize, bits: u32) -> u32 {
    let codes_per_word = 32 / bits as usize;
    match (tokens, codes_per_word) {
        (_, c) if c > 8 => 2,
        (t, _) if t <= 8 => 4,
        _ => 2,
    }
}

/// The fused GEMV path of [`CudaKernels::matmul`] (`tokens ≤ 16`).
fn gemv<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    let [tokens, _] = x.dims();
    let (x, s) = activation_prims(x, input_scale);
    let padded = dims.words_per_row as usize * dims.codes_per_word as usize;
    let xs = empty(&x, vec![tokens, padded], DType::F32);
    let threads = 256u32;
    let tokens_u = u32_of(tokens, "tokens")?;
    let padded_u = u32_of(padded, "padded columns")?;
    let dtype = x.dtype;
    // SAFETY: shapes were checked above and every index in the kernel is guarded or
    // clamped (see `kernels`).
    unsafe {
        kernels::scale_pad_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(padded_u.div_ceil(threads), tokens_u, 1),
            CubeDim {
                x: threads,
                y: 1,
                z: 1,
            },
            x.clone().into_tensor_arg(),
            s.into_tensor_arg(),
            xs.clone().into_tensor_arg(),
            tokens_u,
            dims.cols,
            padded_u,
            dtype.into(),
        );
    }

    let (packed, scales, zeros) = weight_prims(q);
    let y = empty(&x, vec![tokens, dims.rows as usize], F::dtype());
    let rpp = gemv_rows_per_plane(tokens, dims.bits);
    let planes_per_cube = 4u32;
    let planes = dims.rows.div_ceil(rpp);
    // SAFETY: shapes were checked above and every index in the kernel is guarded or
    // clamped (see `kernels`).
    unsafe {
        kernels::gemv_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(planes.div_ceil(planes_per_cube), 1, 1),
            CubeDim {
                x: kernels::PLANE,
                y: planes_per_cube,
                z: 1,
            },
            xs.into_tensor_arg(),
            packed.into_tensor_arg(),
            scales.into_tensor_arg(),
            zeros.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            dims.rows,
            dims.group_shift,
            dims.groups,
            dims.words_per_row,
            padded_u,
            tokens_u,
            dims.bits,
            rpp,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(y))
}

/// Packed words per lane load of [`kernels::gemv_vec_kernel`] (one 16-byte load).
const GEMV_LINE_WORDS: u32 = 4;

/// Elements per activation load of [`kernels::gemv_vec_kernel`] (the same count as
/// [`GEMV_LINE_WORDS`]: the kernel has one vector size).
const GEMV_VECTOR: usize = GEMV_LINE_WORDS as usize;

/// Whether [`kernels::gemv_vec_kernel`] can serve a weight of these dimensions: 2, 4 or 8
/// bits (whole codes per word, and `32 / bits` a multiple of the vector size so that a
/// word's activations are whole vectors), rows of whole four-word lines, and every line in
/// one group (a single group per row, or groups that are a multiple of a line's columns).
pub fn gemv_vector_fits_layout(bits: u32, cols: usize, group: usize, groups: usize) -> bool {
    if !matches!(bits, 2 | 4 | 8) {
        return false;
    }
    let line_cols = (GEMV_LINE_WORDS * 32 / bits) as usize;
    cols.is_multiple_of(line_cols) && (groups == 1 || group.is_multiple_of(line_cols))
}

fn gemv_vector_fits(dims: &WeightDims) -> bool {
    gemv_vector_fits_layout(
        dims.bits,
        dims.cols as usize,
        dims.group as usize,
        dims.groups as usize,
    )
}

/// Whether [`kernels::gemv_h2_kernel`] can serve a weight of these dimensions (f16
/// activations aside): 4-bit codes in the vector layout.
fn gemv_half2_fits(dims: &WeightDims) -> bool {
    dims.bits == 4 && gemv_vector_fits(dims)
}

/// Whether a tensor's data starts on a `bytes` boundary (vector loads need their size's
/// alignment; a view that starts inside a buffer may not have it).
fn aligned_to<R: CubeRuntime>(t: &CubeTensor<R>, bytes: u64) -> bool {
    t.handle.offset_start.unwrap_or(0).is_multiple_of(bytes)
}

fn aligned_16<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    aligned_to(t, 16)
}

/// The operands of a GEMV launch, contiguous and in the kernels' dtypes.
struct GemvOperands<R: CubeRuntime> {
    x: CubeTensor<R>,
    s: CubeTensor<R>,
    packed: CubeTensor<R>,
    scales: CubeTensor<R>,
    zeros: CubeTensor<R>,
    tokens: usize,
    tokens_u: u32,
}

impl<R: CubeRuntime> GemvOperands<R> {
    fn new<F: FloatElement>(
        x: Tensor<Cb<R, F>, 2>,
        q: &QuantizedWeight<Cb<R, F>>,
        input_scale: Option<Tensor<Cb<R, F>, 1>>,
    ) -> Result<Self, QuantError> {
        let [tokens, _] = x.dims();
        let tokens_u = u32_of(tokens, "tokens")?;
        let (x, s) = activation_prims(x, input_scale);
        let (packed, scales, zeros) = weight_prims(q);
        Ok(Self {
            x,
            s,
            packed,
            scales,
            zeros,
            tokens,
            tokens_u,
        })
    }
}

/// Which 16-byte-line GEMV kernel [`gemv_vector`] launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineDecode {
    /// [`kernels::gemv_vec_kernel`]: f32 decode and products (layouts of
    /// [`gemv_vector_fits`]).
    F32,
    /// [`kernels::gemv_h2_kernel`]: packed f16 pairs (f16, layouts of [`gemv_half2_fits`]).
    Half2,
}

/// The operands of a 16-byte-line GEMV ([`gemv_vector`], [`gemv_stream`]) and its empty
/// `[tokens, rows]` output; or, where `x`, the input scale or the packed words do not start
/// on a 16-byte boundary (their vector loads and copies need it), the result of
/// [`gemv_fused`]'s kernel on the same prepared operands.
#[allow(clippy::type_complexity)]
fn line_operands<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: GemvTile,
) -> Result<Result<(GemvOperands<R>, CubeTensor<R>), Tensor<Cb<R, F>, 2>>, QuantError> {
    let ops = GemvOperands::new(x, q, input_scale)?;
    if !(aligned_16(&ops.x) && aligned_16(&ops.s) && aligned_16(&ops.packed)) {
        return Ok(Err(launch_gemv_fused::<R, F>(ops, dims, tile)));
    }
    let y = empty(&ops.x, vec![ops.tokens, dims.rows as usize], F::dtype());
    Ok(Ok((ops, y)))
}

/// The vectorized GEMV paths of [`CudaKernels::matmul`] (`tokens ≤ 16`, layouts accepted
/// by [`gemv_vector_fits`], or [`gemv_half2_fits`] for [`LineDecode::Half2`]); falls back
/// to [`gemv_fused`]'s kernel, on the same prepared operands, for operands that do not
/// start on a 16-byte boundary.
fn gemv_vector<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: GemvTile,
    decode: LineDecode,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    let (ops, y) = match line_operands::<R, F>(x, q, input_scale, dims, tile)? {
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
    let (rows_per_cube, planes, unroll) = tile.resolve_vector(tokens, dims.bits);
    let lines_per_row = dims.words_per_row / GEMV_LINE_WORDS;
    let cubes = CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1);
    let cube_dim = CubeDim {
        x: kernels::PLANE,
        y: planes,
        z: 1,
    };
    // SAFETY: shapes and the layout were checked by the caller (`gemv_vector_fits`: rows
    // of whole lines, activations of whole vectors; `gemv_half2_fits` and f16 for the
    // half2 kernel) and the operands are 16-byte aligned (above); every index in the
    // kernels is guarded or clamped.
    unsafe {
        match decode {
            LineDecode::F32 => kernels::gemv_vec_kernel::launch_unchecked::<R>(
                &xp.client,
                cubes,
                cube_dim,
                GEMV_VECTOR,
                xp.clone().into_tensor_arg(),
                sp.into_tensor_arg(),
                packed.into_tensor_arg(),
                scales.into_tensor_arg(),
                zeros.into_tensor_arg(),
                y.clone().into_tensor_arg(),
                dims.rows,
                dims.group_shift,
                dims.groups,
                lines_per_row,
                kernels::GEMV_F32_MAGIC,
                tokens_u,
                dims.bits,
                GEMV_LINE_WORDS,
                rows_per_cube,
                unroll,
                planes,
                F::dtype().into(),
            ),
            LineDecode::Half2 => kernels::gemv_h2_kernel::launch_unchecked::<R>(
                &xp.client,
                cubes,
                cube_dim,
                GEMV_VECTOR,
                xp.clone().into_tensor_arg(),
                sp.into_tensor_arg(),
                packed.into_tensor_arg(),
                scales.into_tensor_arg(),
                zeros.into_tensor_arg(),
                y.clone().into_tensor_arg(),
                dims.rows,
                dims.group_shift,
                dims.groups,
                lines_per_row,
                kernels::GEMV_H2_MAGIC,
                tokens_u,
                rows_per_cube,
                unroll,
                planes,
            ),
        }
    }
    Ok(wrap_float(y))
}

/// Bytes of [`kernels::gemv_stream_kernel`]'s `x ⊙ s` staging for `tokens` tokens.
fn stream_xs_bytes(tokens: usize, dims: &WeightDims) -> usize {
    let lines = dims.words_per_row / GEMV_LINE_WORDS;
    tokens * kernels::stream_xs_blocks(lines) as usize * 256 * 8
}

/// Whether [`kernels::gemv_stream_kernel`] can serve `tokens` tokens of a weight that
/// [`gemv_half2_fits`]: the staged activations fit, and `R · tokens ≤ 32` leaves `R ≥ 1`.
fn stream_fits(tokens: usize, dims: &WeightDims) -> bool {
    (1..=32).contains(&tokens) && stream_xs_bytes(tokens, dims) <= STREAM_MAX_XS_BYTES
}

/// The streaming GEMV path of [`CudaKernels::matmul`] ([`kernels::gemv_stream_kernel`];
/// layouts of [`gemv_half2_fits`] and [`stream_fits`], f16). Falls back to [`gemv_fused`]'s
/// kernel for operands that do not start on a 16-byte boundary (see [`line_operands`]; the
/// 4-byte copies of scales and zeros need only f32 alignment, which every f32 view has).
fn gemv_stream<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: GemvTile,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    let (ops, y) = match line_operands::<R, F>(x, q, input_scale, dims, tile)? {
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
    let (rows_per_plane, planes, lines_per_lane) = tile.resolve_stream(tokens);
    let lines_per_row = dims.words_per_row / GEMV_LINE_WORDS;
    let xs_blocks = kernels::stream_xs_blocks(lines_per_row);
    let row_groups = dims.rows.div_ceil(rows_per_plane * planes);
    // Shared memory of one cube: the staged activations (8-byte vectors) and two buffers
    // of 16-byte lines plus 4-byte scales and zeros per lane, line and row.
    let stage = (planes * lines_per_lane * rows_per_plane * kernels::PLANE) as usize;
    let staged = if tile.stream_global_x {
        0
    } else {
        stream_xs_bytes(tokens, dims)
    };
    let smem = staged + 2 * stage * (16 + 4 + 4) + 64;
    let sms = xp
        .client
        .properties()
        .hardware
        .num_streaming_multiprocessors
        .unwrap_or(1)
        .max(1);
    let per_sm = tile
        .cubes_per_sm
        .map(|c| c.clamp(1, 32))
        .unwrap_or_else(|| {
            let by_warps = (16 / planes).max(1);
            let by_smem = (STREAM_SMEM_PER_SM / smem).max(1) as u32;
            by_warps.min(by_smem)
        });
    let cubes = row_groups.min(sms * per_sm).max(1);
    let cube_dim = CubeDim {
        x: kernels::PLANE,
        y: planes,
        z: 1,
    };
    // SAFETY: the caller checked the layout (`gemv_half2_fits`: rows of whole lines, lines
    // inside one group; f16), `stream_fits` bounds the staging the kernel's comptime
    // capacity holds, the operands are 16-byte aligned (above), and every index in the
    // kernel is clamped or guarded; the grid has at most `row_groups` cubes, as the kernel
    // assumes.
    unsafe {
        kernels::gemv_stream_kernel::launch_unchecked::<R>(
            &xp.client,
            CubeCount::Static(cubes, 1, 1),
            cube_dim,
            GEMV_VECTOR,
            xp.clone().into_tensor_arg(),
            sp.into_tensor_arg(),
            packed.into_tensor_arg(),
            scales.into_tensor_arg(),
            zeros.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            dims.rows,
            dims.group_shift,
            dims.groups,
            lines_per_row,
            row_groups,
            kernels::GEMV_H2_MAGIC,
            tokens_u,
            rows_per_plane,
            lines_per_lane,
            planes,
            xs_blocks,
            tile.stream_global_x,
        );
    }
    Ok(wrap_float(y))
}

/// Largest shared memory [`kernels::gemv_tma_kernel`] may take per cube (an H100's or
/// H200's 227 KiB per cube, with room for the mbarriers and the tail's partial sums).
const TMA_MAX_SMEM: usize = 200 << 10;

/// Shared memory of one [`kernels::gemv_tma_kernel`] cube: `S` slots (`tile`'s
/// [`GemvTile::resolve_tma_slots`]), each with every plane's codes (`R · U · 512` bytes),
/// scales and zeros (each padded to 128 bytes), and `K` copies
/// ([`GemvTile::resolve_tma_k_split`]) of a block's activations (`tokens · U · 2048` bytes)
/// and input scale (`U · 2048`), and 1 KiB of alignment.
fn tma_smem_bytes(tokens: usize, lines_per_row: u32, tile: &GemvTile, group: u32) -> usize {
    let (rows, planes, unroll) = tile.resolve_tma(tokens, lines_per_row);
    let (rows, planes, unroll) = (rows as usize, planes as usize, unroll as usize);
    let slots = tile.resolve_tma_slots() as usize;
    let groups_per_block = 1024 * unroll / group.max(1) as usize;
    let params = (rows * groups_per_block * 4).div_ceil(128) * 128;
    if tile.tma_mma {
        // No activation copies; each plane's paired `x ⊙ s` of its block, and the tail's
        // partial sums.
        return slots * planes * (rows * unroll * 512 + 2 * params)
            + planes * (tokens * unroll * 2048 + rows * 32 * tokens.div_ceil(8))
            + 1024;
    }
    let xs_copies = tile.resolve_tma_k_split(tokens, lines_per_row) as usize;
    slots * (planes * (rows * unroll * 512 + 2 * params) + xs_copies * (tokens + 1) * unroll * 2048)
        + 1024
}

/// Whether [`kernels::gemv_tma_kernel`] can serve `tokens` tokens of a weight that
/// [`gemv_half2_fits`], with `tile`: the device has tensor copies; groups are a power of
/// two from 32 columns to a block's `1024 · U` / 4 (a block's scales must be at least 16
/// bytes) and a row holds a multiple of 4 of them (the scales' row pitch must be a multiple
/// of 16 bytes); rows of whole 64-column units (the activations' copies are rows of 128
/// bytes); the cube's shared memory fits [`TMA_MAX_SMEM`]; the scales and zeros start
/// on 16-byte boundaries; `[rows, words]` codes.
fn tma_fits<R: CubeRuntime, F: FloatElement>(
    x: &Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    dims: &WeightDims,
    tile: GemvTile,
    tokens: usize,
) -> bool {
    let (_, _, unroll) = tile.resolve_tma(tokens, dims.words_per_row / GEMV_LINE_WORDS);
    let block_cols = kernels::PLANE * unroll * GEMV_LINE_WORDS * 8;
    let layout = dims.groups > 1
        && dims.group.is_power_of_two()
        && (32..=block_cols / 4).contains(&dims.group)
        && dims.groups.is_multiple_of(4)
        && dims.cols.is_multiple_of(64)
        && q.packed.dims() == [dims.rows as usize, dims.words_per_row as usize];
    // Tensor-core products: tokens are one or two blocks of the `mma`'s 8 columns, a step
    // of 128 columns lies in one group, and the codes' copies are chunks of 256 columns.
    let mma_layout =
        !tile.tma_mma || (tokens <= 16 && dims.group >= 128 && dims.cols.is_multiple_of(256));
    if !(layout && mma_layout) {
        return false;
    }
    let lines_per_row = dims.words_per_row / GEMV_LINE_WORDS;
    if tma_smem_bytes(tokens, lines_per_row, &tile, dims.group) > TMA_MAX_SMEM {
        return false;
    }
    let (_, scales, zeros) = weight_prims(q);
    if !(aligned_16(&scales) && aligned_16(&zeros)) {
        return false;
    }
    let client = R::client(&x.device());
    let features = &client.properties().features;
    features.tma.contains(cubecl::ir::features::Tma::Base)
        && (!tile.tma_mma || features.matmul.mma.contains(&MMA_F16_M16N8K16))
}

/// The `mma` shape and types of [`kernels::gemv_tma_kernel`]'s tensor-core products.
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

/// The TMA GEMV path of [`CudaKernels::matmul`] ([`kernels::gemv_tma_kernel`]; layouts of
/// [`tma_fits`], f16). Falls back to [`gemv_fused`]'s kernel where `x`, the input scale or
/// the codes do not start on a 16-byte boundary (see [`line_operands`]).
fn gemv_tma<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: GemvTile,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    let (ops, y) = match line_operands::<R, F>(x, q, input_scale, dims, tile)? {
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
    let lines_per_row = dims.words_per_row / GEMV_LINE_WORDS;
    let (rows_per_plane, planes, unroll) = tile.resolve_tma(tokens, lines_per_row);
    let block_cols = kernels::PLANE * unroll * GEMV_LINE_WORDS * 8;
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
    // swizzle, session 13 call 4: the swizzle lays out whole 128-byte rows.)
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
        x: kernels::PLANE,
        y: planes,
        z: 1,
    };
    let k_split = tile.resolve_tma_k_split(tokens, lines_per_row);
    let rows_per_cube = rows_per_plane * planes / k_split;
    let packed_map = if tile.tma_mma {
        // The codes as `[words / 32, rows, 32]` (a view with the rows' own pitch): a box
        // of `4 · U` chunks of 128 bytes per row, swizzled by 128 bytes, lays a block out
        // as `[chunk][row][8 lines]` (see `kernels::tma_block_mma`).
        let wpr = dims.words_per_row as usize;
        // SAFETY: the view covers exactly the contiguous `[rows, words]` codes
        // (`tma_fits`: `[rows, words]` codes, words a multiple of 32).
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
        map(packed, kernels::PLANE * unroll * GEMV_LINE_WORDS, u32_ty)
    };
    // SAFETY: `tma_fits` checked the layout (f16 and `gemv_half2_fits` by the caller;
    // groups that tile a block, scales rows of whole 16-byte units, `[rows, words]` codes),
    // the operands are 16-byte aligned (above), and the kernel guards every index it
    // computes itself; the tensor copies zero-fill what lies past the weight's edges.
    unsafe {
        kernels::gemv_tma_kernel::launch_unchecked::<R>(
            &xp.client,
            CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1),
            cube_dim,
            GEMV_VECTOR,
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
            kernels::GEMV_H2_MAGIC,
            dims.cols / 4,
            tokens_u,
            rows_per_plane,
            unroll,
            planes,
            groups_per_block,
            tile.resolve_tma_slots(),
            k_split,
            tile.tma_mma,
            tile.probe != GemvProbe::ComputeOnly,
            tile.probe != GemvProbe::LoadsOnly,
        );
    }
    Ok(wrap_float(y))
}

/// Most bytes of `x ⊙ s` and its column sums that [`gemv_mma::gemv_mma_kernel`] stages in
/// a cube's shared memory ([`mma_stage_bytes`]): one token of up to about 48 000 columns,
/// eight of up to about 6 000.
const MMA_MAX_STAGE: usize = 96 << 10;

/// Shared memory of one [`gemv_mma::gemv_mma_kernel`] cube for `tokens` tokens of `cols`
/// columns: the paired `x ⊙ s` (2 bytes per column and token) and the column sums (8
/// bytes per 128 columns and token).
fn mma_stage_bytes(tokens: usize, cols: usize) -> usize {
    tokens * cols * 2 + tokens * cols.div_ceil(128) * 8
}

/// Whether [`gemv_mma::gemv_mma_kernel`] can serve `tokens` tokens of a weight that
/// [`gemv_half2_fits`]: at most 8 tokens (one block of the `mma`'s B columns), rows of
/// whole 128-column steps, each step inside one group (groups of a power of two from 128
/// columns, or one group per row), `[rows, words]` codes, the staging within
/// [`MMA_MAX_STAGE`], and `mma.sync` m16n8k16 in f16 on the device.
fn mma_fits<R: CubeRuntime, F: FloatElement>(
    x: &Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    dims: &WeightDims,
    tokens: usize,
) -> bool {
    let layout = (1..=8).contains(&tokens)
        && dims.cols.is_multiple_of(128)
        && (dims.groups == 1 || (dims.group.is_power_of_two() && dims.group >= 128))
        && q.packed.dims() == [dims.rows as usize, dims.words_per_row as usize]
        && mma_stage_bytes(tokens, dims.cols as usize) <= MMA_MAX_STAGE;
    layout
        && R::client(&x.device())
            .properties()
            .features
            .matmul
            .mma
            .contains(&MMA_F16_M16N8K16)
}

/// The direct tensor-core GEMV path of [`CudaKernels::matmul`]
/// ([`gemv_mma::gemv_mma_kernel`]; layouts of [`mma_fits`], f16). Falls back to
/// [`gemv_fused`]'s kernel where `x`, the input scale or the codes do not start on a
/// 16-byte boundary (see [`line_operands`]).
fn gemv_mma<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: GemvTile,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    let (ops, y) = match line_operands::<R, F>(x, q, input_scale, dims, tile)? {
        Ok(prepared) => prepared,
        Err(fallback) => return Ok(fallback),
    };
    let (rows_per_cube, planes, chunk_steps) = tile.resolve_mma();
    // SAFETY: `mma_fits` checked the layout (f16 and `gemv_half2_fits` by the caller: rows
    // of whole 128-column steps, one group per step, `[rows, words]` codes), the operands
    // are 16-byte aligned (above), and the kernel clamps every load index to the weight
    // and writes only rows below `rows`.
    unsafe {
        gemv_mma::gemv_mma_kernel::launch_unchecked::<R>(
            &ops.x.client,
            CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1),
            CubeDim {
                x: kernels::PLANE,
                y: planes,
                z: 1,
            },
            GEMV_VECTOR,
            ops.x.clone().into_tensor_arg(),
            ops.s.into_tensor_arg(),
            ops.packed.into_tensor_arg(),
            ops.scales.into_tensor_arg(),
            ops.zeros.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            dims.rows,
            dims.group_shift,
            dims.groups,
            kernels::GEMV_H2_MAGIC,
            0u32,
            ops.tokens_u,
            rows_per_cube,
            planes,
            chunk_steps,
            dims.words_per_row / GEMV_LINE_WORDS,
            tile.probe != GemvProbe::ComputeOnly,
            tile.probe != GemvProbe::LoadsOnly,
        );
    }
    Ok(wrap_float(y))
}

/// The fused-scale GEMV path of [`CudaKernels::matmul`] (`tokens ≤ 16`).
fn gemv_fused<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: GemvTile,
) -> Result<Tensor<Cb<R, F>, 2>, QuantError> {
    Ok(launch_gemv_fused::<R, F>(
        GemvOperands::new(x, q, input_scale)?,
        dims,
        tile,
    ))
}

/// Launches [`kernels::gemv_fused_kernel`] on prepared operands.
fn launch_gemv_fused<R: CubeRuntime, F: FloatElement>(
    ops: GemvOperands<R>,
    dims: &WeightDims,
    tile: GemvTile,
) -> Tensor<Cb<R, F>, 2> {
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
    let (rows_per_cube, planes, unroll) = tile.resolve(tokens, dims.bits);
    // SAFETY: shapes were checked above and every index in the kernel is guarded or
    // clamped (see `kernels`).
    unsafe {
        kernels::gemv_fused_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1),
            CubeDim {
                x: kernels::PLANE,
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
            !tile.convert,
            tile.prefetch,
            F::dtype().into(),
        );
    }
    wrap_float(y)
}

#[cfg(test)]
mod tests {
    use super::auto_mma_rows;

    /// `GemvVariant::Auto`'s tensor-core range is the one session 16 measured: 2 to 16
    /// tokens (one token stays on the half2 GEMV; more than 16 take the dense path), 32 rows
    /// per plane only at 4 to 8 tokens on weights of at least 8192 rows.
    #[test]
    fn auto_takes_tensor_cores_for_two_to_sixteen_tokens() {
        for rows in [16, 4096, 8192, 14336] {
            assert_eq!(auto_mma_rows(0, rows), None);
            assert_eq!(auto_mma_rows(1, rows), None);
            assert_eq!(auto_mma_rows(17, rows), None);
            for tokens in (2..=3).chain(9..=16) {
                assert_eq!(auto_mma_rows(tokens, rows), Some(16));
            }
        }
        for tokens in 4..=8 {
            assert_eq!(auto_mma_rows(tokens, 4096), Some(16));
            assert_eq!(auto_mma_rows(tokens, 8191), Some(16));
            assert_eq!(auto_mma_rows(tokens, 8192), Some(32));
            assert_eq!(auto_mma_rows(tokens, 14336), Some(32));
        }
    }
}
