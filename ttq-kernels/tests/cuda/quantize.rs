//! Quantize-pack and dequantize against the reference: codes, scales and zeros exactly.

use super::*;
use burn::tensor::f16;
use ttq_core::{tensor_io::to_f32_vec, QuantKernels, QuantSpec};
use ttq_kernels::{
    cpu::{from_host, to_host},
    reference, CudaBackend, CudaKernels, QuantizeVariant,
};

pub fn check_quantize<F: FloatElement + Element>(
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    with_scale: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let w = t2::<F>(random(seed, rows * cols, 37), [rows, cols]);
    let d = with_scale.then(|| t1::<F>(positive(seed ^ 0x5a5a, cols)));
    let w_host = to_f32_vec(w.clone());
    let d_host = d.clone().map(to_f32_vec);
    let want = reference::quantize(&w_host, rows, cols, d_host.as_deref(), &spec);
    for variant in [QuantizeVariant::Auto, QuantizeVariant::Generic] {
        poison(rows * cols * 4);
        let q = CudaKernels {
            quantize_variant: variant,
            ..CudaKernels::default()
        }
        .quantize(w.clone(), d.clone(), &spec)
        .expect("valid shapes");
        let got = to_host(&q);
        prop_assert_eq!(got.shape, want.shape);
        prop_assert_eq!(got.packed.len(), want.packed.len());
        for (i, (a, b)) in got.packed.iter().zip(&want.packed).enumerate() {
            prop_assert!(
                a == b,
                "{} {:?} word {}: {:#010x} vs {:#010x}",
                spec,
                variant,
                i,
                a,
                b
            );
        }
        exact("scales", &got.scales, &want.scales)?;
        exact("zeros", &got.zeros, &want.zeros)?;
    }

    // Dequantize the reference's weight (so that this checks the dequantizer alone).
    // `from_host` keeps scales and zeros in f32 whatever the device's default dtype.
    let q_ref = from_host::<CudaBackend<F>>(want.clone(), &device());
    let held = to_host(&q_ref);
    exact("scales held on the device", &held.scales, &want.scales)?;
    exact("zeros held on the device", &held.zeros, &want.zeros)?;
    poison(rows * cols * 4);
    let deq = to_f32_vec(CudaKernels::default().dequantize(&q_ref));
    let deq_ref = reference::dequantize(&held);
    if F::dtype() == burn::tensor::DType::F32 {
        exact("dequantize", &deq, &deq_ref)
    } else {
        let rounded: Vec<f32> = deq_ref
            .iter()
            .map(|&v| F::from_elem(v).elem::<f32>())
            .collect();
        exact("dequantize (rounded to F)", &deq, &rounded)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn quantize_and_dequantize_match_f32(
        rows in 1usize..40, cols in cols_strategy(), spec in spec_strategy(),
        with_scale in any::<bool>(), seed in any::<u64>()
    ) {
        check_quantize::<f32>(rows, cols, spec, with_scale, seed)?;
    }

    #[test]
    fn quantize_and_dequantize_match_f16(
        rows in 1usize..40, cols in cols_strategy(), spec in spec_strategy(),
        with_scale in any::<bool>(), seed in any::<u64>()
    ) {
        check_quantize::<f16>(rows, cols, spec, with_scale, seed)?;
    }
}

/// The group quantizer on weights whose group scales fall outside the range where it
/// divides through the group's reciprocal (`[1e-30, 1e30]`), so it takes the plain
/// division, and within a few orders of magnitude of that range's ends: codes, scales and
/// zeros equal the reference's.
#[test]
fn quantize_extreme_scales() {
    let (rows, cols) = (6, 512);
    let spec = QuantSpec::asymmetric(4, 128).unwrap();
    for magnitude in [1e33f32, 1e31, 1e-29, 1e-32] {
        let w: Vec<f32> = random(7, rows * cols, 37)
            .into_iter()
            .map(|v| v * magnitude)
            .collect();
        let want = reference::quantize(&w, rows, cols, None, &spec);
        let q = CudaKernels::default()
            .quantize(t2::<f32>(w, [rows, cols]), None, &spec)
            .expect("valid shapes");
        let got = to_host(&q);
        assert_eq!(got.packed, want.packed, "codes at magnitude {magnitude:e}");
        assert_eq!(got.scales, want.scales, "scales at magnitude {magnitude:e}");
        assert_eq!(got.zeros, want.zeros, "zeros at magnitude {magnitude:e}");
    }
}
