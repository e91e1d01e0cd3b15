//! Fast CPU kernels for burn-ndarray (f32): [`CpuKernels`].
//!
//! The tensor-op path dequantizes a whole weight through Burn ops on every matmul. These
//! kernels work on the host memory burn-ndarray already holds instead:
//!
//! - **No copy of the weight per call.** burn-ndarray keeps every tensor in host memory behind
//!   a reference count; [`QuantRef`] borrows the packed words, scales and zeros of a
//!   [`QuantizedWeight`] straight out of its tensors (a copy is made only for a layout the
//!   kernels cannot read in place, e.g. a non-contiguous view).
//! - **Matmul on the packed codes.** For up to [`MAX_GEMV_TOKENS`] tokens, each output row
//!   is decoded once into a small f32 buffer (`(code - zero) · scale`, group by group) and
//!   dotted with every token's `x ⊙ input_scale`, f32 accumulation in 16 independent lanes so
//!   that the compiler vectorises the loop. Rows are split over threads with rayon. Longer
//!   inputs (prefill of long prompts, perplexity windows) dequantize the weight once, in
//!   parallel, and use burn-ndarray's dense matmul, which is faster there.
//! - **Decoding by bit width.** Each width in 2..=8 has its own monomorphised decoder
//!   (`32 / bits` codes per word); words never straddle rows, and since the decoder fills a
//!   whole row before the group scales are applied, groups may start mid-word.
//! - **AVX2.** On x86-64 machines with AVX2 and FMA the same Rust code is compiled a second
//!   time with those features enabled and chosen at run time.
//! - **Quantization in one pass** over `W · diag(D)`, blocks of rows in parallel, with the
//!   f32 operations of [`crate::reference::quantize`] (so codes, scales and zeros are
//!   identical to it), and the checks of [`crate::reference::try_quantize`] (same errors).
//!   A weight stored transposed (the `Wᵀ` a `QuantLinear` keeps) is read in place, a block of
//!   rows at a time.
//!
//! Packed words are `i32` tensors ([`ttq_core::tensor_io::words_tensor`]) rather than
//! burn-ndarray's default `i64`, so the GEMV streams 4 bytes per word; words packed by the
//! tensor-op path (`i64` on this backend) are read too.

use crate::cpu::from_host;
use crate::cpu_dense::{gemm_small, MAX_DENSE_GEMV_TOKENS};
use crate::cpu_ops::{self, AttentionDims};
use crate::reference::{self, HostQuantized};
use burn::backend::ndarray::{NdArray, NdArrayTensor};
use burn::tensor::Tensor;
use rayon::prelude::*;
use ttq_core::{
    group::check_col_scale,
    kernels::{check_dense_shapes, check_matmul_shapes},
    ops::{self, GateActivation},
    tensor_io::{f32_tensor, to_f32_vec, words_from_ints},
    ChannelStats, PackLayout, QuantError, QuantKernels, QuantSpec, QuantizedWeight,
};

/// The backend these kernels serve.
pub type CpuBackend = NdArray<f32>;

/// Up to this many tokens, matmuls run on the packed codes; longer inputs dequantize the
/// weight once and use the dense matmul.
pub const MAX_GEMV_TOKENS: usize = 32;

/// Output rows per parallel task of the GEMV and the dequantizer.
const ROW_BLOCK: usize = 32;

/// Up to this many query rows per `(batch, head)` (decode, short prompts), attention runs
/// in [`cpu_ops::attention`]; more rows (long prompts, perplexity windows) use the default's
/// matmuls, which block the work for the cache.
pub const HOST_ATTENTION_MAX_ROWS: usize = 64;

/// Rows per parallel task of the quantizer.
const QUANT_BLOCK: usize = 16;

/// Fast kernels for `NdArray<f32>` on packed codes in host memory (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuKernels;

