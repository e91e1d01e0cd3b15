//! Calibration data for AWQ and GPTQ: random windows of a token stream, and the per-layer
//! input statistics a full-precision pass over them produces.

use crate::EvalError;
use burn::tensor::backend::Backend;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;
use ttq_core::CalibrationStats;
use ttq_models::{CausalLm, Logits};

/// How calibration windows are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CalibrationSampling {
    /// Number of windows (`n`).
    pub samples: usize,
    /// Tokens per window (`L`).
    pub len: usize,
    /// Seed of the window positions.
    pub seed: u64,
}

impl Default for CalibrationSampling {
    /// 128 × 512 = 65,536 tokens, seed 0.
    fn default() -> Self {
        Self {
            samples: 128,
            len: 512,
            seed: 0,
        }
    }
}

/// Most calibration tokens one set may hold: 2^24 (128 times the paper's largest, 2^17).
/// Each is a forward pass's worth of work; a billion would run for days and then exhaust
/// memory, so a request beyond this is refused before anything runs.
pub const MAX_CALIBRATION_TOKENS: usize = 1 << 24;

impl CalibrationSampling {
    /// Total calibration tokens (saturating).
    pub fn tokens(&self) -> usize {
        self.samples.saturating_mul(self.len)
    }

    /// Checks the counts without any text or model: at least one window of at least 2
    /// tokens, and at most [`MAX_CALIBRATION_TOKENS`] in all.
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.samples == 0 || self.len < 2 {
            return Err(EvalError::Invalid(format!(
                "calibration needs at least one window of at least 2 tokens (got {} x {})",
                self.samples, self.len
            )));
        }
        if self
            .samples
            .checked_mul(self.len)
            .is_none_or(|n| n > MAX_CALIBRATION_TOKENS)
        {
            return Err(EvalError::Invalid(format!(
                "calibration of {} windows x {} tokens exceeds the limit of {} tokens",
                self.samples, self.len, MAX_CALIBRATION_TOKENS
            )));
        }
        Ok(())
    }
}

/// `sampling.samples` windows of `sampling.len` tokens starting at uniformly random
/// positions of `tokens` (windows may overlap, as in the GPTQ reference), the same for the
/// same seed. With `bos`, each window's first token is replaced by it, as in evaluation.
pub fn sample_windows(
    tokens: &[u32],
    sampling: &CalibrationSampling,
    bos: Option<u32>,
) -> Result<Vec<Vec<u32>>, EvalError> {
    sampling.validate()?;
    if tokens.len() < sampling.len {
        return Err(EvalError::Invalid(format!(
            "calibration windows of {} tokens do not fit in a text of {} tokens",
            sampling.len,
            tokens.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(sampling.seed);
    Ok((0..sampling.samples)
        .map(|_| {
            let start = rng.random_range(0..=tokens.len() - sampling.len);
            let mut w = tokens[start..start + sampling.len].to_vec();
            if let Some(b) = bos {
                w[0] = b;
            }
            w
        })
        .collect())
}

/// Checks that the calibration statistics of `model`'s layers (a Gram matrix per linear,
/// `ModelConfig::calibration_bytes`) fit the available memory, before any is collected.
pub fn check_calibration_memory<B: Backend>(model: &CausalLm<B>) -> Result<(), EvalError> {
    let c = model.config();
    ttq_models::resources::check_memory(
        &format!(
            "the calibration statistics of AWQ/GPTQ ({} layers, widths {} and {})",
            c.layers, c.hidden, c.intermediate
        ),
        c.calibration_bytes(),
    )
    .map_err(|m| EvalError::Model(ttq_models::ModelError::OutOfMemory(m)))
}

/// Runs `windows` through the full-precision `model` and returns every block linear's input
/// statistics by layer name. Any quantization on the model is removed first.
///
/// All layers are observed in one pass of the full-precision model (the reference AWQ and
/// GPTQ instead quantize layer by layer and feed the quantized outputs forward; see
/// docs/method.md).
pub fn collect_statistics<B: Backend>(
    model: &mut CausalLm<B>,
    windows: &[Vec<u32>],
    progress: bool,
) -> Result<BTreeMap<String, CalibrationStats<B>>, EvalError> {
    check_calibration_memory(model)?;
    model.dequantize_all();
    model.observe_calibration();
    let start = Instant::now();
    for (i, w) in windows.iter().enumerate() {
        let mut cache = model.new_cache();
        if let Err(e) = model.forward(w, &mut cache, Logits::Last) {
            model.take_calibration();
            return Err(e.into());
        }
        if progress && ((i + 1).is_multiple_of(16) || i + 1 == windows.len()) {
            let tokens: usize = windows[..=i].iter().map(Vec::len).sum();
            eprintln!(
                "calibration window {}/{}: {:.0} tok/s",
                i + 1,
                windows.len(),
                tokens as f64 / start.elapsed().as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(model.take_calibration())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_for_a_seed_and_stays_in_range() {
        let tokens: Vec<u32> = (0..1000).collect();
        let s = CalibrationSampling {
            samples: 20,
            len: 64,
            seed: 7,
        };
        let a = sample_windows(&tokens, &s, None).unwrap();
        assert_eq!(a, sample_windows(&tokens, &s, None).unwrap());
        let other = sample_windows(&tokens, &CalibrationSampling { seed: 8, ..s }, None).unwrap();
        assert_ne!(a, other);
        for w in &a {
            assert_eq!(w.len(), 64);
            // Consecutive tokens of the text, so a contiguous slice.
            assert!(w.windows(2).all(|p| p[1] == p[0] + 1));
        }
        let with_bos = sample_windows(&tokens, &s, Some(5000)).unwrap();
        assert!(with_bos
            .iter()
            .zip(&a)
            .all(|(b, w)| b[0] == 5000 && b[1..] == w[1..]));
    }

    #[test]
    fn rejects_windows_longer_than_the_text() {
        let tokens: Vec<u32> = (0..10).collect();
        let s = CalibrationSampling {
            samples: 1,
            len: 11,
            seed: 0,
        };
        assert!(sample_windows(&tokens, &s, None).is_err());
        assert!(sample_windows(&tokens, &CalibrationSampling { len: 10, ..s }, None).is_ok());
    }

    #[test]
    fn huge_or_overflowing_calibration_sets_are_refused_before_sampling() {
        let tokens: Vec<u32> = (0..1000).collect();
        for (samples, len) in [(1_000_000_000, 512), (usize::MAX, 2), (1 << 20, 1 << 20)] {
            let s = CalibrationSampling {
                samples,
                len,
                seed: 0,
            };
            let e = sample_windows(&tokens, &s, None).unwrap_err().to_string();
            assert!(e.contains("exceeds the limit"), "{e}");
        }
        assert!(CalibrationSampling {
            samples: 256,
            len: 65_536,
            seed: 0
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn the_default_is_128_by_512_and_2_pow_17_works() {
        assert_eq!(CalibrationSampling::default().tokens(), 65_536);
        let tokens: Vec<u32> = (0..300_000).collect();
        let big = CalibrationSampling {
            samples: 64,
            len: 2048,
            seed: 1,
        };
        assert_eq!(big.tokens(), 131_072);
        let w = sample_windows(&tokens, &big, None).unwrap();
        assert_eq!(w.iter().map(Vec::len).sum::<usize>(), 131_072);
    }
}
