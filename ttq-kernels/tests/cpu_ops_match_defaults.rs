//! `CpuKernels`' decoder operations (`ttq_kernels::cpu_ops` on host slices) and its dense
//! product for few tokens (`ttq_kernels::cpu_dense`) compute what the trait's Burn-op
//! defaults (`ttq_core::ops`, Burn's matmul) compute, for any shape: RMSNorm, rotary
//! embedding, both gated activations, attention with and without a mask (query rows sharing
//! mask rows, masked cache positions, a row masked everywhere), and `x · Wᵀ` with `Wᵀ` stored
//! either way; bad operands give the defaults' errors.

mod common;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use common::random;
use proptest::prelude::*;
use ttq_core::{ops, tensor_io::to_f32_vec, GateActivation, QuantKernels};
use ttq_kernels::{cpu_fast::HOST_ATTENTION_MAX_ROWS, CpuKernels};

type B = NdArray<f32>;

fn t<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// `|a - b| <= tol · (1 + |b|)` element by element; NaN only where the other side is NaN.
fn close(a: &[f32], b: &[f32], tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert_eq!(x.is_nan(), y.is_nan(), "element {}: {} vs {}", i, x, y);
        if !y.is_nan() {
            prop_assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "element {}: {} vs {}",
                i,
                x,
                y
            );
        }
    }
    Ok(())
}

/// Random values of mixed magnitude: most in [-1, 1), some 100 times larger.
fn values(seed: u64, n: usize) -> Vec<f32> {
    random(seed, n, 7)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rms_norm_matches(rows in 1usize..40, d in 1usize..300, eps in 0f64..1e-3, seed: u64) {
        let x = values(seed, rows * d);
        let w = random(seed ^ 1, d, 0);
        let got = CpuKernels.rms_norm(t(x.clone(), [rows, d]), t(w.clone(), [d]), eps).unwrap();
        let want = ops::rms_norm(t(x, [rows, d]), t(w, [d]), eps).unwrap();
        close(&to_f32_vec(got), &to_f32_vec(want), 1e-5)?;
    }

    #[test]
    fn rope_matches(
        b in 1usize..3, tokens in 1usize..10, heads in 1usize..5, half in 1usize..40, seed: u64
    ) {
        let d = 2 * half;
        let dims = [b, tokens, heads, d];
        let x = values(seed, dims.iter().product());
        let cos = random(seed ^ 1, tokens * d, 0);
        let sin = random(seed ^ 2, tokens * d, 0);
        let got = CpuKernels
            .rope(t(x.clone(), dims), t(cos.clone(), [tokens, d]), t(sin.clone(), [tokens, d]))
            .unwrap();
        let want = ops::rope(t(x, dims), t(cos, [tokens, d]), t(sin, [tokens, d])).unwrap();
        // The same f32 operations in the same order.
        prop_assert_eq!(to_f32_vec(got), to_f32_vec(want));
    }

    #[test]
    fn gated_matches(rows in 1usize..20, d in 1usize..3000, silu: bool, seed: u64) {
        let act = if silu { GateActivation::Silu } else { GateActivation::GeluTanh };
        let g: Vec<f32> = random(seed, rows * d, 0).iter().map(|v| v * 12.0).collect();
        let u = values(seed ^ 1, rows * d);
        let got = CpuKernels.gated(t(g.clone(), [rows, d]), t(u.clone(), [rows, d]), act).unwrap();
        let want = ops::gated(t(g, [rows, d]), t(u, [rows, d]), act).unwrap();
        close(&to_f32_vec(got), &to_f32_vec(want), 1e-5)?;
    }

    /// Few tokens (the host product) and more than it serves (the fallback); `Wᵀ` stored
    /// contiguously (as a `QuantLinear` keeps it) or as the transposed view of `W`; several
    /// strips of output columns.
    #[test]
    fn dense_matmul_matches(
        tokens in 1usize..40, k in 1usize..200, n in 1usize..700, transposed: bool, seed: u64
    ) {
        let x = values(seed, tokens * k);
        let w = random(seed ^ 1, k * n, 0);
        let w_t = || {
            if transposed {
                t(w.clone(), [n, k]).transpose()
            } else {
                t(w.clone(), [k, n])
            }
        };
        let got = CpuKernels.dense_matmul(t(x.clone(), [tokens, k]), w_t()).unwrap();
        let want = t(x.clone(), [tokens, k]).matmul(w_t());
        prop_assert_eq!(got.dims(), [tokens, n]);
        let (got, want) = (to_f32_vec(got), to_f32_vec(want));
        // Both sum k products in f32, in different orders: bounded by the sum of magnitudes.
        for tk in 0..tokens {
            for r in 0..n {
                let w_at = |c: usize| if transposed { w[r * k + c] } else { w[c * n + r] };
                let mag: f32 = (0..k).map(|c| (x[tk * k + c] * w_at(c)).abs()).sum();
                let (a, b) = (got[tk * n + r], want[tk * n + r]);
                prop_assert!(
                    (a - b).abs() <= 2e-5 * mag + 1e-6,
                    "token {} column {}: {} vs {} (magnitude {})", tk, r, a, b, mag
                );
            }
        }
    }

    /// Grouped-query layout as the model uses it (`rows = n · t`, mask rows `r % t`), and
    /// the mask-free case; some cache positions masked, as an allocation ahead of its fill.
    #[test]
    fn attention_matches(
        b in 1usize..3,
        h in 1usize..4,
        n in 1usize..5,
        tokens in 1usize..8,
        cols in 1usize..150,
        hd in 1usize..70,
        masked in any::<bool>(),
        seed: u64,
    ) {
        let rows = n * tokens;
        let q = random(seed, b * h * rows * hd, 0);
        let k = random(seed ^ 1, b * h * cols * hd, 0);
        let v = values(seed ^ 2, b * h * cols * hd);
        let mask = masked.then(|| causal_mask(tokens, cols, seed));
        let run = |kernels: &dyn QuantKernels<B>| {
            let y = kernels
                .attention(
                    t(q.clone(), [b, h, rows, hd]),
                    t(k.clone(), [b, h, cols, hd]),
                    t(v.clone(), [b, h, cols, hd]),
                    0.125,
                    mask.clone().map(|m| t(m, [tokens, cols])),
                )
                .unwrap();
            to_f32_vec(y)
        };
        let want = to_f32_vec(
            ops::attention(
                t(q.clone(), [b, h, rows, hd]),
                t(k.clone(), [b, h, cols, hd]),
                t(v.clone(), [b, h, cols, hd]),
                0.125,
                mask.clone().map(|m| t(m, [tokens, cols])),
            )
            .unwrap(),
        );
        close(&run(&CpuKernels), &want, 1e-5)?;
    }
}

