//! AWQ, GPTQ and TTQ + low-rank against RTN and TTQ, on layers with known structure.

mod common;

use burn::tensor::Tensor;
use common::*;
use ttq_core::{
    methods::{Awq, AwqConfig, Gptq, GptqConfig, Rtn, Ttq, TtqLowRank},
    CalibrationStats, Prepared, QuantError, QuantMethod, QuantSpec, QuantizedLinear,
    TensorOpsKernels, TtqScaleConfig,
};

/// Activations `[tokens, d]` whose channels share a common factor (so that `XᵀX` is far
/// from diagonal, which is what GPTQ exploits) and where a few channels are 10–30× larger
/// than the rest (what AWQ and TTQ exploit).
fn correlated_outlier_inputs(seed: u64, tokens: usize, d: usize) -> Tensor<B, 2> {
    let mut r = rng(seed);
    let common = normal(&mut r, tokens);
    let noise = normal(&mut r, tokens * d);
    let mut x = vec![0f32; tokens * d];
    for t in 0..tokens {
        for i in 0..d {
            let outlier = if i % 16 == 3 {
                10.0 + (i % 3) as f32 * 10.0
            } else {
                1.0
            };
            x[t * d + i] = outlier * (0.8 * common[t] + 0.6 * noise[t * d + i]);
        }
    }
    tensor2(x, [tokens, d])
}

fn weight(seed: u64, rows: usize, cols: usize) -> Tensor<B, 2> {
    tensor2(normal(&mut rng(seed), rows * cols), [rows, cols])
}

fn fixed<M: QuantMethod<B>>(
    m: &M,
    w: &Tensor<B, 2>,
    calib: Option<&CalibrationStats<B>>,
) -> QuantizedLinear<B> {
    match m.prepare(w, calib, &TensorOpsKernels).unwrap() {
        Prepared::Fixed(q) => q,
        Prepared::Dynamic(_) => panic!("{} should be static", m.name()),
    }
}

fn calib_error(q: &QuantizedLinear<B>, w: &Tensor<B, 2>, c: &CalibrationStats<B>) -> f64 {
    c.output_error(w.clone() - q.effective_weight(&TensorOpsKernels))
}

#[test]
fn awq_with_exponent_zero_and_no_clipping_is_rtn() {
    let spec = QuantSpec::asymmetric(4, 32).unwrap();
    let w = weight(1, 24, 96);
    let x = correlated_outlier_inputs(2, 64, 96);
    let c = CalibrationStats::from_activations(x.clone());
    let cfg = AwqConfig {
        fixed_alpha: Some(0.0),
        clip: false,
        ..AwqConfig::default()
    };
    let awq = fixed(&Awq::new(spec, cfg).unwrap(), &w, Some(&c));
    let rtn = fixed(&Rtn::new(spec), &w, None);
    let y_awq = vec2(awq.forward(x.clone(), &TensorOpsKernels).unwrap());
    let y_rtn = vec2(rtn.forward(x, &TensorOpsKernels).unwrap());
    assert_eq!(y_awq, y_rtn);
}

#[test]
fn awq_search_lowers_the_calibration_error_of_rtn() {
    let spec = QuantSpec::asymmetric(3, 32).unwrap();
    let w = weight(3, 32, 128);
    let c = CalibrationStats::from_activations(correlated_outlier_inputs(4, 256, 128));
    let rtn = calib_error(&fixed(&Rtn::new(spec), &w, None), &w, &c);
    let no_clip = AwqConfig {
        clip: false,
        ..AwqConfig::default()
    };
    // a = 0 is on the grid, so the scale search can only improve on RTN.
    let scaled = calib_error(
        &fixed(&Awq::new(spec, no_clip).unwrap(), &w, Some(&c)),
        &w,
        &c,
    );
    let full = calib_error(
        &fixed(&Awq::new(spec, AwqConfig::default()).unwrap(), &w, Some(&c)),
        &w,
        &c,
    );
    assert!(scaled < 0.8 * rtn, "AWQ scales {scaled} vs RTN {rtn}");
    assert!(full < rtn, "AWQ with clipping {full} vs RTN {rtn}");
}

