//! The CubeCL kernels. Launch code and shape checks live in [`super`].
//!
//! Every kernel computes in f32 whatever the float element `F` of its inputs and outputs
//! (f32 or f16): the quantizer's arithmetic must be bit-identical to
//! [`crate::reference::quantize`], which works in f32.
//!
//! Conventions shared by all kernels:
//! - tensors are contiguous and row-major (the launchers make them so);
//! - packed words are read and written as `u32`, whatever the Int tensor's declared element
//!   (`i32` bit pattern, see `ttq_core::group`);
//! - no kernel leaves early before a barrier: threads with nothing to do skip their work
//!   but still reach every `sync_cube`;
//! - the group of column `c` is `c >> group_shift` (groups are powers of two; a row with a
//!   single group gets a shift of 31, so every column maps to group 0): a run-time integer
//!   division per code cost more than the rest of the decode;
//! - kernels are launched unchecked (no bounds check on each access, which doubled the
//!   instruction count of the loops); every index is kept in bounds by construction
//!   (guards or clamped indices), and the launchers check all shapes first.

use burn::tensor::f16;
use cubecl::prelude::barrier::{copy_async, Barrier};
use cubecl::prelude::*;

/// Threads per plane (warp) the kernels assume; CUDA's warp size.
pub const PLANE: u32 = 32;

/// The bits of two f16 1024.0 (one per 16-bit half) that [`gemv_h2_kernel`] ORs code pairs
/// into (its `magic` argument).
pub const GEMV_H2_MAGIC: u32 = 0x6400_6400;

/// The bits of the f32 2²³ (mantissa unit 1) that [`gemv_vec_kernel`] ORs codes into (its
/// `magic` argument).
pub const GEMV_F32_MAGIC: u32 = 0x4B00_0000;

/// Tokens each thread of the statistics kernel loads per loop step.
const STATS_UNROLL: u32 = 4;

/// Elements of a group each lane of the quantizer loads per loop step.
const QUANT_UNROLL: u32 = 4;

/// Per-channel statistics of `x` (`[tokens, d]`).
///
/// A cube of `32 × P` threads (`P = CUBE_DIM_Y ≤ 32`) owns 32 consecutive channels: the 32
/// lanes of a plane read 32 neighbouring channels of one token (a coalesced 64- or 128-byte
/// row segment) and the P planes take every P-th token, four tokens per loop step with the
/// four loads issued before they are used (a serial loop of single loads is bound by memory
/// latency, not bandwidth). Pass 1 finds `max |x|` per channel, pass 2 sums `(x / max)²`
/// (its re-read of the cube's column block mostly hits L2). Partial results of the P
/// planes are combined in shared memory.
#[cube(launch_unchecked)]
pub fn channel_stats_kernel<F: Float>(
    x: &Tensor<F>,
    max_abs: &mut Tensor<f32>,
    mean_sq: &mut Tensor<f32>,
    tokens: u32,
    d: u32,
    #[define(F)] _dtype: StorageType,
) {
    let lane = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let ny = CUBE_DIM_Y;
    let ch = CUBE_POS_X * PLANE + lane;
    let valid = ch < d;
    let d_us = d as usize;
    let mut partial = SharedMemory::<f32>::new(1024usize);
    let mut col = SharedMemory::<f32>::new(32usize);

    let mut m = 0.0f32;
    if valid {
        let mut t = ty;
        while t < tokens {
            #[unroll]
            for u in 0..STATS_UNROLL {
                let tt = t + u * ny;
                if tt < tokens {
                    let v = f32::abs(f32::cast_from(x[tt as usize * d_us + ch as usize]));
                    m = f32::max(m, v);
                }
            }
            t += STATS_UNROLL * ny;
        }
    }
    partial[(ty * PLANE + lane) as usize] = m;
    sync_cube();
    if ty == 0 {
        let mut mm = 0.0f32;
        for k in 0..ny {
            mm = f32::max(mm, partial[(k * PLANE + lane) as usize]);
        }
        col[lane as usize] = mm;
        if valid {
            max_abs[ch as usize] = mm;
        }
    }
    sync_cube();

    let safe = f32::max(col[lane as usize], 1e-15f32);
    let mut acc = 0.0f32;
    if valid {
        let mut t = ty;
        while t < tokens {
            #[unroll]
            for u in 0..STATS_UNROLL {
                let tt = t + u * ny;
                if tt < tokens {
                    let r = f32::cast_from(x[tt as usize * d_us + ch as usize]) / safe;
                    acc += r * r;
                }
            }
            t += STATS_UNROLL * ny;
        }
    }
    sync_cube();
    partial[(ty * PLANE + lane) as usize] = acc;
    sync_cube();
    if ty == 0 && valid {
        let mut s = 0.0f32;
        for k in 0..ny {
            s += partial[(k * PLANE + lane) as usize];
        }
        let n = f32::cast_from(u32::max(tokens, 1));
        mean_sq[ch as usize] = s / n;
    }
}

/// Tokens each plane of [`channel_stats_split_kernel`] loads per loop step.
const STATS_SPLIT_UNROLL: u32 = 4;

/// Per-channel statistics of `x` (`[tokens, d]`) over one split of its tokens, for
/// [`channel_stats_combine_kernel`]; the default where `d` is a multiple of the 16-byte
/// vector (`N` = 8 f16 or 4 f32 channels) and `x` is 16-byte aligned.
///
/// Cube `(bx, by)` of `32 × P` threads owns the `32 · N` channels of vector column block
/// `bx` and the tokens of split `by` (`split_tokens` consecutive tokens): lane `l` of plane
/// `p` loads the 16-byte vector `bx · 32 + l` of tokens `p, p + P, …` of the split, so a
/// plane's load is one coalesced 512-byte row segment, and issues `STATS_SPLIT_UNROLL` of
/// them before using any. Pass 1 takes `max |x|`, combined over the planes in shared
/// memory; pass 2 (a re-read, mostly from L1/L2) sums `(x · (1 / m))²` with the split's
/// maximum `m`. The split's maximum and sum go to `part_max` / `part_sum` (`[splits, d]`).
///
/// Why not [`channel_stats_kernel`]: one 2-byte load per lane and token, and a cube per 32
/// channels over all tokens (128 cubes for 4096 channels): 19-51 µs at 2048 tokens, 18-26%
/// of the copy bandwidth (session 9, call 1).
///
/// The launcher keeps splits short (64 tokens), so that a cube's pass-2 re-read (32 KB in
/// f16) still sits in L1: with splits of about 205 tokens over 14336 channels the whole
/// pass-1 footprint outgrew L2 and the re-read went to DRAM (78.7% DRAM throughput for
/// 1.9 TB/s of input, session 9 call 3).
///
/// Why two passes: a one-pass version (a running maximum per element, the sum rescaled by
/// (old / new maximum)² where a step raised it) took 24.8 / 36.7 / 59.5 µs for 4096 / 8192 /
/// 14336 channels at 2048 tokens against this kernel's 9.8 / 15.8 / 23.3: 75 registers
/// instead of 48, 1.5× the instructions and 14-21% DRAM throughput (session 11 call 10).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn channel_stats_split_kernel<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    part_max: &mut Tensor<f32>,
    part_sum: &mut Tensor<f32>,
    tokens: u32,
    d_vectors: u32,
    split_tokens: u32,
    #[comptime] vector: u32,
    #[comptime] planes: u32,
    #[define(F)] _dtype: StorageType,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let vi = CUBE_POS_X * PLANE + lane;
    let vi_c = u32::min(vi, d_vectors - 1) as usize;
    let dv = d_vectors as usize;
    let t0 = CUBE_POS_Y * split_tokens;
    let t1 = u32::min(t0 + split_tokens, tokens);
    let nv = comptime!(vector as usize);
    let step = comptime!(planes * STATS_SPLIT_UNROLL);
    // `[plane][element][lane]`: lanes hit consecutive banks.
    let mut partial = SharedMemory::<f32>::new(comptime!((planes * vector * PLANE) as usize));

    // Pass 1: the maximum. Past the split's end the index is clamped to its last token,
    // which changes no maximum.
    let mut m = Array::<f32>::new(nv);
    #[unroll]
    for e in 0..vector {
        m[e as usize] = 0.0f32;
    }
    let mut t = t0 + plane;
    while t < t1 {
        #[unroll]
        for u in 0..STATS_SPLIT_UNROLL {
            let tt = u32::min(t + u * planes, t1 - 1);
            let v = x[tt as usize * dv + vi_c];
            #[unroll]
            for e in 0..vector {
                m[e as usize] = f32::max(m[e as usize], f32::abs(f32::cast_from(v[e as usize])));
            }
        }
        t += step;
    }
    #[unroll]
    for e in 0..vector {
        partial[((plane * vector + e) * PLANE + lane) as usize] = m[e as usize];
    }
    sync_cube();
    let mut inv = Array::<f32>::new(nv);
    #[unroll]
    for e in 0..vector {
        let mut c = 0.0f32;
        for k in 0..planes {
            c = f32::max(c, partial[((k * vector + e) * PLANE + lane) as usize]);
        }
        m[e as usize] = c;
        inv[e as usize] = 1.0f32 / f32::max(c, 1e-15f32);
    }
    sync_cube();

    // Pass 2: the sum of squares normalized by the split's maximum.
    let mut acc = Array::<f32>::new(nv);
    #[unroll]
    for e in 0..vector {
        acc[e as usize] = 0.0f32;
    }
    let mut t = t0 + plane;
    while t < t1 {
        #[unroll]
        for u in 0..STATS_SPLIT_UNROLL {
            let tt = t + u * planes;
            let v = x[u32::min(tt, t1 - 1) as usize * dv + vi_c];
            let live = tt < t1;
            #[unroll]
            for e in 0..vector {
                let r = f32::cast_from(v[e as usize]) * inv[e as usize];
                acc[e as usize] += select(live, r * r, 0.0f32);
            }
        }
        t += step;
    }
    #[unroll]
    for e in 0..vector {
        partial[((plane * vector + e) * PLANE + lane) as usize] = acc[e as usize];
    }
    sync_cube();
    if plane == 0 && vi < d_vectors {
        let d_us = dv * nv;
        #[unroll]
        for e in 0..vector {
            let mut s = 0.0f32;
            for k in 0..planes {
                s += partial[((k * vector + e) * PLANE + lane) as usize];
            }
            let o = CUBE_POS_Y as usize * d_us + vi as usize * nv + e as usize;
            part_max[o] = m[e as usize];
            part_sum[o] = s;
        }
    }
}

