//! The named experiments of `docs/results.md` (issue 4), as method lists and datasets for
//! [`crate::run_grid`]. `ttq experiment NAME` runs one.

use crate::{Dataset, EvalError, MethodSpec};

/// The experiments, by name.
pub const NAMES: [&str; 4] = ["methods", "groups", "domain", "sensitivity"];

/// What one experiment evaluates.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its name.
    pub name: &'static str,
    /// One line on what it answers.
    pub question: &'static str,
    /// Evaluation texts.
    pub datasets: Vec<Dataset>,
    /// Indices into `datasets` to calibrate AWQ and GPTQ on, each in turn.
    pub calibrate_on: Vec<usize>,
    /// Methods.
    pub methods: Vec<MethodSpec>,
    /// Prefix for the prefix-calibrated TTQ mode, if the experiment uses it.
    pub prefix: Option<usize>,
}

fn specs(list: &[String]) -> Vec<MethodSpec> {
    list.iter()
        .map(|s| MethodSpec::parse(s).expect("experiment methods are valid"))
        .collect()
}

/// The experiment called `name`.
pub fn experiment(name: &str) -> Result<Experiment, EvalError> {
    let all3 = vec![Dataset::WikiText2, Dataset::Ptb, Dataset::C4];
    Ok(match name {
        // 1. Methods x bits at group 128 x datasets; AWQ/GPTQ calibrated on C4.
        "methods" => {
            let mut m = vec!["fp".to_string()];
            for b in [2, 3, 4, 5] {
                for k in [
                    "rtn".to_string(),
                    "awq".into(),
                    // Act-order: without it GPTQ lost to RTN at 3 bits on SmolLM2 (see
                    // docs/results.md); AutoGPTQ users mostly run it on (`desc_act`).
                    "gptq:act".into(),
                    "ttq:a0.5".into(),
                    "ttq:a0.25".into(),
                    "ttqlr:a0.25:r16".into(),
                ] {
                    let (kind, rest) = k.split_once(':').unwrap_or((&k, ""));
                    let tail = if rest.is_empty() {
                        String::new()
                    } else {
                        format!(":{rest}")
                    };
                    m.push(format!("{kind}:w{b}:g128{tail}"));
                }
            }
            Experiment {
                name: "methods",
                question:
                    "perplexity of RTN, AWQ, GPTQ, TTQ and TTQ+low-rank at 2-5 bits, group 128",
                datasets: all3,
                calibrate_on: vec![2],
                methods: specs(&m),
                prefix: None,
            }
        }
        // 2. Group-size sweep at 3 and 4 bits on WikiText-2 (AWQ calibrated on its held-out part):
        //    does TTQ at 2g match AWQ at g?
        "groups" => {
            let mut m = Vec::new();
            for b in [3, 4] {
                for g in ["32", "64", "128", "256", "512", "1024", "row"] {
                    m.push(format!("rtn:w{b}:g{g}"));
                    m.push(format!("awq:w{b}:g{g}"));
                    m.push(format!("ttq:w{b}:g{g}:a0.25"));
                }
            }
            Experiment {
                name: "groups",
                question: "group-size sweep at 3 and 4 bits: does TTQ at 2g match AWQ at g?",
                datasets: vec![Dataset::WikiText2],
                calibrate_on: vec![0],
                methods: specs(&m),
                prefix: None,
            }
        }
        // 3. Domain shift: AWQ/GPTQ calibrated on each text, evaluated on all; TTQ in both modes.
        "domain" => {
            let mut m = vec!["fp".to_string()];
            for b in [3, 4] {
                m.push(format!("rtn:w{b}"));
                m.push(format!("ttq:w{b}:a0.25"));
                m.push(format!("ttq:w{b}:a0.5"));
                m.push(format!("awq:w{b}"));
                m.push(format!("gptq:w{b}:act"));
            }
            Experiment {
                name: "domain",
                question:
                    "domain shift: calibration set x evaluation set, TTQ in window and prefix modes",
                datasets: all3,
                calibrate_on: vec![0, 1, 2],
                methods: specs(&m),
                prefix: Some(1024),
            }
        }
        // 4. Sensitivity of TTQ to alpha and lambda.
        "sensitivity" => {
            let mut m = vec!["fp".to_string()];
            for b in [3, 4] {
                m.push(format!("rtn:w{b}"));
                for a in ["0", "0.1", "0.2", "0.25", "0.3", "0.4", "0.5", "0.75", "1"] {
                    m.push(format!("ttq:w{b}:a{a}"));
                }
                for l in ["0", "1e-2", "1", "100"] {
                    m.push(format!("ttq:w{b}:a0.25:l{l}"));
                }
            }
            Experiment {
                name: "sensitivity",
                question: "TTQ's sensitivity to alpha and lambda at 3 and 4 bits, group 128",
                datasets: vec![Dataset::WikiText2],
                calibrate_on: vec![],
                methods: specs(&m),
                prefix: None,
            }
        }
        other => {
            return Err(EvalError::Invalid(format!(
                "unknown experiment `{other}` (one of: {})",
                NAMES.join(", ")
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_experiment_is_well_formed() {
        for name in NAMES {
            let e = experiment(name).unwrap();
            assert!(!e.methods.is_empty());
            for &c in &e.calibrate_on {
                assert!(c < e.datasets.len(), "{name}");
            }
            let calibrated = e.methods.iter().any(MethodSpec::needs_calibration);
            assert_eq!(calibrated, !e.calibrate_on.is_empty(), "{name}");
        }
        assert_eq!(experiment("methods").unwrap().methods.len(), 1 + 4 * 6);
        assert!(experiment("nope").is_err());
    }
}
