//! Tests on the real model files. Each is skipped (passes with a note on stderr) unless its
//! environment variable points at the file:
//!
//! * `TTQ_GGUF_GEMMA`   = gemma-3-270m Q4_K_M GGUF (253,113,024 bytes, sha256 a5fd3b62...)
//! * `TTQ_GGUF_SMOLLM2` = SmolLM2-135M-Instruct Q4_1 GGUF (98,362,432 bytes, sha256 b179c952...)
//!
//! (``cargo xtask fetch-model`` fetches both.) Reference numbers come from gguf-py 0.19.0 /
//! numpy 2.4.6 / tokenizers 0.23.3, via scripts/make_real_file_reference.py: per-tensor sums
//! and first values are in testdata/real_tensor_stats.json, and the values quoted inline below
//! were printed by that script.

use std::path::PathBuf;
use std::time::Instant;

use ttq_models::gguf::tokenizer::{chat_template, special_tokens};
use ttq_models::gguf::{tokenizer_from_gguf, GgmlType, GgufError, GgufFile};

const STATS: &str = include_str!("testdata/real_tensor_stats.json");

/// The model file named by `var`, or the file `cargo xtask fetch-model` writes.
fn env_file(var: &str, fetched: &str) -> Option<PathBuf> {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.cache/models")
        .join(fetched)
        .join("model.gguf");
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    assert!(
        p.is_file(),
        "{} not found: run `cargo xtask fetch-model {fetched}` or set {var}",
        p.display()
    );
    Some(p)
}

/// Neumaier-compensated f64 sums of x and |x|.
fn sums(v: &[f32]) -> (f64, f64) {
    fn add(s: &mut (f64, f64), x: f64) {
        let t = s.0 + x;
        s.1 += if s.0.abs() >= x.abs() {
            (s.0 - t) + x
        } else {
            (x - t) + s.0
        };
        s.0 = t;
    }
    let (mut a, mut b) = ((0.0, 0.0), (0.0, 0.0));
    for &x in v {
        add(&mut a, f64::from(x));
        add(&mut b, f64::from(x.abs()));
    }
    (a.0 + a.1, b.0 + b.1)
}

/// Dequantise every tensor and compare with gguf-py's numbers.
fn check_all_tensors(f: &GgufFile, model: &str) {
    let doc: serde_json::Value = serde_json::from_str(STATS).unwrap();
    let table = doc[model].as_object().unwrap();
    assert_eq!(table.len(), f.tensors().len());
    let started = Instant::now();
    for t in f.tensors() {
        let row = table[&t.name].as_array().unwrap();
        assert_eq!(row[0].as_str().unwrap(), t.ggml_type.name(), "{}", t.name);
        assert_eq!(row[1].as_u64().unwrap(), t.n_elements, "{}", t.name);
        let v = f.dequantize(&t.name).unwrap();
        assert_eq!(v.len() as u64, t.n_elements);
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{}: non-finite values",
            t.name
        );
        let (sum, sum_abs) = sums(&v);
        let (ref_sum, ref_abs) = (row[2].as_f64().unwrap(), row[3].as_f64().unwrap());
        assert!(
            (sum - ref_sum).abs() <= 1e-9 * ref_abs,
            "{}: sum {sum} vs gguf-py {ref_sum}",
            t.name
        );
        assert!(
            (sum_abs - ref_abs).abs() <= 1e-9 * ref_abs,
            "{}: sum|x| {sum_abs} vs gguf-py {ref_abs}",
            t.name
        );
        let first: String = v[..4]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(first, row[4].as_str().unwrap(), "{}: first values", t.name);
    }
    eprintln!(
        "{model}: dequantised and checked {} tensors in {:.2} s",
        f.tensors().len(),
        started.elapsed().as_secs_f64()
    );
}

/// Sum and first four values (widened to f64, exactly, to compare with Python's printout).
fn sum_of(f: &GgufFile, name: &str) -> (f64, Vec<f64>) {
    let v = f.dequantize(name).unwrap();
    (sums(&v).0, v[..4].iter().map(|&x| f64::from(x)).collect())
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: {got} vs {want}"
    );
}

