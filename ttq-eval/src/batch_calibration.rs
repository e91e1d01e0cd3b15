//! Per-request against per-batch test-time calibration, the choice a server that runs
//! several requests at once must make (docs/serve.md).
//!
//! A batch holds one prompt from each text (WikiText-2, PTB, C4: mixed domains). Every
//! window is `prompt + continuation` tokens; the prompt calibrates, the continuation is
//! scored. Three ways to get TTQ's weights for a window:
//!
//! - **per request, live**: the serving path — TTQ with `CalibrationPolicy::FirstCall`
//!   calibrates each layer on the window's own prompt as it runs (statistics of layer `l`
//!   come from activations after the quantized layers before it);
//! - **per request, full-precision statistics**: the statistics of the window's own prompt
//!   from one full-precision pass, then every layer quantized from them;
//! - **per batch, full-precision statistics**: the same, with the statistics of all the
//!   batch's prompts pooled (the paper's "for each incoming batch").
//!
//! The last two differ only in which tokens the statistics cover, so their gap is the cost
//! of sharing one calibration across a mixed-domain batch.

use crate::data::EvalError;
use crate::perplexity::nll_sum;
use burn::tensor::{backend::Backend, Tensor};
use std::sync::Arc;
use ttq_core::methods::Ttq;
use ttq_core::{
    CalibrationPolicy, CalibrationStats, ChannelStats, Prepared, QuantError, QuantKernels,
    QuantMethod, QuantSpec, QuantizedLinear,
};
use ttq_models::{CausalLm, Logits};

/// The windows of one text.
#[derive(Debug, Clone)]
pub struct DomainWindows {
    /// The text's name (`wikitext2`, …).
    pub label: String,
    /// Windows of `prompt + continuation` tokens; window `b` goes into batch `b`.
    pub windows: Vec<Vec<u32>>,
}

/// Perplexities of one calibration scheme, over all continuations and per text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SchemeResult {
    /// The scheme.
    pub scheme: String,
    /// Perplexity over every scored token.
    pub perplexity: f64,
    /// Perplexity per text, in the order of the texts.
    pub per_text: Vec<(String, f64)>,
}

/// The comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchCalibrationReport {
    /// Prompt tokens per window.
    pub prompt: usize,
    /// Scored tokens per window.
    pub continuation: usize,
    /// Batches (each one window per text).
    pub batches: usize,
    /// Full precision, then each scheme.
    pub results: Vec<SchemeResult>,
    /// Bytes of one set of quantized weights (codes in 32-bit words, f32 group scales and
    /// zeros, f32 `D⁻¹`): what each request in flight holds under per-request calibration.
    pub packed_bytes_per_set: usize,
}

/// TTQ whose `D` comes from calibration statistics (the mean square per channel,
/// `diag(XᵀX) / tokens`) instead of live activations: a static method.
#[derive(Debug)]
struct TtqFromStatistics(Ttq);

impl<B: Backend> QuantMethod<B> for TtqFromStatistics {
    fn name(&self) -> String {
        format!(
            "{} from calibration statistics",
            QuantMethod::<B>::name(&self.0)
        )
    }

    fn spec(&self) -> &QuantSpec {
        &self.0.spec
    }

    fn prepare(
        &self,
        weight: &Tensor<B, 2>,
        calibration: Option<&CalibrationStats<B>>,
        kernels: &dyn QuantKernels<B>,
    ) -> Result<Prepared<B>, QuantError> {
        let [_, cols] = weight.dims();
        let calib = CalibrationStats::require(calibration, "TTQ (statistics)", cols)?;
        let device = weight.device();
        let mean_sq = (calib.gram.clone() * Tensor::<B, 2>::eye(cols, &device))
            .sum_dim(1)
            .squeeze_dim::<1>(1)
            .div_scalar(calib.tokens as f32);
        // max_abs = RMS and a normalized mean square of 1 give the same s = mean square.
        let stats = ChannelStats {
            max_abs: mean_sq.clone().sqrt(),
            mean_sq_normalized: mean_sq.ones_like(),
            tokens: calib.tokens,
        };
        let (d, d_inv) = kernels.ttq_scales(&stats, &self.0.scale);
        Ok(Prepared::Fixed(QuantizedLinear {
            weight: kernels.quantize(weight.clone(), Some(d), &self.0.spec)?,
            input_scale: Some(d_inv),
            low_rank: None,
        }))
    }
}

