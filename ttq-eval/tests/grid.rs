//! The grid runner on a real (tiny) model: calibration statistics for every layer, every
//! method scored on the same tokens, and calibration-based methods that actually use their
//! calibration.

use burn::backend::NdArray;
use std::path::PathBuf;
use ttq_eval::{
    collect_statistics, run_grid, CalibrationSampling, Dataset, EvalText, GridConfig, MethodSpec,
};
use ttq_models::{load::load_hf_weights, CausalLm};

type B = NdArray<f32>;

fn model() -> CausalLm<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ttq-models/tests/fixtures/llama");
    load_hf_weights(&dir, &Default::default()).unwrap()
}

/// A synthetic "text": 2 evaluation windows of 16 tokens and 200 held-out tokens.
fn text() -> EvalText {
    let tokens: Vec<u32> = (0..232u32).map(|i| (i * 37 + 5) % 96).collect();
    EvalText {
        dataset: Dataset::TextFile("synthetic".into()),
        windows: vec![tokens[..16].to_vec(), tokens[16..32].to_vec()],
        held_out: tokens[32..].to_vec(),
    }
}

#[test]
fn calibration_observes_every_linear_on_every_token() {
    let mut m = model();
    let wins: Vec<Vec<u32>> = vec![(0..10).collect(), (20..30).collect()];
    let stats = collect_statistics(&mut m, &wins, false).unwrap();
    let names: Vec<String> = m.linears_mut().into_iter().map(|(n, _)| n).collect();
    assert_eq!(stats.len(), names.len());
    for n in &names {
        assert_eq!(stats[n].tokens, 20, "{n}");
    }
    // Observation stops afterwards.
    assert!(m.take_calibration().is_empty());
}

#[test]
fn grid_scores_every_method_on_the_same_tokens() {
    let mut m = model();
    let methods =
        MethodSpec::parse_list("fp,rtn:w3:g16,awq:w3:g16,gptq:w3:g16,ttq:w3:g16:a0.25,ttqs:w3:g16")
            .unwrap();
    let cfg = GridConfig {
        methods,
        calibrate_on: vec![0],
        sampling: CalibrationSampling {
            samples: 8,
            len: 16,
            seed: 3,
        },
        prefix: Some(6),
        bos: None,
        progress: false,
    };
    let mut seen = 0;
    let records = run_grid(&mut m, &[text()], &cfg, &mut |_| seen += 1).unwrap();
    // fp, rtn, awq, gptq once each; ttq and ttqs in window and prefix modes.
    assert_eq!(records.len(), 8);
    assert_eq!(seen, 8);
    for r in &records {
        assert_eq!(r.scored_tokens, 2 * (16 - 6), "{}", r.method);
        // The per-window NLLs are the record's perplexity, window by window.
        assert_eq!(
            (r.window_nll.len(), r.window_tokens),
            (2, 16 - 6),
            "{}",
            r.method
        );
        let from_windows = (r.window_nll.iter().sum::<f64>() / r.scored_tokens as f64).exp();
        assert!(
            (from_windows - r.perplexity).abs() < 1e-9 * r.perplexity,
            "{}",
            r.method
        );
        assert!(
            r.perplexity.is_finite() && r.perplexity > 1.0,
            "{}",
            r.method
        );
    }
    let calibrated: Vec<_> = records.iter().filter(|r| r.calibration.is_some()).collect();
    assert_eq!(calibrated.len(), 2);
    let modes: Vec<&str> = records.iter().map(|r| r.mode.as_str()).collect();
    assert!(modes.contains(&"window") && modes.contains(&"prefix-6"));
    // The grid leaves the model in full precision.
    assert!(m.linears_mut().iter().all(|(_, l)| l.method_name() == "fp"));
}

#[test]
fn calibration_that_does_not_fit_the_held_out_tokens_is_a_clear_error() {
    let mut m = model();
    let cfg = GridConfig {
        methods: MethodSpec::parse_list("gptq:w4:g16").unwrap(),
        calibrate_on: vec![0],
        sampling: CalibrationSampling {
            samples: 1,
            len: 500,
            seed: 0,
        },
        prefix: None,
        bos: None,
        progress: false,
    };
    let err = run_grid(&mut m, &[text()], &cfg, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("after the evaluated windows"),
        "{err}"
    );
}
