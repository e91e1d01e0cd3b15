//! Many methods × datasets × calibration sets on one loaded model, with every method scored
//! on exactly the same tokens.
//!
//! The texts in `../shared/data` are test splits only, so calibration windows are drawn from
//! the part of a text **after** the windows that are evaluated: calibration and evaluation
//! tokens never overlap (see [`EvalText::held_out`]).

use crate::{
    calibration::{collect_statistics, sample_windows, CalibrationSampling},
    method_spec::MethodSpec,
    perplexity, windows, CalibrationMode, Dataset, EvalError, PerplexityOptions,
};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use ttq_core::{CalibrationPolicy, CalibrationStats};

/// Calibration statistics of every block linear, by layer name.
type Statistics<B> = BTreeMap<String, CalibrationStats<B>>;
use ttq_models::{CausalLm, TextTokenizer};

/// A tokenized evaluation text.
#[derive(Debug, Clone)]
pub struct EvalText {
    /// The dataset.
    pub dataset: Dataset,
    /// The windows that are scored.
    pub windows: Vec<Vec<u32>>,
    /// The tokens after the scored windows, where calibration windows come from.
    pub held_out: Vec<u32>,
}

impl EvalText {
    /// Loads and tokenizes `dataset` and cuts the first `max_windows` windows of `seqlen`.
    pub fn load(
        dataset: Dataset,
        data_dir: &Path,
        tokenizer: &TextTokenizer,
        seqlen: usize,
        max_windows: Option<usize>,
        add_bos: bool,
    ) -> Result<Self, EvalError> {
        let text = dataset.load(data_dir)?;
        let tokens = tokenizer.encode(&text, add_bos)?;
        let bos = if add_bos { tokenizer.bos() } else { None };
        let wins = windows(&tokens, seqlen, max_windows, bos);
        if wins.is_empty() {
            return Err(EvalError::Invalid(format!(
                "{}: {} tokens is shorter than one window of {seqlen}",
                dataset.label(),
                tokens.len()
            )));
        }
        let held_out = tokens[wins.len() * seqlen..].to_vec();
        Ok(Self {
            dataset,
            windows: wins,
            held_out,
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct GridConfig {
    /// Methods, in order.
    pub methods: Vec<MethodSpec>,
    /// Indices of the texts calibration-based methods are calibrated on (each one in turn).
    pub calibrate_on: Vec<usize>,
    /// Calibration windows.
    pub sampling: CalibrationSampling,
    /// Also evaluate test-time methods in the prefix-calibrated mode with this prefix; then
    /// every method is scored on the tokens after the prefix only.
    pub prefix: Option<usize>,
    /// `<bos>` for calibration windows.
    pub bos: Option<u32>,
    /// Progress on stderr.
    pub progress: bool,
}

/// One perplexity measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Canonical method label.
    pub method: String,
    /// The method's fields.
    pub spec: MethodSpec,
    /// `DATASET n×L seed S` for calibrated methods.
    pub calibration: Option<String>,
    /// The evaluated text.
    pub dataset: String,
    /// `window` (statistics from the scored window), `prefix-P`, or `static`.
    pub mode: String,
    /// Targets scored from this position of each window.
    pub score_from: usize,
    /// Perplexity.
    pub perplexity: f64,
    /// Mean NLL (nats).
    pub mean_nll: f64,
    /// Tokens scored.
    pub scored_tokens: usize,
    /// Windows.
    pub windows: usize,
    /// Tokens per window.
    pub seqlen: usize,
    /// Seconds spent preparing the method (calibration statistics not included).
    pub quantize_seconds: f64,
    /// Seconds of the perplexity run.
    pub eval_seconds: f64,
    /// Extra f32 bytes of static low-rank factors.
    pub low_rank_bytes: usize,
    /// Summed NLL of each window (empty in records written before they were kept).
    #[serde(default)]
    pub window_nll: Vec<f64>,
    /// Tokens scored per window.
    #[serde(default)]
    pub window_tokens: usize,
}

/// Runs every method of `cfg` on every text, calling `on_record` after each measurement.
pub fn run_grid<B: Backend>(
    model: &mut CausalLm<B>,
    texts: &[EvalText],
    cfg: &GridConfig,
    on_record: &mut dyn FnMut(&Record),
) -> Result<Vec<Record>, EvalError> {
    let mut out = Vec::new();
    let score_from = cfg.prefix.unwrap_or(0);
    let (free, calibrated): (Vec<_>, Vec<_>) =
        cfg.methods.iter().partition(|m| !m.needs_calibration());
    let mut run = |model: &mut CausalLm<B>,
                   m: &MethodSpec,
                   calibration: Option<(&str, &Statistics<B>)>|
     -> Result<(), EvalError> {
        let modes: Vec<CalibrationMode> = match (m.is_dynamic(), cfg.prefix) {
            (true, Some(p)) => vec![CalibrationMode::Window, CalibrationMode::Prefix(p)],
            _ => vec![CalibrationMode::Window],
        };
        for mode in modes {
            let policy = match mode {
                CalibrationMode::Window => CalibrationPolicy::EveryCall,
                CalibrationMode::Prefix(_) => CalibrationPolicy::FirstCall,
            };
            model.dequantize_all();
            let t = Instant::now();
            if let Some(method) = m.build::<B>()? {
                let empty = Statistics::<B>::new();
                let stats = calibration.map_or(&empty, |(_, s)| s);
                let mut report = |done: usize, total: usize, name: &str| {
                    if cfg.progress
                        && m.needs_calibration()
                        && (done.is_multiple_of(16) || done == total)
                    {
                        eprintln!("  {} {done}/{total} layers ({name})", m.label());
                    }
                };
                model.quantize_calibrated(method, policy, stats, &mut report)?;
            }
            let quantize_seconds = t.elapsed().as_secs_f64();
            let low_rank_bytes = model.low_rank_bytes();
            for text in texts {
                let options = PerplexityOptions {
                    progress: false,
                    score_from,
                    mode,
                };
                let r = perplexity(model, &text.windows, &options)?;
                let record = Record {
                    method: m.label(),
                    spec: *m,
                    calibration: calibration.map(|(label, _)| label.to_string()),
                    dataset: text.dataset.label(),
                    // Full precision is not dynamic, so it is "static" too.
                    mode: match (m.is_dynamic(), mode) {
                        (false, _) => "static".into(),
                        (true, CalibrationMode::Window) => "window".into(),
                        (true, CalibrationMode::Prefix(p)) => format!("prefix-{p}"),
                    },
                    score_from,
                    perplexity: r.perplexity,
                    mean_nll: r.mean_nll,
                    scored_tokens: r.scored_tokens,
                    windows: r.windows,
                    seqlen: r.seqlen,
                    quantize_seconds,
                    eval_seconds: r.seconds,
                    low_rank_bytes,
                    window_nll: r.window_nll,
                    window_tokens: r.window_tokens,
                };
                on_record(&record);
                out.push(record);
            }
        }
        Ok(())
    };
    for m in &free {
        run(model, m, None)?;
    }
    if !calibrated.is_empty() {
        for &c in &cfg.calibrate_on {
            let text = texts
                .get(c)
                .ok_or_else(|| EvalError::Invalid(format!("no text number {c} to calibrate on")))?;
            let wins = sample_windows(&text.held_out, &cfg.sampling, cfg.bos).map_err(|e| {
                EvalError::Invalid(format!(
                    "{} (calibration comes from the {} tokens after the evaluated windows; \
                     evaluate fewer windows or sample shorter ones)",
                    e,
                    text.held_out.len()
                ))
            })?;
            let label = format!(
                "{} {}x{} seed {}",
                text.dataset.label(),
                cfg.sampling.samples,
                cfg.sampling.len,
                cfg.sampling.seed
            );
            if cfg.progress {
                eprintln!("calibrating on {label}");
            }
            let stats = collect_statistics(model, &wins, cfg.progress)?;
            for m in &calibrated {
                run(model, m, Some((&label, &stats)))?;
            }
        }
    }
    model.dequantize_all();
    Ok(out)
}

/// A Markdown table: one row per (method, calibration, mode), one column per dataset, and
/// the mean over datasets when there are several.
pub fn markdown_table(records: &[Record]) -> String {
    let mut datasets: Vec<&str> = Vec::new();
    let mut rows: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for r in records {
        if !datasets.contains(&r.dataset.as_str()) {
            datasets.push(&r.dataset);
        }
    }
    for r in records {
        let key = match &r.calibration {
            Some(c) => format!("{} | {} | {}", r.method, c, r.mode),
            None => format!("{} | – | {}", r.method, r.mode),
        };
        let col = datasets
            .iter()
            .position(|d| *d == r.dataset)
            .expect("listed");
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v[col] = Some(r.perplexity),
            None => {
                let mut v = vec![None; datasets.len()];
                v[col] = Some(r.perplexity);
                rows.push((key, v));
            }
        }
    }
    let mean = datasets.len() > 1;
    let mut s = String::from("| method | calibration | mode |");
    for d in &datasets {
        s += &format!(" {d} |");
    }
    if mean {
        s += " mean |";
    }
    s += "\n|---|---|---|";
    s += &"---:|".repeat(datasets.len() + usize::from(mean));
    s += "\n";
    for (key, v) in rows {
        s += &format!("| {key} |");
        for p in &v {
            s += &match p {
                Some(p) => format!(" {} |", fmt_ppl(*p)),
                None => " |".into(),
            };
        }
        if mean {
            let all: Vec<f64> = v.iter().flatten().copied().collect();
            s += &if all.len() == v.len() {
                format!(" {} |", fmt_ppl(all.iter().sum::<f64>() / all.len() as f64))
            } else {
                " |".into()
            };
        }
        s += "\n";
    }
    s
}

/// Perplexities with four significant digits (and no exponent below 1e6).
fn fmt_ppl(p: f64) -> String {
    if !p.is_finite() {
        return format!("{p}");
    }
    if p >= 1e6 {
        return format!("{p:.3e}");
    }
    let digits = (4 - (p.abs().max(1.0).log10().floor() as i32 + 1)).max(0) as usize;
    format!("{p:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_perplexities_to_four_significant_digits() {
        assert_eq!(fmt_ppl(17.4567), "17.46");
        assert_eq!(fmt_ppl(251.93), "251.9");
        assert_eq!(fmt_ppl(2962.4), "2962");
        assert_eq!(fmt_ppl(2.71234), "2.712");
        assert_eq!(fmt_ppl(1.5e7), "1.500e7");
    }
}
