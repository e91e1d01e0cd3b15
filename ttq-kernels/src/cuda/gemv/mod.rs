//! The GEMVs: `matmul` for at most `gemv_max_tokens` (16) tokens, with dequantization
//! fused into the products. Each kernel sits in its own module beside its launcher and its
//! `fits` check; this module holds what they share and the dispatch, which walks
//! [`GemvPolicy`]'s ordered list (see [`crate::gemv_config`]).

mod fused;
mod half2;
mod tma;
mod tma_copies;
mod tma_mma;
mod vector;

use burn::tensor::{DType, Tensor as BurnTensor};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime, FloatElement};
use cubecl::prelude::*;
use ttq_core::{QuantError, QuantizedWeight};

use super::operands::{activation_prims, aligned_16, empty, u32_of, weight_prims, Cb, WeightDims};
use super::PLANE;
use crate::gemv_config::{auto_mma_rows, GemvKernel, GemvPolicy, LineTile, TmaTile};

/// Words per 16-byte line, the unit of the vector, half2 and TMA GEMVs' loads.
pub(super) const LINE_WORDS: u32 = 4;

/// Elements per vector load of the line kernels' activations (the same count as
/// [`LINE_WORDS`]: the kernels have one vector size).
pub(super) const LINE_VECTOR: usize = LINE_WORDS as usize;

/// Everything a GEMV call needs besides its operands.
#[derive(Debug, Clone, Copy)]
pub(super) struct GemvCall<'a> {
    /// The weight's dimensions.
    pub dims: &'a WeightDims,
    /// Tokens (rows of `x`).
    pub tokens: usize,
    /// Whether the activations are f16 (the half2 and TMA GEMVs need it).
    pub f16: bool,
}

/// Whether `kernel` can serve `call` with these tiles (the TMA kernels also look at the
/// device and the operands' alignment).
fn fits<R: CubeRuntime, F: FloatElement>(
    kernel: GemvKernel,
    call: GemvCall<'_>,
    x: &BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    tma_tile: TmaTile,
) -> bool {
    match kernel {
        GemvKernel::Fused => true,
        GemvKernel::Vector => line_layout_fits(call.dims),
        GemvKernel::Half2 => half2::fits(call),
        GemvKernel::Tma => half2::fits(call) && tma::fits(x, q, call, tma_tile, false),
        GemvKernel::TmaMma => half2::fits(call) && tma::fits(x, q, call, tma_tile, true),
    }
}

/// What `kernel` needs, for the error of [`GemvPolicy::Only`] when it does not fit.
fn needs(kernel: GemvKernel) -> String {
    match kernel {
        GemvKernel::Fused => "nothing more".into(),
        GemvKernel::Vector => "2, 4 or 8 bits, rows of whole four-word lines and groups of \
                               whole lines"
            .into(),
        GemvKernel::Half2 => "f16 activations, 4-bit codes, a multiple of 32 columns and \
                              groups of whole 32-column lines"
            .into(),
        GemvKernel::Tma | GemvKernel::TmaMma => tma::needs(kernel == GemvKernel::TmaMma),
    }
}

/// `y = (x ⊙ s) · dequant(Q)ᵀ` for at most 16 tokens, by the kernel that `policy` picks:
/// [`GemvPolicy::Auto`] takes the first that fits of the tensor-core TMA GEMV (2 to 16
/// tokens, its default tile), the half2, the vector and the fused GEMV.
pub(super) fn gemv<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    policy: GemvPolicy,
    line_tile: LineTile,
    tma_tile: TmaTile,
) -> Result<BurnTensor<Cb<R, F>, 2>, QuantError> {
    let [tokens, _] = x.dims();
    let call = GemvCall {
        dims,
        tokens,
        f16: F::dtype() == DType::F16,
    };
    let (kernel, tma_tile) = match policy {
        GemvPolicy::Only(kernel) => {
            if !fits(kernel, call, &x, q, tma_tile) {
                return Err(QuantError::Method {
                    method: "cuda GEMV".into(),
                    message: format!(
                        "the {kernel} GEMV needs {} (got {:?}, {} bits, {} columns, groups of \
                         {}, {} tokens); use the automatic choice",
                        needs(kernel),
                        F::dtype(),
                        dims.bits,
                        dims.cols,
                        dims.group,
                        tokens
                    ),
                });
            }
            (kernel, tma_tile)
        }
        GemvPolicy::Prefer(kernel) if fits(kernel, call, &x, q, tma_tile) => (kernel, tma_tile),
        GemvPolicy::Prefer(_) | GemvPolicy::Auto => auto_choice(call, &x, q, tma_tile),
    };
    match kernel {
        GemvKernel::Fused => fused::gemv(x, q, input_scale, dims, line_tile),
        GemvKernel::Vector => vector::gemv(x, q, input_scale, dims, line_tile),
        GemvKernel::Half2 => half2::gemv(x, q, input_scale, dims, line_tile),
        GemvKernel::Tma => tma::gemv(x, q, input_scale, dims, tma_tile, false),
        GemvKernel::TmaMma => tma::gemv(x, q, input_scale, dims, tma_tile, true),
    }
}