/// Packed code words as a tensor stores them: `u32` values, their `i32` bit pattern, or
/// `i64` values (the tensor-op packer on a 64-bit integer backend).
#[derive(Debug, Clone, Copy)]
pub enum Words<'a> {
    /// Words as `u32`.
    U32(&'a [u32]),
    /// Words as their `i32` bit pattern.
    I32(&'a [i32]),
    /// Words as `i64` (low 32 bits).
    I64(&'a [i64]),
}

impl Words<'_> {
    fn len(&self) -> usize {
        match self {
            Words::U32(w) => w.len(),
            Words::I32(w) => w.len(),
            Words::I64(w) => w.len(),
        }
    }
}

/// One stored word.
trait PackedWord: Copy + Send + Sync {
    fn word(self) -> u32;
}

impl PackedWord for u32 {
    #[inline(always)]
    fn word(self) -> u32 {
        self
    }
}

impl PackedWord for i32 {
    #[inline(always)]
    fn word(self) -> u32 {
        self as u32
    }
}

impl PackedWord for i64 {
    #[inline(always)]
    fn word(self) -> u32 {
        self as u32
    }
}

/// A quantized weight borrowed from host memory.
#[derive(Debug, Clone, Copy)]
pub struct QuantRef<'a> {
    /// `[rows, words_per_row]`.
    pub packed: Words<'a>,
    /// `[rows, groups]`.
    pub scales: &'a [f32],
    /// `[rows, groups]`.
    pub zeros: &'a [f32],
    /// The spec.
    pub spec: QuantSpec,
    /// `[rows, cols]`.
    pub shape: [usize; 2],
}

impl<'a> QuantRef<'a> {
    /// Checks that the slices have the lengths `spec` and `shape` call for.
    pub fn new(
        packed: Words<'a>,
        scales: &'a [f32],
        zeros: &'a [f32],
        spec: QuantSpec,
        shape: [usize; 2],
    ) -> Result<Self, QuantError> {
        let [rows, cols] = shape;
        let words = rows.checked_mul(PackLayout::new(spec.bits(), cols).words_per_row);
        let groups = rows.checked_mul(spec.groups_per_row(cols));
        let bad = |what: &str, expected: Option<usize>, got: usize| {
            QuantError::shape(
                "quantized weight",
                format!("{expected:?} {what} for a [{rows}, {cols}] {spec} weight"),
                format!("{got}"),
            )
        };
        if words != Some(packed.len()) {
            return Err(bad("packed words", words, packed.len()));
        }
        if groups != Some(scales.len()) {
            return Err(bad("scales", groups, scales.len()));
        }
        if groups != Some(zeros.len()) {
            return Err(bad("zero points", groups, zeros.len()));
        }
        Ok(Self {
            packed,
            scales,
            zeros,
            spec,
            shape,
        })
    }

    /// A view of a host quantized weight.
    pub fn from_host(q: &'a HostQuantized) -> Result<Self, QuantError> {
        Self::new(Words::U32(&q.packed), &q.scales, &q.zeros, q.spec, q.shape)
    }

    fn padded_cols(&self) -> usize {
        let layout = PackLayout::new(self.spec.bits(), self.shape[1]);
        layout.words_per_row * layout.codes_per_word
    }
}