/// NLL of the continuation of `window` (targets from position `prompt` on) under the
/// model's current weights; calibration is reset first, so live TTQ calibrates on the
/// prompt and decodes the rest with those weights.
fn continuation_nll<B: Backend>(
    model: &mut CausalLm<B>,
    window: &[u32],
    prompt: usize,
) -> Result<(f64, usize), EvalError> {
    model.reset_calibration();
    let mut cache = model.new_cache();
    let head = model.forward(&window[..prompt], &mut cache, Logits::Last)?;
    let tail = model.forward(&window[prompt..window.len() - 1], &mut cache, Logits::All)?;
    let logits = Tensor::cat(vec![head, tail], 1);
    let nll = nll_sum(logits, &window[prompt..]);
    if !nll.is_finite() {
        return Err(EvalError::Invalid(format!(
            "a window gave a non-finite loss ({nll})"
        )));
    }
    Ok((nll, window.len() - prompt))
}

/// Sums NLL per text over every window, weights set by `prepare(model, batch, text)`.
fn score<B: Backend>(
    model: &mut CausalLm<B>,
    scheme: &str,
    texts: &[DomainWindows],
    prompt: usize,
    mut prepare: impl FnMut(&mut CausalLm<B>, usize, usize) -> Result<(), EvalError>,
) -> Result<SchemeResult, EvalError> {
    let batches = texts.iter().map(|t| t.windows.len()).min().unwrap_or(0);
    let mut per = vec![(0f64, 0usize); texts.len()];
    for b in 0..batches {
        for (t, text) in texts.iter().enumerate() {
            prepare(model, b, t)?;
            let (nll, n) = continuation_nll(model, &text.windows[b], prompt)?;
            per[t].0 += nll;
            per[t].1 += n;
        }
        eprintln!("{scheme}: batch {}/{batches}", b + 1);
    }
    let (nll, n) = per.iter().fold((0.0, 0), |(a, c), (x, m)| (a + x, c + m));
    Ok(SchemeResult {
        scheme: scheme.into(),
        perplexity: (nll / n.max(1) as f64).exp(),
        per_text: texts
            .iter()
            .zip(&per)
            .map(|(t, (x, m))| (t.label.clone(), (x / (*m).max(1) as f64).exp()))
            .collect(),
    })
}

/// Quantizes every layer with `method` from the full-precision statistics of `prompts`.
fn calibrate_on<B: Backend>(
    model: &mut CausalLm<B>,
    method: &Arc<dyn QuantMethod<B>>,
    prompts: &[Vec<u32>],
) -> Result<(), EvalError> {
    let stats = crate::calibration::collect_statistics(model, prompts, false)?;
    model.quantize_calibrated(
        method.clone(),
        CalibrationPolicy::FirstCall,
        &stats,
        &mut |_, _, _| {},
    )?;
    Ok(())
}

/// Runs the comparison: full precision, then the three schemes of the module docs.
pub fn compare_batch_calibration<B: Backend>(
    model: &mut CausalLm<B>,
    ttq: Ttq,
    texts: &[DomainWindows],
    prompt: usize,
) -> Result<BatchCalibrationReport, EvalError> {
    let len = texts
        .first()
        .and_then(|t| t.windows.first())
        .map_or(0, Vec::len);
    if texts.is_empty() || texts.iter().any(|t| t.windows.is_empty()) {
        return Err(EvalError::Invalid(
            "every text needs at least one window".into(),
        ));
    }
    if texts
        .iter()
        .flat_map(|t| &t.windows)
        .any(|w| w.len() != len)
    {
        return Err(EvalError::Invalid("windows differ in length".into()));
    }
    if prompt == 0 || prompt + 1 >= len {
        return Err(EvalError::Invalid(format!(
            "the prompt ({prompt} tokens) must leave at least 2 of the {len}-token window to score"
        )));
    }
    let batches = texts.iter().map(|t| t.windows.len()).min().unwrap_or(0);
    let mut results = Vec::new();
    model.dequantize_all();
    results.push(score(model, "full precision", texts, prompt, |_, _, _| {
        Ok(())
    })?);

    model.quantize(Arc::new(ttq), CalibrationPolicy::FirstCall)?;
    results.push(score(
        model,
        "per request, live (served)",
        texts,
        prompt,
        |_, _, _| Ok(()),
    )?);
    let packed_bytes_per_set = packed_bytes(model, texts, prompt)?;

    let from_stats: Arc<dyn QuantMethod<B>> = Arc::new(TtqFromStatistics(ttq));
    results.push(score(
        model,
        "per request, fp statistics",
        texts,
        prompt,
        |m, b, t| calibrate_on(m, &from_stats, &[texts[t].windows[b][..prompt].to_vec()]),
    )?);
    let mut calibrated_batch = None;
    results.push(score(
        model,
        "per batch, fp statistics",
        texts,
        prompt,
        |m, b, _| {
            if calibrated_batch != Some(b) {
                let prompts: Vec<Vec<u32>> = texts
                    .iter()
                    .map(|t| t.windows[b][..prompt].to_vec())
                    .collect();
                calibrate_on(m, &from_stats, &prompts)?;
                calibrated_batch = Some(b);
            }
            Ok(())
        },
    )?);
    model.dequantize_all();
    Ok(BatchCalibrationReport {
        prompt,
        continuation: len - prompt,
        batches,
        results,
        packed_bytes_per_set,
    })
}

