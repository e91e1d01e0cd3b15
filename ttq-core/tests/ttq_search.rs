//! TTQ with a test-time α search: validation, the row sample, the stacked error estimate
//! against one α at a time in plain Rust, and that the device-side choice quantizes exactly
//! as plain TTQ with the chosen α.

mod common;

use common::*;
use std::sync::Arc;
use ttq_core::{
    group,
    methods::{Ttq, TtqSearch},
    CalibrationPolicy, ChannelStats, QuantError, QuantLinear, QuantMethod, QuantSpec,
    QuantizedLinear, TensorOpsKernels, TtqScaleConfig,
};

const LAMBDA: f32 = 1e-4;

fn spec(bits: u32, group: usize) -> QuantSpec {
    QuantSpec::asymmetric(bits, group).unwrap()
}

/// A layer input with outlier channels and a weight, seeded.
fn case(seed: u64, rows: usize, cols: usize, tokens: usize) -> (Vec<f32>, Vec<f32>) {
    let outliers: Vec<usize> = (0..cols).step_by(37).collect();
    let x = activations_with_outliers(&mut rng(seed), tokens, cols, &outliers, 20.0);
    let w = normal(&mut rng(seed + 100), rows * cols);
    (x, w)
}

fn codes(q: &QuantizedLinear<B>) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
    (
        q.weight
            .packed
            .clone()
            .into_data()
            .convert::<i64>()
            .into_vec()
            .unwrap(),
        vec2(q.weight.scales.clone()),
        vec2(q.weight.zeros.clone()),
    )
}

#[test]
fn bad_grids_are_errors() {
    let s = spec(4, 16);
    let too_many = [0.1; TtqSearch::MAX_GRID + 1];
    for (alphas, rows) in [
        (&[][..], 8),
        (&[0.0, -0.1][..], 8),
        (&[0.0, f32::NAN][..], 8),
        (&[0.0, 1e-5][..], 8),
        (&too_many[..], 8),
        (&[0.25][..], 0),
    ] {
        assert!(
            matches!(
                TtqSearch::new(s, alphas, LAMBDA, rows),
                Err(QuantError::InvalidScaleConfig(_))
            ),
            "{alphas:?}, {rows} rows"
        );
    }
    assert!(TtqSearch::new(s, &[0.25], -1.0, 8).is_err());
    let m = TtqSearch::new(s, &[0.5, 0.0, 0.25, 0.5], LAMBDA, 8).unwrap();
    assert_eq!(m.alphas(), &[0.0, 0.25, 0.5]);
}

#[test]
fn samples_every_step_th_row() {
    let m = TtqSearch::new(spec(4, 8), &[0.0, 0.5], LAMBDA, 3).unwrap();
    // Row r holds the value r in every column.
    let w = tensor2((0..10).flat_map(|r| [r as f32; 8]).collect(), [10, 8]);
    let picked = vec2(m.sampled_rows(&w));
    let firsts: Vec<f32> = picked.chunks(8).map(|r| r[0]).collect();
    assert_eq!(firsts, vec![0.0, 3.0, 6.0]);
    // At most `sample_rows` rows: all of them.
    let small = tensor2((0..16).map(|v| v as f32).collect(), [2, 8]);
    assert_eq!(vec2(m.sampled_rows(&small)), vec2(small));
}

/// `Σ_i (s_i + λ) Σ_r (W_ri − Ŵ_ri)²` for one α, computed one α at a time: the quantizer
/// on `W·D`, its dequantization divided by `D`, and the sums in f64 on the host.
fn reference_error(
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    alpha: f32,
    s: &QuantSpec,
) -> f64 {
    let tokens = x.len() / cols;
    let stats = ChannelStats::from_activations(tensor2(x.to_vec(), [tokens, cols]));
    let d = vec1(TtqScaleConfig::new(alpha, LAMBDA).unwrap().scale(&stats));
    let scaled: Vec<f32> = w
        .chunks(cols)
        .flat_map(|row| row.iter().zip(&d).map(|(v, di)| v * di))
        .collect();
    let q = group::quantize(tensor2(scaled, [rows, cols]), None, s).unwrap();
    let deq = vec2(group::dequantize(&q));
    let energy: Vec<f64> = (0..cols)
        .map(|i| {
            let ms = (0..tokens)
                .map(|t| f64::from(x[t * cols + i]).powi(2))
                .sum::<f64>()
                / tokens as f64;
            ms + f64::from(LAMBDA)
        })
        .collect();
    let mut err = 0.0;
    for r in 0..rows {
        for i in 0..cols {
            let what = f64::from(deq[r * cols + i]) / f64::from(d[i]);
            err += energy[i] * (f64::from(w[r * cols + i]) - what).powi(2);
        }
    }
    err
}

#[test]
fn stacked_estimate_matches_one_alpha_at_a_time() {
    let (rows, cols, tokens) = (24, 96, 40);
    let s = spec(3, 32);
    let (x, w) = case(5, rows, cols, tokens);
    // All rows sampled, so the estimate is the full sum up to one common factor.
    let m = TtqSearch::new(s, &TtqSearch::DEFAULT_ALPHAS, LAMBDA, rows).unwrap();
    let stats = ChannelStats::from_activations(tensor2(x.clone(), [tokens, cols]));
    let est = m
        .estimated_errors(&tensor2(w.clone(), [rows, cols]), &stats, &TensorOpsKernels)
        .unwrap();
    let reference: Vec<f64> = m
        .alphas()
        .iter()
        .map(|&a| reference_error(&w, &x, rows, cols, a, &s))
        .collect();
    let factor = reference[0] / f64::from(est[0]);
    for (i, (e, r)) in est.iter().zip(&reference).enumerate() {
        let rel = (f64::from(*e) * factor - r).abs() / r;
        assert!(rel < 1e-3, "alpha {}: {e} x {factor} vs {r}", m.alphas()[i]);
    }
    // The outlier channels make some α > 0 better than RTN on this estimate.
    let best = reference
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert!(m.alphas()[best] > 0.0, "{reference:?}");
    let chosen = m
        .choose_alpha(&tensor2(w, [rows, cols]), &stats, &TensorOpsKernels)
        .unwrap();
    assert_eq!(chosen, m.alphas()[best]);
}