/// A `[tokens, cols]` mask: query `i` sees the positions up to `cols - tokens + i` (at least
/// the first), the rest `-inf`, and a few random visible positions masked too.
fn causal_mask(tokens: usize, cols: usize, seed: u64) -> Vec<f32> {
    let noise = random(seed ^ 9, tokens * cols, 0);
    let mut m = vec![0f32; tokens * cols];
    for i in 0..tokens {
        let last = (cols + i).saturating_sub(tokens);
        for j in 0..cols {
            if j > last || (j > 0 && noise[i * cols + j] > 0.8) {
                m[i * cols + j] = f32::NEG_INFINITY;
            }
        }
    }
    m
}

#[test]
fn attention_past_the_host_limit_and_fully_masked_rows_match() {
    let (rows, cols, hd) = (HOST_ATTENTION_MAX_ROWS + 1, 9, 4);
    for rows in [3, rows] {
        let q = random(1, rows * hd, 0);
        let k = random(2, cols * hd, 0);
        let v = random(3, cols * hd, 0);
        // Row 1 of the mask is -inf everywhere: NaN outputs on both sides.
        let mut m = vec![0f32; rows * cols];
        m[cols..2 * cols].fill(f32::NEG_INFINITY);
        let args = || {
            (
                t(q.clone(), [1, 1, rows, hd]),
                t(k.clone(), [1, 1, cols, hd]),
                t(v.clone(), [1, 1, cols, hd]),
                Some(t(m.clone(), [rows, cols])),
            )
        };
        let (a, b, c, d) = args();
        let got = to_f32_vec(CpuKernels.attention(a, b, c, 0.5, d).unwrap());
        let (a, b, c, d) = args();
        let want = to_f32_vec(ops::attention(a, b, c, 0.5, d).unwrap());
        assert!(got[hd..2 * hd].iter().all(|v| v.is_nan()));
        for (i, (x, y)) in got.iter().zip(&want).enumerate() {
            assert!(
                x.is_nan() == y.is_nan() && (x.is_nan() || (x - y).abs() <= 1e-5 * (1.0 + y.abs())),
                "rows {rows}, element {i}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn bad_operands_are_the_defaults_errors() {
    let q = || t(vec![0.0; 2 * 4], [1, 1, 2, 4]);
    let kv = |c: usize, d: usize| t(vec![0.0; c * d], [1, 1, c, d]);
    // Keys of another width, values of another length, a mask of the wrong width, a mask
    // whose rows do not divide the query rows, a non-finite scale.
    assert!(CpuKernels
        .attention(q(), kv(3, 5), kv(3, 4), 1.0, None)
        .is_err());
    assert!(CpuKernels
        .attention(q(), kv(3, 4), kv(2, 4), 1.0, None)
        .is_err());
    let mask = |r: usize, c: usize| Some(t(vec![0.0; r * c], [r, c]));
    assert!(CpuKernels
        .attention(q(), kv(3, 4), kv(3, 4), 1.0, mask(2, 4))
        .is_err());
    assert!(CpuKernels
        .attention(q(), kv(3, 4), kv(3, 4), 1.0, mask(3, 3))
        .is_err());
    assert!(CpuKernels
        .attention(q(), kv(3, 4), kv(3, 4), f64::NAN, None)
        .is_err());
    assert!(ops::attention(q(), kv(3, 5), kv(3, 4), 1.0, None).is_err());
    let x = t(vec![1.0; 6], [2, 3]);
    assert!(CpuKernels
        .rms_norm(x.clone(), t(vec![1.0; 2], [2]), 1e-6)
        .is_err());
    assert!(CpuKernels
        .rms_norm(x.clone(), t(vec![1.0; 3], [3]), f64::NAN)
        .is_err());
    assert!(CpuKernels
        .gated(x.clone(), t(vec![1.0; 4], [2, 2]), GateActivation::Silu)
        .is_err());
    assert!(CpuKernels
        .dense_matmul(x.clone(), t(vec![1.0; 4], [2, 2]))
        .is_err());
    let r = t(vec![1.0; 3], [1, 1, 1, 3]);
    assert!(CpuKernels
        .rope(r, t(vec![1.0; 3], [1, 3]), t(vec![1.0; 3], [1, 3]))
        .is_err());
}