/// A `[rows, cols]` f32 weight in host memory, in either order.
#[derive(Debug, Clone, Copy)]
pub enum WeightRef<'a> {
    /// `w[r, c]` at `r * cols + c`.
    RowMajor(&'a [f32]),
    /// `w[r, c]` at `c * rows + r`: the transposed view of a contiguous `Wᵀ`.
    ColMajor(&'a [f32]),
}

impl WeightRef<'_> {
    fn len(&self) -> usize {
        match self {
            WeightRef::RowMajor(w) | WeightRef::ColMajor(w) => w.len(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Row decoding and the GEMV
// ---------------------------------------------------------------------------------------

/// Decodes the words of one row into codes as f32 (`out.len()` = words × codes per word).
#[inline(always)]
fn decode_codes<const BITS: u32, W: PackedWord>(words: &[W], out: &mut [f32]) {
    let per = (32 / BITS) as usize;
    let mask = (1u32 << BITS) - 1;
    for (o, &w) in out.chunks_exact_mut(per).zip(words) {
        let w = w.word();
        for (k, v) in o.iter_mut().enumerate() {
            *v = ((w >> (k as u32 * BITS)) & mask) as f32;
        }
    }
}

/// Turns the codes of the first `cols` entries of `row` into `(code - zero) · scale`, group
/// by group (the reference's f32 operations).
#[inline(always)]
fn apply_groups(row: &mut [f32], cols: usize, g: usize, scales: &[f32], zeros: &[f32]) {
    for ((chunk, &s), &z) in row[..cols].chunks_mut(g).zip(scales).zip(zeros) {
        for v in chunk {
            *v = (*v - z) * s;
        }
    }
}

/// `Σ a·b` in 16 independent f32 lanes (vectorisable without reassociation).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut half = [0f32; 8];
    for i in 0..8 {
        half[i] = acc[i] + acc[i + 8];
    }
    half.iter().sum::<f32>() + tail
}

/// Decodes row `r` of `q` into `buf` (`padded_cols` long) as dequantized f32 values.
#[inline(always)]
fn decode_row<const BITS: u32, W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    r: usize,
    buf: &mut [f32],
) {
    let [_, cols] = q.shape;
    let wpr = PackLayout::new(BITS, cols).words_per_row;
    let groups = q.spec.groups_per_row(cols);
    let g = q.spec.group_len(cols);
    decode_codes::<BITS, W>(&words[r * wpr..(r + 1) * wpr], buf);
    apply_groups(
        buf,
        cols,
        g,
        &q.scales[r * groups..(r + 1) * groups],
        &q.zeros[r * groups..(r + 1) * groups],
    );
}

/// The GEMV of one block of rows: `out` is `[block_rows, tokens]`, `xs` is
/// `[tokens, padded_cols]` (zero beyond `cols`).
#[inline(always)]
fn gemv_block_body<const BITS: u32, W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    xs: &[f32],
    tokens: usize,
    first_row: usize,
    out: &mut [f32],
    buf: &mut [f32],
) {
    let padded = buf.len();
    for (i, y) in out.chunks_exact_mut(tokens).enumerate() {
        decode_row::<BITS, W>(words, q, first_row + i, buf);
        for (t, yt) in y.iter_mut().enumerate() {
            *yt = dot(buf, &xs[t * padded..(t + 1) * padded]);
        }
    }
}

/// Dequantizes one block of rows into `out` (`[block_rows, cols]`).
#[inline(always)]
fn dequant_block_body<const BITS: u32, W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    first_row: usize,
    out: &mut [f32],
    buf: &mut [f32],
) {
    let cols = q.shape[1];
    for (i, row) in out.chunks_exact_mut(cols).enumerate() {
        decode_row::<BITS, W>(words, q, first_row + i, buf);
        row.copy_from_slice(&buf[..cols]);
    }
}

/// What a block task does.
#[derive(Clone, Copy)]
enum BlockJob<'a> {
    Gemv { xs: &'a [f32], tokens: usize },
    Dequantize,
}

#[inline(always)]
fn block_body<const BITS: u32, W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    job: BlockJob<'_>,
    first_row: usize,
    out: &mut [f32],
    buf: &mut [f32],
) {
    match job {
        BlockJob::Gemv { xs, tokens } => {
            gemv_block_body::<BITS, W>(words, q, xs, tokens, first_row, out, buf)
        }
        BlockJob::Dequantize => dequant_block_body::<BITS, W>(words, q, first_row, out, buf),
    }
}

/// [`block_body`] compiled with AVX2 and FMA enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2<const BITS: u32, W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    job: BlockJob<'_>,
    first_row: usize,
    out: &mut [f32],
    buf: &mut [f32],
) {
    block_body::<BITS, W>(words, q, job, first_row, out, buf)
}

pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn block_for<const BITS: u32, W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    job: BlockJob<'_>,
    first_row: usize,
    out: &mut [f32],
    buf: &mut [f32],
    avx2: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reports AVX2 and FMA (`has_avx2`).
        unsafe { block_avx2::<BITS, W>(words, q, job, first_row, out, buf) };
        return;
    }
    let _ = avx2;
    block_body::<BITS, W>(words, q, job, first_row, out, buf)
}