/// Splits each plane of [`channel_stats_combine_kernel`] loads per loop step, before using
/// any (independent loads in flight: a loop of one dependent load per split took 8-19 µs for
/// 16-56 splits, session 9 call 3).
const STATS_COMBINE_UNROLL: u32 = 4;

/// Folds one split into a running `(safe, s)`: `s` is a sum of squares normalized by
/// `safe`, the running maximum floored at `1e-15`; the split brings its maximum `mb` and its
/// sum `sb`, normalized by `max(mb, 1e-15)`. The larger normalizer wins and the other sum
/// enters times (its normalizer / the winner)², so no term is ever scaled up. Returns the
/// new `(safe, s)`; the caller keeps the plain maximum itself (`max_abs` is exact).
#[cube]
fn fold_split(safe: f32, s: f32, mb: f32, sb: f32) -> (f32, f32) {
    let nb = f32::max(mb, 1e-15f32);
    let mut out_safe = safe;
    let mut out_s = s;
    if nb > safe {
        let r = safe / nb;
        out_s = s * (r * r) + sb;
        out_safe = nb;
    } else {
        let r = nb / safe;
        out_s += sb * (r * r);
    }
    (out_safe, out_s)
}

/// Combines [`channel_stats_split_kernel`]'s splits. A cube of `32 × planes` threads owns 32
/// channels (lane `l`: channel `32 · bx + l`, so a plane's load is one 128-byte row piece);
/// plane `p` folds splits `p, p + planes, …` (`STATS_COMBINE_UNROLL` loads in flight per
/// step) into a running maximum and a sum normalized by it ([`fold_split`]); plane 0
/// folds the planes' partials from shared memory the same way. Maxima below `1e-15` count as
/// `1e-15`, as in [`channel_stats_kernel`] and the reference; `max_abs` is the largest
/// maximum, exactly.
///
/// Why planes: a thread per channel over all splits (session 9) made 16 cubes of serial
/// loads for 4096 channels and took 8.2-8.5 µs at 2048 tokens (32 splits), as long as the
/// split kernel itself (session 9 call 4); in planes it takes 4.3 / 4.7 / 5.2 µs for 4096 /
/// 8192 / 14336 channels (session 11 call 2).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn channel_stats_combine_kernel(
    part_max: &Tensor<f32>,
    part_sum: &Tensor<f32>,
    max_abs: &mut Tensor<f32>,
    mean_sq: &mut Tensor<f32>,
    d: u32,
    splits: u32,
    tokens: u32,
    #[comptime] planes: u32,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let ch = CUBE_POS_X * PLANE + lane;
    let ch_c = u32::min(ch, d - 1) as usize;
    let d_us = d as usize;
    let mut m = 0.0f32;
    let mut safe = 1e-15f32;
    let mut s = 0.0f32;
    let mut pm = Array::<f32>::new(comptime!(STATS_COMBINE_UNROLL as usize));
    let mut ps = Array::<f32>::new(comptime!(STATS_COMBINE_UNROLL as usize));
    let step = comptime!(planes * STATS_COMBINE_UNROLL);
    let mut b0 = plane;
    while b0 < splits {
        // The step's loads first (clamped past the last split, skipped below).
        #[unroll]
        for u in 0..STATS_COMBINE_UNROLL {
            let p = u32::min(b0 + u * planes, splits - 1) as usize * d_us + ch_c;
            pm[u as usize] = part_max[p];
            ps[u as usize] = part_sum[p];
        }
        #[unroll]
        for u in 0..STATS_COMBINE_UNROLL {
            if b0 + u * planes < splits {
                let (f_safe, f_s) = fold_split(safe, s, pm[u as usize], ps[u as usize]);
                safe = f_safe;
                s = f_s;
                m = f32::max(m, pm[u as usize]);
            }
        }
        b0 += step;
    }
    // `[quantity][plane][lane]`: lanes hit consecutive banks.
    let mut partial = SharedMemory::<f32>::new(comptime!((3 * planes * PLANE) as usize));
    let slot = plane * PLANE + lane;
    partial[slot as usize] = m;
    partial[(planes * PLANE + slot) as usize] = safe;
    partial[(2 * planes * PLANE + slot) as usize] = s;
    sync_cube();
    if plane == 0 && ch < d {
        let mut m = 0.0f32;
        let mut safe = 1e-15f32;
        let mut s = 0.0f32;
        for k in 0..planes {
            let o = k * PLANE + lane;
            // A plane's partial is a split like any other: its maximum, and its sum
            // normalized by `max(maximum, 1e-15)`, which is its `safe`. A plane that got no
            // split has (0, 1e-15, 0) and changes nothing.
            let pk_safe = partial[(planes * PLANE + o) as usize];
            let pk_s = partial[(2 * planes * PLANE + o) as usize];
            let (f_safe, f_s) = fold_split(safe, s, pk_safe, pk_s);
            safe = f_safe;
            s = f_s;
            m = f32::max(m, partial[o as usize]);
        }
        max_abs[ch as usize] = m;
        mean_sq[ch as usize] = s / f32::cast_from(u32::max(tokens, 1));
    }
}

/// TTQ's scale `D` and its reciprocal per channel from the channel statistics, one thread
/// per channel: `ttq_core::TtqScaleConfig::scale`'s f32 operations in the same order
/// (`m = max(max_abs, MIN_MAX_ABS)`, `ln s = 2 ln m + ln(n + (1 / m²) · λ)`,
/// `ln D = clamp(α · ln s, ±MAX_LOG_SCALE)`, `D = exp(ln D)`), then `D⁻¹ = 1 / D`. One launch
/// instead of the dozen element-wise Burn ops of the trait's default. The launcher handles
/// α = 0 (`D = 1`) without launching.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn ttq_scale_kernel(
    max_abs: &Tensor<f32>,
    mean_sq_normalized: &Tensor<f32>,
    d: &mut Tensor<f32>,
    d_inv: &mut Tensor<f32>,
    channels: u32,
    alpha: f32,
    lambda: f32,
    min_max_abs: f32,
    max_log_scale: f32,
) {
    let mut i = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
    while i < channels {
        let m = f32::max(max_abs[i as usize], min_max_abs);
        let m_sq = m * m;
        let log_s = f32::ln(m) * 2.0f32
            + f32::ln(mean_sq_normalized[i as usize] + (1.0f32 / m_sq) * lambda);
        let log_d = f32::clamp(log_s * alpha, -max_log_scale, max_log_scale);
        let v = f32::exp(log_d);
        d[i as usize] = v;
        d_inv[i as usize] = 1.0f32 / v;
        i += CUBE_COUNT_X * CUBE_DIM_X;
    }
}

/// Scale and zero point of one group from its (column-scaled) range, with exactly the f32
/// operations of `reference::group_params`. For the symmetric scheme `lo` is unused and
/// `hi` is the group's `max |v|`.
#[cube]
fn group_params(
    lo: f32,
    hi: f32,
    #[comptime] bits: u32,
    #[comptime] symmetric: bool,
) -> (f32, f32) {
    let max_code = comptime!(((1u32 << bits) - 1) as f32);
    if comptime!(symmetric) {
        let half = comptime!((1u32 << (bits - 1)) as f32);
        let mut s = hi / comptime!(half - 1.0);
        if s == 0.0 {
            s = 1.0;
        }
        (s, half)
    } else {
        let mut s = (hi - lo) / max_code;
        if s == 0.0 {
            s = 1.0;
        }
        let z = f32::clamp(f32::round(-lo / s), 0.0, max_code);
        (s, z)
    }
}

