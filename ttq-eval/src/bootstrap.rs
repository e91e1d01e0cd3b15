//! Paired bootstrap over evaluation windows: how sure is "method A has lower perplexity than
//! method B"?
//!
//! Both methods are scored on the same windows, so the windows are resampled **together**
//! (the same indices for A and B): the interval then reflects how much the *difference*
//! varies from window to window, not how much the texts' difficulty does. With several texts,
//! each text's windows are resampled on their own (stratified) and the statistic is the ratio
//! of the mean perplexity over texts, `mean_t ppl_A(t) / mean_t ppl_B(t)`; with one text it
//! is `ppl_A / ppl_B`. The interval is the percentile interval of that statistic over the
//! resamples. A method "wins" only where the whole interval is below 1.

use crate::EvalError;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One evaluation text in a paired comparison.
#[derive(Debug, Clone, Copy)]
pub struct PairedText<'a> {
    /// Method A's summed NLL (nats) of each window.
    pub a: &'a [f64],
    /// Method B's summed NLL of the same windows, in the same order.
    pub b: &'a [f64],
    /// Tokens scored in every window (the same for every window and both methods).
    pub tokens_per_window: usize,
}

/// How to resample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples.
    pub resamples: usize,
    /// Seed of the resampling (the same seed gives the same interval).
    pub seed: u64,
    /// Coverage of the interval, e.g. 0.95.
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: 10_000,
            seed: 0,
            level: 0.95,
        }
    }
}

/// Which method the interval favours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The whole interval is below 1: A has lower perplexity.
    Win,
    /// The whole interval is above 1: A has higher perplexity.
    Loss,
    /// The interval contains 1: the windows cannot tell the two apart.
    Tie,
}

impl Verdict {
    /// `win`, `loss` or `tie`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Win => "win",
            Verdict::Loss => "loss",
            Verdict::Tie => "tie",
        }
    }
}

/// A perplexity ratio `A / B` with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioInterval {
    /// The ratio on all windows.
    pub ratio: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl RatioInterval {
    /// Win where the interval excludes 1 from above, loss from below, else a tie.
    pub fn verdict(&self) -> Verdict {
        if self.high < 1.0 {
            Verdict::Win
        } else if self.low > 1.0 {
            Verdict::Loss
        } else {
            Verdict::Tie
        }
    }
}

/// Perplexity of the windows `idx` of one text (all windows when `idx` is `None`).
fn perplexity(nll: &[f64], tokens: usize, idx: Option<&[usize]>) -> f64 {
    let (sum, n) = match idx {
        Some(idx) => (idx.iter().map(|&i| nll[i]).sum::<f64>(), idx.len()),
        None => (nll.iter().sum::<f64>(), nll.len()),
    };
    (sum / (n * tokens) as f64).exp()
}

/// `mean_t ppl_A(t) / mean_t ppl_B(t)` for the chosen windows of every text.
fn statistic(texts: &[PairedText], idx: Option<&[Vec<usize>]>) -> f64 {
    let (mut a, mut b) = (0.0, 0.0);
    for (t, text) in texts.iter().enumerate() {
        let i = idx.map(|v| v[t].as_slice());
        a += perplexity(text.a, text.tokens_per_window, i);
        b += perplexity(text.b, text.tokens_per_window, i);
    }
    a / b
}

fn check(texts: &[PairedText], cfg: &BootstrapConfig) -> Result<(), EvalError> {
    let bad = |m: String| Err(EvalError::Invalid(format!("paired bootstrap: {m}")));
    if texts.is_empty() {
        return bad("no text to compare on".into());
    }
    if cfg.resamples == 0 {
        return bad("at least one resample is needed".into());
    }
    if !(cfg.level > 0.0 && cfg.level < 1.0) {
        return bad(format!("the level must be in (0, 1), got {}", cfg.level));
    }
    for (t, text) in texts.iter().enumerate() {
        if text.a.is_empty() || text.a.len() != text.b.len() {
            return bad(format!(
                "text {t}: the methods must be scored on the same, non-empty list of windows \
                 ({} and {} windows)",
                text.a.len(),
                text.b.len()
            ));
        }
        if text.tokens_per_window == 0 {
            return bad(format!("text {t}: windows score no token"));
        }
        if let Some(v) = text.a.iter().chain(text.b).find(|v| !v.is_finite()) {
            return bad(format!("text {t}: a window NLL is not finite ({v})"));
        }
    }
    Ok(())
}

