//! Property-based fuzzing of the parsers that read untrusted files: the GGUF reader (header,
//! metadata, tensor infos, the model config it implies and its tokenizer), the safetensors
//! reader, and the Hugging Face `config.json` parser. Random bytes and mutations of valid
//! files (flipped bytes, truncations, spliced counts) must give `Ok` or `Err`, never a panic,
//! and never an allocation sized by a corrupt count (the parsers check counts against the
//! bytes left before allocating; a test that allocated terabytes would abort here).
//! Sized to run in a few seconds.

mod common;

use common::GgufWriter;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use ttq_models::{
    gguf::{tokenizer_from_gguf, GgufFile},
    gguf_model::gguf_config,
    hf_config::parse_config_text,
    source::{SafetensorsSource, TensorSource},
};

/// A small valid Llama GGUF: config metadata, a vocabulary and a few tensors.
fn valid_gguf() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", 8)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.feed_forward_length", 16)
        .kv_u32("llama.context_length", 64)
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "c", "ab"])
        .kv_str_array("tokenizer.ggml.merges", &["a b"])
        .kv_i32_array("tokenizer.ggml.token_type", &[1, 1, 1, 1]);
    w.f32_tensor("token_embd.weight", &[8, 4], &[0.25; 32]);
    w.f32_tensor("blk.0.attn_norm.weight", &[8], &[1.0; 8]);
    w.build()
}

/// A small valid safetensors file with f32, f16 and bf16 tensors.
fn valid_safetensors() -> Vec<u8> {
    let header = r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[32,36]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend((0..36u8).map(|i| i.wrapping_mul(7)));
    out
}

fn valid_config() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3/config.json"),
    )
    .unwrap()
}

/// Applies `edits` (position, new byte) and then cuts the file at `cut` (a fraction).
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<f64>) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
    }
    if let Some(f) = cut {
        let n = (bytes.len() as f64 * f) as usize;
        bytes.truncate(n);
    }
    bytes
}

/// Writes a huge little-endian count at `at` (an 8-byte field), as a corrupt header would.
fn splice_count(mut bytes: Vec<u8>, at: usize, value: u64) -> Vec<u8> {
    if bytes.len() >= 8 {
        let i = at % (bytes.len() - 7);
        bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// Everything the model loader does with a GGUF file short of building the network.
fn exercise_gguf(bytes: Vec<u8>) {
    if let Ok(file) = GgufFile::from_bytes("/fuzz/model.gguf".into(), bytes) {
        let _ = gguf_config(&file);
        let _ = tokenizer_from_gguf(&file);
        let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
        for name in names {
            // Dequantizing allocates what the (validated) tensor info says, which the
            // header check bounded by the file's size.
            let _ = file.dequantize(&name);
        }
    }
}

fn exercise_safetensors(bytes: Vec<u8>) {
    let path = PathBuf::from("/fuzz/model.safetensors");
    if let Ok(src) = SafetensorsSource::from_files(Path::new("/fuzz"), vec![(path, bytes)]) {
        let names: Vec<String> = src.names().map(str::to_string).collect();
        for n in names {
            let _ = src.get(&n);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn gguf_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"GGUF\x03\x00\x00\x00");
        }
        exercise_gguf(bytes);
    }

    #[test]
    fn gguf_mutated_valid_file(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in prop::option::of(0.0f64..1.0),
        count in prop::option::of((any::<usize>(), prop_oneof![Just(u64::MAX), Just(1u64 << 40), Just(4_000_000_000u64), any::<u64>()])),
    ) {
        let mut bytes = mutate(valid_gguf(), &edits, cut);
        if let Some((at, v)) = count {
            bytes = splice_count(bytes, at, v);
        }
        exercise_gguf(bytes);
    }

    #[test]
    fn safetensors_random_and_mutated(
        random in prop::collection::vec(any::<u8>(), 0..256),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in prop::option::of(0.0f64..1.0),
        header_len in prop::option::of(any::<u64>()),
    ) {
        exercise_safetensors(random);
        let mut bytes = mutate(valid_safetensors(), &edits, cut);
        if let (Some(n), true) = (header_len, bytes.len() >= 8) {
            bytes[..8].copy_from_slice(&n.to_le_bytes());
        }
        exercise_safetensors(bytes);
    }

    #[test]
    fn config_random_and_mutated(
        random in prop::collection::vec(any::<u8>(), 0..256),
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        number in prop_oneof![
            Just("1e9".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551615".to_string()),
            Just("1000000000".to_string()),
            Just("0".to_string()),
            any::<u64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:e}")),
        ],
        key in 0usize..8,
    ) {
        let path = Path::new("/fuzz/config.json");
        let _ = parse_config_text(&random, path);
        let _ = parse_config_text(&mutate(valid_config(), &edits, None), path);
        // A numeric field set to an extreme value must be accepted or refused, not
        // allocated: `num_hidden_layers: 1000000000` is a clear error.
        let keys = ["num_hidden_layers", "hidden_size", "vocab_size", "head_dim",
            "num_attention_heads", "num_key_value_heads", "intermediate_size", "sliding_window"];
        let mut v: serde_json::Value = serde_json::from_slice(&valid_config()).unwrap();
        let n: serde_json::Value = serde_json::from_str(&number).unwrap_or(serde_json::Value::Null);
        v[keys[key]] = n;
        if keys[key] == "num_hidden_layers" {
            v.as_object_mut().unwrap().remove("layer_types");
        }
        let _ = parse_config_text(v.to_string().as_bytes(), path);
    }
}

#[test]
fn the_seed_files_are_valid() {
    // The mutations start from files that parse, so they explore the parsers' depths.
    let file = GgufFile::from_bytes("/fuzz/model.gguf".into(), valid_gguf()).unwrap();
    assert!(gguf_config(&file).is_ok());
    let src = SafetensorsSource::from_files(
        Path::new("/fuzz"),
        vec![("/fuzz/m.safetensors".into(), valid_safetensors())],
    )
    .unwrap();
    assert_eq!(src.get("a").unwrap().data.len(), 6);
    assert!(parse_config_text(&valid_config(), Path::new("/fuzz/config.json")).is_ok());
}