/// Fused `w · diag(d)` + group-wise quantization + packing, one cube per weight row.
///
/// Phase 1: each plane of the cube takes whole groups (plane `p` takes groups `p, p + P, …`);
/// its lanes stride over the group's columns, reduce min/max across the plane and lane 0
/// writes the group's scale and zero point to global memory.
/// Phase 2 (after a cube barrier, which also makes phase 1's global writes visible to the
/// cube): each thread owns whole output words; for every code of its word it looks up the
/// parameters of the code's group, so words that straddle two groups (3, 5, 6, 7 bits) are
/// packed correctly. Phase 2 re-reads the row, which the cube has just brought into L1/L2.
///
/// The launcher runs `min(rows, 65535)` cubes; cube `i` handles rows `i, i + count, …`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn quantize_pack_kernel<F: Float>(
    w: &Tensor<F>,
    col_scale: &Tensor<F>,
    scales: &mut Tensor<f32>,
    zeros: &mut Tensor<f32>,
    packed: &mut Tensor<u32>,
    rows: u32,
    cols: u32,
    group: u32,
    group_shift: u32,
    groups: u32,
    words_per_row: u32,
    #[comptime] bits: u32,
    #[comptime] symmetric: bool,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let max_code = comptime!(((1u32 << bits) - 1) as f32);
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let planes = CUBE_DIM_Y;
    let tid = plane * PLANE + lane;
    let threads = planes * PLANE;
    let cols_us = cols as usize;

    let mut row = CUBE_POS_X;
    while row < rows {
        let w_row = row as usize * cols_us;
        let p_row = row as usize * groups as usize;

        // Phase 1: group parameters.
        let mut gi = plane;
        while gi < groups {
            let start = gi * group;
            let end = u32::min(start + group, cols);
            let mut lo = 0.0f32;
            let mut hi = 0.0f32;
            let mut c = start + lane;
            while c < end {
                #[unroll]
                for u in 0..QUANT_UNROLL {
                    let cu = c + u * PLANE;
                    if cu < end {
                        let v = f32::cast_from(w[w_row + cu as usize])
                            * f32::cast_from(col_scale[cu as usize]);
                        if comptime!(symmetric) {
                            hi = f32::max(hi, f32::abs(v));
                        } else {
                            lo = f32::min(lo, v);
                            hi = f32::max(hi, v);
                        }
                    }
                }
                c += QUANT_UNROLL * PLANE;
            }
            let lo = plane_min(lo);
            let hi = plane_max(hi);
            let (s, z) = group_params(lo, hi, bits, symmetric);
            if lane == 0 {
                scales[p_row + gi as usize] = s;
                zeros[p_row + gi as usize] = z;
            }
            gi += planes;
        }
        sync_cube();

        // Phase 2: codes, packed one word per thread.
        let mut wi = tid;
        while wi < words_per_row {
            let mut word = 0u32;
            #[unroll]
            for k in 0..cpw {
                let c = wi * cpw + k;
                if c < cols {
                    let g = c >> group_shift;
                    let s = scales[p_row + g as usize];
                    let z = zeros[p_row + g as usize];
                    let v = f32::cast_from(w[w_row + c as usize])
                        * f32::cast_from(col_scale[c as usize]);
                    let q = f32::clamp(f32::round(v / s) + z, 0.0, max_code);
                    word |= u32::cast_from(q) << (k * bits);
                }
            }
            packed[row as usize * words_per_row as usize + wi as usize] = word;
            wi += threads;
        }
        // Phase 1 of the next row overwrites nothing phase 2 reads, but keep the rows apart
        // so that a slow plane never races ahead into the next row's barrier.
        sync_cube();
        row += CUBE_COUNT_X;
    }
}

/// Group-parallel quantize-pack, the fast path of [`quantize_pack_kernel`] for the common
/// layouts: a group of `group` columns (`32 ≤ group ≤ 512`, a power of two) whose words do
/// not straddle groups (`32 / bits` a power of two dividing `group`).
///
/// Each group is quantized by `L = group / per_lane` neighbouring lanes (a power of two up
/// to 32), `per_lane` consecutive columns each (32 by default, see the launcher), so a plane
/// holds `32 / L` neighbouring groups. The grid is `(groups / (P · steps · 32 / L), rows)`:
/// slot `l / L` of plane `p` of cube `(x, y)` owns group `((x · steps + st) · P + p) · 32 / L
/// + l / L` (`st < steps`) of row `y` (rows grid-strided past 65535), so no thread divides by
/// the run-time group count. A plane issues the loads of all its groups first and keeps
/// them in registers, so the row is read once (the generic kernel reads it twice, element
/// by element), `vector` columns per load (`N`-element vector loads of `W` and of the column
/// scale, up to 16 bytes, where the row length and the buffers' alignment allow; the
/// launcher picks `vector`). The group's range comes from a butterfly of `log2 L` XOR
/// shuffles; each lane turns its values into codes with the reference's f32 operations and
/// shifts them to their bit positions; lanes holding whole words store them, and lanes that
/// share a word (`per_lane < 32 / bits`) combine their disjoint bits with
/// `plane_shuffle_xor` sums first. With `ragged` false (the row is whole groups) the
/// per-column bounds checks are compiled out.
///
/// The rounding and the float-to-integer conversion, which ran on reduced-throughput units
/// in the first version of this kernel (compute-bound at 83% SM throughput under Nsight
/// Compute), use the 2²³ mantissa tricks instead: `(q + 1.5·2²³) - 1.5·2²³` is `q` rounded
/// to nearest, ties to even (the reference's `round_ties_even`), for `|q| < 2²²` (here
/// `|v / s| ≤ 2^bits`), and the low bits of `q + 2²³` hold the integer `q` once it is
/// clamped to `[0, 2^bits - 1]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
// `u32::is_multiple_of` and `RangeInclusive::contains` have no CubeCL expansion; `%` and
// comparisons do.
#[allow(clippy::manual_is_multiple_of, clippy::manual_range_contains)]
pub fn quantize_pack_groups_kernel<F: Float, N: Size>(
    w: &Tensor<Vector<F, N>>,
    col_scale: &Tensor<Vector<F, N>>,
    scales: &mut Tensor<f32>,
    zeros: &mut Tensor<f32>,
    packed: &mut Tensor<u32>,
    rows: u32,
    cols: u32,
    groups: u32,
    words_per_row: u32,
    #[comptime] group: u32,
    #[comptime] bits: u32,
    #[comptime] symmetric: bool,
    #[comptime] steps: u32,
    #[comptime] vector: u32,
    #[comptime] per_lane: u32,
    #[comptime] ragged: bool,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    // Lanes per group (a power of two, `group / per_lane ≤ 32`) and groups per plane.
    let lanes = comptime!(group / per_lane);
    let slots = comptime!(PLANE / lanes);
    let slot = UNIT_POS_X / lanes;
    let sub = UNIT_POS_X % lanes;
    // Vector loads per lane and group (`vector` divides `per_lane` and `cols`).
    let loads = comptime!(per_lane / vector);
    let row_vectors = cols / vector;
    let max_code = comptime!(((1u32 << bits) - 1) as f32);
    let mask = comptime!((1u32 << bits) - 1);
    let n = comptime!((steps * per_lane) as usize);
    let planes = CUBE_DIM_Y;
    let g_us = groups as usize;
    let wpr = words_per_row as usize;
    let mut vals = Array::<f32>::new(n);

    let mut row = CUBE_POS_Y;
    while row < rows {
        let w_row = row as usize * row_vectors as usize;
        // Loads of all `steps` groups first, `vector` columns per load; indices past the
        // row are clamped to its last vector, whose values are masked below.
        #[unroll]
        for st in 0..steps {
            let gi = u32::min(
                ((CUBE_POS_X * steps + st) * planes + UNIT_POS_Y) * slots + slot,
                groups - 1,
            );
            let c0 = gi * group + sub * per_lane;
            #[unroll]
            for j in 0..loads {
                let vi = u32::min((c0 + j * vector) / vector, row_vectors - 1);
                let wv = w[w_row + vi as usize];
                let sv = col_scale[vi as usize];
                #[unroll]
                for e in 0..vector {
                    vals[(st * per_lane + j * vector + e) as usize] =
                        f32::cast_from(wv[e as usize]) * f32::cast_from(sv[e as usize]);
                }
            }
        }
        #[unroll]
        for st in 0..steps {
            let gi_raw = ((CUBE_POS_X * steps + st) * planes + UNIT_POS_Y) * slots + slot;
            let gi = u32::min(gi_raw, groups - 1);
            let live = gi_raw < groups;
            let c0 = gi * group + sub * per_lane;
            let mut lo = 0.0f32;
            let mut hi = 0.0f32;
            #[unroll]
            for j in 0..per_lane {
                let v = vals[(st * per_lane + j) as usize];
                // Columns past the row exist only in a short last group (`ragged`).
                if !ragged || c0 + j < cols {
                    if comptime!(symmetric) {
                        hi = f32::max(hi, f32::abs(v));
                    } else {
                        lo = f32::min(lo, v);
                        hi = f32::max(hi, v);
                    }
                }
            }
            // The group's range over its `lanes` lanes: a butterfly of XOR shuffles with
            // compile-time strides below `lanes` (CubeCL's `plane_min` / `plane_max` are a
            // run-time loop over the whole plane, session 8 call 1).
            #[unroll]
            for i in 0..comptime!(log2_u32(lanes)) {
                let stride = comptime!(1u32 << i);
                if comptime!(!symmetric) {
                    lo = f32::min(lo, plane_shuffle_xor(lo, stride));
                }
                hi = f32::max(hi, plane_shuffle_xor(hi, stride));
            }
            let (sc, z) = group_params(lo, hi, bits, symmetric);
            let p = row as usize * g_us + gi as usize;
            if sub == 0 && live {
                scales[p] = sc;
                zeros[p] = z;
            }
            // The lane's codes. `v / sc` as the reference divides (IEEE, round to nearest),
            // from the group's reciprocal: see `quotient_rn`; outside its proven range
            // (never for f16 weights) the plain division.
            let mut qcodes = Array::<u32>::new(comptime!(per_lane as usize));
            if sc >= QUOTIENT_RN_MIN && sc <= QUOTIENT_RN_MAX {
                let inv = 1.0f32 / sc;
                #[unroll]
                for j in 0..per_lane {
                    let v = vals[(st * per_lane + j) as usize];
                    qcodes[j as usize] = code_of(quotient_rn(v, sc, inv), z, max_code, mask);
                }
            } else {
                #[unroll]
                for j in 0..per_lane {
                    let v = vals[(st * per_lane + j) as usize];
                    qcodes[j as usize] = code_of(v / sc, z, max_code, mask);
                }
            }
            // This lane's codes at their bit positions in their word(s).
            let mut bits_acc = 0u32;
            #[unroll]
            for j in 0..per_lane {
                let c = c0 + j;
                let code = qcodes[j as usize];
                let code = if comptime!(ragged) {
                    select(c < cols, code, 0u32)
                } else {
                    code
                };
                if comptime!(per_lane >= cpw) {
                    // Whole words per lane: store each as soon as it is complete.
                    bits_acc |= code << ((j % cpw) * bits);
                    if j % cpw == cpw - 1 {
                        let wi = c / cpw;
                        if wi < words_per_row && live {
                            packed[row as usize * wpr + wi as usize] = bits_acc;
                        }
                        bits_acc = 0u32;
                    }
                } else {
                    bits_acc |= code << ((c % cpw) * bits);
                }
            }
            if comptime!(per_lane < cpw) {
                // `cpw / per_lane` neighbouring lanes share a word; their bits are disjoint,
                // so a sum is their OR.
                let mut stride = 1u32;
                #[unroll]
                for _ in 0..comptime!(log2_u32(cpw / per_lane)) {
                    bits_acc += plane_shuffle_xor(bits_acc, stride);
                    stride *= 2;
                }
                let wi = c0 / cpw;
                if sub % comptime!(cpw / per_lane) == 0 && wi < words_per_row && live {
                    packed[row as usize * wpr + wi as usize] = bits_acc;
                }
            }
        }
        row += CUBE_COUNT_Y;
    }
}

