//! Perplexity over non-overlapping windows.

use crate::data::EvalError;
use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};
use std::time::Instant;
use ttq_models::{CausalLm, Logits};

/// Splits `tokens` into non-overlapping windows of `seqlen` (a shorter tail is dropped, as
/// in the GPTQ reference code), at most `max_windows` of them. With `bos`, the first token of
/// every window is replaced by it, so every window starts with `<bos>`.
pub fn windows(
    tokens: &[u32],
    seqlen: usize,
    max_windows: Option<usize>,
    bos: Option<u32>,
) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = tokens
        .chunks_exact(seqlen.max(1))
        .map(<[u32]>::to_vec)
        .collect();
    if let Some(n) = max_windows {
        out.truncate(n);
    }
    if let Some(b) = bos {
        for w in &mut out {
            w[0] = b;
        }
    }
    out
}

/// Where test-time methods take their statistics from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum CalibrationMode {
    /// From the whole window being scored (the paper's evaluation). Layers should use
    /// `CalibrationPolicy::EveryCall`.
    #[default]
    Window,
    /// From the first P tokens of the window only; the rest is decoded with the KV cache on
    /// the weights calibrated on that prefix (the serving case). Layers must use
    /// `CalibrationPolicy::FirstCall`.
    Prefix(usize),
}

/// Options of [`perplexity`].
#[derive(Debug, Clone, Default)]
pub struct PerplexityOptions {
    /// Print progress to stderr.
    pub progress: bool,
    /// Score only targets at positions `>= score_from` of each window (so that every method
    /// and both calibration modes are scored on the same tokens). 0 scores every token but
    /// the first.
    pub score_from: usize,
    /// Where statistics come from.
    pub mode: CalibrationMode,
}

/// The result of a perplexity run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PerplexityReport {
    /// `exp(mean NLL)`.
    pub perplexity: f64,
    /// Mean negative log-likelihood in nats.
    pub mean_nll: f64,
    /// Number of predicted tokens.
    pub scored_tokens: usize,
    /// Windows evaluated.
    pub windows: usize,
    /// Tokens per window.
    pub seqlen: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Summed NLL (nats) of each window, in window order: what a paired bootstrap between
    /// methods resamples ([`crate::bootstrap`]).
    pub window_nll: Vec<f64>,
    /// Tokens scored in each window.
    pub window_tokens: usize,
}

/// Negative log-likelihoods of `targets` under `logits` (`[1, n, vocab]`), summed in f64.
pub fn nll_sum<B: Backend>(logits: Tensor<B, 3>, targets: &[u32]) -> f64 {
    let [_, n, _] = logits.dims();
    assert_eq!(n, targets.len(), "one target per logit row");
    let device = logits.device();
    let ids: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
    let ids = Tensor::<B, 3, Int>::from_data(TensorData::new(ids, [1, n, 1]), &device);
    let logp = log_softmax(logits, 2).gather(2, ids);
    let v: Vec<f32> = logp
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("converted to f32");
    -v.iter().map(|&x| f64::from(x)).sum::<f64>()
}

/// Perplexity of `model` over `windows`: every token of a window but the first is predicted
/// from the tokens before it. Test-time methods see the whole window (the paper's setting):
/// calibrations are reset before every window.
pub fn perplexity<B: Backend>(
    model: &mut CausalLm<B>,
    windows: &[Vec<u32>],
    options: &PerplexityOptions,
) -> Result<PerplexityReport, EvalError> {
    if windows.is_empty() {
        return Err(EvalError::Invalid(
            "no window to evaluate: the text is shorter than seqlen (or 0 windows were asked for)"
                .into(),
        ));
    }
    if let Some(w) = windows.iter().find(|w| w.len() != windows[0].len()) {
        return Err(EvalError::Invalid(format!(
            "windows differ in length ({} and {})",
            windows[0].len(),
            w.len()
        )));
    }
    let seqlen = windows[0].len();
    if seqlen < 2 {
        return Err(EvalError::Invalid("seqlen must be at least 2".into()));
    }
    let first_target = options.score_from.max(1);
    if first_target >= seqlen {
        return Err(EvalError::Invalid(format!(
            "nothing to score: targets start at {first_target} in windows of {seqlen}"
        )));
    }
    if let CalibrationMode::Prefix(p) = options.mode {
        if p == 0 || p > first_target {
            return Err(EvalError::Invalid(format!(
                "the calibration prefix ({p}) must be between 1 and the first scored position ({first_target})"
            )));
        }
    }
    let start = Instant::now();
    let (mut nll, mut count) = (0f64, 0usize);
    let mut window_nll = Vec::with_capacity(windows.len());
    for (i, w) in windows.iter().enumerate() {
        model.reset_calibration();
        let mut cache = model.new_cache();
        // Logit row j predicts token j + 1; rows first_target - 1 .. seqlen - 1 are scored.
        let logits = match options.mode {
            CalibrationMode::Window => model.forward(&w[..seqlen - 1], &mut cache, Logits::All)?,
            CalibrationMode::Prefix(p) => {
                let head = model.forward(&w[..p], &mut cache, Logits::All)?;
                if p < seqlen - 1 {
                    let tail = model.forward(&w[p..seqlen - 1], &mut cache, Logits::All)?;
                    Tensor::cat(vec![head, tail], 1)
                } else {
                    head
                }
            }
        };
        let [_, rows, vocab] = logits.dims();
        let scored = logits.slice([0..1, first_target - 1..rows, 0..vocab]);
        let w_nll = nll_sum(scored, &w[first_target..]);
        if !w_nll.is_finite() {
            // A NaN or infinite loss is not a perplexity: report it, never print "ppl NaN".
            return Err(EvalError::Invalid(format!(
                "window {} of {} gave a non-finite loss ({w_nll}): the model produced \
                 NaN or infinite logits (weights, quantization or an overflow), so there is no \
                 perplexity to report",
                i + 1,
                windows.len()
            )));
        }
        nll += w_nll;
        window_nll.push(w_nll);
        count += seqlen - first_target;
        if options.progress {
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "window {}/{}: running ppl {:.4}, {:.0} tok/s",
                i + 1,
                windows.len(),
                (nll / count as f64).exp(),
                ((i + 1) * seqlen) as f64 / secs.max(1e-9)
            );
        }
    }
    let mean = nll / count as f64;
    Ok(PerplexityReport {
        perplexity: mean.exp(),
        mean_nll: mean,
        scored_tokens: count,
        windows: windows.len(),
        seqlen,
        seconds: start.elapsed().as_secs_f64(),
        window_nll,
        window_tokens: seqlen - first_target,
    })
}
