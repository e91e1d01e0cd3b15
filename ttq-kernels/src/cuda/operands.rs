//! Tensor plumbing shared by the launchers: the contiguous `CubeTensor` behind a Burn
//! tensor in the dtype a kernel reads, new outputs, the dimensions of a quantized weight in
//! the kernels' 32-bit arithmetic, and alignment checks for vector loads.

use burn::tensor::{DType, Int, Shape, Tensor, TensorPrimitive};
use burn_cubecl::{
    kernel::{cast, into_contiguous},
    ops::numeric::empty_device_contiguous_dtype,
    tensor::CubeTensor,
    CubeBackend, CubeRuntime, FloatElement,
};
use ttq_core::{PackLayout, QuantError, QuantSpec, QuantizedWeight};

/// Burn's plain cube backend for runtime `R` and float `F` (no fusion).
pub(crate) type Cb<R, F> = CubeBackend<R, F, i32, u8>;

/// The contiguous `CubeTensor` behind a float tensor, converted to `dtype`.
pub(crate) fn float_prim<R: CubeRuntime, F: FloatElement, const D: usize>(
    t: Tensor<Cb<R, F>, D>,
    dtype: DType,
) -> CubeTensor<R> {
    // Cast first: `cast` may hand back a row-pitched tensor, which `into_contiguous` packs.
    let t = t.into_primitive().tensor();
    let t = if t.dtype == dtype { t } else { cast(t, dtype) };
    into_contiguous(t)
}

/// The contiguous `CubeTensor` behind an int tensor of packed words, as 32-bit ints.
pub(crate) fn int_prim<R: CubeRuntime, F: FloatElement, const D: usize>(
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

/// A float tensor around a `CubeTensor`.
pub(crate) fn wrap_float<R: CubeRuntime, F: FloatElement, const D: usize>(
    t: CubeTensor<R>,
) -> Tensor<Cb<R, F>, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A new contiguous tensor on the device of `like`, contents undefined.
pub(crate) fn empty<R: CubeRuntime>(
    like: &CubeTensor<R>,
    shape: Vec<usize>,
    dtype: DType,
) -> CubeTensor<R> {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        dtype,
    )
}

/// `n` as a `u32`, or an error naming `what` where it does not fit the kernels' 32-bit
/// index arithmetic.
pub(crate) fn u32_of(n: usize, what: &str) -> Result<u32, QuantError> {
    u32::try_from(n)
        .map_err(|_| QuantError::shape("cuda kernels", format!("{what} below 2^32"), n.to_string()))
}

/// Parameters of a quantized weight that every kernel takes.
#[derive(Debug)]
pub(crate) struct WeightDims {
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) group: u32,
    /// `log2(group)`, or 31 when a row has a single group (then every column maps to 0).
    pub(crate) group_shift: u32,
    pub(crate) groups: u32,
    pub(crate) words_per_row: u32,
    pub(crate) bits: u32,
    pub(crate) codes_per_word: u32,
}

impl WeightDims {
    pub(crate) fn new(shape: [usize; 2], spec: &QuantSpec) -> Result<Self, QuantError> {
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

/// The packed words (as 32-bit ints), scales and zeros (f32) of `q`, contiguous: the weight
/// operands every kernel that reads a quantized weight takes.
pub(crate) fn weight_prims<R: CubeRuntime, F: FloatElement>(
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
pub(crate) fn activation_prims<R: CubeRuntime, F: FloatElement>(
    x: Tensor<Cb<R, F>, 2>,
    input_scale: Option<Tensor<Cb<R, F>, 1>>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [_, cols] = x.dims();
    let s = input_scale.unwrap_or_else(|| Tensor::ones([cols], &x.device()));
    (float_prim(x, F::dtype()), float_prim(s, F::dtype()))
}

/// Whether a tensor's data starts on a `bytes` boundary (vector loads need their size's
/// alignment; a view that starts inside a buffer may not have it).
pub(crate) fn aligned_to<R: CubeRuntime>(t: &CubeTensor<R>, bytes: u64) -> bool {
    t.handle.offset_start.unwrap_or(0).is_multiple_of(bytes)
}

/// Whether a tensor's data starts on a 16-byte boundary.
pub(crate) fn aligned_16<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    aligned_to(t, 16)
}