/// The one-token 4-bit GEMV of one block of rows with AVX2 intrinsics, without decoding
/// rows into a buffer: per word, the 8 codes are shifted into 8 lanes, masked, converted,
/// shifted by the group's zero and multiplied into the token's 8 inputs; each group's lanes
/// are scaled once, `y = Σ_g s_g · Σ_{c ∈ g} (q_c - z_g) · x_c`. `xs` is padded with zeros
/// beyond `cols`. Callers check [`gemv4_applies`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemv4_block_avx2<W: PackedWord>(
    words: &[W],
    q: &QuantRef<'_>,
    xs: &[f32],
    first_row: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let cols = q.shape[1];
    let wpr = PackLayout::new(4, cols).words_per_row;
    let groups = q.spec.groups_per_row(cols);
    // Words per group (a group is whole words, or the only group of the row).
    let wpg = if groups == 1 {
        wpr
    } else {
        q.spec.group_len(cols) / 8
    };
    let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    let mask = _mm256_set1_epi32(0xF);
    for (i, y) in out.iter_mut().enumerate() {
        let r = first_row + i;
        let row = &words[r * wpr..(r + 1) * wpr];
        let scales = &q.scales[r * groups..(r + 1) * groups];
        let zeros = &q.zeros[r * groups..(r + 1) * groups];
        let mut acc = _mm256_setzero_ps();
        for (g, (group, x)) in row.chunks(wpg).zip(xs.chunks(wpg * 8)).enumerate() {
            let z = _mm256_set1_ps(zeros[g]);
            let mut gacc = _mm256_setzero_ps();
            for (&w, x) in group.iter().zip(x.chunks_exact(8)) {
                let codes = _mm256_and_si256(
                    _mm256_srlv_epi32(_mm256_set1_epi32(w.word() as i32), shifts),
                    mask,
                );
                let v = _mm256_sub_ps(_mm256_cvtepi32_ps(codes), z);
                // SAFETY: `x` is a chunk of exactly 8 f32 values.
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr()) };
                gacc = _mm256_fmadd_ps(v, xv, gacc);
            }
            acc = _mm256_fmadd_ps(gacc, _mm256_set1_ps(scales[g]), acc);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 f32 values.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        *y = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
            + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    }
}

#[cfg(target_arch = "x86_64")]
/// Whether [`gemv4_block_avx2`] serves this call: one token, 4-bit codes, groups of whole
/// words (or one group per row), AVX2 and FMA present.
fn gemv4_applies(q: &QuantRef<'_>, job: BlockJob<'_>, avx2: bool) -> bool {
    let cols = q.shape[1];
    avx2 && matches!(job, BlockJob::Gemv { tokens: 1, .. })
        && q.spec.bits() == 4
        && (q.spec.groups_per_row(cols) == 1 || q.spec.group_len(cols).is_multiple_of(8))
}

/// Runs `job` over all rows of `q` in parallel; `out` has `per_row` values per row.
fn run_blocks<W: PackedWord>(words: &[W], q: &QuantRef<'_>, job: BlockJob<'_>, out: &mut [f32]) {
    let rows = q.shape[0];
    if rows == 0 || out.is_empty() {
        return;
    }
    let per_row = out.len() / rows;
    let padded = q.padded_cols();
    let avx2 = has_avx2();
    #[cfg(target_arch = "x86_64")]
    if let (true, BlockJob::Gemv { xs, .. }) = (gemv4_applies(q, job, avx2), job) {
        out.par_chunks_mut(ROW_BLOCK)
            .enumerate()
            // SAFETY: `gemv4_applies` checked that the CPU has AVX2 and FMA.
            .for_each(|(b, out)| unsafe { gemv4_block_avx2(words, q, xs, b * ROW_BLOCK, out) });
        return;
    }
    let bits = q.spec.bits();
    out.par_chunks_mut(ROW_BLOCK * per_row)
        .enumerate()
        .for_each_init(
            || vec![0f32; padded],
            |buf, (b, out)| {
                let first = b * ROW_BLOCK;
                match bits {
                    2 => block_for::<2, W>(words, q, job, first, out, buf, avx2),
                    3 => block_for::<3, W>(words, q, job, first, out, buf, avx2),
                    4 => block_for::<4, W>(words, q, job, first, out, buf, avx2),
                    5 => block_for::<5, W>(words, q, job, first, out, buf, avx2),
                    6 => block_for::<6, W>(words, q, job, first, out, buf, avx2),
                    7 => block_for::<7, W>(words, q, job, first, out, buf, avx2),
                    // `QuantSpec` only admits 2..=8 bits.
                    _ => block_for::<8, W>(words, q, job, first, out, buf, avx2),
                }
            },
        );
}

