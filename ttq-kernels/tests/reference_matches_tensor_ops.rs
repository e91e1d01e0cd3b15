//! The Burn tensor-op path (ttq-core) and the plain-Rust reference (ttq-kernels) compute the
//! same thing.

mod common;
#[path = "common/host.rs"]
mod host;
use common::random;
use host::{close, spec_strategy, t1, t2, B};
use proptest::prelude::*;
use ttq_core::{
    tensor_io::{to_f32_vec, words_from_ints},
    QuantKernels, QuantSpec, TensorOpsKernels, TtqScaleConfig,
};
use ttq_kernels::{reference, CpuReference};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn channel_stats_and_scale_agree(tokens in 1usize..40, d in 1usize..50, seed in any::<u64>()) {
        let x = random(seed, tokens * d, 7);
        let ops = QuantKernels::<B>::channel_stats(&TensorOpsKernels, t2(x.clone(), [tokens, d]));
        let (max_abs, mean) = reference::channel_stats(&x, tokens, d);
        prop_assert_eq!(to_f32_vec(ops.max_abs.clone()), max_abs.clone());
        close(&to_f32_vec(ops.mean_sq_normalized.clone()), &mean, 1e-5)?;
        let cfg = TtqScaleConfig::default();
        let d_ops = to_f32_vec(cfg.scale(&ops));
        let d_ref = reference::ttq_scale(&max_abs, &mean, &cfg);
        for (a, b) in d_ops.iter().zip(&d_ref) {
            prop_assert!((a - b).abs() <= 1e-5 * b.abs(), "{} vs {}", a, b);
        }
    }

    /// Given the same column scale, both paths produce identical codes, scales and zeros.
    #[test]
    fn quantize_is_identical(
        spec in spec_strategy(),
        rows in 1usize..6,
        cols in 1usize..300,
        seed in any::<u64>(),
        scaled in any::<bool>(),
    ) {
        let w = random(seed, rows * cols, 0);
        let d = scaled.then(|| random(seed ^ 1, cols, 0).into_iter().map(|v| v.abs() + 0.1).collect::<Vec<_>>());
        let ops = TensorOpsKernels
            .quantize(t2(w.clone(), [rows, cols]), d.clone().map(t1), &spec)
            .unwrap();
        let host = reference::quantize(&w, rows, cols, d.as_deref(), &spec);
        prop_assert_eq!(words_from_ints(ops.packed.clone()), host.packed.clone());
        prop_assert_eq!(to_f32_vec(ops.scales.clone()), host.scales.clone());
        prop_assert_eq!(to_f32_vec(ops.zeros.clone()), host.zeros.clone());
        // And both dequantize to the same matrix.
        let deq_ops = to_f32_vec(QuantKernels::<B>::dequantize(&TensorOpsKernels, &ops));
        close(&deq_ops, &reference::dequantize(&host), 1e-6)?;
    }

    /// The int-weight matmul with D^-1 scaling agrees (f32 vs f64 accumulation).
    #[test]
    fn matmul_agrees(
        spec in spec_strategy(),
        tokens in 1usize..9,
        rows in 1usize..20,
        cols in 1usize..200,
        seed in any::<u64>(),
    ) {
        let w = random(seed, rows * cols, 0);
        let x = random(seed ^ 2, tokens * cols, 5);
        let s: Vec<f32> = random(seed ^ 3, cols, 0).into_iter().map(|v| v.abs() + 0.5).collect();
        let q = CpuReference.quantize(t2(w, [rows, cols]), None, &spec).unwrap();
        let y_ops = TensorOpsKernels
            .matmul(t2(x.clone(), [tokens, cols]), &q, Some(t1(s.clone())))
            .unwrap();
        let y_ref = CpuReference
            .matmul(t2(x, [tokens, cols]), &q, Some(t1(s)))
            .unwrap();
        close(&to_f32_vec(y_ops), &to_f32_vec(y_ref), 1e-4)?;
    }
}

#[test]
fn reference_errors_on_bad_shapes() {
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let q = CpuReference
        .quantize(t2(vec![1.0; 32], [2, 16]), None, &spec)
        .unwrap();
    assert!(CpuReference
        .matmul(t2(vec![0.0; 15], [1, 15]), &q, None)
        .is_err());
    assert!(CpuReference
        .matmul(t2(vec![0.0; 16], [1, 16]), &q, Some(t1(vec![1.0; 3])))
        .is_err());
    assert!(CpuReference
        .quantize(t2(vec![1.0; 32], [2, 16]), Some(t1(vec![1.0; 4])), &spec)
        .is_err());
}

/// NaN, infinite and overflowing weights are a `QuantError` from both paths (never a panic
/// or garbage codes), and both name the same problem.
#[test]
fn non_finite_weights_are_errors_on_both_paths() {
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let cases: [(Vec<f32>, &str); 4] = [
        (
            [vec![0.5; 5], vec![f32::NAN], vec![0.5; 10]].concat(),
            "NaN",
        ),
        (
            [vec![0.5; 9], vec![f32::INFINITY], vec![0.5; 6]].concat(),
            "infinite",
        ),
        (
            [vec![f32::NEG_INFINITY], vec![0.5; 15]].concat(),
            "infinite",
        ),
        (
            [vec![f32::MAX, -f32::MAX], vec![0.0; 14]].concat(),
            "exceeds f32",
        ),
    ];
    for (w, what) in cases {
        let host = reference::try_quantize(&w, 2, 8, None, &spec).unwrap_err();
        assert!(host.to_string().contains(what), "{what}: {host}");
        let cpu = CpuReference
            .quantize(t2(w.clone(), [2, 8]), None, &spec)
            .unwrap_err();
        assert!(cpu.to_string().contains(what), "{what}: {cpu}");
        let ops = TensorOpsKernels
            .quantize(t2(w, [2, 8]), None, &spec)
            .unwrap_err();
        assert!(ops.to_string().contains(what), "{what}: {ops}");
    }
    // Wrong lengths are errors too, not assertion failures.
    assert!(reference::try_quantize(&[1.0; 7], 2, 4, None, &spec).is_err());
    assert!(reference::try_quantize(&[1.0; 8], 2, 4, Some(&[1.0; 3]), &spec).is_err());
}
