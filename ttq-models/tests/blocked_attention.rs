//! Attention in blocks of query rows (what long prompts use, so that no `tokens × tokens`
//! score matrix is built) gives the logits of the single-matrix path, for every family,
//! with and without cached positions, and for Gemma 3's sliding-window layers.

use burn::backend::NdArray;
use std::path::PathBuf;
use ttq_models::{
    load::load_hf_weights,
    model::{AttentionBlocking, Logits},
    nn::attention::use_blocked_attention,
    CausalLm,
};

type B = NdArray<f32>;

fn load(name: &str) -> CausalLm<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    load_hf_weights(&dir, &Default::default()).unwrap()
}

/// Token ids `< 96` (the fixtures' vocabulary), deterministic.
fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 96).collect()
}

fn logits(model: &mut CausalLm<B>, chunks: &[&[u32]]) -> Vec<f32> {
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    for c in chunks {
        let l = model.forward(c, &mut cache, Logits::All).unwrap();
        out.extend(l.into_data().into_vec::<f32>().unwrap());
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn blocked_attention_matches_the_single_matrix_path() {
    let tokens = ids(60);
    for name in ["opt", "llama", "qwen3", "gemma3"] {
        let mut model = load(name);
        model.set_attention_blocking(AttentionBlocking::Never);
        let whole = logits(&mut model, &[&tokens]);
        for rows in [1, 7, 16, 59, 64] {
            model.set_attention_blocking(AttentionBlocking::Always(rows));
            let blocked = logits(&mut model, &[&tokens]);
            let d = max_abs_diff(&whole, &blocked);
            assert!(d < 1e-5, "{name}, blocks of {rows}: max abs diff {d}");
            // After cached positions: a prompt of 13, then the rest in blocks.
            let split = logits(&mut model, &[&tokens[..13], &tokens[13..]]);
            let d = max_abs_diff(&whole, &split);
            assert!(
                d < 1e-5,
                "{name}, cached + blocks of {rows}: max abs diff {d}"
            );
        }
        assert!(whole.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn long_prompts_take_the_blocked_path_and_short_ones_do_not() {
    // Gemma 3 270M: 4 query heads.
    assert!(!use_blocked_attention(4, 1, 32_768));
    assert!(!use_blocked_attention(4, 512, 512));
    assert!(!use_blocked_attention(4, 2048, 2048));
    assert!(use_blocked_attention(4, 17_401, 17_408));
    assert!(use_blocked_attention(usize::MAX, 1 << 20, 1 << 20));
}
