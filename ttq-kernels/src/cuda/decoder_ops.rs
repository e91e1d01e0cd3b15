//! Fused kernels for the element-wise operations of a decoder layer (RMSNorm, rotate-half
//! RoPE, the gated MLP activation): one launch each instead of the six to eight Burn ops
//! they take otherwise (`ttq_core::ops`). At decode time a layer is bound by its launches
//! (one tiny launch costs 12-17 µs of host time), so these matter
//! more there than the arithmetic they do.
//!
//! All arithmetic is f32 whatever the float type `F` of the tensors; the plain-Rust
//! references are [`crate::reference::rms_norm`], [`crate::reference::rope`] and
//! [`crate::reference::gated`].

use super::operands::{empty, float_prim, u32_of, wrap_float, Cb};
use super::{MAX_GRID_Y, PLANE};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::{CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{ops, GateActivation, QuantError};

/// Most planes a cube of the RMSNorm and softmax kernels uses for one row.
const NORM_MAX_PLANES: u32 = 8;

/// Threads per cube of the element-wise kernels.
const ELEMENTWISE_THREADS: u32 = 256;

/// Cubes of the element-wise kernels at most (they loop over the rest).
const ELEMENTWISE_MAX_CUBES: u32 = 1 << 16;

/// `out[r, :] = x[r, :] · (1 / sqrt(mean(x[r, :]²) + eps)) · w`, one cube per row: its
/// `32 × P` threads stride over the row, sum squares in f32, reduce within each plane and
/// then across planes in shared memory, and write the scaled row.
#[cube(launch_unchecked)]
pub fn rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    w: &Tensor<F>,
    out: &mut Tensor<F>,
    d: u32,
    eps: f32,
    #[define(F)] _dtype: StorageType,
) {
    let threads = CUBE_DIM_Y * PLANE;
    let tid = UNIT_POS_Y * PLANE + UNIT_POS_X;
    let base = CUBE_POS_X as usize * d as usize;
    let mut partial = SharedMemory::<f32>::new(32usize);

    let mut acc = 0.0f32;
    let mut c = tid;
    while c < d {
        let v = f32::cast_from(x[base + c as usize]);
        acc += v * v;
        c += threads;
    }
    let plane_total = plane_sum(acc);
    if UNIT_POS_X == 0 {
        partial[UNIT_POS_Y as usize] = plane_total;
    }
    sync_cube();
    let mut total = 0.0f32;
    for p in 0..CUBE_DIM_Y {
        total += partial[p as usize];
    }
    let r = 1.0f32 / f32::sqrt(total / f32::cast_from(d) + eps);
    let mut c = tid;
    while c < d {
        let v = f32::cast_from(x[base + c as usize]) * r;
        out[base + c as usize] = F::cast_from(v * f32::cast_from(w[c as usize]));
        c += threads;
    }
}

/// Sum (`max = false`) or maximum of `v` over the cube's planes: a plane reduction, then
/// the plane results through shared memory. Every thread of the cube gets the result.
#[cube]
fn cube_reduce(v: f32, partial: &mut SharedMemory<f32>, #[comptime] max: bool) -> f32 {
    let p = if max { plane_max(v) } else { plane_sum(v) };
    sync_cube();
    if UNIT_POS_X == 0 {
        partial[UNIT_POS_Y as usize] = p;
    }
    sync_cube();
    let mut total = partial[0];
    for k in 1..CUBE_DIM_Y {
        let q = partial[k as usize];
        if max {
            total = f32::max(total, q);
        } else {
            total += q;
        }
    }
    total
}