/// Smallest group scale for which [`quotient_rn`] is exact (with a wide margin: the
/// reciprocal and the remainder stay normal, and any quotient it could get wrong is far
/// below ½ and rounds to 0 either way).
const QUOTIENT_RN_MIN: f32 = 1.0e-30; // about 2⁻⁹⁹·⁷
/// Largest group scale for which [`quotient_rn`] is exact.
const QUOTIENT_RN_MAX: f32 = 1.0e30; // about 2⁹⁹·⁷

/// `v / s` rounded to nearest (IEEE division), from `inv = 1 / s` (itself IEEE-rounded)
/// with one correction step: `q₀ = v · inv`, `r = v − q₀ · s` (exact in an FMA), `q₀ + r ·
/// inv`. Markstein's theorem makes this the correctly rounded quotient when `inv` is within
/// ½ ulp of `1 / s` and `q₀` within 1 ulp of `v / s`, barring underflow and overflow; the
/// group quantizer takes it only for `s` in `[10⁻³⁰, 10³⁰]`. Checked on the host against
/// division for 10⁸ random pairs (half of them within a few ulps of a rounding tie) and for
/// every `v` with `¼ ≤ v / s < 512` for 8 divisors at the edges of their binade: no
/// difference (session 9; `ttq-kernels/examples/quotient_check.rs`). Three FMA-pipe instructions per element instead of the
/// division's FCHK, MUFU.RCP and FFMA chain, the quantizer's largest single cost (about
/// 15% of its instructions, session 8 call 6).
#[cube]
fn quotient_rn(v: f32, s: f32, inv: f32) -> f32 {
    let q0 = v * inv;
    let r = fma(-q0, s, v);
    fma(r, inv, q0)
}

/// The code of quotient `qf` for zero point `z`: rounded to nearest, ties to even, plus `z`,
/// clamped to `[0, max_code]`, as an integer (the 2²³ tricks of
/// [`quantize_pack_groups_kernel`]'s docs).
#[cube]
fn code_of(qf: f32, z: f32, max_code: f32, mask: u32) -> u32 {
    let r = (qf + 12_582_912.0f32) - 12_582_912.0f32;
    let q = f32::clamp(r + z, 0.0, max_code);
    u32::reinterpret(q + 8_388_608.0f32) & mask
}

/// `log2` of a power of two, at expansion time.
fn log2_u32(v: u32) -> u32 {
    31 - v.leading_zeros()
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

/// `xs[t, c] = x[t, c] · s[c]` in f32, zero-padded to `padded_cols` columns so that the
/// GEMV can decode whole words without bounds checks.
#[cube(launch_unchecked)]
pub fn scale_pad_kernel<F: Float>(
    x: &Tensor<F>,
    s: &Tensor<F>,
    xs: &mut Tensor<f32>,
    tokens: u32,
    cols: u32,
    padded_cols: u32,
    #[define(F)] _dtype: StorageType,
) {
    let c = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
    let t = CUBE_POS_Y;
    if c < padded_cols && t < tokens {
        let mut v = 0.0f32;
        if c < cols {
            v = f32::cast_from(x[t as usize * cols as usize + c as usize])
                * f32::cast_from(s[c as usize]);
        }
        xs[t as usize * padded_cols as usize + c as usize] = v;
    }
}

/// Fused dequantize + matrix-vector product for few tokens:
/// `y[t, r] = Σ_c xs[t, c] · (code[r, c] - z[r, g(c)]) · s[r, g(c)]`.
///
/// One plane computes `rows_per_plane` (R) output rows for all `m` tokens. Lanes stride over
/// the packed words of those rows (32 consecutive words per plane step: coalesced), each
/// step loading the R words of the step before decoding any, and partial sums live in
/// registers (`m · R` accumulators, fully unrolled) until a final plane reduction.
///
/// For a word whose codes all fall in one group (always at 2, 4 and 8 bits with groups of
/// at least 16), the group factor is applied once per word:
/// `s · (Σ xs·code - z · Σ xs)`. Words that straddle two groups take a per-code path.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_kernel<F: Float>(
    xs: &Tensor<f32>,
    packed: &Tensor<u32>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    y: &mut Tensor<F>,
    rows: u32,
    group_shift: u32,
    groups: u32,
    words_per_row: u32,
    xs_stride: u32,
    #[comptime] m: u32,
    #[comptime] bits: u32,
    #[comptime] rows_per_plane: u32,
    #[define(F)] _dtype: StorageType,
) {
    let cpw = comptime!(32 / bits);
    let mask = comptime!((1u32 << bits) - 1);
    let nacc = comptime!((m * rows_per_plane) as usize);
    let lane = UNIT_POS_X;
    let plane_id = CUBE_POS_X * CUBE_DIM_Y + UNIT_POS_Y;
    let row0 = plane_id * rows_per_plane;
    let wpr = words_per_row as usize;
    let xs_stride = xs_stride as usize;
    let g_us = groups as usize;

    let mut acc = Array::<f32>::new(nacc);
    #[unroll]
    for i in 0..nacc {
        acc[i] = 0.0f32;
    }
    let mut words = Array::<u32>::new(comptime!(rows_per_plane as usize));
    let mut codes = Array::<f32>::new(comptime!((rows_per_plane * cpw) as usize));
    let mut xv = Array::<f32>::new(comptime!(cpw as usize));

    // Rows past the end: the whole plane skips the loop (uniform), then joins the reduction.
    let mut wi = lane;
    if row0 >= rows {
        wi = words_per_row;
    }
    while wi < words_per_row {
        #[unroll]
        for r in 0..rows_per_plane {
            let row = u32::min(row0 + r, rows - 1);
            words[r as usize] = packed[row as usize * wpr + wi as usize];
        }
        let c0 = wi * cpw;
        let g0 = u32::min(c0 >> group_shift, groups - 1);
        let g1 = u32::min((c0 + cpw - 1) >> group_shift, groups - 1);
        if g0 == g1 {
            #[unroll]
            for r in 0..rows_per_plane {
                #[unroll]
                for k in 0..cpw {
                    codes[(r * cpw + k) as usize] =
                        f32::cast_from((words[r as usize] >> (k * bits)) & mask);
                }
            }
            #[unroll]
            for t in 0..m {
                let base = t as usize * xs_stride + c0 as usize;
                let mut xsum = 0.0f32;
                #[unroll]
                for k in 0..cpw {
                    xv[k as usize] = xs[base + k as usize];
                    xsum += xv[k as usize];
                }
                #[unroll]
                for r in 0..rows_per_plane {
                    let row = u32::min(row0 + r, rows - 1);
                    let p = row as usize * g_us + g0 as usize;
                    let mut dot = 0.0f32;
                    #[unroll]
                    for k in 0..cpw {
                        dot += xv[k as usize] * codes[(r * cpw + k) as usize];
                    }
                    acc[(t * rows_per_plane + r) as usize] += scales[p] * (dot - zeros[p] * xsum);
                }
            }
        } else {
            #[unroll]
            for r in 0..rows_per_plane {
                let row = u32::min(row0 + r, rows - 1);
                #[unroll]
                for k in 0..cpw {
                    let g = u32::min((c0 + k) >> group_shift, groups - 1);
                    let p = row as usize * g_us + g as usize;
                    let wq = (f32::cast_from((words[r as usize] >> (k * bits)) & mask) - zeros[p])
                        * scales[p];
                    #[unroll]
                    for t in 0..m {
                        acc[(t * rows_per_plane + r) as usize] +=
                            xs[t as usize * xs_stride + (c0 + k) as usize] * wq;
                    }
                }
            }
        }
        wi += PLANE;
    }

    #[unroll]
    for t in 0..m {
        #[unroll]
        for r in 0..rows_per_plane {
            let v = plane_sum(acc[(t * rows_per_plane + r) as usize]);
            if lane == 0 && row0 + r < rows {
                y[t as usize * rows as usize + (row0 + r) as usize] = F::cast_from(v);
            }
        }
    }
}

