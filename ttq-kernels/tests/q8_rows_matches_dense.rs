//! The 8-bit row table (`Q8Rows`) computes what its dense f32 matrix computes: lookups give
//! exactly the dequantized rows (`q · d`), and its matmul equals an f64 dot with that matrix
//! up to f32 rounding, for any shape and token count (the single-token path and the
//! many-token one).

mod common;
#[path = "common/host.rs"]
mod host;
use common::random;
use host::close;
use proptest::prelude::*;
use ttq_kernels::{q8_rows::Q8_BLOCK, Q8Rows};

/// A table with random values in -127..=127 and random positive block scales (some tiny,
/// some large, as real tables have).
fn table(seed: u64, rows: usize, cols: usize) -> Q8Rows {
    let qs = random(seed, rows * cols, 0)
        .into_iter()
        .map(|v| (v * 127.0).round() as i8)
        .collect();
    let scales = random(seed ^ 7, rows * cols / Q8_BLOCK, 0)
        .into_iter()
        .map(|v| (v * 6.0).exp2() * 1e-2)
        .collect();
    Q8Rows::new(rows, cols, scales, qs).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn lookup_is_the_dequantized_row(
        rows in 1usize..50,
        blocks in 1usize..12,
        seed in any::<u64>(),
        picks in proptest::collection::vec(any::<u32>(), 1..8),
    ) {
        let cols = blocks * Q8_BLOCK;
        let m = table(seed, rows, cols);
        let dense = m.dequantize();
        let ids: Vec<u32> = picks.iter().map(|p| p % rows as u32).collect();
        let got = m.gather(&ids).unwrap();
        for (row, &id) in got.chunks_exact(cols).zip(&ids) {
            let r = id as usize;
            prop_assert_eq!(row, &dense[r * cols..(r + 1) * cols]);
        }
    }

    #[test]
    fn matmul_matches_an_f64_dot_with_the_dense_matrix(
        rows in 1usize..200,
        blocks in 1usize..12,
        tokens in 1usize..6,
        seed in any::<u64>(),
    ) {
        let cols = blocks * Q8_BLOCK;
        let m = table(seed, rows, cols);
        let dense = m.dequantize();
        let x = random(seed ^ 3, tokens * cols, 0);
        let got = m.matmul_t(&x, tokens).unwrap();
        let mut want = vec![0f32; tokens * rows];
        for t in 0..tokens {
            for r in 0..rows {
                let dot: f64 = (0..cols)
                    .map(|c| f64::from(x[t * cols + c]) * f64::from(dense[r * cols + c]))
                    .sum();
                want[t * rows + r] = dot as f32;
            }
        }
        close(&got, &want, 1e-5)?;
    }
}

#[test]
fn dequantize_multiplies_each_value_by_its_block_scale() {
    let qs: Vec<i8> = (0..2 * 64i32).map(|i| (i % 255 - 127) as i8).collect();
    let scales = vec![0.25, 2.0, -1.0, 0.0];
    let m = Q8Rows::new(2, 64, scales.clone(), qs.clone()).unwrap();
    let dense = m.dequantize();
    for (i, (&v, &q)) in dense.iter().zip(&qs).enumerate() {
        assert_eq!(v, f32::from(q) * scales[i / Q8_BLOCK]);
    }
}
