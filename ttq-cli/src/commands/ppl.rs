//! `ttq ppl`: perplexity of a (quantized) model on an evaluation text.

use super::common::{
    apply_method, check_seqlen, parse_sweep_entry, use_kernels, BosChoice, CliBackend, ModelArgs,
};
use super::output::{check_output, write_atomic, Inputs};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;
use ttq_core::CalibrationPolicy;
use ttq_eval::{perplexity, windows, CalibrationMode, Dataset, PerplexityOptions};

/// Options of `ttq ppl`.
#[derive(Debug, Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// `wikitext2`, `ptb`, `c4`, a text file, or a .jsonl file with a `text` field.
    #[arg(long, default_value = "wikitext2")]
    pub dataset: String,
    /// Folder with wiki.test.raw, ptb.test.txt and the C4 sample.
    #[arg(long, default_value = "../shared/data")]
    pub data_dir: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 2048)]
    pub seqlen: usize,
    /// Evaluate only the first N windows.
    #[arg(long)]
    pub windows: Option<usize>,
    /// Replace the first token of every window by `<bos>` (auto: on for Gemma).
    #[arg(long, value_enum, default_value_t = BosChoice::Auto)]
    pub bos: BosChoice,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Serving-style TTQ: calibrate on the first P tokens of each window and decode the rest
    /// with those weights. Every method (and both modes) is then scored on the tokens after
    /// position P only.
    #[arg(long)]
    pub prefix: Option<usize>,
    /// Score only the tokens from this position on (default: after --prefix, else all).
    #[arg(long)]
    pub score_from: Option<usize>,
    /// Evaluate several methods on the same windows, loading and tokenizing once:
    /// comma-separated `fp`, `rtn:BITS[:GROUP]`, `ttq:BITS[:GROUP[:ALPHA]]` (overrides --method).
    #[arg(long)]
    pub sweep: Option<String>,
}

/// Runs the evaluation on backend `B`.
pub fn run<B: CliBackend>(
    args: &PplArgs,
    device: B::Device,
) -> Result<(), Box<dyn std::error::Error>> {
    // Everything that can be checked without the model, before loading it.
    args.model.validate()?;
    if args.seqlen < 2 {
        return Err(format!("--seqlen {} must be at least 2", args.seqlen).into());
    }
    if args.windows == Some(0) {
        return Err(
            "--windows 0 evaluates nothing: give at least 1 (or leave it out for all)".into(),
        );
    }
    for (option, value) in [("--prefix", args.prefix), ("--score-from", args.score_from)] {
        if let Some(p) = value {
            if p == 0 || p >= args.seqlen {
                return Err(format!("{option} {p} must be in 1..{}", args.seqlen).into());
            }
        }
    }
    let runs = match &args.sweep {
        Some(list) => {
            let runs = list
                .split(',')
                .filter(|e| !e.trim().is_empty())
                .map(|e| parse_sweep_entry(&args.model, e))
                .collect::<Result<Vec<_>, _>>()?;
            if runs.is_empty() {
                return Err(
                    "--sweep is empty: give fp, rtn:BITS[:GROUP] or ttq:BITS[:GROUP[:ALPHA]]"
                        .into(),
                );
            }
            runs
        }
        None => vec![args.model.clone()],
    };
    let dataset = Dataset::parse(&args.dataset);
    dataset.check_file(&args.data_dir)?;
    if let Some(path) = &args.json {
        let inputs =
            Inputs::with_model(&args.model.model).file("--dataset", &dataset.file(&args.data_dir));
        check_output("--json", path, &inputs)?;
    }
    let t0 = Instant::now();
    let mut loaded = ttq_models::load_model_with::<B>(&args.model.model, &device, B::HOST_TABLES)?;
    let kernels = use_kernels(&mut loaded.model, &args.model.runtime)?;
    check_seqlen(&loaded, args.seqlen)?;
    let text = dataset.load(&args.data_dir)?;
    let add_bos = args.bos.resolve(&loaded);
    let tokens = loaded.tokenizer.encode(&text, add_bos)?;
    let bos = if add_bos {
        loaded.tokenizer.bos()
    } else {
        None
    };
    let wins = windows(&tokens, args.seqlen, args.windows, bos);
    eprintln!(
        "{}: {} tokens, {} windows of {} (bos {}), loaded in {:.1} s; method {}; kernels {kernels}",
        dataset.label(),
        tokens.len(),
        wins.len(),
        args.seqlen,
        if add_bos { "on" } else { "off" },
        t0.elapsed().as_secs_f64(),
        args.model.describe()
    );
    let mut results = Vec::new();
    for run in &runs {
        loaded.model.dequantize_all();
        // Paper's evaluation: statistics from the whole window (EveryCall); with --prefix,
        // from the prefix only (FirstCall).
        let (mode, policy) = match args.prefix {
            Some(p) => (CalibrationMode::Prefix(p), CalibrationPolicy::FirstCall),
            None => (CalibrationMode::Window, CalibrationPolicy::EveryCall),
        };
        apply_method(&mut loaded.model, run, policy)?;
        let options = PerplexityOptions {
            progress: true,
            score_from: args.score_from.or(args.prefix).unwrap_or(0),
            mode,
        };
        let report = perplexity(&mut loaded.model, &wins, &options)?;
        println!(
            "{} | {} | seqlen {} | windows {} | bos {} | ppl {:.4} | {:.1} s",
            dataset.label(),
            run.describe(),
            report.seqlen,
            report.windows,
            if add_bos { "on" } else { "off" },
            report.perplexity,
            report.seconds
        );
        results.push(serde_json::json!({
            "model": args.model.model,
            "dataset": dataset.label(),
            "method": run.describe(),
            "bos": add_bos,
            "calibration": format!("{mode:?}"),
            "report": report,
        }));
        if let Some(path) = &args.json {
            write_atomic(path, serde_json::to_string_pretty(&results)?.as_bytes())?;
        }
    }
    Ok(())
}
