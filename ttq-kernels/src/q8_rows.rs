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
        if Some(x.len()) != tokens.checked_mul(self.cols) {
            return Err(QuantError::shape(
                "8-bit row table matmul",
                format!("[{tokens}, {}] inputs", self.cols),
                format!("{} values", x.len()),
            ));
        }
        if tokens == 0 || self.rows == 0 {
            return Ok(vec![0f32; tokens * self.rows]);
        }
        let avx2 = crate::cpu_fast::has_avx2();
        // `[rows, tokens]`: each task writes its own rows for every token.
        let mut yt = vec![0f32; self.rows * tokens];
        yt.par_chunks_mut(ROW_BLOCK * tokens)
            .enumerate()
            .for_each(|(b, out)| {
                let r0 = b * ROW_BLOCK;
                rows_dispatch(self, x, tokens, r0, out, avx2)
            });
        if tokens == 1 {
            return Ok(yt);
        }
        let mut y = vec![0f32; tokens * self.rows];
        for (r, row) in yt.chunks_exact(tokens).enumerate() {
            for (t, &v) in row.iter().enumerate() {
                y[t * self.rows + r] = v;
            }
        }
        Ok(y)
    }
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