/// The code at bit `shift` of `word` (`mask` wide) as an exact f32.
///
/// With `magic`, the integer-to-float conversion (a reduced-throughput instruction, one per
/// weight in the GEMV) is replaced by two full-rate ones: the code is OR-ed into the mantissa
/// of 2²³ (`0x4B00_0000`, whose mantissa unit is 1) and 2²³ is subtracted, which is exact for
/// any code below 2²³.
/// The tail shared by the split-K GEMV kernels: each thread's `m · R` partial dot products
/// (`acc[t · R + r]`, token `t`, row `row0 + r`) are summed over the plane's lanes with
/// `plane_sum`, then over the cube's planes in shared memory, and every output of the cube
/// is written by one thread (a loop: `R · m` may exceed the cube's threads). Rows past
/// `rows` are not written. Every thread of the cube must call it (it holds a barrier).
#[cube]
fn store_gemv_rows<F: Float>(
    acc: &Array<f32>,
    y: &mut Tensor<F>,
    rows: u32,
    row0: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_cube: u32,
    #[comptime] planes: u32,
) {
    let nacc = comptime!((m * rows_per_cube) as usize);
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let mut partial = SharedMemory::<f32>::new(comptime!(planes as usize * nacc));
    #[unroll]
    for i in 0..nacc {
        let v = plane_sum(acc[i]);
        if lane == 0 {
            partial[plane as usize * nacc + i] = v;
        }
    }
    sync_cube();
    let mut i = plane * PLANE + lane;
    while i < comptime!(nacc as u32) {
        let mut sum = 0.0f32;
        #[unroll]
        for p in 0..planes {
            sum += partial[p as usize * nacc + i as usize];
        }
        let t = i / rows_per_cube;
        let r = i % rows_per_cube;
        if row0 + r < rows {
            y[t as usize * rows as usize + (row0 + r) as usize] = F::cast_from(sum);
        }
        i += comptime!(PLANE * planes);
    }
}

#[cube]
fn code_to_f32(word: u32, shift: u32, mask: u32, #[comptime] magic: bool) -> f32 {
    let code = (word >> shift) & mask;
    if magic {
        f32::reinterpret(code | 0x4B00_0000u32) - 8_388_608.0f32
    } else {
        f32::cast_from(code)
    }
}

/// The GEMV used by default: [`gemv_kernel`]'s arithmetic with the input scale fused in
/// (it reads `x` and `s` directly, no padded f32 copy of `x ⊙ s`: one launch and one
/// allocation less) and a layout built for memory-level parallelism:
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
    #[comptime] magic: bool,
    #[comptime] prefetch: bool,
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
    // With `prefetch`, the words of the next step are loaded into `next` before the current
    // step's products, so that the loads stay in flight while the lane computes.
    let mut next = Array::<u32>::new(nwords);
    if prefetch {
        #[unroll]
        for u in 0..unroll {
            let wi = u32::min(base + u * PLANE + lane, words_per_row - 1);
            #[unroll]
            for r in 0..rows_per_cube {
                let row = u32::min(row0 + r, rows - 1);
                words[(u * rows_per_cube + r) as usize] = packed[row as usize * wpr + wi as usize];
            }
        }
    }
    while base < words_per_row {
        // All loads of the step (or, with `prefetch`, of the next one) first; indices past
        // the row are clamped to its last word, whose value is then not used.
        let mut start = base;
        if prefetch {
            start = base + step;
        }
        #[unroll]
        for u in 0..unroll {
            let wi = u32::min(start + u * PLANE + lane, words_per_row - 1);
            #[unroll]
            for r in 0..rows_per_cube {
                let row = u32::min(row0 + r, rows - 1);
                let word = packed[row as usize * wpr + wi as usize];
                if prefetch {
                    next[(u * rows_per_cube + r) as usize] = word;
                } else {
                    words[(u * rows_per_cube + r) as usize] = word;
                }
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
                            codes[k as usize] = code_to_f32(word, k * bits, mask, magic);
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
                                magic,
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
        if prefetch {
            #[unroll]
            for i in 0..nwords {
                words[i] = next[i];
            }
        }
        base += step;
    }

    store_gemv_rows::<F>(&acc, y, rows, row0, m, rows_per_cube, planes);
}

/// The vectorized GEMV (the default where the layout allows it, see
/// `super::GemvVariant::Auto`): [`gemv_fused_kernel`]'s tiling with 16-byte loads.
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
/// are clamped for loads and not written. `magic` must be [`GEMV_F32_MAGIC`].
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
                        // `reinterpret_cast<float const&>` of an rvalue, session 7 call 4).
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
                        // two LOP3 per code (session 8 call 1); with one in a register they
                        // fuse into one, 5% faster (call 2).
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

/// The half2 GEMV for f16 activations and 4-bit codes (the f16 default where the layout
/// allows it, see `super::GemvVariant::Auto`): [`gemv_vec_kernel`]'s tiling and loads with
/// the decode and the dot products in packed f16 pairs (`__half2`, two values per
/// instruction), about half the instructions per weight of the f32 decode (5.8 per weight
/// there, session 8 call 1).
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
/// The tail is [`store_gemv_rows`]. `magic` must be [`GEMV_H2_MAGIC`] (a run-time argument so
/// that it sits in a register and each mask-and-OR is one instruction).
///
/// Each step loads all its lines first, then decodes them, so a lane has no load in flight
/// while it computes. Two ways to overlap them in registers were measured and dropped:
/// - a register double buffer (the whole next step loaded before the current one is
///   decoded): 168 registers instead of 95, slower on every shape (session 8 call 2);
/// - a rolling prefetch (each row's line reloaded for the next step as soon as the row is
///   done; commit 083f183): correct, 1.1-3.7× slower (session 12). ptxas put every reload
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

/// Capacity of [`gemv_stream_kernel`]'s staged activations, in blocks of 32 lines (the
/// launcher rounds the row's blocks up to an even count so that few kernel variants exist).
pub fn stream_xs_blocks(lines_per_row: u32) -> u32 {
    lines_per_row.div_ceil(PLANE).div_ceil(2) * 2
}

/// The streaming half2 GEMV (f16 activations, 4-bit codes, the vector layout;
/// `super::GemvVariant::Stream`): [`gemv_h2_kernel`]'s decode and products, with the loads
/// moved off the critical path.
///
/// - `x ⊙ s` is computed once per cube (in f16, as [`gemv_h2_kernel`] does) into shared
///   memory, laid out so that the 32 lanes of a plane read 32 consecutive 8-byte vectors
///   (vector `slot` of line `32 · blk + l` of token `t` at `t · cap + 256 · blk + 32 · slot
///   + l`): no activation load leaves the SM inside the loop, and the reads are free of bank
///   conflicts.
/// - Each plane owns `R` rows and streams them through the whole row in tiles of `U` lines
///   per lane (`32 · U` lines, `R · U · 512` bytes of codes), double-buffered in shared
///   memory: the lane's own lines, scales and zeros of tile `k + 1` are copied with
///   `cp.async` (16 bytes for a line, 4 for a scale or zero) while tile `k` is decoded, so
///   loads stay in flight without holding registers (the register prefetch of
///   [`gemv_h2_kernel`] took 168 registers and was slower, session 8). Two cube-wide
///   `mbarrier`s (one per buffer) track the copies; every thread of the cube runs the same
///   number of tiles, so every phase gets all of its arrivals.
/// - The cube's `P` planes own `P` neighbouring row blocks (no reduction across planes) and
///   the grid is persistent: cube `c` takes row groups `c`, `c + grid`, … and its tiles
///   run back to back across them, so the pipeline does not drain between row blocks.
///   After a block's last tile its `R · m` sums are reduced with `plane_sum` and lane `i`
///   writes output `i` (`R · m ≤ 32`).
///
/// Each lane only ever reads the buffer slots it copied itself, so reusing a buffer needs
/// no barrier beyond the thread's own program order. Indices past the row's end and rows
/// past the last are clamped for the copies and skipped in the products and stores.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemv_stream_kernel<N: Size>(
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
    row_groups: u32,
    magic: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] lines_per_lane: u32,
    #[comptime] planes: u32,
    #[comptime] xs_blocks: u32,
    #[comptime] global_xs: bool,
) {
    let lane = UNIT_POS_X;
    let plane = UNIT_POS_Y;
    let nacc = comptime!((m * rows_per_plane) as usize);
    let xs_cap = comptime!(xs_blocks * 256);
    let row_vectors = lines_per_row * 8;

    // x ⊙ s, once per cube (with `global_xs`, read from `x` and `s` in the products instead).
    let xs_len = comptime!(if global_xs {
        8usize
    } else {
        (m * xs_cap) as usize
    });
    let mut xs = SharedMemory::<Vector<f16, N>>::new_aligned(xs_len, 16usize);
    if !global_xs {
        let blocks = lines_per_row.div_ceil(PLANE);
        let per_token = blocks * 256;
        let mut i = UNIT_POS;
        while i < m * per_token {
            let t = i / per_token;
            let pos = i % per_token;
            let v = ((pos / 256) * 32 + pos % 32) * 8 + (pos / 32) % 8;
            if v < row_vectors {
                xs[(t * xs_cap + pos) as usize] = x[(t * row_vectors + v) as usize] * s[v as usize];
            }
            i += CUBE_DIM;
        }
    }
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    sync_cube();

    let stage = comptime!(planes * lines_per_lane * rows_per_plane * PLANE);
    let mut wbuf =
        SharedMemory::<Vector<u32, N>>::new_aligned(comptime!((2 * stage) as usize), 16usize);
    let mut sbuf = SharedMemory::<f32>::new(comptime!((2 * stage) as usize));
    let mut zbuf = SharedMemory::<f32>::new(comptime!((2 * stage) as usize));
    // This lane's slot for (buffer 0, u = 0, r = 0); (u, r) adds (u · R + r) · 32.
    let my_slot = plane * comptime!(lines_per_lane * rows_per_plane * PLANE) + lane;

    let grid = CUBE_COUNT_X;
    let mine = (row_groups - CUBE_POS_X).div_ceil(grid);
    let tile_lines = comptime!(PLANE * lines_per_lane);
    let steps = lines_per_row.div_ceil(tile_lines);
    let tiles = mine * steps;

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

    issue_stream_tile(
        packed,
        scales,
        zeros,
        &mut wbuf,
        &mut sbuf,
        &mut zbuf,
        0,
        tiles,
        steps,
        my_slot,
        rows,
        group_shift,
        groups,
        lines_per_row,
        rows_per_plane,
        lines_per_lane,
        planes,
    );
    bar0.commit_copy_async();
    bar0.arrive();
    let mut k = 0u32;
    let mut phase = 0u32;
    while k < tiles {
        issue_stream_tile(
            packed,
            scales,
            zeros,
            &mut wbuf,
            &mut sbuf,
            &mut zbuf,
            k + 1,
            tiles,
            steps,
            my_slot + stage,
            rows,
            group_shift,
            groups,
            lines_per_row,
            rows_per_plane,
            lines_per_lane,
            planes,
        );
        bar1.commit_copy_async();
        bar1.arrive();
        bar0.wait_parity(phase);
        stream_tile_products(
            x,
            s,
            &xs,
            &wbuf,
            &sbuf,
            &zbuf,
            &mut acc,
            &mut pairs,
            &mut part,
            &mut wv,
            &mut bias_even,
            &mut bias_odd,
            y,
            k,
            steps,
            my_slot,
            rows,
            lines_per_row,
            magic,
            m,
            rows_per_plane,
            lines_per_lane,
            planes,
            xs_cap,
            global_xs,
        );
        if k + 1 < tiles {
            issue_stream_tile(
                packed,
                scales,
                zeros,
                &mut wbuf,
                &mut sbuf,
                &mut zbuf,
                k + 2,
                tiles,
                steps,
                my_slot,
                rows,
                group_shift,
                groups,
                lines_per_row,
                rows_per_plane,
                lines_per_lane,
                planes,
            );
            bar0.commit_copy_async();
            bar0.arrive();
            bar1.wait_parity(phase);
            stream_tile_products(
                x,
                s,
                &xs,
                &wbuf,
                &sbuf,
                &zbuf,
                &mut acc,
                &mut pairs,
                &mut part,
                &mut wv,
                &mut bias_even,
                &mut bias_odd,
                y,
                k + 1,
                steps,
                my_slot + stage,
                rows,
                lines_per_row,
                magic,
                m,
                rows_per_plane,
                lines_per_lane,
                planes,
                xs_cap,
                global_xs,
            );
        }
        k += 2;
        phase ^= 1;
    }
}

