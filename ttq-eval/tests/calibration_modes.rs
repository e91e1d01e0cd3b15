//! The two TTQ evaluation modes on a real (tiny) model: both score the same tokens; for a
//! full-precision model they agree (the KV cache changes nothing); for TTQ the prefix mode
//! uses weights calibrated on the prefix only.

use burn::backend::NdArray;
use std::path::PathBuf;
use std::sync::Arc;
use ttq_core::{methods::Ttq, CalibrationPolicy, QuantSpec, TtqScaleConfig};
use ttq_eval::{perplexity, CalibrationMode, PerplexityOptions};
use ttq_models::{load::load_hf_weights, CausalLm};

type B = NdArray<f32>;

fn model() -> CausalLm<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ttq-models/tests/fixtures/llama");
    load_hf_weights(&dir, &Default::default()).unwrap()
}

fn windows() -> Vec<Vec<u32>> {
    (0..3u32)
        .map(|w| (0..20u32).map(|i| (i * 37 + w * 11 + 5) % 96).collect())
        .collect()
}

fn run(m: &mut CausalLm<B>, mode: CalibrationMode) -> ttq_eval::PerplexityReport {
    let opts = PerplexityOptions {
        progress: false,
        score_from: 8,
        mode,
    };
    perplexity(m, &windows(), &opts).unwrap()
}

#[test]
fn full_precision_scores_agree_between_modes() {
    let mut m = model();
    let a = run(&mut m, CalibrationMode::Window);
    let b = run(&mut m, CalibrationMode::Prefix(8));
    assert_eq!(a.scored_tokens, 3 * 12);
    assert_eq!(a.scored_tokens, b.scored_tokens);
    assert!(
        (a.perplexity - b.perplexity).abs() < 1e-4 * a.perplexity,
        "{} vs {}",
        a.perplexity,
        b.perplexity
    );
}

#[test]
fn ttq_prefix_mode_uses_prefix_statistics() {
    let spec = QuantSpec::asymmetric(3, 16).unwrap();
    let ttq = Arc::new(Ttq::new(spec, TtqScaleConfig::default()).unwrap());
    let mut m = model();
    m.quantize(ttq.clone(), CalibrationPolicy::EveryCall)
        .unwrap();
    let window = run(&mut m, CalibrationMode::Window);
    m.quantize(ttq, CalibrationPolicy::FirstCall).unwrap();
    let prefix = run(&mut m, CalibrationMode::Prefix(8));
    assert_eq!(window.scored_tokens, prefix.scored_tokens);
    assert!(window.perplexity.is_finite() && prefix.perplexity.is_finite());
    assert!(
        (window.perplexity - prefix.perplexity).abs() > 1e-6 * window.perplexity,
        "statistics from 8 tokens vs 19 must give different weights"
    );
}

#[test]
fn a_prefix_past_the_scored_tokens_is_an_error() {
    let mut m = model();
    let opts = PerplexityOptions {
        progress: false,
        score_from: 4,
        mode: CalibrationMode::Prefix(8),
    };
    assert!(perplexity(&mut m, &windows(), &opts).is_err());
}