#[test]
#[ignore = "needs the real file: cargo xtask fetch-model gemma3-270m, then cargo test -- --ignored"]
fn gemma3_270m() {
    let Some(path) = env_file("TTQ_GGUF_GEMMA", "gemma3-270m") else {
        return;
    };
    let t0 = Instant::now();
    let f = GgufFile::open(&path).unwrap();
    eprintln!("opened in {:.2} s", t0.elapsed().as_secs_f64());

    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 236);
    assert_eq!(f.architecture().unwrap(), "gemma3");
    let u = |k: &str| f.meta_u64(k).unwrap();
    assert_eq!(u("gemma3.context_length"), 32768);
    assert_eq!(u("gemma3.embedding_length"), 640);
    assert_eq!(u("gemma3.block_count"), 18);
    assert_eq!(u("gemma3.feed_forward_length"), 2048);
    assert_eq!(u("gemma3.attention.head_count"), 4);
    assert_eq!(u("gemma3.attention.head_count_kv"), 1);
    assert_eq!(u("gemma3.attention.key_length"), 256);
    assert_eq!(u("gemma3.attention.value_length"), 256);
    assert_eq!(u("gemma3.attention.sliding_window"), 512);
    assert_eq!(f.meta_f32("gemma3.rope.freq_base").unwrap(), 1_000_000.0);
    assert_eq!(
        f.meta_f32("gemma3.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-6
    );
    assert_eq!(f.meta_str("tokenizer.ggml.model").unwrap(), "llama");
    assert_eq!(
        f.meta_str_array("tokenizer.ggml.tokens").unwrap().len(),
        262_144
    );
    let sp = special_tokens(&f).unwrap();
    assert_eq!(
        (sp.bos, sp.eos, sp.add_bos, sp.add_eos),
        (Some(2), Some(1), true, false)
    );
    assert!(chat_template(&f).unwrap().is_none());

    // Tied embeddings: no output.weight.
    assert!(f.tensor("output.weight").is_none());
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ggml_type, emb.dims.clone()),
        (GgmlType::Q8_0, vec![640, 262_144])
    );
    assert_eq!(emb.shape(), vec![262_144, 640]);

    // SentencePiece vocabularies are not built from GGUF metadata.
    let e = tokenizer_from_gguf(&f).unwrap_err();
    assert!(matches!(e, GgufError::Tokenizer { .. }), "{e}");
    assert!(e.to_string().contains("SentencePiece"), "{e}");

    // Spot checks quoted from the gguf-py run (float64 sum, first four values).
    let t = Instant::now();
    let (s, first) = sum_of(&f, "token_embd.weight");
    eprintln!(
        "token_embd.weight (262144x640 Q8_0) dequantised + summed in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_close(s, -27668.36862385273, "token_embd sum");
    assert_eq!(
        first,
        [
            -0.007244110107421875,
            0.042860984802246094,
            -0.034409523010253906,
            -0.02112865447998047
        ]
    );
    let (s, first) = sum_of(&f, "blk.0.attn_q.weight"); // Q5_0
    assert_close(s, -51.693368911743164, "attn_q sum");
    assert_eq!(first[..2], [-0.0037841796875, 0.007568359375]);
    let (s, first) = sum_of(&f, "blk.0.attn_output.weight"); // Q4_K
    assert_close(s, -1.8330761790275574, "attn_output sum");
    assert_eq!(first[..2], [-0.015705108642578125, 0.04966926574707031]);
    let (s, first) = sum_of(&f, "blk.0.ffn_down.weight"); // Q6_K
    assert_close(s, 6.480193614959717, "ffn_down sum");
    assert_eq!(first[..2], [0.0052117109298706055, 0.02171546220779419]);
    let (s, first) = sum_of(&f, "output_norm.weight"); // F32
    assert_close(s, 16861.6953125, "output_norm sum");
    assert_eq!(first, [7.125, 9.5625, 47.0, 145.0]);

    check_all_tensors(&f, "gemma3-270m");
}

