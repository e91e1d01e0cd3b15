//! Bad files give clear errors that name the file (and tensor), never a panic.

mod common;

use burn::backend::NdArray;
use common::GgufWriter;
use std::path::{Path, PathBuf};
use ttq_models::{gguf::GgufFile, gguf_model::gguf_config, load_model, ModelError};

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies a fixture into a fresh temp dir so that a test can break it.
fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ttq-bad-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), minimal_tokenizer()).unwrap();
    dir
}

/// A word-level tokenizer of 64 tokens (`a`, `b`, `[UNK]`, `t3` … `t63`): within a factor
/// of two of the fixtures' vocabulary of 96, as the loader requires.
fn minimal_tokenizer() -> String {
    let mut vocab = vec![
        r#""a":0"#.to_string(),
        r#""b":1"#.into(),
        r#""[UNK]":2"#.into(),
    ];
    vocab.extend((3..64).map(|i| format!(r#""t{i}":{i}"#)));
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{{"type":"Whitespace"}},"post_processor":null,"decoder":null,
"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"[UNK]"}}}}"#,
        vocab.join(",")
    )
}

fn load_err(dir: &Path) -> ModelError {
    load_model::<B>(dir, &Default::default()).expect_err("loading must fail")
}

#[test]
fn a_good_copy_loads() {
    let dir = scratch_copy("llama", "good");
    assert!(load_model::<B>(&dir, &Default::default()).is_ok());
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = scratch_copy("llama", "trunc");
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(&dir);
        assert!(
            matches!(e, ModelError::Safetensors { .. }),
            "cut {cut}: {e}"
        );
        assert!(e.to_string().contains("model.safetensors"), "{e}");
    }
}

#[test]
fn unknown_architecture_is_named() {
    let dir = scratch_copy("llama", "arch");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"llama\"", "\"mamba\""),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::UnknownArchitecture { .. }), "{e}");
    assert!(
        e.to_string().contains("mamba") && e.to_string().contains("config.json"),
        "{e}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named() {
    let dir = scratch_copy("llama", "shape");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    let e = load_err(&dir);
    match &e {
        ModelError::TensorShape { tensor, .. } => assert!(tensor.contains("mlp"), "{e}"),
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = scratch_copy("qwen3", "missing");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::MissingTensor { .. }), "{e}");
    assert!(e.to_string().contains("model.layers.2."), "{e}");
}

#[test]
fn a_missing_tokenizer_is_reported() {
    let dir = scratch_copy("gemma3", "tok");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::Tokenizer { .. }), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn a_corrupt_gguf_file_is_an_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("ttq-bad-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let e = load_err(&p);
    assert!(matches!(e, ModelError::Gguf(_)), "{e}");
    assert!(e.to_string().contains("broken.gguf"), "{e}");
}

/// Overwrites element `index` of tensor `name` in a float32 safetensors file.
fn poke_f32(file: &Path, name: &str, index: usize, value: f32) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header[name]["dtype"], "F32", "{name}");
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = 8 + n + start + 4 * index;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn non_finite_weights_are_refused_at_load_naming_the_tensor() {
    let tensor = "model.layers.1.mlp.down_proj.weight";
    for (tag, value) in [
        ("nan", f32::NAN),
        ("inf", f32::INFINITY),
        ("ninf", f32::NEG_INFINITY),
    ] {
        let dir = scratch_copy("qwen3", &format!("nonfinite-{tag}"));
        poke_f32(&dir.join("model.safetensors"), tensor, 7, value);
        let e = load_err(&dir);
        assert!(matches!(e, ModelError::NonFiniteWeight { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(tensor) && msg.contains("index 7"), "{msg}");
    }
}

#[test]
fn absurd_config_sizes_are_errors_before_any_allocation() {
    for (from, to, key) in [
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1000000000",
            "num_hidden_layers",
        ),
        (
            "\"vocab_size\": 96",
            "\"vocab_size\": 100000000000",
            "vocab_size",
        ),
        (
            "\"hidden_size\": 32",
            "\"hidden_size\": 10000000",
            "hidden_size",
        ),
    ] {
        let dir = scratch_copy("qwen3", &format!("huge-{key}"));
        let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(cfg.contains(from), "{from}");
        std::fs::write(dir.join("config.json"), cfg.replace(from, to)).unwrap();
        let e = load_err(&dir);
        assert!(matches!(e, ModelError::Config { .. }), "{e}");
        assert!(e.to_string().contains(&format!("{key} = ")), "{e}");
    }
    // Within the limits but beyond the machine: the weights' size is checked against the
    // available memory before they are read.
    let dir = scratch_copy("qwen3", "huge-memory");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let cfg = cfg
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1000")
        .replace(
            "\"intermediate_size\": 64",
            "\"intermediate_size\": 1000000",
        )
        .replace("\"hidden_size\": 32", "\"hidden_size\": 100000")
        .replace(
            "\"full_attention\",\n    \"full_attention\"",
            "\"full_attention\"",
        );
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    let e = load_err(&dir);
    if ttq_models::resources::mem_available().is_some() {
        assert!(matches!(e, ModelError::OutOfMemory(_)), "{e}");
        assert!(e.to_string().contains("needs about"), "{e}");
    }
}

#[test]
fn a_gguf_block_count_of_four_billion_is_an_error() {
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .kv_u64("llama.block_count", 4_000_000_000)
        .kv_u32("llama.embedding_length", 8)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.feed_forward_length", 16);
    w.f32_tensor("token_embd.weight", &[8, 4], &[0.5; 32]);
    let file = GgufFile::from_bytes("/synthetic/huge.gguf".into(), w.build()).unwrap();
    let e = gguf_config(&file).unwrap_err().to_string();
    assert!(e.contains("llama.block_count = 4000000000 exceeds"), "{e}");
}

#[test]
fn devices_are_refused_as_models_and_shards() {
    let e = load_err(Path::new("/dev/zero")).to_string();
    assert!(
        e.contains("/dev/zero") && e.contains("not a regular file"),
        "{e}"
    );
    // A shard index that points outside the model directory, or at a device.
    for (tag, shard) in [("escape", "../../etc/passwd"), ("abs", "/etc/passwd")] {
        let dir = scratch_copy("qwen3", &format!("shard-{tag}"));
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            format!(r#"{{"weight_map": {{"model.embed_tokens.weight": "{shard}"}}}}"#),
        )
        .unwrap();
        let e = load_err(&dir).to_string();
        assert!(
            e.contains("outside the model directory") || e.contains("not a file name"),
            "{e}"
        );
    }
    let dir = scratch_copy("qwen3", "shard-device");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("model-00001.safetensors")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.embed_tokens.weight": "model-00001.safetensors"}}"#,
    )
    .unwrap();
    let e = load_err(&dir).to_string();
    assert!(e.contains("outside the model directory"), "{e}");
}

#[test]
fn a_tokenizer_of_another_model_is_refused() {
    let dir = scratch_copy("qwen3", "small-tokenizer");
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"a":0,"b":1,"[UNK]":2},"unk_token":"[UNK]"}}"#,
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(matches!(e, ModelError::Tokenizer { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("has 3 tokens but the model's vocabulary has 96"),
        "{e}"
    );
}