/// [`GemvPolicy::Auto`]'s choice and the TMA tile it runs with: the tensor-core TMA GEMV at
/// 2 to 16 tokens where it fits (rows per plane from [`auto_mma_rows`] unless `tma_tile`
/// sets them), else the first of half2, vector and fused that fits.
fn auto_choice<R: CubeRuntime, F: FloatElement>(
    call: GemvCall<'_>,
    x: &BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    tma_tile: TmaTile,
) -> (GemvKernel, TmaTile) {
    if let Some(rows) = auto_mma_rows(call.tokens, call.dims.rows as usize) {
        let tile = TmaTile {
            rows: tma_tile.rows.or(Some(rows)),
            ..tma_tile
        };
        if fits(GemvKernel::TmaMma, call, x, q, tile) {
            return (GemvKernel::TmaMma, tile);
        }
    }
    let kernel = [GemvKernel::Half2, GemvKernel::Vector]
        .into_iter()
        .find(|&k| fits(k, call, x, q, tma_tile))
        .unwrap_or(GemvKernel::Fused);
    (kernel, tma_tile)
}

/// Whether the line kernels (vector GEMV, the line dequantizer) can serve a weight of these
/// dimensions: 2, 4 or 8 bits (whole codes per word, and `32 / bits` a multiple of the
/// vector size so that a word's activations are whole vectors), rows of whole four-word
/// lines, and every line in one group (a single group per row, or groups that are a
/// multiple of a line's columns).
pub(super) fn line_layout_fits(dims: &WeightDims) -> bool {
    if !matches!(dims.bits, 2 | 4 | 8) {
        return false;
    }
    let line_cols = LINE_WORDS * 32 / dims.bits;
    dims.cols.is_multiple_of(line_cols)
        && (dims.groups == 1 || dims.group.is_multiple_of(line_cols))
}

/// The operands of a GEMV launch, contiguous and in the kernels' dtypes.
pub(super) struct GemvOperands<R: CubeRuntime> {
    pub x: CubeTensor<R>,
    pub s: CubeTensor<R>,
    pub packed: CubeTensor<R>,
    pub scales: CubeTensor<R>,
    pub zeros: CubeTensor<R>,
    pub tokens: usize,
    pub tokens_u: u32,
}

impl<R: CubeRuntime> GemvOperands<R> {
    pub fn new<F: FloatElement>(
        x: BurnTensor<Cb<R, F>, 2>,
        q: &QuantizedWeight<Cb<R, F>>,
        input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
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

/// The operands of a 16-byte-line GEMV (vector, half2, TMA) and its empty `[tokens, rows]`
/// output; or, where `x`, the input scale or the packed words do not start on a 16-byte
/// boundary (their vector loads and copies need it), the fused GEMV's result on the same
/// prepared operands (default tile).
#[allow(clippy::type_complexity)]
pub(super) fn line_operands<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
) -> Result<Result<(GemvOperands<R>, CubeTensor<R>), BurnTensor<Cb<R, F>, 2>>, QuantError> {
    let ops = GemvOperands::new(x, q, input_scale)?;
    if !(aligned_16(&ops.x) && aligned_16(&ops.s) && aligned_16(&ops.packed)) {
        return Ok(Err(fused::launch::<R, F>(ops, dims, LineTile::default())));
    }
    let y = empty(&ops.x, vec![ops.tokens, dims.rows as usize], F::dtype());
    Ok(Ok((ops, y)))
}

/// A line GEMV's launch (vector, half2): prepared operands, the empty output, the tile
/// resolved for the call and its grid.
pub(super) struct LineLaunch<R: CubeRuntime> {
    pub ops: GemvOperands<R>,
    pub y: CubeTensor<R>,
    pub rows_per_cube: u32,
    pub planes: u32,
    pub unroll: u32,
    pub cubes: CubeCount,
    pub cube_dim: CubeDim,
}

/// [`line_operands`] and the grid of `tile` for them; or the fused GEMV's result where an
/// operand is not 16-byte aligned.
#[allow(clippy::type_complexity)]
pub(super) fn line_launch<R: CubeRuntime, F: FloatElement>(
    x: BurnTensor<Cb<R, F>, 2>,
    q: &QuantizedWeight<Cb<R, F>>,
    input_scale: Option<BurnTensor<Cb<R, F>, 1>>,
    dims: &WeightDims,
    tile: LineTile,
) -> Result<Result<LineLaunch<R>, BurnTensor<Cb<R, F>, 2>>, QuantError> {
    let (ops, y) = match line_operands::<R, F>(x, q, input_scale, dims)? {
        Ok(prepared) => prepared,
        Err(fallback) => return Ok(Err(fallback)),
    };
    let (rows_per_cube, planes, unroll) = tile.resolve_line(ops.tokens, dims.bits);
    Ok(Ok(LineLaunch {
        ops,
        y,
        rows_per_cube,
        planes,
        unroll,
        cubes: CubeCount::Static(dims.rows.div_ceil(rows_per_cube), 1, 1),
        cube_dim: CubeDim {
            x: PLANE,
            y: planes,
            z: 1,
        },
    }))
}

/// The tail shared by the split-K GEMV kernels: each thread's `m · R` partial dot products
/// (`acc[t · R + r]`, token `t`, row `row0 + r`) are summed over the plane's lanes with
/// `plane_sum`, then over the cube's planes in shared memory, and every output of the cube
/// is written by one thread (a loop: `R · m` may exceed the cube's threads). Rows past
/// `rows` are not written. Every thread of the cube must call it (it holds a barrier).
#[cube]
pub(super) fn store_gemv_rows<F: Float>(
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
