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

    /// The int8-input product stays within its analytic bound of the exact product: the
    /// inputs' rounding (`int8_error_bound`) plus f32 rounding of the block sums. Inputs of
    /// mixed magnitude, with zero blocks and weights of -128 (the one value whose sign flip
    /// does not fit an `i8`).
    #[test]
    fn int8_matmul_is_within_its_rounding_bound(
        rows in 1usize..200,
        blocks in 1usize..12,
        tokens in 1usize..6,
        seed in any::<u64>(),
        zero_block in any::<usize>(),
    ) {
        let cols = blocks * Q8_BLOCK;
        let mut m = table(seed, rows, cols);
        if seed % 3 == 0 {
            m = with_min_values(&m);
        }
        let dense = m.dequantize();
        let mut x: Vec<f32> = random(seed ^ 3, tokens * cols, 0)
            .iter()
            .enumerate()
            .map(|(i, v)| v * if (i / Q8_BLOCK).is_multiple_of(2) { 1.0 } else { 30.0 })
            .collect();
        let z = zero_block % (tokens * blocks);
        x[z * Q8_BLOCK..(z + 1) * Q8_BLOCK].fill(0.0);
        let got = m.matmul_t_int8(&x, tokens).unwrap();
        for t in 0..tokens {
            for r in 0..rows {
                let (dot, mag): (f64, f64) = (0..cols)
                    .map(|c| {
                        let p = f64::from(x[t * cols + c]) * f64::from(dense[r * cols + c]);
                        (p, p.abs())
                    })
                    .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
                let bound = m.int8_error_bound(&x, t, r).unwrap();
                let err = (f64::from(got[t * rows + r]) - dot).abs();
                // f32 rounding of the scaled block sums, relative to the magnitudes summed.
                let rounding = 1e-5 * (mag + bound);
                prop_assert!(
                    err <= bound * 1.0001 + rounding,
                    "token {} row {}: {} vs {} (bound {}, rounding {})",
                    t, r, got[t * rows + r], dot, bound, rounding
                );
            }
        }
    }
}

/// `m` with every 7th value set to -128.
fn with_min_values(m: &Q8Rows) -> Q8Rows {
    let [rows, cols] = m.dims();
    let dense = m.dequantize();
    let mut qs = Vec::with_capacity(rows * cols);
    let mut scales = Vec::with_capacity(rows * cols / Q8_BLOCK);
    for (b, block) in dense.chunks_exact(Q8_BLOCK).enumerate() {
        let d = block.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
        scales.push(d);
        for (i, &v) in block.iter().enumerate() {
            let q = if (b * Q8_BLOCK + i).is_multiple_of(7) {
                -128
            } else if d > 0.0 {
                (v / d).round() as i8
            } else {
                0
            };
            qs.push(q);
        }
    }
    Q8Rows::new(rows, cols, scales, qs).unwrap()
}

#[test]
fn int8_matmul_refuses_non_finite_inputs_and_bad_shapes() {
    let m = Q8Rows::new(2, 32, vec![1.0; 2], vec![1; 64]).unwrap();
    let mut x = vec![0.5f32; 32];
    assert!(m.matmul_t_int8(&x, 1).is_ok());
    x[5] = f32::NAN;
    assert!(m.matmul_t_int8(&x, 1).is_err());
    assert!(m.matmul_t_int8(&[0.0; 31], 1).is_err());
}

#[test]
fn int8_matmul_of_inputs_on_the_grid_is_exact() {
    // Inputs that are already multiples of their block's step round to themselves, so the
    // int8 product equals the exact one (integer sums, one scale per block).
    let qs: Vec<i8> = (0..64i32).map(|i| ((i * 37) % 255 - 127) as i8).collect();
    let m = Q8Rows::new(1, 64, vec![0.5, 0.25], qs.clone()).unwrap();
    let mut x: Vec<f32> = (0..64i32)
        .map(|i| ((i * 11) % 255 - 127) as f32 * 0.125)
        .collect();
    x[40] = -127.0 * 0.125;
    // Each block holds ±127 · 0.125 as its largest magnitude, so its step is exactly 0.125.
    assert!(x[..32].iter().any(|v| v.abs() == 127.0 * 0.125));
    assert!(x[32..].iter().any(|v| v.abs() == 127.0 * 0.125));
    let want: f64 = (0..64)
        .map(|c| f64::from(qs[c]) * [0.5, 0.25][c / 32] * f64::from(x[c]))
        .sum();
    let got = m.matmul_t_int8(&x, 1).unwrap();
    assert_eq!(f64::from(got[0]), want);
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