fn run_blocks_any(q: &QuantRef<'_>, job: BlockJob<'_>, out: &mut [f32]) {
    match q.packed {
        Words::U32(w) => run_blocks(w, q, job, out),
        Words::I32(w) => run_blocks(w, q, job, out),
        Words::I64(w) => run_blocks(w, q, job, out),
    }
}

/// `y = (x ⊙ input_scale) · dequant(q)ᵀ` on the packed codes, for `x` of `[tokens, cols]`;
/// returns `[tokens, rows]`. Any number of tokens works; the cost is one decode per row plus
/// one dot product per row and token.
pub fn matmul(
    x: &[f32],
    tokens: usize,
    q: &QuantRef<'_>,
    input_scale: Option<&[f32]>,
) -> Result<Vec<f32>, QuantError> {
    let [rows, cols] = q.shape;
    if Some(x.len()) != tokens.checked_mul(cols) {
        return Err(QuantError::shape(
            "quantized matmul",
            format!("[{tokens}, {cols}] inputs"),
            format!("{} values", x.len()),
        ));
    }
    if let Some(s) = input_scale {
        if s.len() != cols {
            return Err(QuantError::shape(
                "quantized matmul",
                format!("an input scale of length {cols}"),
                format!("length {}", s.len()),
            ));
        }
    }
    if tokens == 0 || rows == 0 {
        return Ok(vec![0f32; tokens * rows]);
    }
    let padded = q.padded_cols();
    let mut xs = vec![0f32; tokens * padded];
    for (dst, src) in xs.chunks_exact_mut(padded).zip(x.chunks_exact(cols)) {
        match input_scale {
            Some(s) => {
                for ((d, &a), &b) in dst.iter_mut().zip(src).zip(s) {
                    *d = a * b;
                }
            }
            None => dst[..cols].copy_from_slice(src),
        }
    }
    let mut yt = vec![0f32; rows * tokens];
    run_blocks_any(q, BlockJob::Gemv { xs: &xs, tokens }, &mut yt);
    Ok(tokens_major(yt, rows, tokens))
}

/// Outputs laid out `[rows, tokens]` (each parallel task writes its own rows for every
/// token) as `[tokens, rows]`; no copy for one token.
pub(crate) fn tokens_major(yt: Vec<f32>, rows: usize, tokens: usize) -> Vec<f32> {
    if tokens == 1 {
        return yt;
    }
    let mut y = vec![0f32; tokens * rows];
    for (r, row) in yt.chunks_exact(tokens).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            y[t * rows + r] = v;
        }
    }
    y
}