/// The ratio of mean perplexity of A to B over `texts`, with its paired, stratified
/// percentile bootstrap interval.
pub fn ratio_interval(
    texts: &[PairedText],
    cfg: &BootstrapConfig,
) -> Result<RatioInterval, EvalError> {
    check(texts, cfg)?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut idx: Vec<Vec<usize>> = texts.iter().map(|t| vec![0; t.a.len()]).collect();
    let mut stats: Vec<f64> = (0..cfg.resamples)
        .map(|_| {
            for (text, i) in texts.iter().zip(&mut idx) {
                let n = text.a.len();
                i.iter_mut().for_each(|v| *v = rng.random_range(0..n));
            }
            statistic(texts, Some(&idx))
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - cfg.level) / 2.0;
    Ok(RatioInterval {
        ratio: statistic(texts, None),
        low: quantile(&stats, tail),
        high: quantile(&stats, 1.0 - tail),
    })
}

/// The `q`-quantile of sorted `v` by the nearest-rank rule: the smallest value with at least
/// a fraction `q` of the values at or below it.
fn quantile(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(a: &[f64], b: &[f64], tokens: usize) -> RatioInterval {
        let texts = [PairedText {
            a,
            b,
            tokens_per_window: tokens,
        }];
        ratio_interval(&texts, &BootstrapConfig::default()).unwrap()
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=40).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.025), 1.0);
        assert_eq!(quantile(&v, 0.975), 39.0);
        assert_eq!(quantile(&v, 0.5), 20.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 40.0);
    }

    #[test]
    fn a_constant_per_token_gap_gives_a_point_interval() {
        // A is 0.1 nats per token worse on every window of 100 tokens: every resample has
        // ratio e^0.1, however different the windows are.
        let b = [250.0, 310.0, 190.0, 420.0, 305.0];
        let a: Vec<f64> = b.iter().map(|v| v + 10.0).collect();
        let r = one(&a, &b, 100);
        let e = 0.1f64.exp();
        for v in [r.ratio, r.low, r.high] {
            assert!((v - e).abs() < 1e-12, "{r:?}");
        }
        assert_eq!(r.verdict(), Verdict::Loss);
        let r = one(&b, &a, 100);
        assert!((r.high - 1.0 / e).abs() < 1e-12);
        assert_eq!(r.verdict(), Verdict::Win);
    }

    #[test]
    fn two_windows_give_the_extreme_resamples_as_the_interval() {
        // One token per window; B has NLL 0 (perplexity 1). A's windows have NLL ln 4 and
        // ln 2: resampling {0,0} gives 4, {1,1} gives 2, a mix gives √8. Each extreme has
        // probability 1/4, far above 2.5%, so the 95% interval is exactly [2, 4] around √8.
        let r = one(&[4f64.ln(), 2f64.ln()], &[0.0, 0.0], 1);
        assert!((r.ratio - 8f64.sqrt()).abs() < 1e-12, "{r:?}");
        assert!(
            (r.low - 2.0).abs() < 1e-12 && (r.high - 4.0).abs() < 1e-12,
            "{r:?}"
        );
        assert_eq!(r.verdict(), Verdict::Loss);
        // ln 2 and 0: the interval [1, 2] touches 1, so no claim either way.
        let r = one(&[2f64.ln(), 0.0], &[0.0, 0.0], 1);
        assert!((r.low - 1.0).abs() < 1e-12, "{r:?}");
        assert_eq!(r.verdict(), Verdict::Tie);
    }

    #[test]
    fn several_texts_compare_mean_perplexities() {
        // Text 1: ppl A = e, B = 1; text 2: A = 1, B = e (one window each, so every resample
        // is the same): mean A = mean B, ratio 1 exactly.
        let texts = [
            PairedText {
                a: &[1.0],
                b: &[0.0],
                tokens_per_window: 1,
            },
            PairedText {
                a: &[0.0],
                b: &[2.0],
                tokens_per_window: 2,
            },
        ];
        let r = ratio_interval(&texts, &BootstrapConfig::default()).unwrap();
        assert!((r.ratio - 1.0).abs() < 1e-12 && r.low == r.high, "{r:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let a = [3.1, 2.7, 3.5, 2.2, 3.9, 2.8];
        let b = [3.0, 2.9, 3.1, 2.4, 3.2, 2.9];
        let texts = [PairedText {
            a: &a,
            b: &b,
            tokens_per_window: 1,
        }];
        let cfg = BootstrapConfig {
            resamples: 2000,
            ..Default::default()
        };
        let r1 = ratio_interval(&texts, &cfg).unwrap();
        assert_eq!(r1, ratio_interval(&texts, &cfg).unwrap());
        assert!(r1.low < r1.ratio && r1.ratio < r1.high, "{r1:?}");
    }

    #[test]
    fn unpaired_or_empty_inputs_are_errors() {
        let cfg = BootstrapConfig::default();
        let pair = |a: &'static [f64], b: &'static [f64], t| PairedText {
            a,
            b,
            tokens_per_window: t,
        };
        for texts in [
            vec![],
            vec![pair(&[1.0], &[1.0, 2.0], 1)],
            vec![pair(&[], &[], 1)],
            vec![pair(&[1.0], &[1.0], 0)],
            vec![pair(&[f64::NAN], &[1.0], 1)],
        ] {
            assert!(ratio_interval(&texts, &cfg).is_err(), "{texts:?}");
        }
        let texts = [pair(&[1.0], &[1.0], 1)];
        for bad in [
            BootstrapConfig {
                resamples: 0,
                ..cfg
            },
            BootstrapConfig { level: 1.0, ..cfg },
            BootstrapConfig { level: 0.0, ..cfg },
        ] {
            assert!(ratio_interval(&texts, &bad).is_err(), "{bad:?}");
        }
    }
}
