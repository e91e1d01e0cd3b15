//! Channel statistics and the TTQ scale against the reference.

use super::*;
use burn::tensor::f16;
use ttq_core::{tensor_io::to_f32_vec, QuantKernels};
use ttq_kernels::{reference, CudaBackend, CudaKernels};

pub fn check_stats<F: FloatElement + Element>(
    tokens: usize,
    d: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let x = t2::<F>(random(seed, tokens * d, 11), [tokens, d]);
    let host = to_f32_vec(x.clone());
    poison(d * 8);
    let stats = CudaKernels::default().channel_stats(x);
    let (max_abs, mean) = reference::channel_stats(&host, tokens, d);
    prop_assert_eq!(stats.tokens, tokens);
    exact("max_abs", &to_f32_vec(stats.max_abs), &max_abs)?;
    close(
        "mean_sq",
        &to_f32_vec(stats.mean_sq_normalized),
        &mean,
        1e-5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn stats_match_f32(tokens in tokens_strategy(), d in cols_strategy(), seed in any::<u64>()) {
        check_stats::<f32>(tokens, d, seed)?;
    }

    #[test]
    fn stats_match_f16(tokens in tokens_strategy(), d in cols_strategy(), seed in any::<u64>()) {
        check_stats::<f16>(tokens, d, seed)?;
    }
}

/// The statistics over token counts that split into several cubes' worth (64 tokens or more
/// per split), with each channel's large values in one block of tokens that moves with the
/// channel, so the splits' maxima differ by up to 10⁴ and their sums must be rescaled to
/// the common maximum: maxima exact, means within 1e-5 of each channel's own reference
/// value. Widths of whole 16-byte vectors (the split kernel) and 100 channels, whole
/// vectors in f32 but not in f16 (the fallback kernel there), in f32 and f16.
#[test]
fn stats_token_splits() {
    for (tokens, d) in [
        (2048, 1024),
        (300, 640),
        (65, 8),
        (1, 16),
        (129, 4096),
        (200, 100),
    ] {
        let base = random(tokens as u64 + d as u64, tokens * d, 0);
        let x: Vec<f32> = base
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (t, c) = (i / d, i % d);
                let block = (c * 7) % 8;
                if t * 8 / tokens == block {
                    v * 100.0
                } else if (t + c) % 5 == 0 {
                    v * 0.01
                } else {
                    *v
                }
            })
            .collect();
        stats_per_channel::<f32>(&x, tokens, d);
        stats_per_channel::<f16>(&x, tokens, d);
    }
}

/// `channel_stats` of `x` made in `F` against the reference on what the device holds:
/// maxima exact, each channel's mean within 1e-5 of its own value.
fn stats_per_channel<F: FloatElement + Element>(x: &[f32], tokens: usize, d: usize) {
    let xt = t2::<F>(x.to_vec(), [tokens, d]);
    let host = to_f32_vec(xt.clone());
    poison(d * 8 * 64);
    let got = CudaKernels::default().channel_stats(xt);
    let (want_max, want_mean) = reference::channel_stats(&host, tokens, d);
    let what = format!("{tokens}x{d} {:?}", F::dtype());
    assert_eq!(to_f32_vec(got.max_abs), want_max, "{what} max_abs");
    let mean = to_f32_vec(got.mean_sq_normalized);
    for (c, (a, b)) in mean.iter().zip(&want_mean).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1e-30),
            "{what} mean channel {c}: {a} vs {b}"
        );
    }
}

/// The fused TTQ scale (`CudaKernels::ttq_scales`, one kernel) against the trait's Burn ops
/// on the same statistics, and both against `D = (mean_t x² + λ)^α` computed on the host in
/// f64 from the raw activations; with an all-zero channel (D = λ^α), a channel near 1e4,
/// α = 0 (exactly one) and the unfused switch.
#[test]
fn ttq_scales_match_burn_ops_and_host() {
    let (tokens, d) = (37, 300);
    let mut xh = random(51, tokens * d, 13);
    for t in 0..tokens {
        xh[t * d + 7] = 0.0;
        xh[t * d + 8] *= 1e4;
    }
    let x = t2::<f32>(xh.clone(), [tokens, d]);
    let kernels = CudaKernels::default();
    let stats = kernels.channel_stats(x);
    for (alpha, lambda) in [(0.5f32, 1e-4f32), (0.25, 0.0), (1.0, 1e-2), (0.0, 1e-4)] {
        let config = ttq_core::TtqScaleConfig::new(alpha, lambda).unwrap();
        let (dk, ik) = kernels.ttq_scales(&stats, &config);
        let (db, ib) = <ttq_core::TensorOpsKernels as QuantKernels<CudaBackend<f32>>>::ttq_scales(
            &ttq_core::TensorOpsKernels,
            &stats,
            &config,
        );
        let unfused = CudaKernels {
            fused_decoder_ops: false,
            ..CudaKernels::default()
        };
        let (du, _) = unfused.ttq_scales(&stats, &config);
        let host: Vec<f32> = (0..d)
            .map(|c| {
                let ms = (0..tokens)
                    .map(|t| f64::from(xh[t * d + c]).powi(2))
                    .sum::<f64>()
                    / tokens as f64;
                (ms + f64::from(lambda)).powf(f64::from(alpha)) as f32
            })
            .collect();
        let what = format!("ttq_scales alpha {alpha} lambda {lambda}");
        let (dk, ik) = (to_f32_vec(dk), to_f32_vec(ik));
        let (db, ib, du) = (to_f32_vec(db), to_f32_vec(ib), to_f32_vec(du));
        // Relative to each element (the 1e4 channel would dominate a comparison relative
        // to the largest).
        let near = |a: f32, b: f32, rel: f32| (a - b).abs() <= rel * b.abs();
        for c in 0..d {
            let k = dk[c];
            assert!(
                near(k, db[c], 1e-5),
                "{what}: channel {c}: kernel {k} vs Burn {}",
                db[c]
            );
            assert!(
                near(ik[c], ib[c], 1e-5),
                "{what}: channel {c}: 1/D {} vs Burn {}",
                ik[c],
                ib[c]
            );
            assert_eq!(
                du[c], db[c],
                "{what}: channel {c}: unfused is the Burn path"
            );
            assert!(
                (ik[c] * k - 1.0).abs() <= 1e-6,
                "{what}: channel {c}: D · D⁻¹ = {}",
                ik[c] * k
            );
            if host[c] == 0.0 {
                // An all-zero channel with λ = 0: the clamp keeps D finite and positive.
                assert!(k > 0.0 && k < 1e-30, "{what}: channel {c}: D = {k}");
            } else {
                assert!(
                    near(k, host[c], 1e-4),
                    "{what}: channel {c}: kernel {k} vs host {}",
                    host[c]
                );
            }
        }
        if alpha == 0.0 {
            assert!(
                dk.iter().all(|&v| v == 1.0),
                "{what}: D must be exactly one"
            );
        }
    }
}
