//! Bad files give clear errors that name the file (and tensor), never a panic.

use burn::backend::NdArray;
use std::path::{Path, PathBuf};
use ttq_models::{load_model, ModelError};

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

fn minimal_tokenizer() -> &'static str {
    r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"a":0,"b":1,"[UNK]":2},"unk_token":"[UNK]"}}"#
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