/// The dense `[rows, cols]` matrix `(q - z) · s`, rows in parallel (equal to
/// [`crate::reference::dequantize`]).
pub fn dequantize(q: &QuantRef<'_>) -> Vec<f32> {
    let [rows, cols] = q.shape;
    let mut out = vec![0f32; rows * cols];
    run_blocks_any(q, BlockJob::Dequantize, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Quantization and statistics
// ---------------------------------------------------------------------------------------

/// Packed words, scales and zeros of a block of rows.
type QuantBlock = (Vec<u32>, Vec<f32>, Vec<f32>);

/// Quantizes block `b` of [`QUANT_BLOCK`] rows for [`quantize`].
#[inline(always)]
fn quant_block(
    w: WeightRef<'_>,
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
    spec: &QuantSpec,
    b: usize,
) -> Result<QuantBlock, QuantError> {
    let layout = PackLayout::new(spec.bits(), cols);
    let (per, bits) = (layout.codes_per_word, spec.bits());
    let g = spec.group_len(cols);
    let max_code = spec.max_code() as f32;
    let r0 = b * QUANT_BLOCK;
    let r1 = rows.min(r0 + QUANT_BLOCK);
    let n = r1 - r0;
    let mut scaled = vec![0f32; n * cols];
    match w {
        WeightRef::RowMajor(src) => scaled.copy_from_slice(&src[r0 * cols..r1 * cols]),
        WeightRef::ColMajor(src) => {
            for c in 0..cols {
                for (i, &v) in src[c * rows + r0..c * rows + r1].iter().enumerate() {
                    scaled[i * cols + c] = v;
                }
            }
        }
    }
    if let Some(d) = col_scale {
        for row in scaled.chunks_exact_mut(cols) {
            for (v, &d) in row.iter_mut().zip(d) {
                *v *= d;
            }
        }
    }
    let groups = spec.groups_per_row(cols);
    let mut packed = Vec::with_capacity(n * layout.words_per_row);
    let mut scales = Vec::with_capacity(n * groups);
    let mut zeros = Vec::with_capacity(n * groups);
    let mut codes = vec![0u32; layout.words_per_row * per];
    for (i, row) in scaled.chunks_exact(cols).enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            reference::check_scaled_row(row, r0 + i, rows, spec)?;
        }
        for (gi, group) in row.chunks(g).enumerate() {
            let (scale, zero) = reference::group_params(group, spec, max_code);
            if !scale.is_finite() {
                reference::check_scaled_row(row, r0 + i, rows, spec)?;
            }
            for (c, &v) in codes[gi * g..].iter_mut().zip(group) {
                *c = ((v / scale).round_ties_even() + zero).clamp(0.0, max_code) as u32;
            }
            scales.push(scale);
            zeros.push(zero);
        }
        packed.extend(codes.chunks_exact(per).map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u32, |word, (k, &c)| word | (c << (k as u32 * bits)))
        }));
    }
    Ok((packed, scales, zeros))
}

/// [`quant_block`] compiled with AVX2 and FMA enabled (rounding then runs in SIMD
/// instructions instead of a library call per value; Rust never fuses a multiply and an add
/// on its own, so the results are the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quant_block_avx2(
    w: WeightRef<'_>,
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
    spec: &QuantSpec,
    b: usize,
) -> Result<QuantBlock, QuantError> {
    quant_block(w, rows, cols, col_scale, spec, b)
}

fn quant_block_for(
    w: WeightRef<'_>,
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
    spec: &QuantSpec,
    b: usize,
    avx2: bool,
) -> Result<QuantBlock, QuantError> {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reports AVX2 and FMA (`has_avx2`).
        return unsafe { quant_block_avx2(w, rows, cols, col_scale, spec, b) };
    }
    let _ = avx2;
    quant_block(w, rows, cols, col_scale, spec, b)
}

