//! The group-wise round-to-nearest quantizer, its packed representation and dequantizer,
//! written with Burn tensor ops.
//!
//! # Format
//! A weight `W` of shape `[rows, cols]` (`rows` = output features, `cols` = input features,
//! PyTorch layout) is split along `cols` into groups of `g` consecutive channels (the last
//! group of a row is shorter when `g` does not divide `cols`). Each group has an f32 scale
//! `s` and an integer zero point `z` (stored as f32), and each weight a code
//! `q ∈ [0, 2^bits - 1]` with `w ≈ (q - z) · s`.
//!
//! - Asymmetric (default): the group's range is first widened to contain 0 (as GPTQ does),
//!   `s = (max - min) / (2^bits - 1)`, `z = round(-min / s)`. Widening to 0 keeps `z` inside
//!   the code range, which guarantees `|w - dequant(quant(w))| ≤ s/2` for every element.
//! - Symmetric: `s = max|w| / (2^(bits-1) - 1)`, `z = 2^(bits-1)`.
//! - All-zero groups get `s = 1`, `z` as above, and codes that dequantize to exactly 0.
//! - Rounding is to nearest, ties to even.
//! - Weights that are NaN or infinite, or so large that a group's range (or `max|w|`)
//!   overflows f32, have no finite scale: quantizing them is a [`QuantError::NonFinite`],
//!   never a panic or a silent garbage code.
//!
//! Codes are packed `⌊32 / bits⌋` to a `u32` word, low bits first: 8 per word at 4 bits,
//! 16 at 2, 4 at 8, and 10, 6, 5, 4 at 3, 5, 6, 7 bits (the top bits of such words are
//! unused). Each row starts on a new word. Words live in an Int tensor as their `i32` bit
//! pattern (or the equal `u32` value on backends with 64-bit ints).

use crate::{QuantError, QuantScheme, QuantSpec};
use burn::tensor::{backend::Backend, ElementConversion, Int, Tensor, TensorData};

/// How codes of one row are laid out in 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLayout {
    /// Bits per code.
    pub bits: u32,
    /// Codes per 32-bit word, `⌊32 / bits⌋`.
    pub codes_per_word: usize,
    /// Words per row, `⌈cols / codes_per_word⌉`.
    pub words_per_row: usize,
}

impl PackLayout {
    /// The layout for rows of `cols` codes of `bits` bits.
    pub fn new(bits: u32, cols: usize) -> Self {
        let codes_per_word = (32 / bits) as usize;
        Self {
            bits,
            codes_per_word,
            words_per_row: cols.div_ceil(codes_per_word),
        }
    }
}

/// A quantized weight matrix: packed codes plus per-group scales and zero points.
#[derive(Debug, Clone)]
pub struct QuantizedWeight<B: Backend> {
    /// Packed codes, `[rows, words_per_row]` (see [`PackLayout`]).
    pub packed: Tensor<B, 2, Int>,
    /// Per-group scales, `[rows, groups_per_row]`.
    pub scales: Tensor<B, 2>,
    /// Per-group zero points (integers stored as f32), `[rows, groups_per_row]`.
    pub zeros: Tensor<B, 2>,
    /// The spec the weight was quantized with.
    pub spec: QuantSpec,
    /// `[rows, cols]` of the original weight.
    pub shape: [usize; 2],
}

impl<B: Backend> QuantizedWeight<B> {
    /// The packing layout of this weight.
    pub fn layout(&self) -> PackLayout {
        PackLayout::new(self.spec.bits(), self.shape[1])
    }

    /// Bytes of packed codes plus f32 scales and zeros: what a kernel streams per matmul.
    pub fn storage_bytes(&self) -> usize {
        let [rows, cols] = self.shape;
        let groups = self.spec.groups_per_row(cols);
        rows * self.layout().words_per_row * 4 + 2 * rows * groups * 4
    }
}

/// Checks that `col_scale` (if any) has one entry per column of `w`.
pub fn check_col_scale<B: Backend>(
    context: &str,
    cols: usize,
    col_scale: Option<&Tensor<B, 1>>,
) -> Result<(), QuantError> {
    if let Some(d) = col_scale {
        let [n] = d.dims();
        if n != cols {
            return Err(QuantError::shape(
                context,
                format!("a column scale of length {cols}"),
                format!("length {n}"),
            ));
        }
    }
    Ok(())
}