#[test]
fn gptq_lowers_the_calibration_error_of_rtn_at_3_bits() {
    let w = weight(5, 48, 128);
    let c = CalibrationStats::from_activations(correlated_outlier_inputs(6, 512, 128));
    for group in [32, 128] {
        let spec = QuantSpec::asymmetric(3, group).unwrap();
        let rtn = calib_error(&fixed(&Rtn::new(spec), &w, None), &w, &c);
        for act_order in [false, true] {
            let cfg = GptqConfig {
                act_order,
                block: 48, // not a multiple of the group: exercises both boundaries
                ..GptqConfig::default()
            };
            let gptq = calib_error(&fixed(&Gptq::new(spec, cfg).unwrap(), &w, Some(&c)), &w, &c);
            assert!(
                gptq < 0.7 * rtn,
                "g{group} act_order {act_order}: GPTQ {gptq} vs RTN {rtn}"
            );
        }
    }
}

#[test]
fn gptq_with_uncorrelated_equal_inputs_is_rtn() {
    // XᵀX = 4·I: the inverse Hessian is diagonal, so no error is propagated and every
    // column is rounded on its own, exactly as RTN does.
    let d = 40;
    let mut x = vec![0f32; 4 * d * d];
    for i in 0..d {
        for k in 0..4 {
            x[(4 * i + k) * d + i] = if k % 2 == 0 { 1.0 } else { -1.0 };
        }
    }
    let x = tensor2(x, [4 * d, d]);
    let c = CalibrationStats::from_activations(x.clone());
    let w = weight(7, 12, d);
    let spec = QuantSpec::asymmetric(3, 8).unwrap();
    let gptq = fixed(
        &Gptq::new(spec, GptqConfig::default()).unwrap(),
        &w,
        Some(&c),
    );
    let rtn = fixed(&Rtn::new(spec), &w, None);
    let k = &TensorOpsKernels;
    assert_eq!(
        vec2(gptq.effective_weight(k)),
        vec2(rtn.effective_weight(k))
    );
}

#[test]
fn gptq_is_deterministic() {
    let w = weight(8, 33, 64);
    let c = CalibrationStats::from_activations(correlated_outlier_inputs(9, 100, 64));
    let spec = QuantSpec::asymmetric(4, 16).unwrap();
    let m = Gptq::new(spec, GptqConfig::default()).unwrap();
    let a = vec2(fixed(&m, &w, Some(&c)).effective_weight(&TensorOpsKernels));
    let b = vec2(fixed(&m, &w, Some(&c)).effective_weight(&TensorOpsKernels));
    assert_eq!(a, b);
}

#[test]
fn calibration_methods_refuse_to_run_without_statistics() {
    let spec = QuantSpec::asymmetric(4, 8).unwrap();
    let w = weight(10, 4, 16);
    let awq = Awq::new(spec, AwqConfig::default()).unwrap();
    let gptq = Gptq::new(spec, GptqConfig::default()).unwrap();
    for m in [&awq as &dyn QuantMethod<B>, &gptq as &dyn QuantMethod<B>] {
        let err = m.prepare(&w, None, &TensorOpsKernels).unwrap_err();
        assert!(matches!(err, QuantError::Method { .. }), "{err}");
        let other = CalibrationStats::from_activations(tensor2(vec![1.0; 24], [2, 12]));
        let err = m.prepare(&w, Some(&other), &TensorOpsKernels).unwrap_err();
        assert!(matches!(err, QuantError::ShapeMismatch { .. }), "{err}");
    }
    assert!(Gptq::new(
        spec,
        GptqConfig {
            damp: 0.0,
            ..GptqConfig::default()
        }
    )
    .is_err());
    assert!(Awq::new(
        spec,
        AwqConfig {
            grid: 0,
            ..AwqConfig::default()
        }
    )
    .is_err());
}

fn realized<M: QuantMethod<B>>(m: &M, w: &Tensor<B, 2>, x: &Tensor<B, 2>) -> QuantizedLinear<B> {
    match m.prepare(w, None, &TensorOpsKernels).unwrap() {
        Prepared::Dynamic(d) => m.realize(&d, x, &TensorOpsKernels).unwrap(),
        Prepared::Fixed(_) => panic!("{} should be dynamic", m.name()),
    }
}

#[test]
fn ttq_low_rank_with_rank_zero_is_ttq() {
    let spec = QuantSpec::asymmetric(4, 16).unwrap();
    let ttq = Ttq::new(spec, TtqScaleConfig::new(0.25, 1e-4).unwrap()).unwrap();
    let w = weight(11, 20, 48);
    let x = correlated_outlier_inputs(12, 30, 48);
    let lr = realized(&TtqLowRank::new(ttq, 0), &w, &x);
    assert!(lr.low_rank.is_none());
    let plain = realized(&ttq, &w, &x);
    assert_eq!(
        vec2(lr.forward(x.clone(), &TensorOpsKernels).unwrap()),
        vec2(plain.forward(x, &TensorOpsKernels).unwrap())
    );
}

