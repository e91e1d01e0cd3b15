//! Host 8-bit token tables (`load_model_with(.., host_tables = true)`): a GGUF's Q8_0
//! embedding is read without loss, and a model that keeps it in host memory gives the logits
//! of the f32 model, for short inputs (the 8-bit matmul) and long ones (dense slices).

mod common;

use burn::backend::NdArray;
use common::{gt, q8_0_block, GgufWriter};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::path::PathBuf;
use ttq_models::{
    gguf::GgufFile, gguf_model::GgufSource, load_model_with, source::TensorSource, Logits,
};

type B = NdArray<f32>;

const HIDDEN: u64 = 32;
const VOCAB: u64 = 8;

fn values(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// A one-layer Llama GGUF with a Q8_0 token table (tied head) and f32 everything else.
fn tiny_llama(path: &PathBuf) {
    let mut rng = StdRng::seed_from_u64(11);
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", HIDDEN as u32)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.feed_forward_length", 32)
        .kv_u32("llama.context_length", 64)
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str_array(
            "tokenizer.ggml.tokens",
            &["a", "b", "c", "d", "e", "f", "g", "h"],
        )
        .kv_str_array("tokenizer.ggml.merges", &[])
        .kv_i32_array("tokenizer.ggml.token_type", &[1; 8]);
    let mut table = Vec::new();
    for b in 0..VOCAB * HIDDEN / 32 {
        let qs: [i8; 32] = std::array::from_fn(|_| rng.random_range(-127..=127));
        table.extend(q8_0_block(0.01 + 0.002 * b as f32, qs));
    }
    w.tensor("token_embd.weight", &[HIDDEN, VOCAB], gt::Q8_0, table);
    let h = HIDDEN as usize;
    for name in ["attn_q", "attn_k", "attn_v", "attn_output"] {
        let v = values(&mut rng, h * h, 0.3);
        w.f32_tensor(&format!("blk.0.{name}.weight"), &[HIDDEN, HIDDEN], &v);
    }
    for name in ["ffn_gate", "ffn_up"] {
        let v = values(&mut rng, h * 32, 0.3);
        w.f32_tensor(&format!("blk.0.{name}.weight"), &[HIDDEN, 32], &v);
    }
    let v = values(&mut rng, 32 * h, 0.3);
    w.f32_tensor("blk.0.ffn_down.weight", &[32, HIDDEN], &v);
    for name in ["blk.0.attn_norm", "blk.0.ffn_norm", "output_norm"] {
        w.f32_tensor(&format!("{name}.weight"), &[HIDDEN], &[1.0; 32]);
    }
    std::fs::write(path, w.build()).unwrap();
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ttq-host-tables-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("model.gguf")
}

#[test]
fn q8_0_tables_are_read_without_loss_and_other_types_are_not_offered() {
    let path = scratch("source");
    tiny_llama(&path);
    let source = GgufSource::new(GgufFile::open(&path).unwrap());
    let q = source.q8_rows("token_embd.weight").unwrap().unwrap();
    assert_eq!(q.dims(), [VOCAB as usize, HIDDEN as usize]);
    assert_eq!(
        q.dequantize(),
        source.get("token_embd.weight").unwrap().data
    );
    assert!(source.q8_rows("blk.0.attn_q.weight").unwrap().is_none());
    assert!(source.q8_rows("no.such.tensor").unwrap().is_none());
}

#[test]
fn host_tables_give_the_f32_models_logits() {
    let path = scratch("logits");
    tiny_llama(&path);
    let device = Default::default();
    let mut dense = load_model_with::<B>(&path, &device, false).unwrap().model;
    let mut host = load_model_with::<B>(&path, &device, true).unwrap().model;
    // 3 tokens: the 8-bit matmul on inputs rounded to 8-bit blocks (its exact error bound
    // is checked in ttq-kernels' `q8_rows_matches_dense`; here a loose relative one); 40
    // tokens: more than it serves, dense slices, f32 rounding only.
    for (len, tol) in [(3usize, 1e-2f32), (40, 1e-5)] {
        let tokens: Vec<u32> = (0..len as u32)
            .map(|i| (i * 5 + 1) % VOCAB as u32)
            .collect();
        let a = dense
            .forward(&tokens, &mut dense.new_cache(), Logits::All)
            .unwrap();
        let b = host
            .forward(&tokens, &mut host.new_cache(), Logits::All)
            .unwrap();
        assert_eq!(a.dims(), b.dims());
        let a: Vec<f32> = a.into_data().into_vec().unwrap();
        let b: Vec<f32> = b.into_data().into_vec().unwrap();
        let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * scale,
                "{len} tokens, logit {i}: {x} vs {y}"
            );
        }
    }
}
