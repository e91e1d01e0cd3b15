//! Text generation: greedy, temperature, top-k and top-p sampling with a seed, stop tokens,
//! streaming, and prefill/decode timing.

use crate::error::{ModelError, Result};
use crate::model::{CausalLm, Logits};
use crate::tokenizer::TextTokenizer;
use burn::tensor::{backend::Backend, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::ops::ControlFlow;
use std::time::Instant;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1 = all).
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ModelError::Invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::Invalid(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Picks tokens from logits.
#[derive(Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler with `config`.
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            rng: StdRng::seed_from_u64(config.seed),
        })
    }

    /// The next token for `logits` (one row over the vocabulary).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0 as u32
        };
        if self.config.temperature == 0.0 {
            return argmax();
        }
        let mut idx: Vec<usize> = (0..logits.len())
            .filter(|&i| logits[i].is_finite())
            .collect();
        if idx.is_empty() {
            return argmax();
        }
        idx.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if self.config.top_k > 0 {
            idx.truncate(self.config.top_k);
        }
        let max = logits[idx[0]];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from((logits[i] - max) / self.config.temperature).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.config.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (n, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= f64::from(self.config.top_p) {
                    keep = n + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (p, &i) in probs.iter().zip(&idx) {
            if u < *p {
                return i as u32;
            }
            u -= p;
        }
        idx[idx.len() - 1] as u32
    }
}

/// Options of [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Tokens to generate at most.
    pub max_new_tokens: usize,
    /// Sampling.
    pub sampling: SamplingConfig,
    /// Stop when any of these is produced (the model's EOS tokens by default).
    pub stop_tokens: Vec<u32>,
    /// Prepend `<bos>` to the prompt.
    pub add_bos: bool,
}

/// What a generation did and how fast.
#[derive(Debug, Clone, Default)]
pub struct GenerationStats {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds for the prompt (prefill, including test-time calibration).
    pub prefill_seconds: f64,
    /// Seconds for all decode steps.
    pub decode_seconds: f64,
    /// Whether a stop token ended the generation.
    pub stopped: bool,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }

    /// Generated tokens per second (first token excluded: it comes from the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// The logits of a `[1, 1, vocab]` tensor as a host vector.
fn logits_row<B: Backend>(logits: burn::tensor::Tensor<B, 3>) -> Result<Vec<f32>> {
    let half = is_half(&logits);
    let row: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| ModelError::Invalid(format!("reading logits: {e:?}")))?;
    if let Some(bad) = row.iter().find(|v| !v.is_finite()) {
        return Err(non_finite_logits(&format!("a logit is {bad}"), half));
    }
    Ok(row)
}

/// Whether `t` is computed in a 16-bit float type.
fn is_half<B: Backend, const D: usize>(t: &burn::tensor::Tensor<B, D>) -> bool {
    matches!(
        t.dtype(),
        burn::tensor::DType::F16 | burn::tensor::DType::BF16
    )
}

/// The error for NaN or infinite logits: sampling from them would be a silent wrong answer.
/// In f16 the likely cause is an overflow of its range; in f32 it is the weights or inputs.
fn non_finite_logits(what: &str, half: bool) -> ModelError {
    ModelError::Invalid(if half {
        format!(
            "the model produced non-finite logits ({what}); in f16 this is usually an \
             overflow of f16's range (Gemma 3's activations exceed it): use --dtype f32"
        )
    } else {
        format!(
            "the model produced non-finite logits ({what}) in f32: the weights or the \
             quantization produce overflowing activations"
        )
    })
}

/// A non-empty prompt whose tokens plus `new_tokens` fit the model's context.
fn check_request(config: &crate::ModelConfig, prompt_len: usize, new_tokens: usize) -> Result<()> {
    if prompt_len == 0 {
        return Err(ModelError::Invalid("the prompt is empty".into()));
    }
    let limit = config.max_positions;
    // Checked: a wrapped sum (`--max-new-tokens 18446744073709551615`) must not pass.
    if prompt_len.checked_add(new_tokens).is_none_or(|n| n > limit) {
        return Err(ModelError::Invalid(format!(
            "prompt ({prompt_len} tokens) + {new_tokens} new tokens exceeds the model's context of {limit}"
        )));
    }
    Ok(())
}