/// Quantizes `w * diag(col_scale)` group-wise with Burn tensor ops and packs the codes.
///
/// # Shapes
/// - `w`: `[rows, cols]`; `col_scale`: `[cols]`
pub fn quantize<B: Backend>(
    w: Tensor<B, 2>,
    col_scale: Option<Tensor<B, 1>>,
    spec: &QuantSpec,
) -> Result<QuantizedWeight<B>, QuantError> {
    let [rows, cols] = w.dims();
    check_col_scale("quantize", cols, col_scale.as_ref())?;
    let codes = quantize_codes(w, col_scale, spec)?;
    Ok(QuantizedWeight {
        packed: pack(codes.codes, spec.bits()),
        scales: codes.scales,
        zeros: codes.zeros,
        spec: *spec,
        shape: [rows, cols],
    })
}

/// Unpacked result of group quantization.
pub struct GroupCodes<B: Backend> {
    /// Codes as integers, `[rows, cols]`.
    pub codes: Tensor<B, 2, Int>,
    /// `[rows, groups]`.
    pub scales: Tensor<B, 2>,
    /// `[rows, groups]`.
    pub zeros: Tensor<B, 2>,
}

/// Group-wise quantization without packing (see the module docs for the rules).
///
/// # Errors
/// [`QuantError::NonFinite`] when a weight (times its column scale) is NaN or infinite, or a
/// group's range overflows f32.
pub fn quantize_codes<B: Backend>(
    w: Tensor<B, 2>,
    col_scale: Option<Tensor<B, 1>>,
    spec: &QuantSpec,
) -> Result<GroupCodes<B>, QuantError> {
    let [rows, cols] = w.dims();
    let g = spec.group_len(cols);
    let groups = spec.groups_per_row(cols);
    let w = match col_scale {
        Some(d) => w * d.unsqueeze_dim(0),
        None => w,
    };
    // Zero padding leaves each group's (0-widened) range unchanged.
    let padded = pad_cols(w, groups * g).reshape([rows, groups, g]);
    let max_code = spec.max_code() as f32;
    let (scale, zero) = match spec.scheme() {
        QuantScheme::Asymmetric => {
            let lo = padded.clone().min_dim(2).clamp_max(0.0);
            let hi = padded.clone().max_dim(2).clamp_min(0.0);
            let range = hi - lo.clone();
            let scale = positive_or_one(range.div_scalar(max_code));
            let zero = lo.neg().div(scale.clone()).round().clamp(0.0, max_code);
            (scale, zero)
        }
        QuantScheme::Symmetric => {
            let half = (1u32 << (spec.bits() - 1)) as f32;
            let amax = padded.clone().abs().max_dim(2);
            let scale = positive_or_one(amax.div_scalar(half - 1.0));
            let zero = scale.zeros_like().add_scalar(half);
            (scale, zero)
        }
    };
    // NaN survives `clamp`, and a float-to-int cast of NaN panics in Burn: check first.
    check_finite(&padded, &scale, [rows, cols])?;
    let codes = (padded.div(scale.clone()).round() + zero.clone()).clamp(0.0, max_code);
    let codes = codes
        .reshape([rows, groups * g])
        .slice([0..rows, 0..cols])
        .int();
    Ok(GroupCodes {
        codes,
        scales: scale.reshape([rows, groups]),
        zeros: zero.reshape([rows, groups]),
    })
}

/// The error for a weight without a finite quantization: NaN or infinite values (after the
/// column scale), or a group range beyond f32.
fn check_finite<B: Backend>(
    scaled: &Tensor<B, 3>,
    scale: &Tensor<B, 3>,
    shape: [usize; 2],
) -> Result<(), QuantError> {
    // Counted as integers: backends store booleans differently (u8 on CUDA).
    let count = |t: Tensor<B, 3, burn::tensor::Bool>| t.int().sum().into_scalar().elem::<i64>();
    let message = if count(scaled.clone().is_finite().bool_not()) > 0 {
        if count(scaled.clone().is_nan()) > 0 {
            "it holds NaN values"
        } else {
            "it holds infinite values"
        }
    } else if count(scale.clone().is_finite().bool_not()) > 0 {
        "a group's range exceeds f32's largest value (about 3.4e38)"
    } else {
        return Ok(());
    };
    Err(QuantError::NonFinite {
        context: format!("a [{}, {}] weight", shape[0], shape[1]),
        message: message.into(),
    })
}

