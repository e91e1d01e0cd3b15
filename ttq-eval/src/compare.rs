//! Every method against a baseline method, with paired bootstrap intervals of the perplexity
//! ratio ([`crate::bootstrap`]): the tables of docs/results.md.
//!
//! A row's baseline is the record of the baseline kind (e.g. AWQ) with the same bits, group
//! size, text and scored positions; where several calibrations of the baseline exist, the
//! first whose label contains the requested calibration text is used.

use crate::bootstrap::{ratio_interval, BootstrapConfig, PairedText, RatioInterval, Verdict};
use crate::{EvalError, MethodKind, Record};
use serde::Serialize;

/// One method (with its calibration and mode) against its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The method's label.
    pub method: String,
    /// Its calibration, if any.
    pub calibration: Option<String>,
    /// `window`, `prefix-P` or `static`.
    pub mode: String,
    /// The baseline's label and calibration.
    pub baseline: String,
    /// Per text: the dataset, the method's and the baseline's perplexity, and the ratio.
    pub texts: Vec<TextComparison>,
    /// Ratio of the mean perplexity over the texts (when there are several).
    pub mean: Option<RatioInterval>,
    /// Where the interval of the mean (or of the only text) puts the method.
    pub verdict: Verdict,
}

/// One text of a [`Comparison`].
#[derive(Debug, Clone, Serialize)]
pub struct TextComparison {
    /// The text.
    pub dataset: String,
    /// The method's perplexity.
    pub perplexity: f64,
    /// The baseline's perplexity.
    pub baseline_perplexity: f64,
    /// `method / baseline` with its interval.
    pub ratio: RatioInterval,
}

fn baseline_label(r: &Record) -> String {
    match &r.calibration {
        Some(c) => format!("{} ({c})", r.method),
        None => r.method.clone(),
    }
}

fn paired<'a>(r: &'a Record, b: &'a Record) -> Result<PairedText<'a>, EvalError> {
    if r.window_nll.is_empty() || b.window_nll.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{} / {} on {}: no per-window NLLs in the records (written by an older ttq); \
             evaluate again",
            r.method, b.method, r.dataset
        )));
    }
    if r.window_nll.len() != b.window_nll.len() || r.window_tokens != b.window_tokens {
        return Err(EvalError::Invalid(format!(
            "{} and {} on {} were not scored on the same windows ({} x {} and {} x {} tokens)",
            r.method,
            b.method,
            r.dataset,
            r.window_nll.len(),
            r.window_tokens,
            b.window_nll.len(),
            b.window_tokens
        )));
    }
    Ok(PairedText {
        a: &r.window_nll,
        b: &b.window_nll,
        tokens_per_window: r.window_tokens,
    })
}