/// `out[r, :] = softmax(scale · s[r, :] + mask[r % t, :])`, one cube per row: a pass for
/// the maximum, one for the sum of exponentials, one that writes (the row is re-read from
/// L1/L2; it is at most a few thousand values). Without a mask (`masked = false`) the mask
/// argument is not read.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn masked_softmax_kernel<F: Float>(
    s: &Tensor<F>,
    mask: &Tensor<F>,
    out: &mut Tensor<F>,
    cols: u32,
    mask_rows: u32,
    scale: f32,
    #[comptime] masked: bool,
    #[define(F)] _dtype: StorageType,
) {
    let threads = CUBE_DIM_Y * PLANE;
    let tid = UNIT_POS_Y * PLANE + UNIT_POS_X;
    let row = CUBE_POS_X;
    let base = row as usize * cols as usize;
    let mbase = (row % mask_rows) as usize * cols as usize;
    let mut partial = SharedMemory::<f32>::new(32usize);

    let mut m = f32::new(-3.0e38);
    let mut c = tid;
    while c < cols {
        let mut v = scale * f32::cast_from(s[base + c as usize]);
        if masked {
            v += f32::cast_from(mask[mbase + c as usize]);
        }
        m = f32::max(m, v);
        c += threads;
    }
    let m = cube_reduce(m, &mut partial, true);
    let mut acc = 0.0f32;
    let mut c = tid;
    while c < cols {
        let mut v = scale * f32::cast_from(s[base + c as usize]);
        if masked {
            v += f32::cast_from(mask[mbase + c as usize]);
        }
        acc += f32::exp(v - m);
        c += threads;
    }
    let total = cube_reduce(acc, &mut partial, false);
    let inv = 1.0f32 / total;
    let mut c = tid;
    while c < cols {
        let mut v = scale * f32::cast_from(s[base + c as usize]);
        if masked {
            v += f32::cast_from(mask[mbase + c as usize]);
        }
        out[base + c as usize] = F::cast_from(f32::exp(v - m) * inv);
        c += threads;
    }
}

/// Rotate-half RoPE of `x` (`[rows, 2 · half]`, a row per batch, token and head, heads
/// fastest): thread `i < half` of a row writes elements `i` and `i + half` from the two
/// inputs it reads. Rows are strided over the y dimension of the grid.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn rope_kernel<F: Float>(
    x: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    heads: u32,
    tokens: u32,
    half: u32,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
    if i < half {
        let d = 2 * half;
        let mut row = CUBE_POS_Y;
        while row < rows {
            let tok = (row / heads) % tokens;
            let at = row as usize * d as usize + i as usize;
            let tab = tok as usize * d as usize + i as usize;
            let a = f32::cast_from(x[at]);
            let b = f32::cast_from(x[at + half as usize]);
            out[at] = F::cast_from(a * f32::cast_from(cos[tab]) - b * f32::cast_from(sin[tab]));
            let tab2 = tab + half as usize;
            out[at + half as usize] =
                F::cast_from(b * f32::cast_from(cos[tab2]) + a * f32::cast_from(sin[tab2]));
            row += CUBE_COUNT_Y;
        }
    }
}

/// `out = act(gate) ⊙ up`, a thread per element (grid-strided), SiLU or GELU-tanh.
#[cube(launch_unchecked)]
pub fn gated_kernel<F: Float>(
    gate: &Tensor<F>,
    up: &Tensor<F>,
    out: &mut Tensor<F>,
    n: u32,
    #[comptime] gelu: bool,
    #[define(F)] _dtype: StorageType,
) {
    let mut i = CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X;
    while i < n {
        let g = f32::cast_from(gate[i as usize]);
        let a = if gelu {
            let inner = 0.797_884_6f32 * (g + 0.044715f32 * g * g * g);
            0.5f32 * g * (1.0f32 + f32::tanh(inner))
        } else {
            g / (1.0f32 + f32::exp(-g))
        };
        out[i as usize] = F::cast_from(a * f32::cast_from(up[i as usize]));
        i += CUBE_COUNT_X * CUBE_DIM_X;
    }
}

/// [`rms_norm_kernel`] behind `QuantKernels::rms_norm`.
pub(super) fn rms_norm<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    weight: BurnTensor<Cb<R, F>, 1>,
    eps: f64,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    ops::check_rms_norm(&x, &weight, eps)?;
    let [rows, d] = x.dims();
    if rows == 0 || d == 0 {
        return ops::rms_norm(x, weight, eps);
    }
    let rows_u = u32_of(rows, "rms norm rows")?;
    let d_u = u32_of(d, "rms norm width")?;
    u32_of(rows.saturating_mul(d), "rms norm elements")?;
    let x = float_prim(x, F::dtype());
    let w = float_prim(weight, F::dtype());
    let out = empty(&x, vec![rows, d], F::dtype());
    let planes = d_u.div_ceil(4 * PLANE).clamp(1, NORM_MAX_PLANES);
    // SAFETY: one cube per row (`rows` cubes) and every index below `row · d + d`; the
    // shapes were checked above.
    unsafe {
        rms_norm_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(rows_u, 1, 1),
            CubeDim {
                x: PLANE,
                y: planes,
                z: 1,
            },
            x.clone().into_tensor_arg(),
            w.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            d_u,
            eps as f32,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(out))
}

