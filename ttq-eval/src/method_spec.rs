//! Methods by name, as written on command lines and in experiment definitions.
//!
//! Syntax: `KIND[:FIELD]...` with `KIND` one of `fp`, `rtn`, `awq`, `gptq`, `ttq`, `ttqlr`,
//! `ttqs`, and fields
//! - `w4` bits, `g128` / `grow` group size, `sym` symmetric,
//! - `a0.25` TTQ's α, `l1e-4` TTQ's λ, `r16` low-rank rank, `wsvd` activation-weighted SVD,
//! - `amax0.5` and `n6`: the α grid of TTQ with test-time search (`ttqs`), `n` values evenly
//!   spaced from 0 to `amax` (`n1`: `amax` alone); `rows128`: rows its error is estimated on,
//! - `act` GPTQ act-order, `noclip` AWQ without the clipping search.
//!
//! Bare numbers are read positionally as bits, group and α (`ttq:4:128:0.25`), the older
//! syntax of `ttq ppl --sweep`.

use crate::EvalError;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use ttq_core::{
    methods::{Awq, AwqConfig, Gptq, GptqConfig, Rtn, Ttq, TtqLowRank, TtqSearch},
    GroupSize, QuantMethod, QuantScheme, QuantSpec, TtqScaleConfig,
};

/// The family of a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// Full precision.
    Fp,
    /// Round-to-nearest.
    Rtn,
    /// AWQ (calibrated).
    Awq,
    /// GPTQ (calibrated).
    Gptq,
    /// Test-time quantization.
    Ttq,
    /// TTQ on the residual of a static low-rank part.
    TtqLr,
    /// TTQ with α searched per prompt and layer.
    TtqS,
}

/// A fully specified method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodSpec {
    /// Which method.
    pub kind: MethodKind,
    /// Bits per weight.
    pub bits: u32,
    /// Group size (`None`: a whole row).
    pub group: Option<usize>,
    /// Symmetric scheme.
    pub symmetric: bool,
    /// TTQ's α.
    pub alpha: f32,
    /// TTQ's λ.
    pub lambda: f32,
    /// Low-rank rank (TTQ + low-rank).
    pub rank: usize,
    /// Activation-weighted SVD (TTQ + low-rank).
    pub weighted_svd: bool,
    /// GPTQ act-order.
    pub act_order: bool,
    /// AWQ's clipping search.
    pub clip: bool,
    /// Largest α of the TTQ-search grid.
    pub alpha_max: f32,
    /// Values in the TTQ-search grid (evenly spaced from 0 to `alpha_max`).
    pub grid_points: usize,
    /// Rows TTQ-search estimates each layer's error on.
    pub sample_rows: usize,
}

impl Default for MethodSpec {
    fn default() -> Self {
        Self {
            kind: MethodKind::Fp,
            bits: 4,
            group: Some(128),
            symmetric: false,
            alpha: TtqScaleConfig::default().alpha,
            lambda: TtqScaleConfig::default().lambda,
            rank: 16,
            weighted_svd: false,
            act_order: false,
            clip: true,
            alpha_max: 0.5,
            grid_points: TtqSearch::DEFAULT_ALPHAS.len(),
            sample_rows: TtqSearch::DEFAULT_SAMPLE_ROWS,
        }
    }
}