/// Compares every record's method with the `baseline` kind (calibrated on a text whose label
/// contains `baseline_calibration`, when given). Full-precision rows and rows of the baseline
/// kind itself are left out, as are rows with no matching baseline record.
pub fn compare(
    records: &[Record],
    baseline: MethodKind,
    baseline_calibration: Option<&str>,
    cfg: &BootstrapConfig,
) -> Result<Vec<Comparison>, EvalError> {
    let is_baseline = |b: &&Record, r: &Record| {
        b.spec.kind == baseline
            && b.spec.bits == r.spec.bits
            && b.spec.group == r.spec.group
            && b.dataset == r.dataset
            && b.score_from == r.score_from
            && baseline_calibration.is_none_or(|c| {
                b.calibration
                    .as_deref()
                    .is_some_and(|label| label.contains(c))
            })
    };
    let mut keys: Vec<(String, Option<String>, String)> = Vec::new();
    for r in records {
        if matches!(r.spec.kind, MethodKind::Fp) || r.spec.kind == baseline {
            continue;
        }
        let key = (r.method.clone(), r.calibration.clone(), r.mode.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut out = Vec::new();
    for (method, calibration, mode) in keys {
        let rows: Vec<(&Record, &Record)> = records
            .iter()
            .filter(|r| r.method == method && r.calibration == calibration && r.mode == mode)
            .filter_map(|r| records.iter().find(|b| is_baseline(b, r)).map(|b| (r, b)))
            .collect();
        let Some(&(_, first_baseline)) = rows.first() else {
            continue;
        };
        let mut texts = Vec::new();
        let mut pairs = Vec::new();
        for &(r, b) in &rows {
            let p = paired(r, b)?;
            texts.push(TextComparison {
                dataset: r.dataset.clone(),
                perplexity: r.perplexity,
                baseline_perplexity: b.perplexity,
                ratio: ratio_interval(&[p], cfg)?,
            });
            pairs.push(p);
        }
        let mean = if pairs.len() > 1 {
            Some(ratio_interval(&pairs, cfg)?)
        } else {
            None
        };
        let verdict = mean.unwrap_or(texts[0].ratio).verdict();
        out.push(Comparison {
            method,
            calibration,
            mode,
            baseline: baseline_label(first_baseline),
            texts,
            mean,
            verdict,
        });
    }
    Ok(out)
}

fn cell(r: &RatioInterval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", r.ratio, r.low, r.high)
}

/// A Markdown table: one row per comparison, one column per text (the method's perplexity
/// and the ratio to the baseline with its interval), the ratio of the means and the verdict.
pub fn comparison_table(rows: &[Comparison], cfg: &BootstrapConfig) -> String {
    let mut datasets: Vec<&str> = Vec::new();
    for c in rows {
        for t in &c.texts {
            if !datasets.contains(&t.dataset.as_str()) {
                datasets.push(&t.dataset);
            }
        }
    }
    let mut s = format!(
        "Ratio of perplexity to the baseline, {}% paired bootstrap interval over windows \
         ({} resamples, seed {}); `win`/`loss` only where the interval excludes 1.\n\n\
         | method | calibration | mode | vs |",
        (cfg.level * 100.0).round(),
        cfg.resamples,
        cfg.seed
    );
    for d in &datasets {
        s += &format!(" {d}: ppl, ratio |");
    }
    s += " mean ppl ratio | verdict |\n|---|---|---|---|";
    s += &"---:|".repeat(datasets.len() + 1);
    s += "---|\n";
    for c in rows {
        s += &format!(
            "| {} | {} | {} | {} |",
            c.method,
            c.calibration.as_deref().unwrap_or("–"),
            c.mode,
            c.baseline
        );
        for d in &datasets {
            s += &match c.texts.iter().find(|t| t.dataset == *d) {
                Some(t) => format!(" {:.2}, {} |", t.perplexity, cell(&t.ratio)),
                None => " |".into(),
            };
        }
        s += &format!(
            " {} | {} |\n",
            c.mean.as_ref().map_or_else(String::new, cell),
            c.verdict.label()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MethodSpec;

    fn record(method: &str, calib: Option<&str>, dataset: &str, nll: Vec<f64>) -> Record {
        let spec = MethodSpec::parse(method).unwrap();
        let tokens = 10;
        let mean = nll.iter().sum::<f64>() / (nll.len() * tokens) as f64;
        Record {
            method: spec.label(),
            spec,
            calibration: calib.map(str::to_string),
            dataset: dataset.into(),
            mode: if spec.is_dynamic() {
                "window"
            } else {
                "static"
            }
            .into(),
            score_from: 0,
            perplexity: mean.exp(),
            mean_nll: mean,
            scored_tokens: nll.len() * tokens,
            windows: nll.len(),
            seqlen: tokens + 1,
            quantize_seconds: 0.0,
            eval_seconds: 0.0,
            low_rank_bytes: 0,
            window_nll: nll,
            window_tokens: tokens,
        }
    }

    #[test]
    fn pairs_each_method_with_the_baseline_of_its_width_and_text() {
        let cfg = BootstrapConfig {
            resamples: 500,
            ..Default::default()
        };
        // TTQ is 0.1 nats/token better than AWQ on text A at 4 bits, the same on text B;
        // at 3 bits AWQ is the one with the lower perplexity.
        let recs = vec![
            record("fp", None, "A", vec![10.0, 20.0]),
            record("awq:w4", Some("C4 x"), "A", vec![25.0, 25.0]),
            record("awq:w4", Some("C4 x"), "B", vec![25.0, 25.0]),
            record("awq:w3", Some("C4 x"), "A", vec![30.0, 40.0]),
            record("ttq:w4", None, "A", vec![24.0, 24.0]),
            record("ttq:w4", None, "B", vec![25.0, 25.0]),
            record("ttq:w3", None, "A", vec![35.0, 45.0]),
        ];
        let rows = compare(&recs, MethodKind::Awq, Some("C4"), &cfg).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        let w4 = &rows[0];
        assert_eq!(w4.baseline, "awq:w4:g128 (C4 x)");
        assert_eq!(w4.texts.len(), 2);
        let a = w4.texts[0].ratio;
        assert!(
            (a.ratio - (-0.1f64).exp()).abs() < 1e-12 && a.high < 1.0,
            "{a:?}"
        );
        assert_eq!(w4.texts[1].ratio.ratio, 1.0);
        // Mean over texts: (e^2.4 + e^2.5) / (e^2.5 + e^2.5), in every resample.
        let m = w4.mean.unwrap();
        let want = (2.4f64.exp() + 2.5f64.exp()) / (2.0 * 2.5f64.exp());
        assert!((m.ratio - want).abs() < 1e-12 && (m.high - want).abs() < 1e-12);
        assert_eq!(w4.verdict, Verdict::Win);
        assert_eq!(rows[1].verdict, Verdict::Loss);
        assert!(rows[1].mean.is_none());
        let table = comparison_table(&rows, &cfg);
        assert!(table.contains("| ttq:w3:g128:a0.5:l1e-4 | – | window | awq:w3:g128 (C4 x) |"));
        // No AWQ calibrated on PTB: nothing to compare with.
        assert!(compare(&recs, MethodKind::Awq, Some("PTB"), &cfg)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn records_without_window_nlls_or_on_other_windows_are_errors() {
        let cfg = BootstrapConfig::default();
        let old = vec![
            record("rtn:w4", None, "A", vec![]),
            record("ttq:w4", None, "A", vec![]),
        ];
        let err = compare(&old, MethodKind::Rtn, None, &cfg).unwrap_err();
        assert!(err.to_string().contains("per-window"), "{err}");
        let uneven = vec![
            record("rtn:w4", None, "A", vec![1.0, 2.0]),
            record("ttq:w4", None, "A", vec![1.0]),
        ];
        let err = compare(&uneven, MethodKind::Rtn, None, &cfg).unwrap_err();
        assert!(err.to_string().contains("same windows"), "{err}");
    }
}
