//! `ttq compare`: every method of one or more `records.json` files against a baseline method,
//! with paired bootstrap intervals of the perplexity ratio over windows.

use super::common::CliError;
use super::output::{check_output, write_atomic, Inputs};
use clap::Args;
use std::path::PathBuf;
use ttq_eval::{compare, comparison_table, BootstrapConfig, MethodKind, Record};

/// Options of `ttq compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// `records.json` files of `ttq eval` / `ttq experiment` runs on one model (their records
    /// are pooled; every method is paired with the baseline of its width, group and text).
    #[arg(required = true)]
    pub records: Vec<PathBuf>,
    /// The method every other method is compared with: awq, gptq, rtn, ttq, ttqs, ttqlr.
    #[arg(long, default_value = "awq")]
    pub baseline: String,
    /// Use the baseline calibrated on the text whose label contains this (e.g. `C4`).
    #[arg(long)]
    pub baseline_calib: Option<String>,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Coverage of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Also write the comparisons as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn kind(name: &str) -> Result<MethodKind, CliError> {
    Ok(match name {
        "awq" => MethodKind::Awq,
        "gptq" => MethodKind::Gptq,
        "rtn" => MethodKind::Rtn,
        "ttq" => MethodKind::Ttq,
        "ttqs" => MethodKind::TtqS,
        "ttqlr" => MethodKind::TtqLr,
        other => {
            return Err(format!(
                "--baseline {other}: not a quantization method (awq, gptq, rtn, ttq, ttqs, ttqlr)"
            )
            .into())
        }
    })
}

#[derive(serde::Deserialize)]
struct RecordsFile {
    run: serde_json::Value,
    records: Vec<Record>,
}

/// Runs `ttq compare`.
pub fn run(args: &CompareArgs) -> Result<(), CliError> {
    let baseline = kind(&args.baseline)?;
    let cfg = BootstrapConfig {
        resamples: args.resamples,
        seed: args.seed,
        level: args.level,
    };
    if let Some(out) = &args.json {
        let inputs = args
            .records
            .iter()
            .fold(Inputs::default(), |i, p| i.file("RECORDS", p));
        check_output("--json", out, &inputs)?;
    }
    let mut records = Vec::new();
    let mut model: Option<String> = None;
    for path in &args.records {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: RecordsFile = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a records.json of ttq eval / ttq experiment: {e}",
                path.display()
            )
        })?;
        let this = file.run["model"].as_str().unwrap_or("?").to_string();
        match &model {
            Some(m) if *m != this => {
                return Err(format!(
                    "{}: records of model `{this}`, the earlier files are of `{m}`; compare one \
                     model at a time",
                    path.display()
                )
                .into())
            }
            _ => model = Some(this),
        }
        records.extend(file.records);
    }
    let rows = compare(&records, baseline, args.baseline_calib.as_deref(), &cfg)?;
    if rows.is_empty() {
        return Err(format!(
            "no record has a {} baseline of the same width, group and text{}",
            args.baseline,
            args.baseline_calib
                .as_deref()
                .map_or(String::new(), |c| format!(" calibrated on `{c}`"))
        )
        .into());
    }
    println!(
        "model `{}`\n\n{}",
        model.unwrap_or_default(),
        comparison_table(&rows, &cfg)
    );
    if let Some(out) = &args.json {
        let json = serde_json::json!({ "bootstrap": cfg, "comparisons": rows });
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}
