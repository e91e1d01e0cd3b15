//! The decoder's element-wise operations (`ttq_core::ops`, the provided methods of
//! `QuantKernels`) in Burn ops against the plain-Rust reference, and both against facts
//! that do not come from either implementation.

mod common;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use common::random;
use proptest::prelude::*;
use ttq_core::{tensor_io::to_f32_vec, GateActivation, QuantKernels, TensorOpsKernels};
use ttq_kernels::reference;

type B = NdArray<f32>;

fn t<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn close(a: &[f32], b: &[f32], tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "element {}: {} vs {}",
            i,
            x,
            y
        );
    }
    Ok(())
}

/// Tables of random angles, as RoPE builds them (`cos θ`, `sin θ` of one angle per pair of
/// columns `i` and `i + d/2`).
fn tables(seed: u64, tokens: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let angles = random(seed, tokens * d / 2, 0);
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for row in angles.chunks_exact(d / 2) {
        for _ in 0..2 {
            cos.extend(row.iter().map(|a| (a * 3.0).cos()));
            sin.extend(row.iter().map(|a| (a * 3.0).sin()));
        }
    }
    (cos, sin)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rms_norm_agrees(rows in 1usize..9, d in 1usize..300, seed in any::<u64>()) {
        let x = random(seed, rows * d, 5);
        let w = random(seed ^ 1, d, 0);
        let eps = 1e-6;
        let ops = TensorOpsKernels.rms_norm(t(x.clone(), [rows, d]), t(w.clone(), [d]), eps).unwrap();
        close(&to_f32_vec(ops), &reference::rms_norm(&x, d, &w, eps), 1e-5)?;
    }

    #[test]
    fn rope_agrees(b in 1usize..3, tokens in 1usize..6, heads in 1usize..5, half in 1usize..20, seed in any::<u64>()) {
        let d = 2 * half;
        let shape = [b, tokens, heads, d];
        let x = random(seed, b * tokens * heads * d, 0);
        let (cos, sin) = tables(seed ^ 1, tokens, d);
        let ops = TensorOpsKernels
            .rope(t(x.clone(), shape), t(cos.clone(), [tokens, d]), t(sin.clone(), [tokens, d]))
            .unwrap();
        close(&to_f32_vec(ops), &reference::rope(&x, shape, &cos, &sin), 1e-5)?;
    }

    #[test]
    fn masked_softmax_agrees(t_rows in 1usize..4, groups in 1usize..5, cols in 1usize..70, seed in any::<u64>(), masked in any::<bool>()) {
        let rows = t_rows * groups;
        let scores: Vec<f32> = random(seed, rows * cols, 0).iter().map(|v| v * 30.0).collect();
        // Causal-style mask: -inf past column `c0 + i` of mask row `i` (column 0 always visible).
        let mask: Vec<f32> = (0..t_rows * cols)
            .map(|k| if k % cols > (k / cols) + cols / 2 { f32::NEG_INFINITY } else { 0.0 })
            .collect();
        let (m_ops, m_ref) = if masked {
            (Some(t(mask.clone(), [t_rows, cols])), Some((&mask[..], t_rows)))
        } else {
            (None, None)
        };
        let ops = TensorOpsKernels.masked_softmax(t(scores.clone(), [rows, cols]), 0.125, m_ops).unwrap();
        close(&to_f32_vec(ops), &reference::masked_softmax(&scores, cols, 0.125, m_ref), 1e-5)?;
    }

    #[test]
    fn gated_agrees(rows in 1usize..5, d in 1usize..200, seed in any::<u64>(), gelu in any::<bool>()) {
        let act = if gelu { GateActivation::GeluTanh } else { GateActivation::Silu };
        let g: Vec<f32> = random(seed, rows * d, 0).iter().map(|v| v * 6.0).collect();
        let u = random(seed ^ 1, rows * d, 0);
        let ops = TensorOpsKernels.gated(t(g.clone(), [rows, d]), t(u.clone(), [rows, d]), act).unwrap();
        close(&to_f32_vec(ops), &reference::gated(&g, &u, act), 1e-5)?;
    }
}