/// Generates from `prompt`, calling `on_text` with each new piece of text as it is decoded.
/// Resets test-time calibrations first, so the prompt calibrates TTQ layers that use
/// `CalibrationPolicy::FirstCall`.
pub fn generate<B: Backend>(
    model: &mut CausalLm<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<(String, GenerationStats)> {
    let prompt_ids = tokenizer.encode(prompt, options.add_bos)?;
    generate_from_ids(model, tokenizer, &prompt_ids, options, |piece| {
        on_text(piece);
        ControlFlow::Continue(())
    })
}

/// [`generate`] from prompt token ids (`options.add_bos` is not used: the ids are taken as
/// they are), with a callback that can end the generation early: when `on_text` returns
/// `ControlFlow::Break`, no further token is computed (a server stops a request whose client
/// went away, or whose text reached a stop string). The returned text and statistics then
/// cover the tokens generated so far.
pub fn generate_from_ids<B: Backend>(
    model: &mut CausalLm<B>,
    tokenizer: &TextTokenizer,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<(String, GenerationStats)> {
    let mut sampler = Sampler::new(options.sampling)?;
    check_request(model.config(), prompt_ids.len(), options.max_new_tokens)?;
    model.reset_calibration();
    let mut cache = model.new_cache();
    let mut stats = GenerationStats {
        prompt_tokens: prompt_ids.len(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let logits = model.forward(prompt_ids, &mut cache, Logits::Last)?;
    let mut row = logits_row(logits)?;
    stats.prefill_seconds = t0.elapsed().as_secs_f64();
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut flow = ControlFlow::Continue(());
    let t1 = Instant::now();
    while generated.len() < options.max_new_tokens {
        let next = sampler.sample(&row);
        if options.stop_tokens.contains(&next) {
            stats.stopped = true;
            break;
        }
        generated.push(next);
        let text = tokenizer.decode(&generated)?;
        if text.len() > printed.len() && text.starts_with(&printed) {
            flow = on_text(&text[printed.len()..]);
            printed = text;
        }
        if flow.is_break() || generated.len() == options.max_new_tokens {
            break;
        }
        let logits = model.forward(&[next], &mut cache, Logits::Last)?;
        row = logits_row(logits)?;
    }
    stats.decode_seconds = t1.elapsed().as_secs_f64();
    stats.generated_tokens = generated.len();
    let text = tokenizer.decode(&generated)?;
    if flow.is_continue() && text.len() > printed.len() && text.starts_with(&printed) {
        // The caller asked for no more text after a break.
        let _ = on_text(&text[printed.len()..]);
    }
    Ok((text, stats))
}

/// Greedy decoding from token ids, timed: the prompt in one forward pass (prefill, which
/// also calibrates TTQ layers with `CalibrationPolicy::FirstCall`), then `new_tokens`
/// single-token steps. Each step reads back only the argmax id (computed on the device),
/// the one transfer a real decode loop cannot avoid. No stop tokens: exactly `new_tokens`
/// steps run. Returns the generated ids and the timings.
pub fn greedy_timed<B: Backend>(
    model: &mut CausalLm<B>,
    prompt_ids: &[u32],
    new_tokens: usize,
) -> Result<(Vec<u32>, GenerationStats)> {
    check_request(model.config(), prompt_ids.len(), new_tokens)?;
    if new_tokens == 0 {
        return Err(ModelError::Invalid("at least one new token".into()));
    }
    model.reset_calibration();
    let mut cache = model.new_cache();
    let t0 = Instant::now();
    let logits = model.forward(prompt_ids, &mut cache, Logits::Last)?;
    let mut next = argmax_id(logits)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let mut generated = vec![next];
    let t1 = Instant::now();
    while generated.len() < new_tokens {
        let logits = model.forward(&[next], &mut cache, Logits::Last)?;
        next = argmax_id(logits)?;
        generated.push(next);
    }
    let stats = GenerationStats {
        prompt_tokens: prompt_ids.len(),
        // All of them, as `generate` counts: the first comes from the prefill, and
        // `decode_tokens_per_second` leaves it out of the decode rate.
        generated_tokens: generated.len(),
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
        stopped: false,
    };
    generated.truncate(new_tokens);
    Ok((generated, stats))
}

/// The id of the largest logit of a `[1, 1, vocab]` tensor, found on the device; an error
/// if any logit is NaN or the largest is infinite. The NaN count, whether the largest is
/// infinite and the id come back in one read of three integers (each read is a host
/// synchronisation, paid once per generated token; a backend's max may skip NaNs, so they
/// are counted separately).
fn argmax_id<B: Backend>(logits: burn::tensor::Tensor<B, 3>) -> Result<u32> {
    let vocab = logits.dims()[2];
    let half = is_half(&logits);
    let nans = logits.clone().is_nan().int().sum(); // [1]
    let (max, id) = logits.max_dim_with_indices(2); // [1, 1, 1] each
    let infinite = max.is_inf().int().reshape([1]);
    // Read as integers: backends store booleans differently (u8 on CUDA), and a bool
    // readback with the wrong storage type is an error.
    let read = Tensor::cat(vec![nans, infinite, id.reshape([1])], 0)
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .map_err(|e| ModelError::Invalid(format!("reading the argmax: {e:?}")))?;
    match read[..] {
        [nans, _, _] if nans > 0 => Err(non_finite_logits("some are NaN", half)),
        [_, infinite, _] if infinite != 0 => {
            Err(non_finite_logits("the largest is infinite", half))
        }
        [_, _, v] => u32::try_from(v)
            .ok()
            .filter(|&v| (v as usize) < vocab)
            .ok_or_else(|| non_finite_logits(&format!("the argmax was {v}"), half)),
        _ => Err(ModelError::Invalid("empty logits".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Tensor, TensorData};

    fn logits(v: Vec<f32>) -> Tensor<NdArray<f32>, 3> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [1, 1, n]), &Default::default())
    }

    /// NaN or infinite logits (f16 overflow) are an error naming the likely cause, on both
    /// the device-argmax path and the sampling path, never a token.
    #[test]
    fn non_finite_logits_are_errors() {
        assert_eq!(argmax_id(logits(vec![0.5, 2.0, -1.0])).unwrap(), 1);
        for bad in [f32::NAN, f32::INFINITY] {
            let e = argmax_id(logits(vec![0.5, bad, -1.0]))
                .unwrap_err()
                .to_string();
            // f32 logits: no hint about f16.
            assert!(
                e.contains("non-finite logits") && e.contains(") in f32"),
                "{e}"
            );
            assert!(!e.contains("f16"), "{e}");
            let e = logits_row(logits(vec![bad, 0.0])).unwrap_err().to_string();
            assert!(e.contains("non-finite logits"), "{e}");
        }
        assert_eq!(
            logits_row(logits(vec![1.0, -2.0])).unwrap(),
            vec![1.0, -2.0]
        );
    }

    #[test]
    fn requests_past_the_context_are_errors_even_when_the_sum_overflows() {
        let config = crate::presets::config_by_name("gemma3-270m").unwrap();
        let limit = config.max_positions;
        assert!(check_request(&config, 10, limit - 10).is_ok());
        for (prompt, new) in [(10, limit - 9), (10, usize::MAX), (usize::MAX, 1), (0, 1)] {
            assert!(
                check_request(&config, prompt, new).is_err(),
                "{prompt} + {new}"
            );
        }
    }

    #[test]
    fn greedy_picks_the_argmax() {
        let mut s = Sampler::new(SamplingConfig::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_temperature() {
        let cfg = SamplingConfig {
            temperature: 5.0,
            top_k: 1,
            top_p: 1.0,
            seed: 3,
        };
        let mut s = Sampler::new(cfg).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]), 1);
        }
    }

    #[test]
    fn top_p_excludes_the_tail_and_seeds_repeat() {
        // Probabilities ≈ [0.643, 0.237, 0.087, 0.032]: top-p 0.8 keeps the first two.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.8,
            seed: 9,
        };
        let draw = |cfg| {
            let mut s = Sampler::new(cfg).unwrap();
            (0..400).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(cfg);
        assert!(a.iter().all(|&t| t < 2), "tail token drawn");
        assert!(
            a.iter().filter(|&&t| t == 1).count() > 50,
            "second token never drawn"
        );
        assert_eq!(a, draw(cfg), "same seed, same draws");
    }

    #[test]
    fn bad_sampling_options_are_errors() {
        assert!(Sampler::new(SamplingConfig {
            temperature: -1.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplingConfig {
            top_p: 0.0,
            ..Default::default()
        })
        .is_err());
    }
}
