//! The fast CPU kernels (`CpuKernels`) compute what the plain-Rust reference computes:
//! identical codes, scales, zeros and errors from the quantizer, and matmuls within the
//! reference tests' tolerance, for every bit width, group size, scheme and token count.

mod common;
#[path = "common/host.rs"]
mod host;
use common::random;
use host::{close, spec_strategy, t1, t2, B};
use proptest::prelude::*;
use ttq_core::{
    tensor_io::{to_f32_vec, words_from_ints},
    QuantKernels, QuantSpec, TensorOpsKernels,
};
use ttq_kernels::{
    cpu_fast::{self, QuantRef, WeightRef, Words, MAX_GEMV_TOKENS},
    reference, CpuKernels, CpuReference,
};

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Host quantizer, both weight orders: bit-identical to the reference.
    #[test]
    fn host_quantize_is_identical(
        spec in spec_strategy(),
        rows in 1usize..40,
        cols in 1usize..300,
        seed in any::<u64>(),
        scaled in any::<bool>(),
    ) {
        let w = random(seed, rows * cols, 0);
        let d = scaled.then(|| random(seed ^ 1, cols, 0).into_iter().map(|v| v.abs() + 0.1).collect::<Vec<_>>());
        let want = reference::quantize(&w, rows, cols, d.as_deref(), &spec);
        let row_major = cpu_fast::quantize(WeightRef::RowMajor(&w), rows, cols, d.as_deref(), &spec).unwrap();
        prop_assert_eq!(&row_major, &want);
        let wt = transpose(&w, rows, cols);
        let col_major = cpu_fast::quantize(WeightRef::ColMajor(&wt), rows, cols, d.as_deref(), &spec).unwrap();
        prop_assert_eq!(&col_major, &want);
    }

    /// Through the trait, from a plain weight and from the transposed view a `QuantLinear`
    /// hands over: the same codes, scales and zeros as the reference, and the same
    /// dequantized matrix.
    #[test]
    fn kernels_quantize_and_dequantize_are_identical(
        spec in spec_strategy(),
        rows in 1usize..24,
        cols in 1usize..200,
        seed in any::<u64>(),
        transposed in any::<bool>(),
    ) {
        let w = random(seed, rows * cols, 0);
        let d: Vec<f32> = random(seed ^ 1, cols, 0).into_iter().map(|v| v.abs() + 0.1).collect();
        let wt = if transposed {
            t2(transpose(&w, rows, cols), [cols, rows]).transpose()
        } else {
            t2(w.clone(), [rows, cols])
        };
        let q = CpuKernels.quantize(wt, Some(t1(d.clone())), &spec).unwrap();
        let want = reference::quantize(&w, rows, cols, Some(&d), &spec);
        prop_assert_eq!(words_from_ints(q.packed.clone()), want.packed.clone());
        prop_assert_eq!(to_f32_vec(q.scales.clone()), want.scales.clone());
        prop_assert_eq!(to_f32_vec(q.zeros.clone()), want.zeros.clone());
        prop_assert_eq!(to_f32_vec(CpuKernels.dequantize(&q)), reference::dequantize(&want));
        // The tensor-op path reads these weights too.
        prop_assert_eq!(
            to_f32_vec(QuantKernels::<B>::dequantize(&TensorOpsKernels, &q)),
            reference::dequantize(&want)
        );
    }

    /// The packed-code matmul agrees with the reference for GEMV, small GEMM and the dense
    /// path beyond `MAX_GEMV_TOKENS`, with and without an input scale, whatever integer type
    /// holds the words (this crate's I32, or the 64-bit ints of other quantizers).
    #[test]
    fn matmul_agrees(
        spec in spec_strategy(),
        tokens in prop_oneof![1usize..9, Just(MAX_GEMV_TOKENS), Just(MAX_GEMV_TOKENS + 3)],
        rows in 1usize..70,
        cols in 1usize..200,
        seed in any::<u64>(),
        scaled in any::<bool>(),
        ours in any::<bool>(),
    ) {
        let w = random(seed, rows * cols, 0);
        let x = random(seed ^ 2, tokens * cols, 5);
        let s: Vec<f32> = random(seed ^ 3, cols, 0).into_iter().map(|v| v.abs() + 0.5).collect();
        let s = scaled.then_some(s);
        let q = if ours {
            CpuKernels.quantize(t2(w, [rows, cols]), None, &spec).unwrap()
        } else {
            CpuReference.quantize(t2(w, [rows, cols]), None, &spec).unwrap()
        };
        let y = CpuKernels
            .matmul(t2(x.clone(), [tokens, cols]), &q, s.clone().map(t1))
            .unwrap();
        prop_assert_eq!(y.dims(), [tokens, rows]);
        let y_ref = CpuReference
            .matmul(t2(x, [tokens, cols]), &q, s.map(t1))
            .unwrap();
        close(&to_f32_vec(y), &to_f32_vec(y_ref), 1e-4)?;
    }

    /// The host GEMV on every word type gives one answer.
    #[test]
    fn host_matmul_word_types_agree(
        spec in spec_strategy(),
        tokens in 1usize..5,
        rows in 1usize..40,
        cols in 1usize..150,
        seed in any::<u64>(),
    ) {
        let w = random(seed, rows * cols, 0);
        let x = random(seed ^ 2, tokens * cols, 5);
        let host = reference::quantize(&w, rows, cols, None, &spec);
        let want = reference::matmul(&x, tokens, &host, None);
        let y = cpu_fast::matmul(&x, tokens, &QuantRef::from_host(&host).unwrap(), None).unwrap();
        close(&y, &want, 1e-4)?;
        let i32s: Vec<i32> = host.packed.iter().map(|&v| v as i32).collect();
        let i64s: Vec<i64> = host.packed.iter().map(|&v| i64::from(v)).collect();
        for words in [Words::I32(&i32s), Words::I64(&i64s)] {
            let view = QuantRef::new(words, &host.scales, &host.zeros, spec, host.shape).unwrap();
            prop_assert_eq!(&cpu_fast::matmul(&x, tokens, &view, None).unwrap(), &y);
            prop_assert_eq!(cpu_fast::dequantize(&view), reference::dequantize(&host));
        }
    }

    /// Channel statistics are the reference's.
    #[test]
    fn channel_stats_are_the_reference(tokens in 1usize..40, d in 1usize..50, seed in any::<u64>()) {
        let x = random(seed, tokens * d, 7);
        let got = CpuKernels.channel_stats(t2(x.clone(), [tokens, d]));
        let (max_abs, mean) = reference::channel_stats(&x, tokens, d);
        prop_assert_eq!(got.tokens, tokens);
        prop_assert_eq!(to_f32_vec(got.max_abs), max_abs);
        prop_assert_eq!(to_f32_vec(got.mean_sq_normalized), mean);
    }
}