/// With unit weights every normalised row has a root mean square of 1 (up to `eps`).
#[test]
fn rms_norm_rows_have_unit_rms() {
    let (rows, d) = (3, 64);
    let x: Vec<f32> = random(3, rows * d, 7).iter().map(|v| v * 50.0).collect();
    let y = reference::rms_norm(&x, d, &vec![1.0; d], 1e-6);
    for row in y.chunks_exact(d) {
        let rms = (row.iter().map(|v| v * v).sum::<f32>() / d as f32).sqrt();
        assert!((rms - 1.0).abs() < 1e-4, "rms {rms}");
    }
}

/// A quarter turn takes `(1, 0)` to `(0, 1)` in each (i, i + d/2) pair, and position 0
/// (`cos = 1`, `sin = 0`) is the identity.
#[test]
fn rope_rotates_pairs() {
    let x = vec![1.0, 2.0, 0.0, 0.0]; // d = 4: pairs (x0, x2) = (1, 0) and (x1, x3) = (2, 0)
    let quarter = reference::rope(&x, [1, 1, 1, 4], &[0.0; 4], &[1.0; 4]);
    assert_eq!(quarter, vec![0.0, 0.0, 1.0, 2.0]);
    let identity = reference::rope(&x, [1, 1, 1, 4], &[1.0; 4], &[0.0; 4]);
    assert_eq!(identity, x);
}

/// Known values: `silu(0) = 0`, `silu(x) → x` and `gelu(x) → x` for large x, and
/// `gelu_tanh(1) = 0.8411920` (the tanh formula evaluated by hand: 0.5 · (1 + tanh(0.7988
/// · 1.044715))).
#[test]
fn gated_known_values() {
    let g = vec![0.0, 20.0, 1.0];
    let up = vec![3.0, 2.0, 1.0];
    let silu = reference::gated(&g, &up, GateActivation::Silu);
    assert_eq!(silu[0], 0.0);
    assert!((silu[1] - 40.0).abs() < 1e-6);
    let gelu = reference::gated(&g, &up, GateActivation::GeluTanh);
    assert!((gelu[1] - 40.0).abs() < 1e-6);
    assert!((gelu[2] - 0.841_192).abs() < 1e-5, "{}", gelu[2]);
}

/// Rows sum to one, masked positions get exactly zero, and equal scores share evenly.
#[test]
fn masked_softmax_known_values() {
    let mask = [0.0, f32::NEG_INFINITY, 0.0, 0.0];
    let p = reference::masked_softmax(&[1.0, 5.0, 1.0, 1.0], 4, 1.0, Some((&mask, 1)));
    assert_eq!(p[1], 0.0);
    for v in [p[0], p[2], p[3]] {
        assert!((v - 1.0 / 3.0).abs() < 1e-7, "{v}");
    }
}

#[test]
fn bad_operands_are_errors() {
    let k = TensorOpsKernels;
    assert!(k
        .rms_norm(t(vec![1.0; 6], [2, 3]), t(vec![1.0; 2], [2]), 1e-6)
        .is_err());
    assert!(k
        .rms_norm(t(vec![1.0; 6], [2, 3]), t(vec![1.0; 3], [3]), f64::NAN)
        .is_err());
    let x = t(vec![1.0; 12], [1, 2, 2, 3]);
    assert!(k
        .rope(x, t(vec![1.0; 6], [2, 3]), t(vec![0.0; 6], [2, 3]))
        .is_err());
    let x = t(vec![1.0; 16], [1, 2, 2, 4]);
    assert!(k
        .rope(x, t(vec![1.0; 4], [1, 4]), t(vec![0.0; 8], [2, 4]))
        .is_err());
    assert!(k
        .gated(
            t(vec![1.0; 6], [2, 3]),
            t(vec![1.0; 6], [3, 2]),
            GateActivation::Silu
        )
        .is_err());
}
