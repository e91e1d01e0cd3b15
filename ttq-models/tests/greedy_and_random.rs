//! `greedy_timed` (the decode loop of `ttq bench decode`) against argmaxes of full forward
//! passes, and random-weight models built from a configuration alone.

use burn::backend::NdArray;
use std::path::PathBuf;
use ttq_models::{
    generate::greedy_timed, hf_config::parse_config, load::load_hf_weights, model::Logits, CausalLm,
};

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Each greedy token (decoded with the KV cache) is the argmax of a fresh full forward pass
/// over the prompt and the tokens before it.
#[test]
fn greedy_tokens_are_argmaxes_of_full_forwards() {
    for name in ["llama", "qwen3", "gemma3", "opt"] {
        let mut model: CausalLm<B> = load_hf_weights(&fixture(name), &Default::default()).unwrap();
        let prompt = [1u32, 5, 9, 2, 7];
        let (ids, stats) = greedy_timed(&mut model, &prompt, 4).unwrap();
        assert_eq!(ids.len(), 4, "{name}");
        assert_eq!(stats.prompt_tokens, 5);
        assert_eq!(stats.generated_tokens, 4, "{name}: every generated token");
        // Three decode steps ran after the prefill: the rate counts those, not four.
        let rate = stats.decode_tokens_per_second();
        let expected = 3.0 / stats.decode_seconds.max(1e-9);
        assert!(
            (rate - expected).abs() <= 1e-9 * expected,
            "{name}: {rate} vs {expected}"
        );
        let mut seq = prompt.to_vec();
        for (step, &id) in ids.iter().enumerate() {
            let mut cache = model.new_cache();
            let logits = model.forward(&seq, &mut cache, Logits::Last).unwrap();
            let row = logits
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap();
            assert_eq!(id, argmax(&row), "{name}: step {step}");
            seq.push(id);
        }
    }
}

#[test]
fn greedy_rejects_empty_prompts_zero_tokens_and_overlong_runs() {
    let mut model: CausalLm<B> = load_hf_weights(&fixture("llama"), &Default::default()).unwrap();
    assert!(greedy_timed(&mut model, &[], 3).is_err());
    assert!(greedy_timed(&mut model, &[1], 0).is_err());
    let limit = model.config().max_positions;
    let e = greedy_timed(&mut model, &[1], limit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("context"), "{e}");
}

/// A random model has the configured shapes everywhere: it runs, gives `[1, T, vocab]`
/// finite logits, and has as many quantizable parameters as the configuration implies.
#[test]
fn random_models_follow_their_configuration() {
    for name in ["llama", "qwen3", "gemma3", "opt"] {
        let config = parse_config(&fixture(name).join("config.json")).unwrap();
        let c = config.clone();
        let mut model = CausalLm::<B>::random(config, &Default::default()).unwrap();
        let mut cache = model.new_cache();
        let logits = model.forward(&[1, 2, 3], &mut cache, Logits::All).unwrap();
        assert_eq!(logits.dims(), [1, 3, c.vocab], "{name}");
        let v = logits
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
        let gated = usize::from(c.mlp != ttq_models::config::MlpKind::Relu);
        let per_layer = c.hidden * (c.q_dim() + 2 * c.kv_dim())
            + c.q_dim() * c.hidden
            + (1 + gated) * c.intermediate * c.hidden
            + c.hidden * c.intermediate;
        assert_eq!(
            model.quantizable_parameters(),
            c.layers * per_layer,
            "{name}"
        );
    }
}