/// Quantizes `w · diag(col_scale)` group-wise and packs the codes: the results of
/// [`crate::reference::try_quantize`] (identical codes, scales, zeros and errors), in one
/// pass over the weight, blocks of rows in parallel.
pub fn quantize(
    w: WeightRef<'_>,
    rows: usize,
    cols: usize,
    col_scale: Option<&[f32]>,
    spec: &QuantSpec,
) -> Result<HostQuantized, QuantError> {
    reference::check_quantize_shapes(w.len(), rows, cols, col_scale)?;
    let layout = PackLayout::new(spec.bits(), cols);
    let avx2 = has_avx2();
    let blocks: Vec<Result<QuantBlock, QuantError>> = (0..rows.div_ceil(QUANT_BLOCK))
        .into_par_iter()
        .map(|b| quant_block_for(w, rows, cols, col_scale, spec, b, avx2))
        .collect();
    let mut out = HostQuantized {
        packed: Vec::with_capacity(rows * layout.words_per_row),
        scales: Vec::with_capacity(rows * spec.groups_per_row(cols)),
        zeros: Vec::with_capacity(rows * spec.groups_per_row(cols)),
        spec: *spec,
        shape: [rows, cols],
    };
    for block in blocks {
        let (p, s, z) = block?;
        out.packed.extend(p);
        out.scales.extend(s);
        out.zeros.extend(z);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Burn glue
// ---------------------------------------------------------------------------------------

type B = CpuBackend;

/// The contiguous row-major f32 contents of a float primitive, if it has them.
fn f32_slice(p: &NdArrayTensor) -> Option<&[f32]> {
    match p {
        NdArrayTensor::F32(s) => s.view().to_slice(),
        _ => None,
    }
}

/// The words of an int primitive, if it holds them contiguously in a type the kernels read.
fn words_slice(p: &NdArrayTensor) -> Option<Words<'_>> {
    match p {
        NdArrayTensor::I32(s) => s.view().to_slice().map(Words::I32),
        NdArrayTensor::U32(s) => s.view().to_slice().map(Words::U32),
        NdArrayTensor::I64(s) => s.view().to_slice().map(Words::I64),
        _ => None,
    }
}

/// Calls `f` with the row-major contents of `t` (borrowed in place when possible).
fn with_f32<const D: usize, R>(t: &Tensor<B, D>, f: impl FnOnce(&[f32]) -> R) -> R {
    let p = t.clone().into_primitive().tensor();
    match f32_slice(&p) {
        Some(s) => f(s),
        None => f(&to_f32_vec(t.clone())),
    }
}

/// Calls `f` with the contents of a weight, read in place when it is contiguous in either
/// order.
fn with_weight<R>(w: &Tensor<B, 2>, f: impl FnOnce(WeightRef<'_>) -> R) -> R {
    let p = w.clone().into_primitive().tensor();
    if let NdArrayTensor::F32(s) = &p {
        if let Some(s) = s.view().to_slice() {
            return f(WeightRef::RowMajor(s));
        }
        if s.view().ndim() == 2 {
            if let Some(s) = s.view().reversed_axes().to_slice() {
                return f(WeightRef::ColMajor(s));
            }
        }
    }
    f(WeightRef::RowMajor(&to_f32_vec(w.clone())))
}

/// Calls `f` with a host view of `q` (borrowed in place when possible).
pub fn with_quant<R>(
    q: &QuantizedWeight<B>,
    f: impl FnOnce(&QuantRef<'_>) -> R,
) -> Result<R, QuantError> {
    let p = q.packed.clone().into_primitive();
    let s = q.scales.clone().into_primitive().tensor();
    let z = q.zeros.clone().into_primitive().tensor();
    let (owned_words, owned_scales, owned_zeros);
    let words = match words_slice(&p) {
        Some(w) => w,
        None => {
            owned_words = words_from_ints(q.packed.clone());
            Words::U32(&owned_words)
        }
    };
    let scales = match f32_slice(&s) {
        Some(s) => s,
        None => {
            owned_scales = to_f32_vec(q.scales.clone());
            &owned_scales
        }
    };
    let zeros = match f32_slice(&z) {
        Some(z) => z,
        None => {
            owned_zeros = to_f32_vec(q.zeros.clone());
            &owned_zeros
        }
    };
    let view = QuantRef::new(words, scales, zeros, q.spec, q.shape)?;
    Ok(f(&view))
}

impl QuantKernels<B> for CpuKernels {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn channel_stats(&self, x: Tensor<B, 2>) -> ChannelStats<B> {
        let [tokens, d] = x.dims();
        let device = x.device();
        let (max_abs, mean) = with_f32(&x, |s| reference::channel_stats(s, tokens, d));
        ChannelStats {
            max_abs: f32_tensor(max_abs, [d], &device),
            mean_sq_normalized: f32_tensor(mean, [d], &device),
            tokens,
        }
    }

    fn quantize(
        &self,
        w: Tensor<B, 2>,
        col_scale: Option<Tensor<B, 1>>,
        spec: &QuantSpec,
    ) -> Result<QuantizedWeight<B>, QuantError> {
        let [rows, cols] = w.dims();
        check_col_scale("quantize", cols, col_scale.as_ref())?;
        let device = w.device();
        let d = col_scale.map(to_f32_vec);
        let host = with_weight(&w, |w| quantize(w, rows, cols, d.as_deref(), spec))?;
        Ok(from_host::<B>(host, &device))
    }

    fn dequantize(&self, q: &QuantizedWeight<B>) -> Tensor<B, 2> {
        let device = q.scales.device();
        match with_quant(q, dequantize) {
            Ok(w) => f32_tensor(w, q.shape, &device),
            // Inconsistent tensors (not made by a quantizer): the tensor-op path's answer.
            Err(_) => ttq_core::group::dequantize(q),
        }
    }

    fn matmul(
        &self,
        x: Tensor<B, 2>,
        q: &QuantizedWeight<B>,
        input_scale: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 2>, QuantError> {
        check_matmul_shapes(&x, q, input_scale.as_ref())?;
        let [tokens, _] = x.dims();
        let device = x.device();
        if tokens > MAX_GEMV_TOKENS {
            let w = with_quant(q, dequantize)?;
            let w = f32_tensor(w, q.shape, &device);
            let x = match input_scale {
                Some(s) => x * s.unsqueeze_dim(0),
                None => x,
            };
            return Ok(x.matmul(w.transpose()));
        }
        let y = with_quant(q, |view| {
            with_f32(&x, |xs| match &input_scale {
                // Borrowed in place: a copy through `into_data` took 6% of a decode step.
                Some(s) => with_f32(s, |s| matmul(xs, tokens, view, Some(s))),
                None => matmul(xs, tokens, view, None),
            })
        })??;
        Ok(f32_tensor(y, [tokens, q.shape[0]], &device))
    }

    fn dense_matmul(&self, x: Tensor<B, 2>, w_t: Tensor<B, 2>) -> Result<Tensor<B, 2>, QuantError> {
        check_dense_shapes(&x, &w_t)?;
        let [tokens, k] = x.dims();
        let n = w_t.dims()[1];
        if tokens > MAX_DENSE_GEMV_TOKENS {
            return Ok(x.matmul(w_t));
        }
        let device = x.device();
        let y = with_f32(&x, |xs| {
            with_weight(&w_t, |w| gemm_small(xs, tokens, k, n, w))
        });
        Ok(f32_tensor(y, [tokens, n], &device))
    }

    fn rms_norm(
        &self,
        x: Tensor<B, 2>,
        weight: Tensor<B, 1>,
        eps: f64,
    ) -> Result<Tensor<B, 2>, QuantError> {
        ops::check_rms_norm(&x, &weight, eps)?;
        let [rows, d] = x.dims();
        let device = x.device();
        let y = with_f32(&x, |x| {
            with_f32(&weight, |w| cpu_ops::rms_norm(x, d, w, eps as f32))
        });
        Ok(f32_tensor(y, [rows, d], &device))
    }

    fn rope(
        &self,
        x: Tensor<B, 4>,
        cos: Tensor<B, 2>,
        sin: Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>, QuantError> {
        ops::check_rope(&x, &cos, &sin)?;
        let dims = x.dims();
        let device = x.device();
        let y = with_f32(&x, |x| {
            with_f32(&cos, |c| with_f32(&sin, |s| cpu_ops::rope(x, dims, c, s)))
        });
        Ok(f32_tensor(y, dims, &device))
    }

    fn gated(
        &self,
        gate: Tensor<B, 2>,
        up: Tensor<B, 2>,
        act: GateActivation,
    ) -> Result<Tensor<B, 2>, QuantError> {
        ops::check_gated(&gate, &up)?;
        let dims = gate.dims();
        let device = gate.device();
        let y = with_f32(&gate, |g| with_f32(&up, |u| cpu_ops::gated(g, u, act)));
        Ok(f32_tensor(y, dims, &device))
    }

    fn attention(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        scale: f64,
        mask: Option<Tensor<B, 2>>,
    ) -> Result<Tensor<B, 4>, QuantError> {
        ops::check_attention(&q, &k, &v)?;
        let [b, h, rows, hd] = q.dims();
        let cols = k.dims()[2];
        ops::check_softmax_operands([b * h * rows, cols], scale, mask.as_ref())?;
        if rows > HOST_ATTENTION_MAX_ROWS {
            return ops::attention(q, k, v, scale, mask);
        }
        let dims = AttentionDims {
            heads: b * h,
            rows,
            cols,
            head_dim: hd,
        };
        let device = q.device();
        let y = with_f32(&q, |q| {
            with_f32(&k, |k| {
                with_f32(&v, |v| match &mask {
                    Some(m) => with_f32(m, |m| {
                        cpu_ops::attention(q, k, v, dims, scale as f32, Some((m, m.len() / cols)))
                    }),
                    None => cpu_ops::attention(q, k, v, dims, scale as f32, None),
                })
            })
        });
        Ok(f32_tensor(y, [b, h, rows, hd], &device))
    }
}
