//! The evaluation protocol on small inputs whose answers are known independently.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use ttq_eval::data::{join_jsonl, join_ptb, join_wikitext};
use ttq_eval::perplexity::nll_sum;
use ttq_eval::windows;

type B = NdArray<f32>;

#[test]
fn uniform_logits_give_the_vocabulary_size_as_perplexity() {
    for vocab in [2usize, 50, 1000] {
        let logits: Tensor<B, 3> = Tensor::zeros([1, 7, vocab], &Default::default());
        let targets: Vec<u32> = (0..7).map(|i| (i * 13 % vocab) as u32).collect();
        let ppl = (nll_sum(logits, &targets) / 7.0).exp();
        assert!(
            (ppl - vocab as f64).abs() < 1e-3 * vocab as f64,
            "{ppl} vs {vocab}"
        );
    }
}

#[test]
fn a_certain_prediction_has_perplexity_one() {
    let mut v = vec![-1e4f32; 3 * 5];
    for (row, t) in [1usize, 4, 0].iter().enumerate() {
        v[row * 5 + t] = 1e4;
    }
    let logits: Tensor<B, 3> = Tensor::from_data(
        burn::tensor::TensorData::new(v, [1, 3, 5]),
        &Default::default(),
    );
    assert!(nll_sum(logits, &[1, 4, 0]).abs() < 1e-6);
}

#[test]
fn wikitext_rows_are_joined_as_the_gptq_code_does() {
    // Rows: " = T = \n", "" (blank line), " a b \n" -> joined with "\n\n".
    let raw = " = T = \n \n a b \n";
    assert_eq!(join_wikitext(raw), " = T = \n\n\n\n\n a b \n");
}

#[test]
fn ptb_and_jsonl_join_with_spaces() {
    assert_eq!(join_ptb("a b\nc d\ne"), "a b c d e");
    let jsonl = "{\"text\": \"x y\"}\n{\"text\": \"z\", \"id\": 3}\n";
    assert_eq!(join_jsonl("t.jsonl".as_ref(), jsonl).unwrap(), "x y z");
    let err = join_jsonl("t.jsonl".as_ref(), "{\"txt\": 1}").unwrap_err();
    assert!(
        err.to_string().contains("t.jsonl") && err.to_string().contains("text"),
        "{err}"
    );
}

#[test]
fn windows_are_non_overlapping_drop_the_tail_and_start_with_bos() {
    let tokens: Vec<u32> = (10..21).collect(); // 11 tokens
    let w = windows(&tokens, 4, None, None);
    assert_eq!(w, vec![vec![10, 11, 12, 13], vec![14, 15, 16, 17]]);
    let w = windows(&tokens, 4, Some(1), Some(2));
    assert_eq!(w, vec![vec![2, 11, 12, 13]]);
}

#[test]
fn shared_wikitext_has_the_documented_row_count() {
    // ../shared/data/README.md: 4,358 rows, 1,467 of them blank.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wiki.test.raw");
    let Ok(raw) = std::fs::read_to_string(&path) else {
        panic!(
            "{} not found: the tests expect ../shared/data beside the checkout",
            path.display()
        );
    };
    let rows: Vec<&str> = raw.split_inclusive('\n').collect();
    assert_eq!(rows.len(), 4358);
    assert_eq!(rows.iter().filter(|r| r.trim().is_empty()).count(), 1467);
    let joined = join_wikitext(&raw);
    // Row 0 is blank (""), row 1 the title, row 2 blank, row 3 the first sentence.
    assert!(
        joined.starts_with("\n\n = Robert Boulter = \n\n\n\n\n Robert"),
        "{:?}",
        &joined[..40]
    );
}
