//! Quantize-pack: the column scale, each group's scale and zero point, the codes and their
//! packing into 32-bit words, fused in one pass over `W`. The results are bit-identical to
//! [`crate::reference::quantize`] for the same inputs (the quotient `v / s` is correctly
//! rounded, see [`quotient_rn`]).
//!
//! | kernel | serves |
//! | --- | --- |
//! | [`quantize_pack_groups_kernel`] | groups of 32 to 512 columns (a power of two) holding whole words: 2, 4 or 8 bits |
//! | [`quantize_pack_kernel`] | any layout ([`QuantizeVariant::Generic`] forces it) |

use burn::tensor::{DType, Tensor as BurnTensor};
use burn_cubecl::{CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantScheme, QuantSpec, QuantizedWeight};

use super::operands::{aligned_to, empty, float_prim, u32_of, wrap_float, Cb, WeightDims};
use super::{QuantizeVariant, MAX_GRID_Y, PLANE};

/// Quantizes `w` (`[rows, cols]`, both non-zero) times `col_scale` (`[cols]`, checked by
/// the caller) with `spec`: the groups kernel where the layout allows it and `variant` is
/// [`QuantizeVariant::Auto`], else the generic kernel.
pub(super) fn quantize<R: CubeRuntime, F: FloatElement>(
    w: BurnTensor<Cb<R, F>, 2>,
    col_scale: BurnTensor<Cb<R, F>, 1>,
    spec: &QuantSpec,
    variant: QuantizeVariant,
) -> Result<QuantizedWeight<Cb<R, F>>, QuantError> {
    let [rows, cols] = w.dims();
    let dims = WeightDims::new([rows, cols], spec)?;
    u32_of(rows.saturating_mul(cols), "weight elements")?;
    let w = float_prim(w, F::dtype());
    let d = float_prim(col_scale, F::dtype());
    let groups = dims.groups as usize;
    let scales = empty(&w, vec![rows, groups], DType::F32);
    let zeros = empty(&w, vec![rows, groups], DType::F32);
    let packed = empty(&w, vec![rows, dims.words_per_row as usize], DType::I32);
    let dtype = w.dtype;
    let group_parallel = variant == QuantizeVariant::Auto
        && dims.group.is_power_of_two()
        && (32..=512).contains(&dims.group)
        && dims.codes_per_word.is_power_of_two()
        && dims.group % dims.codes_per_word == 0;
    if group_parallel {
        let per_lane = QUANT_PER_LANE.min(dims.group);
        let steps = 1;
        let slots = PLANE / (dims.group / per_lane);
        let planes = quant_group_planes(dims.groups.div_ceil(slots));
        // Columns per load: up to 16 bytes, dividing the lane's run and the row, with both
        // operands starting on a boundary of the load's size.
        let elem = dtype.size() as u32;
        let mut vector = per_lane.min(16 / elem).max(1);
        while vector > 1
            && (dims.cols % vector != 0
                || !aligned_to(&w, (vector * elem) as u64)
                || !aligned_to(&d, (vector * elem) as u64))
        {
            vector /= 2;
        }
        // SAFETY: shapes were checked above; every load index is clamped and every store
        // guarded (see the kernel).
        unsafe {
            quantize_pack_groups_kernel::launch_unchecked::<R>(
                &w.client,
                CubeCount::Static(
                    dims.groups.div_ceil(planes * steps * slots),
                    dims.rows.min(MAX_GRID_Y as u32),
                    1,
                ),
                CubeDim {
                    x: PLANE,
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
        // clamped.
        unsafe {
            quantize_pack_kernel::launch_unchecked::<R>(
                &w.client,
                CubeCount::Static(rows.min(i32::MAX as usize) as u32, 1, 1),
                CubeDim {
                    x: PLANE,
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
        packed: BurnTensor::from_primitive(packed),
        scales: wrap_float(scales),
        zeros: wrap_float(zeros),
        spec: *spec,
        shape: [rows, cols],
    })
}

/// Elements of a group each lane of the quantizer loads per loop step.
const QUANT_UNROLL: u32 = 4;

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
            // run-time loop over the whole plane).
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
/// difference (`ttq-kernels/examples/quotient_check.rs`). Three FMA-pipe instructions per element instead of the
/// division's FCHK, MUFU.RCP and FFMA chain, the quantizer's largest single cost (about
/// 15% of its instructions).
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

/// Planes per cube of the group-parallel quantize-pack kernel (each owns whole groups).
const QUANT_GROUP_PLANES: u32 = 8;

/// Columns of a group each lane of [`quantize_pack_groups_kernel`] quantizes (at
/// most the group): 32 instead of `group / 32` (4 at g128), so the group's reductions,
/// parameters and word assembly are paid per 32 values (H200, 4096×14336 g128:
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