impl MethodSpec {
    /// Parses one method (see the module docs).
    pub fn parse(text: &str) -> Result<Self, EvalError> {
        let bad = |why: String| EvalError::Invalid(format!("method `{text}`: {why}"));
        let mut parts = text.trim().split(':');
        let kind = match parts.next().unwrap_or("") {
            "fp" => MethodKind::Fp,
            "rtn" => MethodKind::Rtn,
            "awq" => MethodKind::Awq,
            "gptq" => MethodKind::Gptq,
            "ttq" => MethodKind::Ttq,
            "ttqlr" => MethodKind::TtqLr,
            "ttqs" => MethodKind::TtqS,
            other => {
                return Err(bad(format!(
                    "unknown method `{other}` (fp, rtn, awq, gptq, ttq, ttqlr, ttqs)"
                )))
            }
        };
        let mut m = Self {
            kind,
            ..Self::default()
        };
        let mut positional = 0;
        let dynamic = matches!(kind, MethodKind::Ttq | MethodKind::TtqLr | MethodKind::TtqS);
        let has_alpha = matches!(kind, MethodKind::Ttq | MethodKind::TtqLr);
        let search = kind == MethodKind::TtqS;
        // Every field must mean something for the kind: `awq:w4:act` is an error, not AWQ
        // with `act` silently dropped.
        let only = |field: &str, ok: bool, which: &str| -> Result<(), EvalError> {
            if ok {
                Ok(())
            } else {
                Err(bad(format!("field `{field}` only applies to {which}")))
            }
        };
        let int = |field: &str, digits: &str, what: &str| -> Result<u64, EvalError> {
            digits.parse::<u64>().map_err(|_| {
                bad(format!(
                    "`{field}`: {what} must be a whole number >= 0, got `{digits}`"
                ))
            })
        };
        let bits = |field: &str, digits: &str| -> Result<u32, EvalError> {
            let b = int(field, digits, "bits")?;
            u32::try_from(b).map_err(|_| bad(format!("`{field}`: bits must be in 2..=8")))
        };
        if kind == MethodKind::Fp {
            if let Some(f) = parts.next() {
                return Err(bad(format!("`fp` takes no fields, got `{f}`")));
            }
        }
        for field in parts {
            let num = |s: &str| -> Result<f64, EvalError> {
                s.parse::<f64>()
                    .map_err(|_| bad(format!("`{field}` is not a number")))
            };
            if field.parse::<f64>().is_ok() {
                match positional {
                    0 => m.bits = bits(field, field)?,
                    1 => m.group = parse_group(field).map_err(&bad)?,
                    2 => {
                        only(field, has_alpha, "ttq and ttqlr (alpha)")?;
                        m.alpha = num(field)? as f32;
                    }
                    _ => return Err(bad("too many positional fields".into())),
                }
                positional += 1;
                continue;
            }
            match field {
                "sym" => m.symmetric = true,
                "act" => {
                    only(field, kind == MethodKind::Gptq, "gptq (act-order)")?;
                    m.act_order = true;
                }
                "noclip" => {
                    only(field, kind == MethodKind::Awq, "awq (clipping search)")?;
                    m.clip = false;
                }
                "wsvd" => {
                    only(field, kind == MethodKind::TtqLr, "ttqlr (weighted SVD)")?;
                    m.weighted_svd = true;
                }
                f if f.starts_with("amax") => {
                    only(f, search, "ttqs (largest alpha of the grid)")?;
                    m.alpha_max = num(&f[4..])? as f32;
                }
                f if f.starts_with("rows") => {
                    only(f, search, "ttqs (sample rows)")?;
                    let r = int(f, &f[4..], "the sample rows")?;
                    m.sample_rows = usize::try_from(r)
                        .map_err(|_| bad(format!("`{f}`: too many sample rows")))?;
                }
                f if f.starts_with('n') => {
                    only(f, search, "ttqs (grid points)")?;
                    let n = int(f, &f[1..], "the grid points")?;
                    m.grid_points = usize::try_from(n)
                        .map_err(|_| bad(format!("`{f}`: too many grid points")))?;
                }
                f if f.starts_with('w') => m.bits = bits(f, &f[1..])?,
                f if f.starts_with('g') => m.group = parse_group(&f[1..]).map_err(&bad)?,
                f if f.starts_with('a') => {
                    only(f, has_alpha, "ttq and ttqlr (alpha; ttqs takes amax)")?;
                    m.alpha = num(&f[1..])? as f32;
                }
                f if f.starts_with('l') => {
                    only(f, dynamic, "ttq, ttqlr and ttqs (lambda)")?;
                    m.lambda = num(&f[1..])? as f32;
                }
                f if f.starts_with('r') => {
                    only(f, kind == MethodKind::TtqLr, "ttqlr (rank)")?;
                    let r = int(f, &f[1..], "the rank")?;
                    m.rank =
                        usize::try_from(r).map_err(|_| bad(format!("`{f}`: rank too large")))?;
                }
                f => return Err(bad(format!("unknown field `{f}`"))),
            }
        }
        // Build once to validate every value.
        m.build::<burn::backend::NdArray<f32>>()
            .map_err(|e| bad(e.to_string()))?;
        Ok(m)
    }

