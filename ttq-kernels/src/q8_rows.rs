//! A large `[rows, cols]` matrix kept in host memory as 8-bit blocks: [`Q8Rows`], for the
//! token embedding and the (often tied) LM head on the CPU.
//!
//! Gemma 3 270M's 262,144 × 640 table is 671 MB in f32, read in full for every generated
//! token; its GGUF stores it as Q8_0 (blocks of 32 `i8` values sharing one scale), 178 MB.
//! Keeping those blocks as they are loses nothing and reads a quarter of the bytes:
//!
//! - **Embedding lookup** dequantizes only the rows of the prompt's tokens
//!   ([`Q8Rows::row_into`]): `x = q · d`, the GGUF dequantizer's f32 operation.
//! - **Logits** ([`Q8Rows::matmul_t`]): `y[t, r] = Σ_b d[r, b] · Σ_{c ∈ b} q[r, c] · x[t, c]`,
//!   f32 accumulation, output rows in parallel blocks (rayon), the same Rust code compiled a
//!   second time with AVX2 and FMA and chosen at run time. Each block of rows is read once for
//!   all tokens, so a short prompt costs about what one token does.
//!
//! The products are summed per block before the block's scale is applied, so results differ
//! from a dense f32 matmul on the dequantized matrix by float rounding only (the tests bound
//! it against [`Q8Rows::dequantize`] with an f64 dot).

use crate::cpu_fast::tokens_major;
use rayon::prelude::*;
use ttq_core::QuantError;

/// Values per block (one scale each), as in GGUF's Q8_0.
pub const Q8_BLOCK: usize = 32;

/// Output rows per parallel task of [`Q8Rows::matmul_t`].
const ROW_BLOCK: usize = 64;

/// A `[rows, cols]` matrix as blocks of [`Q8_BLOCK`] `i8` values along each row with one f32
/// scale per block: `w[r, c] = qs[r · cols + c] · scales[(r · cols + c) / 32]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Rows {
    rows: usize,
    cols: usize,
    scales: Vec<f32>,
    qs: Vec<i8>,
}