#[test]
fn low_rank_factors_recover_a_low_rank_weight_and_help_ttq() {
    // W = U Vᵀ (rank 3, large) + small noise.
    let (rows, cols, r) = (40, 64, 3);
    let u = normal(&mut rng(13), rows * r);
    let v = normal(&mut rng(14), cols * r);
    let noise = normal(&mut rng(15), rows * cols);
    let w: Vec<f32> = (0..rows * cols)
        .map(|k| {
            let (i, j) = (k / cols, k % cols);
            (0..r)
                .map(|q| 3.0 * u[i * r + q] * v[j * r + q])
                .sum::<f32>()
                + 0.05 * noise[k]
        })
        .collect();
    let w = tensor2(w, [rows, cols]);
    let spec = QuantSpec::asymmetric(3, 16).unwrap();
    let ttq = Ttq::new(spec, TtqScaleConfig::new(0.25, 1e-4).unwrap()).unwrap();
    let m = TtqLowRank::new(ttq, r);
    let f = m.factors::<B>(&w, None).unwrap().unwrap();
    assert_eq!(f.rank(), r);
    assert_eq!(f.f32_bytes(), 4 * r * (rows + cols));
    let residual = w.clone() - f.b.clone().matmul(f.a.clone());
    let rel = vec2(residual.clone().square().sum().reshape([1, 1]))[0]
        / vec2(w.clone().square().sum().reshape([1, 1]))[0];
    assert!(rel < 1e-3, "residual energy {rel}");

    let x = correlated_outlier_inputs(16, 64, cols);
    let y = vec2(x.clone().matmul(w.clone().transpose()));
    let err = |q: &QuantizedLinear<B>| -> f32 {
        let yq = vec2(q.forward(x.clone(), &TensorOpsKernels).unwrap());
        y.iter().zip(&yq).map(|(a, b)| (a - b).powi(2)).sum::<f32>()
    };
    let with_lr = err(&realized(&m, &w, &x));
    let without = err(&realized(&ttq, &w, &x));
    assert!(with_lr < 0.1 * without, "TTQ+LR {with_lr} vs TTQ {without}");
}

/// The activation-weighted factors minimise the error that reaches the outputs: with
/// calibration inputs whose channels differ 10–30× in scale, the weighted SVD leaves a
/// smaller calibration output error `‖(W − BA) Xᵀ‖²` than the plain SVD, and the plain SVD a
/// smaller plain residual `‖W − BA‖²` than the weighted one (each is optimal for its own
/// norm, Eckart–Young).
#[test]
fn weighted_low_rank_factors_minimise_the_output_error() {
    let (rows, cols, r) = (32, 64, 4);
    let w = weight(31, rows, cols);
    let x = correlated_outlier_inputs(32, 256, cols);
    let c = CalibrationStats::from_activations(x);
    let spec = QuantSpec::asymmetric(4, 16).unwrap();
    let ttq = Ttq::new(spec, TtqScaleConfig::new(0.25, 1e-4).unwrap()).unwrap();
    let plain = TtqLowRank::new(ttq, r);
    let weighted = TtqLowRank {
        weighted: true,
        ..plain
    };
    let residual = |m: &TtqLowRank| {
        let f = m.factors::<B>(&w, Some(&c)).unwrap().unwrap();
        assert_eq!(f.rank(), r);
        w.clone() - f.b.matmul(f.a)
    };
    let (e_plain, e_weighted) = (residual(&plain), residual(&weighted));
    let frob = |e: &Tensor<B, 2>| vec2(e.clone().square().sum().reshape([1, 1]))[0];
    assert!(
        c.output_error(e_weighted.clone()) < 0.9 * c.output_error(e_plain.clone()),
        "output error: weighted {} vs plain {}",
        c.output_error(e_weighted.clone()),
        c.output_error(e_plain.clone())
    );
    assert!(frob(&e_plain) < frob(&e_weighted));
    // Weighting without statistics is an error, not a silent plain SVD.
    assert!(weighted.factors::<B>(&w, None).is_err());
}
