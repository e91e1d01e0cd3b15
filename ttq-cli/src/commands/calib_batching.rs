//! `ttq calib-batching`: per-request against per-batch TTQ calibration on mixed-domain
//! batches (one prompt from each text per batch), the measurement behind `ttq serve`'s
//! choice (docs/serve.md).

use super::common::{use_kernels, BosChoice, CliBackend, CliError, MethodChoice, ModelArgs};
use super::output::{check_output, write_atomic, Inputs};
use clap::Args;
use std::path::PathBuf;
use ttq_core::methods::Ttq;
use ttq_core::{QuantScheme, QuantSpec, TtqScaleConfig};
use ttq_eval::batch_calibration::{compare_batch_calibration, markdown, DomainWindows};
use ttq_eval::{windows, Dataset};

/// Options of `ttq calib-batching`.
#[derive(Debug, Args)]
pub struct CalibBatchingArgs {
    /// The model and TTQ's options (`--method ttq` is implied).
    #[command(flatten)]
    pub model: ModelArgs,
    /// The texts, one prompt of each per batch.
    #[arg(long, default_value = "wikitext2,ptb,c4")]
    pub datasets: String,
    /// Folder with wiki.test.raw, ptb.test.txt and the C4 sample.
    #[arg(long, default_value = "../shared/data")]
    pub data_dir: PathBuf,
    /// Prompt tokens per window (they calibrate).
    #[arg(long, default_value_t = 256)]
    pub prompt: usize,
    /// Continuation tokens per window (they are scored).
    #[arg(long, default_value_t = 256)]
    pub continuation: usize,
    /// Batches (windows per text).
    #[arg(long, default_value_t = 4)]
    pub batches: usize,
    /// Replace the first token of every window by `<bos>` (auto: on for Gemma).
    #[arg(long, value_enum, default_value_t = BosChoice::Auto)]
    pub bos: BosChoice,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the comparison on backend `B`.
pub fn run<B: CliBackend>(args: &CalibBatchingArgs, device: B::Device) -> Result<(), CliError> {
    args.model.validate()?;
    if !matches!(args.model.method, MethodChoice::Ttq | MethodChoice::Fp) {
        return Err("--method: this comparison is about TTQ (leave it out or give ttq)".into());
    }
    if args.prompt == 0 || args.continuation < 2 || args.batches == 0 {
        return Err("--prompt, --batches must be >= 1 and --continuation >= 2".into());
    }
    let datasets: Vec<Dataset> = args.datasets.split(',').map(Dataset::parse).collect();
    let mut inputs = Inputs::with_model(&args.model.model);
    for d in &datasets {
        d.check_file(&args.data_dir)?;
        inputs = inputs.file("--datasets", &d.file(&args.data_dir));
    }
    if let Some(path) = &args.json {
        check_output("--json", path, &inputs)?;
    }
    let scheme = if args.model.symmetric {
        QuantScheme::Symmetric
    } else {
        QuantScheme::Asymmetric
    };
    let spec = QuantSpec::new(
        args.model.bits,
        QuantSpec::parse_group(&args.model.group)?,
        scheme,
    )?;
    let ttq = Ttq::new(
        spec,
        TtqScaleConfig::new(args.model.alpha, args.model.lambda)?,
    )?;
    let mut loaded = ttq_models::load_model_with::<B>(&args.model.model, &device, B::HOST_TABLES)?;
    use_kernels(&mut loaded.model, &args.model.runtime)?;
    let len = args.prompt + args.continuation;
    if len > loaded.model.config().max_positions {
        return Err(format!("windows of {len} tokens exceed the model's context").into());
    }
    let add_bos = args.bos.resolve(&loaded);
    let bos = if add_bos {
        loaded.tokenizer.bos()
    } else {
        None
    };
    let mut texts = Vec::new();
    for d in &datasets {
        let tokens = loaded.tokenizer.encode(&d.load(&args.data_dir)?, add_bos)?;
        let w = windows(&tokens, len, Some(args.batches), bos);
        if w.len() < args.batches {
            return Err(format!("{} has only {} windows of {len}", d.label(), w.len()).into());
        }
        texts.push(DomainWindows {
            label: d.label(),
            windows: w,
        });
    }
    let report = compare_batch_calibration(&mut loaded.model, ttq, &texts, args.prompt)?;
    println!(
        "TTQ w{} g{} alpha {} | {} batches of {} prompts | prompt {} + continuation {} tokens\n",
        args.model.bits,
        args.model.group,
        args.model.alpha,
        report.batches,
        texts.len(),
        report.prompt,
        report.continuation
    );
    print!("{}", markdown(&report));
    println!(
        "\none set of quantized weights: {:.1} MiB",
        report.packed_bytes_per_set as f64 / (1 << 20) as f64
    );
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}