    /// Parses a comma-separated list; an empty list is an error (a run of nothing).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, EvalError> {
        let list = text
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(EvalError::Invalid(format!(
                "the method list `{text}` is empty: give at least one of fp, rtn, awq, gptq, \
                 ttq, ttqlr"
            )));
        }
        Ok(list)
    }

    /// Whether the method needs calibration statistics.
    pub fn needs_calibration(&self) -> bool {
        matches!(self.kind, MethodKind::Awq | MethodKind::Gptq)
            || (self.kind == MethodKind::TtqLr && self.weighted_svd && self.rank > 0)
    }

    /// Whether the method re-quantizes per prompt (and so depends on the calibration mode).
    pub fn is_dynamic(&self) -> bool {
        matches!(
            self.kind,
            MethodKind::Ttq | MethodKind::TtqLr | MethodKind::TtqS
        )
    }

    /// The α grid of TTQ-search: `grid_points` values evenly spaced from 0 to `alpha_max`
    /// (`alpha_max` alone for one point).
    pub fn search_alphas(&self) -> Vec<f32> {
        match self.grid_points {
            0 => Vec::new(),
            1 => vec![self.alpha_max],
            n => (0..n)
                .map(|i| self.alpha_max * i as f32 / (n - 1) as f32)
                .collect(),
        }
    }

    /// The quantizer spec.
    pub fn quant_spec(&self) -> Result<QuantSpec, ttq_core::QuantError> {
        let scheme = if self.symmetric {
            QuantScheme::Symmetric
        } else {
            QuantScheme::Asymmetric
        };
        let group = self.group.map_or(GroupSize::Row, GroupSize::Size);
        QuantSpec::new(self.bits, group, scheme)
    }

    /// The method object, or `None` for full precision.
    pub fn build<B: Backend>(
        &self,
    ) -> Result<Option<Arc<dyn QuantMethod<B>>>, ttq_core::QuantError> {
        if self.kind == MethodKind::Fp {
            return Ok(None);
        }
        let spec = self.quant_spec()?;
        let ttq = || Ttq::new(spec, TtqScaleConfig::new(self.alpha, self.lambda)?);
        Ok(Some(match self.kind {
            MethodKind::Fp => unreachable!("handled above"),
            MethodKind::Rtn => Arc::new(Rtn::new(spec)),
            MethodKind::Awq => Arc::new(Awq::new(
                spec,
                AwqConfig {
                    clip: self.clip,
                    ..AwqConfig::default()
                },
            )?),
            MethodKind::Gptq => Arc::new(Gptq::new(
                spec,
                GptqConfig {
                    act_order: self.act_order,
                    ..GptqConfig::default()
                },
            )?),
            MethodKind::Ttq => Arc::new(ttq()?),
            MethodKind::TtqS => Arc::new(TtqSearch::new(
                spec,
                &self.search_alphas(),
                self.lambda,
                self.sample_rows,
            )?),
            MethodKind::TtqLr => {
                let mut m = TtqLowRank::new(ttq()?, self.rank);
                m.weighted = self.weighted_svd;
                Arc::new(m)
            }
        }))
    }

    /// A canonical label, parseable by [`Self::parse`], listing what differs from the
    /// defaults that matter for the kind.
    pub fn label(&self) -> String {
        if self.kind == MethodKind::Fp {
            return "fp".into();
        }
        let kind = match self.kind {
            MethodKind::Fp => "fp",
            MethodKind::Rtn => "rtn",
            MethodKind::Awq => "awq",
            MethodKind::Gptq => "gptq",
            MethodKind::Ttq => "ttq",
            MethodKind::TtqLr => "ttqlr",
            MethodKind::TtqS => "ttqs",
        };
        let mut s = format!("{kind}:w{}:g", self.bits);
        match self.group {
            Some(g) => s += &g.to_string(),
            None => s += "row",
        }
        if self.symmetric {
            s += ":sym";
        }
        match self.kind {
            MethodKind::Ttq | MethodKind::TtqLr => {
                s += &format!(":a{}:l{:e}", self.alpha, self.lambda);
            }
            MethodKind::TtqS => {
                s += &format!(
                    ":amax{}:n{}:rows{}:l{:e}",
                    self.alpha_max, self.grid_points, self.sample_rows, self.lambda
                );
            }
            _ => {}
        }
        if self.kind == MethodKind::TtqLr {
            s += &format!(":r{}", self.rank);
            if self.weighted_svd {
                s += ":wsvd";
            }
        }
        if self.kind == MethodKind::Gptq && self.act_order {
            s += ":act";
        }
        if self.kind == MethodKind::Awq && !self.clip {
            s += ":noclip";
        }
        s
    }
}

