//! Logits of the Rust models against logits computed by Hugging Face transformers for the
//! same tiny random models (fixtures made by `scripts/make_fixtures.py`), full forward and
//! incremental decoding with the KV cache.

use burn::backend::NdArray;
use safetensors::SafeTensors;
use std::path::PathBuf;
use ttq_models::{load::load_hf_weights, model::Logits, CausalLm};

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Expected {
    ids: Vec<u32>,
    logits: Vec<f32>,
    incremental: Vec<f32>,
    vocab: usize,
}

fn expected(name: &str) -> Expected {
    let bytes = std::fs::read(fixture(name).join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let ids = ids
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
        .collect();
    let f32s = |n: &str| -> (Vec<f32>, Vec<usize>) {
        let t = st.tensor(n).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v, t.shape().to_vec())
    };
    let (logits, shape) = f32s("logits");
    let (incremental, _) = f32s("logits_incremental");
    Expected {
        ids,
        logits,
        incremental,
        vocab: shape[2],
    }
}

fn load(name: &str) -> CausalLm<B> {
    load_hf_weights(&fixture(name), &Default::default()).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(name: &str) {
    let exp = expected(name);
    let mut model = load(name);
    let mut cache = model.new_cache();
    let full = model.forward(&exp.ids, &mut cache, Logits::All).unwrap();
    let full: Vec<f32> = full.into_data().into_vec().unwrap();
    let d = max_abs_diff(&full, &exp.logits);
    assert!(d < 1e-4, "{name}: full forward max abs diff {d}");

    // Prefill 8 tokens, then one token at a time.
    let mut cache = model.new_cache();
    model
        .forward(&exp.ids[..8], &mut cache, Logits::All)
        .unwrap();
    let mut rows = Vec::new();
    for &id in &exp.ids[8..] {
        let l = model.forward(&[id], &mut cache, Logits::Last).unwrap();
        rows.extend(l.into_data().into_vec::<f32>().unwrap());
    }
    assert_eq!(rows.len(), 4 * exp.vocab);
    let d = max_abs_diff(&rows, &exp.incremental);
    assert!(d < 1e-4, "{name}: incremental decode max abs diff {d}");
    let d = max_abs_diff(&rows, &full[8 * exp.vocab..]);
    assert!(
        d < 1e-4,
        "{name}: incremental vs full forward max abs diff {d}"
    );
}

#[test]
fn opt_matches_transformers() {
    check("opt");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3");
}
