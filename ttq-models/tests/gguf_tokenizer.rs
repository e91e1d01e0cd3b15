//! Tokenizer construction from synthetic GGUF vocabularies.

mod common;

use std::path::PathBuf;

use common::GgufWriter;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use ttq_models::gguf::{tokenizer_from_gguf, GgufError, GgufFile};

/// A byte-level BPE vocabulary: the 256 byte symbols, a few merges and two control tokens.
fn tiny_vocab(w: &mut GgufWriter, add_bos: bool, pre: &str) {
    let mut alphabet: Vec<String> = ByteLevel::alphabet()
        .into_iter()
        .map(String::from)
        .collect();
    alphabet.sort();
    let mut tokens: Vec<String> = vec!["<|bos|>".into(), "<|eos|>".into()];
    tokens.extend(alphabet);
    tokens.extend(["he", "ll", "hell", "Ġhell", "12"].map(String::from));
    let mut types = vec![3, 3];
    types.resize(tokens.len(), 1);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    w.kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", pre)
        .kv_str_array("tokenizer.ggml.tokens", &refs)
        .kv_str_array(
            "tokenizer.ggml.merges",
            &["h e", "l l", "he ll", "Ġ hell", "1 2"],
        )
        .kv_i32_array("tokenizer.ggml.token_type", &types)
        .kv_u32("tokenizer.ggml.bos_token_id", 0)
        .kv_u32("tokenizer.ggml.eos_token_id", 1)
        .kv_bool("tokenizer.ggml.add_bos_token", add_bos);
}

fn open(w: &GgufWriter) -> GgufFile {
    GgufFile::from_bytes(PathBuf::from("/synthetic/tok.gguf"), w.build()).unwrap()
}

fn id_of(f: &GgufFile, tok: &str) -> u32 {
    f.meta_str_array("tokenizer.ggml.tokens")
        .unwrap()
        .iter()
        .position(|t| t == tok)
        .unwrap() as u32
}

#[test]
fn builds_byte_level_bpe() {
    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, false, "gpt2");
    let f = open(&w);
    let tok = tokenizer_from_gguf(&f).unwrap();
    let enc = tok.encode("hell hello<|eos|>", true).unwrap();
    let want = [
        id_of(&f, "hell"),
        id_of(&f, "Ġhell"),
        id_of(&f, "o"),
        1, // control token matched as a special token
    ];
    assert_eq!(enc.get_ids(), want);
    assert_eq!(
        tok.decode(enc.get_ids(), false).unwrap(),
        "hell hello<|eos|>"
    );
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hell hello");
    // Bytes outside the merges still round-trip.
    let text = "naïve ✓ \n\t 2024";
    let enc = tok.encode(text, true).unwrap();
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    // GPT-2 pre-tokenisation keeps digit runs together, so "12" merges.
    let enc = tok.encode("12", false).unwrap();
    assert_eq!(enc.get_ids(), [id_of(&f, "12")]);
}

#[test]
fn smollm_pre_tokenizer_splits_digits_and_bos_is_added() {
    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, true, "smollm");
    let f = open(&w);
    let tok = tokenizer_from_gguf(&f).unwrap();
    let enc = tok.encode("12", true).unwrap();
    assert_eq!(enc.get_ids(), [0, id_of(&f, "1"), id_of(&f, "2")]);
    let enc = tok.encode("12", false).unwrap();
    assert_eq!(enc.get_ids(), [id_of(&f, "1"), id_of(&f, "2")]);
}

#[test]
fn unsupported_tokenizers_are_errors() {
    let path = "/synthetic/tok.gguf";
    let mut w = GgufWriter::new();
    w.kv_str("tokenizer.ggml.model", "llama");
    let e = tokenizer_from_gguf(&open(&w)).unwrap_err();
    assert!(matches!(e, GgufError::Tokenizer { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(path) && msg.contains("'llama'") && msg.contains("SentencePiece"),
        "{msg}"
    );

    let mut w = GgufWriter::new();
    w.kv_str("tokenizer.ggml.model", "bert");
    assert!(tokenizer_from_gguf(&open(&w))
        .unwrap_err()
        .to_string()
        .contains("'bert'"));

    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, false, "llama-bpe");
    let e = tokenizer_from_gguf(&open(&w)).unwrap_err();
    assert!(
        e.to_string().contains("pre-tokenizer type 'llama-bpe'"),
        "{e}"
    );

    let e = tokenizer_from_gguf(&open(&GgufWriter::new())).unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { .. }), "{e}");
}

#[test]
fn bad_vocabularies_are_errors() {
    // A merge whose parts are not in the vocabulary.
    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, false, "gpt2");
    w.kvs.retain(|(k, _, _)| k != b"tokenizer.ggml.merges");
    w.kv_str_array("tokenizer.ggml.merges", &["x yz"]);
    let e = tokenizer_from_gguf(&open(&w)).unwrap_err();
    assert!(matches!(e, GgufError::Tokenizer { .. }), "{e}");

    // A merge without a space.
    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, false, "gpt2");
    w.kvs.retain(|(k, _, _)| k != b"tokenizer.ggml.merges");
    w.kv_str_array("tokenizer.ggml.merges", &["he"]);
    let e = tokenizer_from_gguf(&open(&w)).unwrap_err();
    assert!(e.to_string().contains("merge #0"), "{e}");

    // Token types of the wrong length.
    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, false, "gpt2");
    w.kvs.retain(|(k, _, _)| k != b"tokenizer.ggml.token_type");
    w.kv_i32_array("tokenizer.ggml.token_type", &[3]);
    let e = tokenizer_from_gguf(&open(&w)).unwrap_err();
    assert!(e.to_string().contains("token_type"), "{e}");

    // add_bos without a valid bos id.
    let mut w = GgufWriter::new();
    tiny_vocab(&mut w, true, "gpt2");
    w.kvs
        .retain(|(k, _, _)| k != b"tokenizer.ggml.bos_token_id");
    w.kv_u32("tokenizer.ggml.bos_token_id", 1_000_000);
    let e = tokenizer_from_gguf(&open(&w)).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
}