fn parse_group(text: &str) -> Result<Option<usize>, String> {
    match QuantSpec::parse_group(text).map_err(|e| e.to_string())? {
        GroupSize::Row => Ok(None),
        GroupSize::Size(g) => Ok(Some(g)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keyed_and_positional_fields() {
        let m = MethodSpec::parse("ttq:4:128:0.25").unwrap();
        assert_eq!(
            (m.kind, m.bits, m.group, m.alpha),
            (MethodKind::Ttq, 4, Some(128), 0.25)
        );
        let m = MethodSpec::parse("ttqlr:w3:g64:a0.3:l1e-3:r8:wsvd").unwrap();
        assert_eq!(
            (m.bits, m.group, m.alpha, m.lambda, m.rank, m.weighted_svd),
            (3, Some(64), 0.3, 1e-3, 8, true)
        );
        assert!(m.needs_calibration());
        let m = MethodSpec::parse("gptq:w2:grow:act").unwrap();
        assert_eq!((m.group, m.act_order), (None, true));
        assert!(!MethodSpec::parse("awq:w4:noclip").unwrap().clip);
        let m = MethodSpec::parse("ttqs:w3:g32:amax0.4:n5:rows64").unwrap();
        assert_eq!((m.kind, m.bits, m.sample_rows), (MethodKind::TtqS, 3, 64));
        assert_eq!(m.search_alphas(), vec![0.0, 0.1, 0.2, 0.3, 0.4]);
        assert!(m.is_dynamic() && !m.needs_calibration());
        assert_eq!(
            MethodSpec::parse("ttqs:n1:amax0.25")
                .unwrap()
                .search_alphas(),
            vec![0.25]
        );
    }

    #[test]
    fn labels_parse_back_to_the_same_method() {
        for text in [
            "fp",
            "rtn:w3:g32",
            "awq:w4:noclip",
            "gptq:w3:act",
            "ttq:w4:a0.25",
            "ttqlr:w2:grow:r4:wsvd",
            "ttqs:w3:g32",
            "ttqs:w4:amax0.4:n5:rows64:l1e-2",
        ] {
            let m = MethodSpec::parse(text).unwrap();
            assert_eq!(MethodSpec::parse(&m.label()).unwrap(), m, "{text}");
        }
    }

    #[test]
    fn rejects_bad_methods_with_a_message() {
        for bad in [
            "xyz",
            "rtn:w9",
            "rtn:g100",
            "ttq:a-1",
            "gptq:w4:zzz",
            "rtn:4:128:0.5:1",
            "ttqlr:w4:r-5",
            "ttqlr:w4:r1.5",
            "awq:w4:act",
            "gptq:w4:noclip",
            "rtn:w4:a0.5",
            "rtn:w4:r8",
            "ttq:w4:wsvd",
            "rtn:w4.5",
            "rtn:w-4",
            "rtn:g0",
            "fp:w4",
            "ttqs:w4:a0.25",
            "ttqs:w4:0.25",
            "ttq:w4:amax0.5",
            "ttq:w4:n4",
            "rtn:w4:rows8",
            "ttqs:w4:n0",
            "ttqs:w4:n17",
            "ttqs:w4:rows0",
            "ttqs:w4:amax-1",
            "ttqs:w4:nx",
        ] {
            let err = MethodSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
