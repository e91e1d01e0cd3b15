//! Properties of the group-wise quantizer and its packing.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use proptest::prelude::*;
use ttq_core::{
    group::{dequantize, pack, quantize, quantize_codes, unpack},
    tensor_io::to_i64_vec,
    GroupSize, QuantError, QuantScheme, QuantSpec,
};

fn spec_strategy() -> impl Strategy<Value = QuantSpec> {
    (
        2u32..=8,
        prop_oneof![
            Just(GroupSize::Size(8)),
            Just(GroupSize::Size(16)),
            Just(GroupSize::Size(32)),
            Just(GroupSize::Row)
        ],
        prop_oneof![Just(QuantScheme::Asymmetric), Just(QuantScheme::Symmetric)],
    )
        .prop_map(|(b, g, s)| QuantSpec::new(b, g, s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every element dequantizes to within half a step of its group's scale.
    #[test]
    fn error_is_at_most_half_a_step(
        spec in spec_strategy(),
        rows in 1usize..6,
        cols in 1usize..70,
        seed in any::<u64>(),
        gain in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e3f32)],
    ) {
        let mut r = rng(seed);
        let w: Vec<f32> = normal(&mut r, rows * cols).into_iter().map(|v| v * gain).collect();
        let q = quantize(tensor2(w.clone(), [rows, cols]), None, &spec).unwrap();
        let deq = vec2(dequantize(&q));
        let scales = vec2(q.scales.clone());
        let g = spec.group_len(cols);
        let groups = spec.groups_per_row(cols);
        for rr in 0..rows {
            for c in 0..cols {
                let s = scales[rr * groups + c / g];
                let err = (w[rr * cols + c] - deq[rr * cols + c]).abs();
                // Half a step plus float rounding of (q - z) * s.
                let tol = s * 0.5 * (1.0 + 1e-5) + w[rr * cols + c].abs() * 1e-6;
                prop_assert!(err <= tol, "row {rr} col {c}: err {err} > s/2 = {}", s / 2.0);
            }
        }
    }

    /// Packing then unpacking gives back exactly the codes, for every width.
    #[test]
    fn pack_unpack_round_trips(
        bits in 2u32..=8,
        rows in 1usize..5,
        cols in 1usize..80,
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let max = (1u32 << bits) - 1;
        let codes: Vec<i64> = (0..rows * cols)
            .map(|_| i64::from(rand::Rng::random_range(&mut r, 0..=max)))
            .collect();
        // Make sure the extreme codes occur.
        let mut codes = codes;
        codes[0] = i64::from(max);
        let t: Tensor<B, 2, Int> =
            Tensor::from_data(TensorData::new(codes.clone(), [rows, cols]), &Default::default());
        let packed = pack(t, bits);
        let back = to_i64_vec(unpack(packed, bits, cols));
        prop_assert_eq!(back, codes);
    }
}

#[test]
fn codes_stay_in_range_and_zero_groups_dequantize_to_zero() {
    let spec = QuantSpec::asymmetric(3, 8).unwrap();
    let mut w = vec![0f32; 16];
    w[8..].copy_from_slice(&[5.0, -1.0, 0.5, 2.0, -3.0, 0.0, 1.0, 4.0]);
    let codes = quantize_codes(tensor2(w.clone(), [1, 16]), None, &spec).unwrap();
    let codes_v = to_i64_vec(codes.codes);
    assert!(codes_v.iter().all(|&c| (0..=7).contains(&c)));
    let q = quantize(tensor2(w, [1, 16]), None, &spec).unwrap();
    let deq = vec2(dequantize(&q));
    assert!(deq[..8].iter().all(|&v| v == 0.0), "{deq:?}");
    // Max and min of the live group are exactly representable: range [-3, 5] over 7 steps.
    let scales = vec2(q.scales);
    assert!((scales[1] - 8.0 / 7.0).abs() < 1e-6);
}

#[test]
fn four_bit_words_hold_eight_codes_low_bits_first() {
    // Codes 0..8 in one row: word = 0x76543210, an independent check of the layout.
    let t: Tensor<B, 2, Int> = Tensor::from_data(
        TensorData::new((0..8i64).collect::<Vec<_>>(), [1, 8]),
        &Default::default(),
    );
    let words = to_i64_vec(pack(t, 4));
    assert_eq!(words.len(), 1);
    assert_eq!(words[0] as u32, 0x7654_3210);
}

#[test]
fn column_scale_of_wrong_length_is_an_error() {
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let err = quantize(
        tensor2(vec![0.0; 32], [2, 16]),
        Some(tensor1(vec![1.0; 15])),
        &spec,
    )
    .unwrap_err();
    assert!(err.to_string().contains("column scale"), "{err}");
}

#[test]
fn non_finite_and_overflowing_weights_are_errors_not_panics() {
    for scheme in [QuantScheme::Asymmetric, QuantScheme::Symmetric] {
        let spec = QuantSpec::new(4, GroupSize::Size(8), scheme).unwrap();
        for (bad, what) in [
            (f32::NAN, "NaN"),
            (f32::INFINITY, "infinite"),
            (f32::NEG_INFINITY, "infinite"),
        ] {
            let mut w = vec![0.5f32; 16];
            w[11] = bad;
            let err = quantize(tensor2(w, [2, 8]), None, &spec).unwrap_err();
            assert!(
                matches!(&err, QuantError::NonFinite { .. }) && err.to_string().contains(what),
                "{scheme:?} {bad}: {err}"
            );
        }
    }
    // A group spanning -f32::MAX..f32::MAX has a range beyond f32 (asymmetric); one huge
    // value alone still quantizes.
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let mut w = vec![0.0f32; 8];
    w[0] = f32::MAX;
    w[1] = -f32::MAX;
    let err = quantize(tensor2(w.clone(), [1, 8]), None, &spec).unwrap_err();
    assert!(err.to_string().contains("exceeds f32"), "{err}");
    w[1] = 0.0;
    let q = quantize(tensor2(w, [1, 8]), None, &spec).unwrap();
    assert!(vec2(dequantize(&q)).iter().all(|v| v.is_finite()));
    // A finite weight times an overflowing column scale is caught too.
    let d = Tensor::<B, 1>::from_data(TensorData::new(vec![1e30f32; 8], [8]), &Default::default());
    let w = tensor2(vec![1e10f32; 8], [1, 8]);
    assert!(quantize(w, Some(d), &spec).is_err());
}
