//! Per-channel activation statistics (`max |x|` and `mean (x / max)²` of every input
//! channel, the `s` of TTQ's `D = (s + λ)^α`) and the TTQ scale `D`, `D⁻¹` computed from them.
//!
//! | kernel | serves |
//! | --- | --- |
//! | [`channel_stats_split_kernel`] + [`channel_stats_combine_kernel`] | channels in whole 16-byte vectors, 16-byte aligned input: tokens split across cubes, each split's sum rescaled to the common maximum |
//! | [`channel_stats_kernel`] | any other shape |
//! | [`ttq_scale_kernel`] | `D` and `D⁻¹`, a thread per channel, one launch instead of a dozen Burn ops |

use burn::tensor::{DType, Tensor as BurnTensor};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{ChannelStats, QuantKernels, TensorOpsKernels, TtqScaleConfig};

use super::operands::{aligned_16, empty, float_prim, wrap_float, Cb};
use super::{MAX_GRID_Y, PLANE};

/// Statistics of `x` (`[tokens, d]`): the split kernels where `d` is a whole number of
/// 16-byte vectors and `x` is 16-byte aligned, else the single-pass kernel; shapes past the
/// kernels' 32-bit indexing (or with no channels) go through [`TensorOpsKernels`].
pub(super) fn channel_stats<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
) -> ChannelStats<Cb<R, F>> {
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
        // clamped.
        unsafe {
            channel_stats_kernel::launch_unchecked::<R>(
                &x.client,
                CubeCount::Static(d_u.div_ceil(PLANE), 1, 1),
                CubeDim {
                    x: PLANE,
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

/// `(D, D⁻¹)`, each `[channels]`.
type ScalePair<R, F> = (BurnTensor<Cb<R, F>, 1>, BurnTensor<Cb<R, F>, 1>);

/// `(D, D⁻¹)` from `stats` with [`ttq_scale_kernel`], or `None` where the channel count
/// does not fit its indexing (the caller then uses Burn's ops).
pub(super) fn ttq_scales<R: CubeRuntime, F: FloatElement>(
    stats: &ChannelStats<Cb<R, F>>,
    config: &TtqScaleConfig,
) -> Option<ScalePair<R, F>> {
    let [channels] = stats.max_abs.dims();
    let channels_u = u32::try_from(channels).ok()?;
    let max_abs = float_prim(stats.max_abs.clone(), DType::F32);
    let mean_sq = float_prim(stats.mean_sq_normalized.clone(), DType::F32);
    let d = empty(&max_abs, vec![channels], DType::F32);
    let d_inv = empty(&max_abs, vec![channels], DType::F32);
    let cubes = channels_u.div_ceil(SCALE_THREADS).min(MAX_GRID_Y as u32);
    // SAFETY: every thread stays below `channels` elements of four tensors of `channels`
    // elements.
    unsafe {
        ttq_scale_kernel::launch_unchecked::<R>(
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
    Some((wrap_float(d), wrap_float(d_inv)))
}

/// Tokens each thread of the statistics kernel loads per loop step.
const STATS_UNROLL: u32 = 4;

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
/// of the copy bandwidth.
///
/// The launcher keeps splits short (64 tokens), so that a cube's pass-2 re-read (32 KB in
/// f16) still sits in L1: with splits of about 205 tokens over 14336 channels the whole
/// pass-1 footprint outgrew L2 and the re-read went to DRAM (78.7% DRAM throughput for
/// 1.9 TB/s of input).
///
/// Why two passes: a one-pass version (a running maximum per element, the sum rescaled by
/// (old / new maximum)² where a step raised it) took 24.8 / 36.7 / 59.5 µs for 4096 / 8192 /
/// 14336 channels at 2048 tokens against this kernel's 9.8 / 15.8 / 23.3: 75 registers
/// instead of 48, 1.5× the instructions and 14-21% DRAM throughput.
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
/// 16-56 splits).
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
/// Why planes: a thread per channel over all splits made 16 cubes of serial
/// loads for 4096 channels and took 8.2-8.5 µs at 2048 tokens (32 splits), as long as the
/// split kernel itself; in planes it takes 4.3 / 4.7 / 5.2 µs for 4096 /
/// 8192 / 14336 channels.
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

/// Threads per cube of [`ttq_scale_kernel`] (a thread per channel).
const SCALE_THREADS: u32 = 256;

/// Planes per cube of the fallback statistics kernel (each takes every 32nd token).
const STATS_PLANES: u32 = 32;

/// Planes per cube of [`channel_stats_split_kernel`].
const STATS_SPLIT_PLANES: u32 = 8;

/// Planes per cube of [`channel_stats_combine_kernel`] (each folds every 8th split;
/// 2048 tokens make 32 splits, 4 per plane: one step of loads).
const STATS_COMBINE_PLANES: u32 = 8;

/// Tokens per split of [`channel_stats_split_kernel`]: short enough that a cube's
/// re-read of its split hits L1 (see the kernel), long enough for 8 planes × 4 loads in
/// flight; 2048 tokens of 4096 channels make 512 cubes.
const STATS_SPLIT_TOKENS: u32 = 64;

/// Launches [`channel_stats_split_kernel`] and [`channel_stats_combine_kernel`]
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
    let cubes_x = d_vectors.div_ceil(PLANE);
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
        channel_stats_split_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(cubes_x, splits, 1),
            CubeDim {
                x: PLANE,
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
        channel_stats_combine_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(d_u.div_ceil(PLANE), 1, 1),
            CubeDim {
                x: PLANE,
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