#[test]
fn the_choice_on_the_device_quantizes_as_plain_ttq_with_the_chosen_alpha() {
    let k = TensorOpsKernels;
    for (seed, rows, cols, group) in [(1, 40, 128, 32), (2, 300, 64, 16), (3, 17, 80, 16)] {
        let tokens = 33;
        let s = spec(4, group);
        let (x, w) = case(seed, rows, cols, tokens);
        let (x, w) = (tensor2(x, [tokens, cols]), tensor2(w, [rows, cols]));
        let m = TtqSearch::new(s, &TtqSearch::DEFAULT_ALPHAS, LAMBDA, 64).unwrap();
        let stats = ChannelStats::from_activations(x.clone());
        let alpha = m.choose_alpha(&w, &stats, &k).unwrap();
        let searched = m.quantize_with_stats(&w, &stats, &k).unwrap();
        let plain = Ttq::new(s, TtqScaleConfig::new(alpha, LAMBDA).unwrap())
            .unwrap()
            .quantize_for(&w, &x, &k)
            .unwrap();
        assert_eq!(
            codes(&searched),
            codes(&plain),
            "seed {seed}, alpha {alpha}"
        );
        let (a, b) = (
            vec1(searched.input_scale.unwrap()),
            vec1(plain.input_scale.unwrap()),
        );
        assert_eq!(a, b, "seed {seed}");
    }
}

#[test]
fn a_one_alpha_grid_is_plain_ttq_in_a_layer() {
    let (rows, cols, tokens) = (12, 64, 9);
    let s = spec(3, 16);
    let (x, w) = case(9, rows, cols, tokens);
    let x = tensor2(x, [tokens, cols]);
    let mut a = QuantLinear::new(tensor2(w.clone(), [rows, cols]), None).unwrap();
    let mut b = QuantLinear::new(tensor2(w, [rows, cols]), None).unwrap();
    let search: Arc<dyn QuantMethod<B>> = Arc::new(TtqSearch::new(s, &[0.25], LAMBDA, 4).unwrap());
    let ttq: Arc<dyn QuantMethod<B>> =
        Arc::new(Ttq::new(s, TtqScaleConfig::new(0.25, LAMBDA).unwrap()).unwrap());
    a.set_method(search, CalibrationPolicy::EveryCall, None)
        .unwrap();
    b.set_method(ttq, CalibrationPolicy::EveryCall, None)
        .unwrap();
    assert_eq!(
        vec2(a.forward(x.clone()).unwrap()),
        vec2(b.forward(x).unwrap())
    );
}

#[test]
fn the_search_is_no_worse_than_rtn_or_the_papers_alpha_on_outlier_layers() {
    // The true output error ||x Wᵀ − x Ŵᵀ|| on the prompt itself, not the estimate.
    let k = TensorOpsKernels;
    let (rows, cols, tokens) = (64, 256, 96);
    for seed in [21, 22, 23] {
        let s = spec(3, 64);
        let (xv, wv) = case(seed, rows, cols, tokens);
        let (x, w) = (tensor2(xv, [tokens, cols]), tensor2(wv, [rows, cols]));
        let y = vec2(x.clone().matmul(w.clone().transpose()));
        let err = |q: QuantizedLinear<B>| diff_norm(&y, &vec2(q.forward(x.clone(), &k).unwrap()));
        let stats = ChannelStats::from_activations(x.clone());
        let m = TtqSearch::new(s, &TtqSearch::DEFAULT_ALPHAS, LAMBDA, rows).unwrap();
        let searched = err(m.quantize_with_stats(&w, &stats, &k).unwrap());
        let at = |a: f32| {
            let t = Ttq::new(s, TtqScaleConfig::new(a, LAMBDA).unwrap()).unwrap();
            err(t.quantize_for(&w, &x, &k).unwrap())
        };
        let (rtn, paper) = (at(0.0), at(0.5));
        assert!(
            searched < 0.9 * rtn && searched <= paper * 1.05,
            "seed {seed}: search {searched}, RTN {rtn}, alpha 0.5 {paper}"
        );
    }
}

#[test]
fn realize_checks_the_activation_width() {
    let m = TtqSearch::with_defaults(spec(4, 16));
    let w = tensor2(vec![0.5; 8 * 32], [8, 32]);
    let prepared = match QuantMethod::<B>::prepare(&m, &w, None, &TensorOpsKernels).unwrap() {
        ttq_core::Prepared::Dynamic(d) => d,
        ttq_core::Prepared::Fixed(_) => panic!("TTQ-search is a test-time method"),
    };
    let x = tensor2(vec![1.0; 3 * 16], [3, 16]);
    let err = m.realize(&prepared, &x, &TensorOpsKernels).unwrap_err();
    assert!(matches!(err, QuantError::ShapeMismatch { .. }), "{err}");
}