/// Bytes of one set of quantized weights, measured on the model after calibrating on a
/// prompt.
fn packed_bytes<B: Backend>(
    model: &mut CausalLm<B>,
    texts: &[DomainWindows],
    prompt: usize,
) -> Result<usize, EvalError> {
    model.reset_calibration();
    let mut cache = model.new_cache();
    model.forward(&texts[0].windows[0][..prompt], &mut cache, Logits::Last)?;
    Ok(model
        .linears_mut()
        .iter()
        .filter_map(|(_, l)| l.quantized())
        .map(|q| {
            let w = &q.weight;
            let words = w.packed.dims().iter().product::<usize>();
            let groups = w.scales.dims().iter().product::<usize>();
            let scale = q.input_scale.as_ref().map_or(0, |s| s.dims()[0]);
            4 * words + 8 * groups + 4 * scale
        })
        .sum())
}

/// A Markdown table of the report.
pub fn markdown(report: &BatchCalibrationReport) -> String {
    let labels: Vec<&str> = report.results[0]
        .per_text
        .iter()
        .map(|(l, _)| l.as_str())
        .collect();
    let mut out = format!("| calibration | all | {} |\n|---|---:|", labels.join(" | "));
    out.push_str(&"---:|".repeat(labels.len()));
    out.push('\n');
    for r in &report.results {
        let per: Vec<String> = r.per_text.iter().map(|(_, p)| format!("{p:.2}")).collect();
        out.push_str(&format!(
            "| {} | {:.2} | {} |\n",
            r.scheme,
            r.perplexity,
            per.join(" | ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor};
    use ttq_core::{QuantScheme, TensorOpsKernels, TtqScaleConfig};

    type B = NdArray<f32>;

    /// TTQ from the calibration statistics of `X` gives the scale live TTQ gives on `X`.
    #[test]
    fn statistics_give_the_live_scale_of_the_same_activations() {
        let device = Default::default();
        let spec = QuantSpec::new(
            4,
            QuantSpec::parse_group("8").unwrap(),
            QuantScheme::Asymmetric,
        )
        .unwrap();
        let ttq = Ttq::new(spec, TtqScaleConfig::new(0.25, 1e-4).unwrap()).unwrap();
        let w = Tensor::<B, 2>::random([8, 32], Distribution::Normal(0.0, 1.0), &device);
        let x = Tensor::<B, 2>::random([16, 32], Distribution::Normal(0.0, 3.0), &device);
        let kernels = TensorOpsKernels;
        let live = ttq.quantize_for(&w, &x, &kernels).unwrap();
        let stats = CalibrationStats::from_activations(x);
        let Prepared::Fixed(fixed) = TtqFromStatistics(ttq)
            .prepare(&w, Some(&stats), &kernels)
            .unwrap()
        else {
            panic!("TTQ from statistics is a static method");
        };
        let a: Vec<f32> = live.input_scale.unwrap().into_data().to_vec().unwrap();
        let b: Vec<f32> = fixed.input_scale.unwrap().into_data().to_vec().unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-4 * p.abs(), "{p} vs {q}");
        }
        assert!(TtqFromStatistics(ttq).prepare(&w, None, &kernels).is_err());
    }
}