/// The errors of the reference quantizer, from the fast one: same problem, same place.
#[test]
fn non_finite_weights_are_the_same_errors() {
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let cases: [Vec<f32>; 4] = [
        [vec![0.5; 13], vec![f32::NAN], vec![0.5; 2]].concat(),
        [vec![0.5; 9], vec![f32::INFINITY], vec![0.5; 6]].concat(),
        [vec![f32::NEG_INFINITY], vec![0.5; 15]].concat(),
        [vec![0.0; 10], vec![f32::MAX, -f32::MAX], vec![0.0; 4]].concat(),
    ];
    for w in cases {
        let want = reference::try_quantize(&w, 2, 8, None, &spec)
            .unwrap_err()
            .to_string();
        let got = cpu_fast::quantize(WeightRef::RowMajor(&w), 2, 8, None, &spec)
            .unwrap_err()
            .to_string();
        assert_eq!(got, want);
        let got = CpuKernels
            .quantize(t2(w.clone(), [2, 8]), None, &spec)
            .unwrap_err()
            .to_string();
        assert_eq!(got, want);
    }
}

/// Wrong shapes are errors, not panics.
#[test]
fn bad_shapes_are_errors() {
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let q = CpuKernels
        .quantize(t2(vec![1.0; 32], [2, 16]), None, &spec)
        .unwrap();
    assert!(CpuKernels
        .matmul(t2(vec![0.0; 15], [1, 15]), &q, None)
        .is_err());
    assert!(CpuKernels
        .matmul(t2(vec![0.0; 16], [1, 16]), &q, Some(t1(vec![1.0; 3])))
        .is_err());
    assert!(CpuKernels
        .quantize(t2(vec![1.0; 32], [2, 16]), Some(t1(vec![1.0; 4])), &spec)
        .is_err());
    assert!(cpu_fast::quantize(WeightRef::RowMajor(&[1.0; 7]), 2, 4, None, &spec).is_err());
    let host = reference::quantize(&[1.0; 32], 2, 16, None, &spec);
    let view = QuantRef::from_host(&host).unwrap();
    assert!(cpu_fast::matmul(&[0.0; 15], 1, &view, None).is_err());
    assert!(QuantRef::new(
        Words::U32(&host.packed[1..]),
        &host.scales,
        &host.zeros,
        spec,
        host.shape
    )
    .is_err());
}