/// Replaces zero (all-zero group) scales by one, so that codes are `z` and dequantize to 0.
fn positive_or_one<B: Backend>(scale: Tensor<B, 3>) -> Tensor<B, 3> {
    let zero = scale.clone().equal_elem(0.0);
    scale.mask_fill(zero, 1.0)
}

/// Pads the columns of `x` with zeros up to `cols`.
pub(crate) fn pad_cols<B: Backend, K>(x: Tensor<B, 2, K>, cols: usize) -> Tensor<B, 2, K>
where
    K: burn::tensor::BasicOps<B>,
    K::Elem: burn::tensor::Element,
{
    let [rows, c] = x.dims();
    if c == cols {
        return x;
    }
    let pad = Tensor::<B, 2, K>::zeros([rows, cols - c], &x.device());
    Tensor::cat(vec![x, pad], 1)
}

/// Packs codes (`[rows, cols]`, each in `[0, 2^bits)`) into words (see [`PackLayout`]).
pub fn pack<B: Backend>(codes: Tensor<B, 2, Int>, bits: u32) -> Tensor<B, 2, Int> {
    let [rows, cols] = codes.dims();
    let layout = PackLayout::new(bits, cols);
    let per = layout.codes_per_word;
    let device = codes.device();
    let grouped =
        pad_cols(codes, layout.words_per_row * per).reshape([rows, layout.words_per_row, per]);
    // Fields do not overlap, so a sum of shifted codes is their bitwise OR; on 32-bit int
    // backends the sum wraps to the same bit pattern.
    let shifts: Vec<i32> = (0..per).map(|k| (k as u32 * bits) as i32).collect();
    let shifts = Tensor::<B, 1, Int>::from_data(TensorData::new(shifts, [per]), &device)
        .reshape([1, 1, per]);
    grouped
        .bitwise_left_shift(shifts.expand([rows, layout.words_per_row, per]))
        .sum_dim(2)
        .reshape([rows, layout.words_per_row])
}

/// Unpacks words into codes `[rows, cols]`; the inverse of [`pack`].
pub fn unpack<B: Backend>(packed: Tensor<B, 2, Int>, bits: u32, cols: usize) -> Tensor<B, 2, Int> {
    let [rows, words] = packed.dims();
    let layout = PackLayout::new(bits, cols);
    let per = layout.codes_per_word;
    let device = packed.device();
    let shifts: Vec<i32> = (0..per).map(|k| (k as u32 * bits) as i32).collect();
    // In the words' own integer type: words made by `words_tensor` are `i32` on every
    // backend, and burn-ndarray refuses a shift between two integer types.
    let shifts =
        Tensor::<B, 1, Int>::from_data(TensorData::new(shifts, [per]), (&device, packed.dtype()))
            .reshape([1, 1, per])
            .expand([rows, words, per]);
    let mask = ((1u32 << bits) - 1) as i32;
    packed
        .unsqueeze_dim::<3>(2)
        .expand([rows, words, per])
        .bitwise_right_shift(shifts)
        .bitwise_and_scalar(mask.elem())
        .reshape([rows, words * per])
        .slice([0..rows, 0..cols])
}

/// The dense matrix `(q - z) · s` that a quantized weight stands for (of `W·diag(D)` when it
/// was quantized with a column scale).
///
/// # Shapes
/// - returns `[rows, cols]`
pub fn dequantize<B: Backend>(q: &QuantizedWeight<B>) -> Tensor<B, 2> {
    let [rows, cols] = q.shape;
    let g = q.spec.group_len(cols);
    let groups = q.spec.groups_per_row(cols);
    let codes = unpack(q.packed.clone(), q.spec.bits(), cols).float();
    let codes = pad_cols(codes, groups * g).reshape([rows, groups, g]);
    // Scales and zeros may be stored as f32 while the codes take the device's default float
    // dtype (f16 after f16 work, see `tensor_io::exact_f32_tensor`); Burn's element-wise ops
    // need one dtype, so they follow the codes (a no-op when they already match).
    let dtype = codes.dtype();
    let zeros = q.zeros.clone().cast(dtype).unsqueeze_dim(2);
    let scales = q.scales.clone().cast(dtype).unsqueeze_dim(2);
    let deq = (codes - zeros) * scales;
    deq.reshape([rows, groups * g]).slice([0..rows, 0..cols])
}