/// [`masked_softmax_kernel`] behind `QuantKernels::masked_softmax`.
pub(super) fn masked_softmax<R: CubeRuntime, F: FloatElement>(
    scores: BurnTensor<Cb<R, F>, 2>,
    scale: f64,
    mask: Option<BurnTensor<Cb<R, F>, 2>>,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    ops::check_masked_softmax(&scores, scale, mask.as_ref())?;
    let [rows, cols] = scores.dims();
    if rows == 0 || cols == 0 {
        return ops::masked_softmax(scores, scale, mask);
    }
    let rows_u = u32_of(rows, "softmax rows")?;
    let cols_u = u32_of(cols, "softmax columns")?;
    u32_of(rows.saturating_mul(cols), "softmax elements")?;
    let s = float_prim(scores, F::dtype());
    let masked = mask.is_some();
    let (mask, mask_rows) = match mask {
        Some(m) => {
            let t = m.dims()[0];
            (float_prim(m, F::dtype()), t as u32)
        }
        // Not read by the kernel (`masked = false`); any tensor of `F` fills the slot.
        None => (s.clone(), 1),
    };
    let out = empty(&s, vec![rows, cols], F::dtype());
    let planes = cols_u.div_ceil(4 * PLANE).clamp(1, NORM_MAX_PLANES);
    // SAFETY: one cube per row; every index is below `row · cols + cols` of `s` and `out`
    // and `(row % t) · cols + cols` of the `[t, cols]` mask; shapes checked above.
    unsafe {
        masked_softmax_kernel::launch_unchecked::<R>(
            &s.client,
            CubeCount::Static(rows_u, 1, 1),
            CubeDim {
                x: PLANE,
                y: planes,
                z: 1,
            },
            s.clone().into_tensor_arg(),
            mask.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            cols_u,
            mask_rows,
            scale as f32,
            masked,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(out))
}

/// [`rope_kernel`] behind `QuantKernels::rope`.
pub(super) fn rope<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 4>,
    cos: BurnTensor<Cb<R, F>, 2>,
    sin: BurnTensor<Cb<R, F>, 2>,
) -> Result<BurnTensor<Cb<R, F>, 4>, QuantError> {
    ops::check_rope(&x, &cos, &sin)?;
    let [b, t, h, d] = x.dims();
    let rows = b * t * h;
    if rows == 0 || d == 0 {
        return ops::rope(x, cos, sin);
    }
    u32_of(rows.saturating_mul(d), "rope elements")?;
    let half = (d / 2) as u32;
    let x = float_prim(x, F::dtype());
    let cos = float_prim(cos, F::dtype());
    let sin = float_prim(sin, F::dtype());
    let out = empty(&x, vec![b, t, h, d], F::dtype());
    let threads = half.div_ceil(PLANE).clamp(1, 8) * PLANE;
    // SAFETY: thread `i < half` of row `r < rows` touches `r · d + i` and `r · d + i + half`
    // of `x` and `out` and row `(r / h) % t` of the `[t, d]` tables; shapes checked above.
    unsafe {
        rope_kernel::launch_unchecked::<R>(
            &x.client,
            CubeCount::Static(half.div_ceil(threads), rows.min(MAX_GRID_Y) as u32, 1),
            CubeDim {
                x: threads,
                y: 1,
                z: 1,
            },
            x.clone().into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            rows as u32,
            h as u32,
            t as u32,
            half,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(out))
}

/// [`gated_kernel`] behind `QuantKernels::gated`.
pub(super) fn gated<R: CubeRuntime, F: FloatElement>(
    gate: BurnTensor<Cb<R, F>, 2>,
    up: BurnTensor<Cb<R, F>, 2>,
    act: GateActivation,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    ops::check_gated(&gate, &up)?;
    let [rows, d] = gate.dims();
    let n = rows.saturating_mul(d);
    if n == 0 {
        return ops::gated(gate, up, act);
    }
    let n_u = u32_of(n, "gated activation elements")?;
    let g = float_prim(gate, F::dtype());
    let u = float_prim(up, F::dtype());
    let out = empty(&g, vec![rows, d], F::dtype());
    let cubes = n_u.div_ceil(ELEMENTWISE_THREADS).min(ELEMENTWISE_MAX_CUBES);
    // SAFETY: every thread stays below `n` elements of three tensors of `n` elements.
    unsafe {
        gated_kernel::launch_unchecked::<R>(
            &g.client,
            CubeCount::Static(cubes, 1, 1),
            CubeDim {
                x: ELEMENTWISE_THREADS,
                y: 1,
                z: 1,
            },
            g.clone().into_tensor_arg(),
            u.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            n_u,
            act == GateActivation::GeluTanh,
            F::dtype().into(),
        );
    }
    Ok(wrap_float(out))
}