impl Q8Rows {
    /// A matrix from its scales (`rows · cols / 32`) and values (`rows · cols`); `cols` must
    /// be a positive multiple of [`Q8_BLOCK`] and every scale finite.
    pub fn new(
        rows: usize,
        cols: usize,
        scales: Vec<f32>,
        qs: Vec<i8>,
    ) -> Result<Self, QuantError> {
        let shape =
            |expected: String, got: String| QuantError::shape("8-bit row table", expected, got);
        if cols == 0 || !cols.is_multiple_of(Q8_BLOCK) {
            return Err(shape(
                format!("a positive multiple of {Q8_BLOCK} columns"),
                cols.to_string(),
            ));
        }
        let n = rows.checked_mul(cols);
        if n != Some(qs.len()) {
            return Err(shape(
                format!("{rows} x {cols} values"),
                qs.len().to_string(),
            ));
        }
        if Some(scales.len()) != n.map(|n| n / Q8_BLOCK) {
            return Err(shape(
                format!("{} scales", rows * cols / Q8_BLOCK),
                scales.len().to_string(),
            ));
        }
        if let Some(i) = scales.iter().position(|s| !s.is_finite()) {
            return Err(shape(
                "finite block scales".into(),
                format!("{} at block {i}", scales[i]),
            ));
        }
        Ok(Self {
            rows,
            cols,
            scales,
            qs,
        })
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes held (values and scales).
    pub fn bytes(&self) -> usize {
        self.qs.len() + 4 * self.scales.len()
    }

    /// Row `r` as f32 (`q · d`) into `out` (`cols` long).
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols` (callers check token ids first).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        let qs = &self.qs[r * c..(r + 1) * c];
        let scales = &self.scales[r * c / Q8_BLOCK..(r + 1) * c / Q8_BLOCK];
        for ((o, q), &d) in out
            .chunks_exact_mut(Q8_BLOCK)
            .zip(qs.chunks_exact(Q8_BLOCK))
            .zip(scales)
        {
            for (o, &q) in o.iter_mut().zip(q) {
                *o = f32::from(q) * d;
            }
        }
    }

    /// The rows `ids`, dequantized, as `[ids.len(), cols]`; an error for an id out of range.
    pub fn gather(&self, ids: &[u32]) -> Result<Vec<f32>, QuantError> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (o, &id) in out.chunks_exact_mut(self.cols).zip(ids) {
            let r = id as usize;
            if r >= self.rows {
                return Err(QuantError::shape(
                    "8-bit row table lookup",
                    format!("row ids below {}", self.rows),
                    id.to_string(),
                ));
            }
            self.row_into(r, o);
        }
        Ok(out)
    }

    /// The whole matrix in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.row_into(r, o);
        }
        out
    }

    /// `y = x · Wᵀ` for `x` of `[tokens, cols]`: returns `[tokens, rows]`.
    pub fn matmul_t(&self, x: &[f32], tokens: usize) -> Result<Vec<f32>, QuantError> {
        self.check_inputs(x, tokens)?;
        let avx2 = crate::cpu_fast::has_avx2();
        Ok(self.par_rows(tokens, |r0, out| {
            rows_dispatch(self, x, tokens, r0, out, avx2)
        }))
    }

    /// `y ≈ x · Wᵀ` with the inputs rounded to 8-bit blocks as well, for `x` of
    /// `[tokens, cols]`: returns `[tokens, rows]`.
    ///
    /// Each token's inputs are split into blocks of [`Q8_BLOCK`] and rounded to
    /// `x ≈ e · p` with `e = max|x| / 127` and `p` in `-127..=127`, so
    /// that a block's products are exact integer sums: `y[t, r] = Σ_b (d[r, b] · e[t, b]) ·
    /// Σ_{c ∈ b} q[r, c] · p[t, c]` (llama.cpp's Q8_0 × Q8_0 dot). On x86-64 with AVX2 a block
    /// is one `vpmaddubsw` + `vpmaddwd` pair instead of 32 conversions to f32, which makes the
    /// product bound by memory rather than by arithmetic. The rounding of the inputs adds an
    /// error of at most `Σ_b |d[r, b]| · e[t, b] / 2 · Σ_{c ∈ b} |q[r, c]|` to each output
    /// ([`Q8Rows::int8_error_bound`]), beside float rounding.
    pub fn matmul_t_int8(&self, x: &[f32], tokens: usize) -> Result<Vec<f32>, QuantError> {
        self.check_inputs(x, tokens)?;
        let inputs = quantize_inputs(x, self.cols)?;
        let avx2 = crate::cpu_fast::has_avx2();
        Ok(self.par_rows(tokens, |r0, out| {
            int8_rows_dispatch(self, &inputs, tokens, r0, out, avx2)
        }))
    }

    /// Checks that `x` holds `[tokens, cols]` inputs for a matmul.
    fn check_inputs(&self, x: &[f32], tokens: usize) -> Result<(), QuantError> {
        if Some(x.len()) != tokens.checked_mul(self.cols) {
            return Err(QuantError::shape(
                "8-bit row table matmul",
                format!("[{tokens}, {}] inputs", self.cols),
                format!("{} values", x.len()),
            ));
        }
        Ok(())
    }

    /// `[tokens, rows]` outputs, computed by `rows_into(r0, out)` for blocks of
    /// [`ROW_BLOCK`] rows in parallel (`out` is the block's `[block_rows, tokens]`).
    fn par_rows(&self, tokens: usize, rows_into: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        if tokens == 0 || self.rows == 0 {
            return vec![0f32; tokens * self.rows];
        }
        let mut yt = vec![0f32; self.rows * tokens];
        yt.par_chunks_mut(ROW_BLOCK * tokens)
            .enumerate()
            .for_each(|(b, out)| rows_into(b * ROW_BLOCK, out));
        tokens_major(yt, self.rows, tokens)
    }

    /// The most that rounding the inputs to 8-bit blocks can move output `(t, r)` of
    /// [`Q8Rows::matmul_t_int8`] away from [`Q8Rows::matmul_t`]'s exact product:
    /// `Σ_b |d[r, b]| · e[t, b] / 2 · Σ_{c ∈ b} |q[r, c]|`, float rounding aside.
    pub fn int8_error_bound(&self, x: &[f32], t: usize, r: usize) -> Result<f64, QuantError> {
        let c = self.cols;
        let row_x = x.get(t * c..(t + 1) * c).ok_or_else(|| {
            QuantError::shape("8-bit row table bound", format!("token {t}"), "none")
        })?;
        if r >= self.rows {
            return Err(QuantError::shape(
                "8-bit row table bound",
                format!("a row below {}", self.rows),
                r.to_string(),
            ));
        }
        let inputs = quantize_inputs(row_x, c)?;
        let g = c / Q8_BLOCK;
        Ok((0..g)
            .map(|b| {
                let q_abs: f64 = self.qs[r * c + b * Q8_BLOCK..r * c + (b + 1) * Q8_BLOCK]
                    .iter()
                    .map(|&q| f64::from(q).abs())
                    .sum();
                f64::from(self.scales[r * g + b]).abs() * f64::from(inputs.scales[b]) / 2.0 * q_abs
            })
            .sum())
    }
}

/// Inputs rounded to 8-bit blocks: `x[t, c] ≈ scales[t · blocks + c / 32] · values[t, c]`.
struct Int8Inputs {
    scales: Vec<f32>,
    values: Vec<i8>,
}

/// Rounds `x` (`[tokens, cols]`) block by block: `e = max|x| / 127`, `p = round(x / e)`
/// (`e = 0` and `p = 0` for an all-zero block); an error for a non-finite input, whose block
/// would otherwise turn every output into NaN without saying where.
fn quantize_inputs(x: &[f32], cols: usize) -> Result<Int8Inputs, QuantError> {
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::shape(
            "8-bit row table matmul",
            "finite inputs",
            format!("{} at position {i}", x[i]),
        ));
    }
    let blocks = x.len() / Q8_BLOCK;
    let mut scales = Vec::with_capacity(blocks);
    let mut values = vec![0i8; x.len()];
    debug_assert!(cols.is_multiple_of(Q8_BLOCK));
    for (xb, pb) in x
        .chunks_exact(Q8_BLOCK)
        .zip(values.chunks_exact_mut(Q8_BLOCK))
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let e = amax / 127.0;
        scales.push(e);
        if e > 0.0 {
            let inv = 1.0 / e;
            for (p, &v) in pb.iter_mut().zip(xb) {
                *p = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    Ok(Int8Inputs { scales, values })
}

/// Rows `r0..` of [`Q8Rows::matmul_t_int8`] for the block that `out` (`[block_rows, tokens]`)
/// holds, in portable code: one exact integer sum per block.
fn int8_rows_portable(m: &Q8Rows, x: &Int8Inputs, tokens: usize, r0: usize, out: &mut [f32]) {
    let c = m.cols;
    let g = c / Q8_BLOCK;
    for (i, y) in out.chunks_exact_mut(tokens).enumerate() {
        let r = r0 + i;
        let qs = &m.qs[r * c..(r + 1) * c];
        let scales = &m.scales[r * g..(r + 1) * g];
        for (t, yt) in y.iter_mut().enumerate() {
            let ps = &x.values[t * c..(t + 1) * c];
            let es = &x.scales[t * g..(t + 1) * g];
            let mut acc = 0f32;
            for (((q, p), &d), &e) in qs
                .chunks_exact(Q8_BLOCK)
                .zip(ps.chunks_exact(Q8_BLOCK))
                .zip(scales)
                .zip(es)
            {
                let s: i32 = q
                    .iter()
                    .zip(p)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                acc += s as f32 * (d * e);
            }
            *yt = acc;
        }
    }
}

/// [`int8_rows_portable`] with AVX2: per block, `vpsignb` moves the sign of each weight onto
/// its input so that `vpmaddubsw` can multiply `|q|` (unsigned, up to 128) by the signed input
/// (at most 127 in magnitude: pair sums stay below 2¹⁵), `vpmaddwd` with ones widens to eight
/// i32 lanes, and one FMA applies the block's scale `d · e`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn int8_rows_avx2(m: &Q8Rows, x: &Int8Inputs, tokens: usize, r0: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let c = m.cols;
    let g = c / Q8_BLOCK;
    let ones = _mm256_set1_epi16(1);
    for (i, y) in out.chunks_exact_mut(tokens).enumerate() {
        let r = r0 + i;
        let qs = &m.qs[r * c..(r + 1) * c];
        let scales = &m.scales[r * g..(r + 1) * g];
        for (t, yt) in y.iter_mut().enumerate() {
            let ps = &x.values[t * c..(t + 1) * c];
            let es = &x.scales[t * g..(t + 1) * g];
            let mut acc = _mm256_setzero_ps();
            for b in 0..g {
                // SAFETY: blocks `b` of `qs` and `ps` are 32 bytes inside their slices.
                let (w, p) = unsafe {
                    (
                        _mm256_loadu_si256(qs.as_ptr().add(b * Q8_BLOCK).cast()),
                        _mm256_loadu_si256(ps.as_ptr().add(b * Q8_BLOCK).cast()),
                    )
                };
                let w_abs = _mm256_sign_epi8(w, w);
                let p_signed = _mm256_sign_epi8(p, w);
                let pairs = _mm256_maddubs_epi16(w_abs, p_signed);
                let quads = _mm256_madd_epi16(pairs, ones);
                let scale = _mm256_set1_ps(scales[b] * es[b]);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), scale, acc);
            }
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 f32 values.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            *yt = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
        }
    }
}