/// Token ids from scripts/make_real_file_reference.py: `tokenizers` 0.23.3 (Python) with a
/// BPE built from the GGUF vocabulary, cross-checked against a from-scratch Python byte-level
/// BPE.
const SMOLLM2_IDS: &[(&str, &[u32])] = &[
    ("Hello world", &[19556, 905]),
    (
        "The quick brown fox jumps over the lazy dog.",
        &[504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30],
    ),
    (
        "In 2024, 366 days passed; it's a leap-year!",
        &[
            788, 216, 34, 32, 34, 36, 28, 216, 35, 38, 38, 2009, 4180, 43, 357, 506, 253, 19894,
            29, 3610, 17,
        ],
    ),
    (
        "  multiple   spaces\nand\ttabs",
        &[216, 2701, 256, 5600, 198, 397, 197, 100, 7366],
    ),
    (
        "naïve café — unicode ✓ 日本語",
        &[
            3546, 46494, 37366, 1841, 29661, 4636, 246, 237, 17097, 241, 115, 40993, 179, 120, 248,
        ],
    ),
    (
        "<|im_start|>user\nHi there<|im_end|>",
        &[1, 4093, 198, 26843, 665, 2],
    ),
];

#[test]
#[ignore = "needs the real file: cargo xtask fetch-model smollm2-135m, then cargo test -- --ignored"]
fn smollm2_135m() {
    let Some(path) = env_file("TTQ_GGUF_SMOLLM2", "smollm2-135m") else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.architecture().unwrap(), "llama");
    let u = |k: &str| f.meta_u64(k).unwrap();
    assert_eq!(u("llama.context_length"), 8192);
    assert_eq!(u("llama.embedding_length"), 576);
    assert_eq!(u("llama.block_count"), 30);
    assert_eq!(u("llama.feed_forward_length"), 1536);
    assert_eq!(u("llama.attention.head_count"), 9);
    assert_eq!(u("llama.attention.head_count_kv"), 3);
    assert_eq!(u("llama.rope.dimension_count"), 64);
    assert_eq!(u("llama.vocab_size"), 49152);
    assert_eq!(f.meta_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(
        f.meta_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-5
    );
    // Tied embeddings: no output.weight.
    assert!(f.tensor("output.weight").is_none());
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.ggml_type, q.dims.clone()),
        (GgmlType::Q4_1, vec![576, 576])
    );

    let sp = special_tokens(&f).unwrap();
    assert_eq!(
        (sp.bos, sp.eos, sp.add_bos, sp.add_eos),
        (Some(1), Some(2), false, false)
    );
    let tmpl = chat_template(&f).unwrap().expect("chat template");
    assert!(tmpl.contains("<|im_start|>") && tmpl.contains("add_generation_prompt"));

    let tok = tokenizer_from_gguf(&f).unwrap();
    assert_eq!(tok.get_vocab_size(true), 49152);
    for (text, ids) in SMOLLM2_IDS {
        let enc = tok.encode(*text, true).unwrap();
        assert_eq!(enc.get_ids(), *ids, "{text:?}");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), *text);
    }
    let text = "SmolLM2 is a family of compact language models available in three sizes: \
                135M, 360M, and 1.7B parameters. They are capable of solving a wide range of tasks \
                while being lightweight enough to run on-device.";
    let ids = tok.encode(text, true).unwrap().get_ids().to_vec();
    assert!(ids.len() < text.len() / 3, "{} tokens", ids.len());
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    // Special tokens are skipped on request.
    let ids = tok
        .encode("<|im_start|>assistant\nOK<|im_end|>", true)
        .unwrap();
    assert_eq!(tok.decode(ids.get_ids(), true).unwrap(), "assistant\nOK");

    check_all_tensors(&f, "smollm2-135m");
}