/// The TMA half2 GEMV (f16 activations, 4-bit codes, the vector layout with groups of 32 to
/// `256 · U` columns and a multiple of 4 groups per row; `super::GemvVariant::Tma`):
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
/// takes the block, serves every row group. `K = P` is session 13's kernel (a cube of `R` rows, each plane
/// with its own copies of its blocks' activations: at one token and `R = 8` as many bytes
/// as of codes, 4 per column each); `K = 1` lets `P` planes of separate rows share every
/// copy. With more than one row group a slot is re-armed only after `sync_cube`, since
/// every row group reads its activations.
///
/// Reading `x` and `s` from global memory in the products, as [`gemv_h2_kernel`] does, left
/// them waiting on those loads (session 13 call 2: 48% of the stall samples), and pairing
/// `x ⊙ s` in a kernel of its own cost a launch per call. The `S` slots keep `S − 1` blocks'
/// copies in flight while one is decoded, without holding registers (the register double
/// buffer of [`gemv_h2_kernel`] took 168 registers, session 8) and without one copy
/// instruction per lane and line (the `cp.async` of [`gemv_stream_kernel`]). One cube-wide
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
/// With `mma` (`super::GemvTile::tma_mma`) the products run on tensor cores instead
/// ([`tma_block_mma`]): `R` is 16 or 32, the codes are copied through a
/// `[words / 32, rows, 32]` view with the 128-byte swizzle, no activations are copied
/// (each plane reads its block's `x` and `s` from global memory, `xg` and `sg` with
/// `x_row_vectors` 4-column vectors per row, and pairs them once into shared memory,
/// [`mma_pair_activations`]), and the tail is [`store_mma_rows`].
///
/// `loads` and `products` are both true for the GEMV. `bench kernels` turns one off to
/// time the other half alone (`super::GemvProbe`; the output is then not the product).
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
    #[comptime] loads: bool,
    #[comptime] products: bool,
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
    if loads {
        #[unroll]
        for sl in 0..slots {
            let slot = tma_slot(sl, sizes);
            tma_issue_slot(
                &bars, sl, x, s, packed, scales, zeros, &mut xsm, &mut isc, &mut wsm, &mut ssm,
                &mut zsm, &slot, sl, &dims, sizes,
            );
        }
    }
    let mut k = 0u32;
    let mut sl = 0u32;
    let mut phase = 0u32;
    while k < blocks {
        let slot = tma_slot(sl, sizes);
        if products && mma {
            // Before the wait: the activations' loads overlap the codes' copies.
            mma_pair_activations(xg, sg, &mut xpair, k * k_split + kp, x_row_vectors, sizes);
        }
        if loads {
            tma_wait_slot(&bars, sl, phase);
        }
        if products && mma {
            let blk = k * k_split + kp;
            sync_plane();
            tma_block_mma(&xpair, &wsm, &ssm, &zsm, &mut acc, &slot, blk, &dims, sizes);
            // The next block's pairing overwrites `xpair`.
            sync_plane();
        }
        if products && !mma {
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
        if loads {
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
        }
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

/// The compile-time shape of a [`gemv_tma_kernel`] variant, as its helpers take it (one
/// compile-time argument instead of seven), with the sizes of one plane's slot in each
/// shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TmaSizes {
    m: u32,
    rows_per_plane: u32,
    lines_per_lane: u32,
    planes: u32,
    groups_per_block: u32,
    slots: u32,
    k_split: u32,
    mma: bool,
}

impl TmaSizes {
    /// f32 accumulators per thread: `m · R` dot products, or, with tensor-core products, 4
    /// per 16-row tile and block of 8 tokens (rows `g` and `g + 8` of lane `4 · g + t`,
    /// tokens `2t` and `2t + 1` of the block), `acc[(block · tiles + tile) · 4 + …]`.
    fn accumulators(&self) -> u32 {
        if self.mma {
            4 * (self.rows_per_plane / 16) * self.token_blocks()
        } else {
            self.m * self.rows_per_plane
        }
    }
    /// The sizes [`store_mma_rows`] reads for `planes` planes that split `rows` rows'
    /// reduction between them (one row group): the direct tensor-core GEMV's tail
    /// (`super::gemv_mma`).
    pub(super) fn mma_tail(m: u32, rows: u32, planes: u32) -> Self {
        Self {
            m,
            rows_per_plane: rows,
            lines_per_lane: 1,
            planes,
            groups_per_block: 1,
            slots: 1,
            k_split: planes,
            mma: true,
        }
    }
    /// Blocks of 8 tokens, the B operand's columns, of the tensor-core products.
    fn token_blocks(&self) -> u32 {
        self.m.div_ceil(8)
    }
    /// Codes per plane and slot, in 16-byte lines.
    fn w_slot(&self) -> u32 {
        self.rows_per_plane * PLANE * self.lines_per_lane
    }
    /// Scales (and zeros) per plane and slot, padded to 128 bytes, as tensor copies into
    /// shared memory want.
    fn g_slot(&self) -> u32 {
        (self.rows_per_plane * self.groups_per_block).div_ceil(32) * 32
    }
    /// Activations per slot (`m` tokens), in 16-byte vectors of 8 columns: whole KiB, so
    /// the 128-byte swizzle starts afresh in each.
    fn x_slot(&self) -> u32 {
        self.m * self.lines_per_lane * 4 * PLANE
    }
    /// Input scale per slot, in 16-byte vectors.
    fn s_slot(&self) -> u32 {
        self.lines_per_lane * 4 * PLANE
    }
    /// Copies of the activations per slot: one per place in the split of the blocks (none
    /// with tensor-core products, which read them from global memory).
    fn xs_copies(&self) -> u32 {
        if self.mma {
            0
        } else {
            self.k_split
        }
    }
    /// Row groups of a cube (planes with separate rows).
    fn row_groups(&self) -> u32 {
        self.planes / self.k_split
    }
}

/// The four mbarriers of [`gemv_tma_kernel`]'s slots (those past `slots` are unused).
#[derive(CubeType)]
pub struct TmaBarriers {
    b0: Shared<Barrier>,
    b1: Shared<Barrier>,
    b2: Shared<Barrier>,
    b3: Shared<Barrier>,
}

/// The run-time values [`gemv_tma_kernel`]'s block helpers share: the plane's first row
/// (the cube's, under split-K), the blocks per plane, lines per row, `log2` of the group
/// size and the half2 decode's bits.
#[derive(CubeType, Clone, Copy)]
pub struct TmaBlock {
    row0: u32,
    blocks: u32,
    lines_per_row: u32,
    group_shift: u32,
    magic: u32,
}

/// Where this plane's slot of [`gemv_tma_kernel`]'s pipeline starts in each of its shared
/// memories: codes (`w`, 16-byte lines), scales and zeros (`g`), activations (`x`) and
/// input scale (`s`, both 16-byte vectors of 8 columns).
#[derive(CubeType, Clone, Copy)]
pub struct TmaSlot {
    w: u32,
    g: u32,
    x: u32,
    s: u32,
}

/// This plane's part of slot `sl` (slots hold every plane's codes, scales and zeros side
/// by side; activations once per plane under split-K, once per cube when shared).
#[cube]
fn tma_slot(sl: u32, #[comptime] sizes: TmaSizes) -> TmaSlot {
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
fn tma_wait_slot(bars: &TmaBarriers, sl: u32, phase: u32) {
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
fn tma_issue_slot<N: Size>(
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
fn swizzled_128(v: u32) -> u32 {
    v ^ ((v >> 3) & 7)
}

/// Lane 0 of the plane issues the tensor copies of its step `k` (if `k < blocks`) into
/// `slot` and arrives on `bar` expecting their bytes: the codes, scales and zeros of its
/// rows, and the block's activations and input scale (only the plane of row group 0 that
/// takes the block copies those, for every row group); see [`gemv_tma_kernel`].
#[cube]
// `is_multiple_of` has no CubeCL expansion; `%` does.
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)]
fn issue_tma_block<N: Size>(
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

/// [`gemv_tma_kernel`]'s products for block `blk` of the plane's rows, read from `slot`
/// (see [`gemv_h2_kernel`] for the decode), accumulated into `acc`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn tma_block_products<N: Size>(
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
    // A run-time loop over the lane's lines, as in `stream_tile_products` (unrolled, the
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
fn mma_pair_activations<N: Size>(
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
fn tma_block_mma<N: Size>(
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

/// [`gemv_tma_kernel`]'s tail: each thread's `m · R` partial dot products (`acc[t · R + r]`,
/// token `t`, row `r` of its plane's rows) are summed over the plane's lanes with
/// `plane_sum`, then over the `K` planes of each row group in shared memory, and every
/// output of the cube (`P / K` row groups of `R` rows from `cube_row0`) is written by one
/// thread. With one row group this is [`store_gemv_rows`]. Rows past `rows` are not
/// written. Every thread of the cube must call it (it holds a barrier).
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_grouped_rows<F: Float>(
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

/// The row block (its first row) and step of [`gemv_stream_kernel`]'s tile `k` for this
/// plane: tiles run through a row group's steps, then on to the cube's next row group.
#[cube]
fn stream_tile_origin(
    k: u32,
    steps: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] planes: u32,
) -> (u32, u32) {
    let group = CUBE_POS_X + (k / steps) * CUBE_COUNT_X;
    let row0 = (group * planes + UNIT_POS_Y) * rows_per_plane;
    (row0, k % steps)
}

/// Issues the `cp.async` copies of tile `k` (if `k < tiles`) into the buffer whose slot
/// for this lane is `slot` (see [`gemv_stream_kernel`]); the caller commits them to the
/// buffer's barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
fn issue_stream_tile<N: Size>(
    packed: &Tensor<Vector<u32, N>>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    wbuf: &mut SharedMemory<Vector<u32, N>>,
    sbuf: &mut SharedMemory<f32>,
    zbuf: &mut SharedMemory<f32>,
    k: u32,
    tiles: u32,
    steps: u32,
    slot: u32,
    rows: u32,
    group_shift: u32,
    groups: u32,
    lines_per_row: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] lines_per_lane: u32,
    #[comptime] planes: u32,
) {
    if k < tiles {
        let (row0, step) = stream_tile_origin(k, steps, rows_per_plane, planes);
        #[unroll]
        for u in 0..lines_per_lane {
            let li = u32::min(
                (step * lines_per_lane + u) * PLANE + UNIT_POS_X,
                lines_per_row - 1,
            );
            let g = u32::min((li * 32) >> group_shift, groups - 1);
            #[unroll]
            for r in 0..rows_per_plane {
                let row = u32::min(row0 + r, rows - 1);
                let src = (row * lines_per_row + li) as usize;
                let p = (row * groups + g) as usize;
                let dst = (slot + (u * rows_per_plane + r) * PLANE) as usize;
                copy_async(
                    &packed.slice(src, src + 1),
                    &mut wbuf.slice_mut(dst, dst + 1),
                    4u32,
                );
                copy_async(
                    &scales.slice(p, p + 1),
                    &mut sbuf.slice_mut(dst, dst + 1),
                    1u32,
                );
                copy_async(
                    &zeros.slice(p, p + 1),
                    &mut zbuf.slice_mut(dst, dst + 1),
                    1u32,
                );
            }
        }
    }
}

/// [`gemv_stream_kernel`]'s products for tile `k` from the buffer whose slot for this lane
/// is `slot`, and after a row block's last tile its reduction and stores.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stream_tile_products<N: Size>(
    x: &Tensor<Vector<f16, N>>,
    s: &Tensor<Vector<f16, N>>,
    xs: &SharedMemory<Vector<f16, N>>,
    wbuf: &SharedMemory<Vector<u32, N>>,
    sbuf: &SharedMemory<f32>,
    zbuf: &SharedMemory<f32>,
    acc: &mut Array<f32>,
    pairs: &mut Array<Vector<f16, Const<2>>>,
    part: &mut Array<Vector<f16, Const<2>>>,
    wv: &mut Array<Vector<f16, Const<2>>>,
    bias_even: &mut Array<Vector<f16, Const<2>>>,
    bias_odd: &mut Array<Vector<f16, Const<2>>>,
    y: &mut Tensor<f16>,
    k: u32,
    steps: u32,
    slot: u32,
    rows: u32,
    lines_per_row: u32,
    magic: u32,
    #[comptime] m: u32,
    #[comptime] rows_per_plane: u32,
    #[comptime] lines_per_lane: u32,
    #[comptime] planes: u32,
    #[comptime] xs_cap: u32,
    #[comptime] global_xs: bool,
) {
    let lane = UNIT_POS_X;
    let nacc = comptime!((m * rows_per_plane) as usize);
    let k16 = Vector::<f16, Const<2>>::new(f16::cast_from(0.0625f32));
    let k256 = Vector::<f16, Const<2>>::new(f16::cast_from(0.00390625f32));
    let (row0, step) = stream_tile_origin(k, steps, rows_per_plane, planes);
    // A run-time loop over the tile's lines: unrolled, the compiler hoisted every line's
    // shared-memory loads to the top (168 registers at U · R = 16, ptxas for sm_90a).
    for u in 0..lines_per_lane {
        let blk = step * lines_per_lane + u;
        let li = blk * PLANE + lane;
        if li < lines_per_row {
            #[unroll]
            for r in 0..rows_per_plane {
                let (be, bo) = h2_biases(zbuf[(slot + (u * rows_per_plane + r) * PLANE) as usize]);
                bias_even[r as usize] = be;
                bias_odd[r as usize] = bo;
            }
            #[unroll]
            for i in 0..nacc {
                part[i] = Vector::<f16, Const<2>>::new(f16::cast_from(0.0f32));
            }
            #[unroll]
            for w in 0..4u32 {
                if global_xs {
                    let x_stride = (lines_per_row * 8) as usize;
                    h2_activation_pairs(x, s, (li * 8 + w * 2) as usize, x_stride, pairs, m);
                } else {
                    #[unroll]
                    for t in 0..m {
                        let at = t * xs_cap + blk * 256 + w * 64 + lane;
                        h2_pair_up(xs[at as usize], xs[(at + 32) as usize], pairs, t);
                    }
                }
                #[unroll]
                for r in 0..rows_per_plane {
                    let line = wbuf[(slot + (u * rows_per_plane + r) * PLANE) as usize];
                    h2_word_products(
                        line[w as usize],
                        bias_even[r as usize],
                        bias_odd[r as usize],
                        k16,
                        k256,
                        magic,
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
                    sbuf[(slot + (u * rows_per_plane + r) * PLANE) as usize],
                    acc,
                    r,
                    m,
                    rows_per_plane,
                );
            }
        }
    }
    if step == steps - 1 {
        #[unroll]
        for i in 0..nacc {
            let v = plane_sum(acc[i]);
            acc[i] = 0.0f32;
            let t = i as u32 / rows_per_plane;
            let r = i as u32 % rows_per_plane;
            if lane == i as u32 && row0 + r < rows {
                y[(t * rows + row0 + r) as usize] = f16::cast_from(v);
            }
        }
    }
}

/// The half2 products of one packed word (codes `c0 … c7`) of row `r` with the paired
/// activations `pairs[t · 4 + j] = (xs_j, xs_{j+4})` of its 8 columns, for every token `t`,
/// accumulated into `part[t · R + r]` (see [`gemv_h2_kernel`] for the decode: `be` and `bo`
/// are the even and odd nibbles' biases `−64 − z/16` and `−4 − z/16`, `k16` and `k256` the
/// pairs `(1/16, 1/16)` and `(1/256, 1/256)`, made once by the caller: made here, each call
/// converted them from f32 again, 62 conversions more in the PTX; `wv` is scratch).
#[cube]
#[allow(clippy::too_many_arguments)]
fn h2_word_products(
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
fn load_h2_line<N: Size>(
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
fn h2_biases(z: f32) -> (Vector<f16, Const<2>>, Vector<f16, Const<2>>) {
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
fn h2_activation_pairs<N: Size>(
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
fn h2_pair_up<N: Size>(
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
fn h2_fold_parts(
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
/// 4096 × 4096 weight under Burn's prefill matmul, session 8 call 4). Here a lane makes 3
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

/// Token rows of a [`gemm_cmma_kernel`] output tile.
pub const GEMM_BM: u32 = 64;
/// Weight rows (output columns) of a [`gemm_cmma_kernel`] output tile.
pub const GEMM_BN: u32 = 64;
/// Columns of `x` and `W` (the reduction) staged per step of [`gemm_cmma_kernel`].
pub const GEMM_BK: u32 = 32;
/// Planes per cube of [`gemm_cmma_kernel`]: a 2 × 2 grid of 32 × 32 sub-tiles.
pub const GEMM_PLANES: u32 = 4;

/// A 16 × 16 f32 cmma accumulator set to zero.
#[cube]
fn zero_accumulator() -> cmma::Matrix<f32> {
    cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::Undefined,
        0.0f32,
    )
}

/// The 16 × 16 A fragment (tokens × reduction, row-major, row stride [`GEMM_BK`]) starting
/// at `tile`'s first element.
#[cube]
fn fragment_a(tile: &Slice<f16>) -> cmma::Matrix<f16> {
    cmma::Matrix::<f16>::from_slice(
        cmma::MatrixIdent::A,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::RowMajor,
        tile,
        GEMM_BK,
    )
}

/// The 16 × 16 B fragment (reduction × weight rows, column-major: each weight row's
/// [`GEMM_BK`] staged columns are contiguous) starting at `tile`'s first element.
#[cube]
fn fragment_b(tile: &Slice<f16>) -> cmma::Matrix<f16> {
    cmma::Matrix::<f16>::from_slice(
        cmma::MatrixIdent::B,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::ColMajor,
        tile,
        GEMM_BK,
    )
}

/// Dense `y = (x ⊙ s) · dequant(W)ᵀ` on tensor cores, for prefill-sized token counts.
///
/// A cube of 4 planes owns a `64 × 64` output tile (64 tokens × 64 weight rows). Each step
/// over the reduction dimension stages a `64 × 32` tile of `x ⊙ s` and a `64 × 32` tile of
/// the dequantized weight in shared memory as f16 (the weight tile is dequantized on the
/// fly from the packed codes: no dense copy of `W` is ever written to global memory), then
/// every plane runs 2 × 2 × 2 `16 × 16 × 16` cmma products into its four f32
/// accumulators. Elements past the end of any dimension are staged as zeros, so ragged
/// shapes need no special case; the accumulators go through shared memory to global memory
/// with bounds checks, converted to `F`.
///
/// The staging is deliberately simple (one element per thread and step, no double
/// buffering): it is the correct baseline that faster variants are measured against.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gemm_cmma_kernel<F: Float>(
    x: &Tensor<F>,
    s: &Tensor<F>,
    packed: &Tensor<u32>,
    scales: &Tensor<f32>,
    zeros: &Tensor<f32>,
    y: &mut Tensor<F>,
    tokens: u32,
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
    let threads = comptime!(PLANE * GEMM_PLANES);
    let plane = UNIT_POS_Y;
    let tid = plane * PLANE + UNIT_POS_X;
    let m0 = CUBE_POS_Y * GEMM_BM;
    let n0 = CUBE_POS_X * GEMM_BN;
    let pm = plane / 2;
    let pn = plane % 2;
    let cols_us = cols as usize;
    let wpr = words_per_row as usize;
    let g_us = groups as usize;

    let mut a_tile =
        SharedMemory::<f16>::new_aligned(comptime!((GEMM_BM * GEMM_BK) as usize), 128usize);
    let mut b_tile =
        SharedMemory::<f16>::new_aligned(comptime!((GEMM_BN * GEMM_BK) as usize), 128usize);
    let mut c_tile =
        SharedMemory::<f32>::new_aligned(comptime!((GEMM_BM * GEMM_BN) as usize), 128usize);
    let a_len = comptime!((GEMM_BM * GEMM_BK) as usize);
    let b_len = comptime!((GEMM_BN * GEMM_BK) as usize);
    let c_len = comptime!((GEMM_BM * GEMM_BN) as usize);

    let acc00 = zero_accumulator();
    let acc01 = zero_accumulator();
    let acc10 = zero_accumulator();
    let acc11 = zero_accumulator();

    let mut k0 = 0u32;
    while k0 < cols {
        // Stage x ⊙ s: a_tile[r · BK + c] = xs[m0 + r, k0 + c] (row-major A).
        #[unroll]
        for i in 0..comptime!(GEMM_BM * GEMM_BK / (PLANE * GEMM_PLANES)) {
            let e = tid + i * threads;
            let t = m0 + e / GEMM_BK;
            let k = k0 + e % GEMM_BK;
            let mut v = 0.0f32;
            if t < tokens && k < cols {
                v = f32::cast_from(x[t as usize * cols_us + k as usize])
                    * f32::cast_from(s[k as usize]);
            }
            a_tile[e as usize] = f16::cast_from(v);
        }
        // Stage dequant(W): b_tile[n · BK + c] = W[n0 + n, k0 + c] (B = Wᵀ, column-major).
        #[unroll]
        for i in 0..comptime!(GEMM_BN * GEMM_BK / (PLANE * GEMM_PLANES)) {
            let e = tid + i * threads;
            let row = n0 + e / GEMM_BK;
            let k = k0 + e % GEMM_BK;
            let mut v = 0.0f32;
            if row < rows && k < cols {
                let word = packed[row as usize * wpr + (k / cpw) as usize];
                let code = (word >> ((k % cpw) * bits)) & mask;
                let p = row as usize * g_us + (k >> group_shift) as usize;
                v = (f32::cast_from(code) - zeros[p]) * scales[p];
            }
            b_tile[e as usize] = f16::cast_from(v);
        }
        sync_cube();

        #[unroll]
        for kk in 0..comptime!(GEMM_BK / 16) {
            let a0 = fragment_a(&a_tile.slice(((pm * 32) * GEMM_BK + kk * 16) as usize, a_len));
            let a1 =
                fragment_a(&a_tile.slice(((pm * 32 + 16) * GEMM_BK + kk * 16) as usize, a_len));
            let b0 = fragment_b(&b_tile.slice(((pn * 32) * GEMM_BK + kk * 16) as usize, b_len));
            let b1 =
                fragment_b(&b_tile.slice(((pn * 32 + 16) * GEMM_BK + kk * 16) as usize, b_len));
            cmma::execute::<f16, f16, f32, f32>(&a0, &b0, &acc00, &acc00);
            cmma::execute::<f16, f16, f32, f32>(&a0, &b1, &acc01, &acc01);
            cmma::execute::<f16, f16, f32, f32>(&a1, &b0, &acc10, &acc10);
            cmma::execute::<f16, f16, f32, f32>(&a1, &b1, &acc11, &acc11);
        }
        sync_cube();
        k0 += GEMM_BK;
    }

    // Accumulators → shared (row-major [BM, BN]) → global, bounds-checked.
    cmma::store(
        &mut c_tile.slice_mut(((pm * 32) * GEMM_BN + pn * 32) as usize, c_len),
        &acc00,
        GEMM_BN,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut c_tile.slice_mut(((pm * 32) * GEMM_BN + pn * 32 + 16) as usize, c_len),
        &acc01,
        GEMM_BN,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut c_tile.slice_mut(((pm * 32 + 16) * GEMM_BN + pn * 32) as usize, c_len),
        &acc10,
        GEMM_BN,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut c_tile.slice_mut(((pm * 32 + 16) * GEMM_BN + pn * 32 + 16) as usize, c_len),
        &acc11,
        GEMM_BN,
        cmma::MatrixLayout::RowMajor,
    );
    sync_cube();
    #[unroll]
    for i in 0..comptime!(GEMM_BM * GEMM_BN / (PLANE * GEMM_PLANES)) {
        let e = tid + i * threads;
        let t = m0 + e / GEMM_BN;
        let row = n0 + e % GEMM_BN;
        if t < tokens && row < rows {
            y[t as usize * rows as usize + row as usize] = F::cast_from(c_tile[e as usize]);
        }
    }
}