fn int8_rows_dispatch(
    m: &Q8Rows,
    x: &Int8Inputs,
    tokens: usize,
    r0: usize,
    out: &mut [f32],
    avx2: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reports AVX2 and FMA (`has_avx2`).
        unsafe { int8_rows_avx2(m, x, tokens, r0, out) };
        return;
    }
    let _ = avx2;
    int8_rows_portable(m, x, tokens, r0, out)
}

/// `Σ_b d_b · Σ_{c ∈ b} q_c · x_c` over one row: per block, eight lanes of f32 products,
/// scaled and added to eight running lanes (vectorisable without reassociation).
#[inline(always)]
fn dot_row(qs: &[i8], scales: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for ((q, &d), x) in qs
        .chunks_exact(Q8_BLOCK)
        .zip(scales)
        .zip(x.chunks_exact(Q8_BLOCK))
    {
        let mut block = [0f32; 8];
        for j in 0..Q8_BLOCK / 8 {
            for l in 0..8 {
                block[l] += f32::from(q[j * 8 + l]) * x[j * 8 + l];
            }
        }
        for l in 0..8 {
            acc[l] += block[l] * d;
        }
    }
    let a = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// Rows `r0..` of the block that `out` (`[block_rows, tokens]`) holds.
#[inline(always)]
fn rows_body(m: &Q8Rows, x: &[f32], tokens: usize, r0: usize, out: &mut [f32]) {
    let c = m.cols;
    let g = c / Q8_BLOCK;
    for (i, y) in out.chunks_exact_mut(tokens).enumerate() {
        let r = r0 + i;
        let qs = &m.qs[r * c..(r + 1) * c];
        let scales = &m.scales[r * g..(r + 1) * g];
        for (t, yt) in y.iter_mut().enumerate() {
            *yt = dot_row(qs, scales, &x[t * c..(t + 1) * c]);
        }
    }
}

/// [`rows_body`] compiled with AVX2 and FMA enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_avx2(m: &Q8Rows, x: &[f32], tokens: usize, r0: usize, out: &mut [f32]) {
    rows_body(m, x, tokens, r0, out)
}

