//! Full-precision products `x · Wᵀ` for a few tokens on the CPU: the unquantized model's
//! layers at decode time.
//!
//! burn-ndarray's matmul (matrixmultiply) packs both operands before multiplying; for one
//! token that is a copy of the whole weight per call, about 5x the time of reading it once
//! (fp decode of Gemma 3 270M: 10 tok/s). Here each task streams its own strip of output
//! columns once for all tokens, f32 accumulation, strips in parallel (rayon).

use crate::cpu_fast::{dot, tokens_major, WeightRef};
use rayon::prelude::*;

/// Up to this many tokens the products run here; more go to the dense matmul, which
/// reuses each weight block across tokens.
pub const MAX_DENSE_GEMV_TOKENS: usize = 32;

/// Output columns per parallel task.
const STRIP: usize = 1024;

/// `y = x · w_t` for `x` `[tokens, k]` and `w_t` `[k, n]` in either order (`RowMajor`: `Wᵀ`
/// stored contiguously, as a `QuantLinear` keeps it; `ColMajor`: `W` stored contiguously).
/// Returns `[tokens, n]`.
pub fn gemm_small(x: &[f32], tokens: usize, k: usize, n: usize, w_t: WeightRef<'_>) -> Vec<f32> {
    // `[n, tokens]`: each task writes its own strip of outputs for every token.
    let mut yt = vec![0f32; n * tokens];
    if tokens == 0 || n == 0 {
        return yt;
    }
    yt.par_chunks_mut(STRIP * tokens)
        .enumerate()
        .for_each(|(s, out)| {
            let r0 = s * STRIP;
            let width = out.len() / tokens;
            match w_t {
                // `Wᵀ[c, r]` at `c · n + r`: one contiguous run of the strip per input.
                WeightRef::RowMajor(wt) => {
                    let mut acc = vec![0f32; tokens * width];
                    strip_dispatch(x, tokens, k, n, wt, r0, &mut acc);
                    for (i, row) in out.chunks_exact_mut(tokens).enumerate() {
                        for (t, y) in row.iter_mut().enumerate() {
                            *y = acc[t * width + i];
                        }
                    }
                }
                // `Wᵀ[c, r]` at `r · k + c`: a dot product per output.
                WeightRef::ColMajor(wr) => {
                    for (i, row) in out.chunks_exact_mut(tokens).enumerate() {
                        let wrow = &wr[(r0 + i) * k..(r0 + i + 1) * k];
                        for (t, y) in row.iter_mut().enumerate() {
                            *y = dot(&x[t * k..(t + 1) * k], wrow);
                        }
                    }
                }
            }
        });
    tokens_major(yt, n, tokens)
}

/// Accumulates `acc[t, i] = Σ_c x[t, c] · wt[c, r0 + i]` over a strip (`acc` is `[tokens,
/// width]`), four inputs per pass so that each pass over `acc` adds four weight rows.
#[inline(always)]
fn strip_body(
    x: &[f32],
    tokens: usize,
    k: usize,
    n: usize,
    wt: &[f32],
    r0: usize,
    acc: &mut [f32],
) {
    let width = acc.len() / tokens;
    let row = |c: usize| &wt[c * n + r0..c * n + r0 + width];
    let mut c = 0;
    while c + 4 <= k {
        let (w0, w1, w2, w3) = (row(c), row(c + 1), row(c + 2), row(c + 3));
        for (t, acc) in acc.chunks_exact_mut(width).enumerate() {
            let xs = &x[t * k + c..t * k + c + 4];
            for i in 0..width {
                acc[i] += ((xs[0] * w0[i] + xs[1] * w1[i]) + xs[2] * w2[i]) + xs[3] * w3[i];
            }
        }
        c += 4;
    }
    for c in c..k {
        let w = row(c);
        for (t, acc) in acc.chunks_exact_mut(width).enumerate() {
            let a = x[t * k + c];
            for (y, &wv) in acc.iter_mut().zip(w) {
                *y += a * wv;
            }
        }
    }
}

/// [`strip_body`] compiled with AVX2 enabled (eight lanes instead of four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn strip_avx2(
    x: &[f32],
    tokens: usize,
    k: usize,
    n: usize,
    wt: &[f32],
    r0: usize,
    acc: &mut [f32],
) {
    strip_body(x, tokens, k, n, wt, r0, acc)
}

fn strip_dispatch(
    x: &[f32],
    tokens: usize,
    k: usize,
    n: usize,
    wt: &[f32],
    r0: usize,
    acc: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu_fast::has_avx2() {
        // SAFETY: the CPU reports AVX2 and FMA (`has_avx2`).
        unsafe { strip_avx2(x, tokens, k, n, wt, r0, acc) };
        return;
    }
    strip_body(x, tokens, k, n, wt, r0, acc)
}