fn rows_dispatch(m: &Q8Rows, x: &[f32], tokens: usize, r0: usize, out: &mut [f32], avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reports AVX2 and FMA (`has_avx2`).
        unsafe { rows_avx2(m, x, tokens, r0, out) };
        return;
    }
    let _ = avx2;
    rows_body(m, x, tokens, r0, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable int8 rows and the AVX2 ones agree (the tests of the public API reach only
    /// the path this CPU picks), including weights of -128 and a zero input block.
    #[test]
    fn int8_paths_agree() {
        if !crate::cpu_fast::has_avx2() {
            return;
        }
        let (rows, cols, tokens) = (37, 96, 3);
        let qs: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 7919) % 256) as u8 as i8)
            .collect();
        let scales: Vec<f32> = (0..rows * cols / Q8_BLOCK)
            .map(|i| 0.01 + (i % 5) as f32 * 0.3)
            .collect();
        let m = Q8Rows::new(rows, cols, scales, qs).unwrap();
        let mut x: Vec<f32> = (0..tokens * cols)
            .map(|i| ((i * 31) % 97) as f32 / 9.0 - 5.0)
            .collect();
        x[32..64].fill(0.0);
        let inputs = quantize_inputs(&x, cols).unwrap();
        let mut a = vec![0f32; rows * tokens];
        let mut b = vec![0f32; rows * tokens];
        int8_rows_portable(&m, &inputs, tokens, 0, &mut a);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: checked above that the CPU has AVX2 and FMA.
        unsafe {
            int8_rows_avx2(&m, &inputs, tokens, 0, &mut b)
        };
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{u} vs {v}");
        }
    }

    #[test]
    fn refuses_bad_shapes_and_scales() {
        assert!(Q8Rows::new(2, 30, vec![1.0; 2], vec![0; 60]).is_err());
        assert!(Q8Rows::new(2, 32, vec![1.0; 1], vec![0; 64]).is_err());
        assert!(Q8Rows::new(2, 32, vec![1.0; 2], vec![0; 63]).is_err());
        assert!(Q8Rows::new(2, 32, vec![1.0, f32::NAN], vec![0; 64]).is_err());
        let m = Q8Rows::new(2, 32, vec![1.0; 2], vec![0; 64]).unwrap();
        assert!(m.gather(&[2]).is_err());
        assert!(m.matmul_t(&[0.0; 31], 1).is_err());
    }
}
