//! `ttq eval` (any grid of methods × datasets × calibration sets) and `ttq experiment NAME`
//! (the named experiments of docs/results.md). Both write `records.json` and `table.md`
//! into an output folder, updated after every measurement so that a long run that stops
//! early keeps what it measured.

use super::common::{check_seqlen, use_kernels, BosChoice, CliBackend, CliError, RuntimeArgs};
use super::output::{prepare_results_dir, write_atomic, Inputs};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;
use ttq_eval::{
    experiments, markdown_table, run_grid, CalibrationSampling, Dataset, EvalText, GridConfig,
    MethodSpec, Record,
};

/// Options shared by `ttq eval` and `ttq experiment`.
#[derive(Debug, Args, Clone)]
pub struct GridArgs {
    /// Model: a Hugging Face directory, a directory with model.gguf, or a .gguf file.
    #[arg(long, default_value = ".cache/models/gemma3-270m")]
    pub model: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Folder with wiki.test.raw, ptb.test.txt and the C4 sample.
    #[arg(long, default_value = "../shared/data")]
    pub data_dir: PathBuf,
    /// Tokens per evaluation window.
    #[arg(long, default_value_t = 2048)]
    pub seqlen: usize,
    /// Evaluate the first N windows of each text (calibration windows come from the tokens
    /// after them, so calibrated methods need a limit).
    #[arg(long, default_value_t = 16)]
    pub windows: usize,
    /// Calibration windows (AWQ, GPTQ).
    #[arg(long, default_value_t = 128)]
    pub calib_samples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 512)]
    pub calib_len: usize,
    /// Seed of the calibration window positions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the first token of every window by `<bos>` (auto: on for Gemma).
    #[arg(long, value_enum, default_value_t = BosChoice::Auto)]
    pub bos: BosChoice,
    /// Output folder for records.json and table.md.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the records.json and table.md of an earlier run in --out (without it, a
    /// folder that already holds records.json is an error).
    #[arg(long)]
    pub force: bool,
}

/// Options of `ttq eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub grid: GridArgs,
    /// Comma-separated methods: `fp`, `rtn:w4:g128`, `awq:w3`, `gptq:w4:act`,
    /// `ttq:w4:a0.25:l1e-4`, `ttqlr:w4:a0.25:r16[:wsvd]` (fields: w bits, g group or `grow`,
    /// a alpha, l lambda, r rank, `sym`, `act`, `noclip`, `wsvd`).
    #[arg(long, default_value = "fp,rtn:w4,ttq:w4")]
    pub methods: String,
    /// Comma-separated evaluation texts: `wikitext2`, `ptb`, `c4`, text or .jsonl files.
    #[arg(long, default_value = "wikitext2")]
    pub datasets: String,
    /// Comma-separated texts (from --datasets) to calibrate AWQ/GPTQ on, each in turn
    /// (default: the first).
    #[arg(long)]
    pub calib: Option<String>,
    /// Also run test-time methods calibrated on the first P tokens of each window only
    /// (every method is then scored on the tokens after P).
    #[arg(long)]
    pub prefix: Option<usize>,
}

/// Options of `ttq experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// `methods`, `groups`, `domain` or `sensitivity` (see docs/results.md).
    pub name: String,
    #[command(flatten)]
    pub grid: GridArgs,
    /// Only the first N methods of the experiment (quick checks).
    #[arg(long)]
    pub limit_methods: Option<usize>,
}

/// Runs `ttq eval` on backend `B`.
pub fn run_eval<B: CliBackend>(args: &EvalArgs, device: B::Device) -> Result<(), CliError> {
    let datasets: Vec<Dataset> = split(&args.datasets).map(Dataset::parse).collect();
    if datasets.is_empty() {
        return Err("--datasets is empty".into());
    }
    let calibrate_on = match &args.calib {
        None => vec![0],
        Some(list) => split(list)
            .map(|name| {
                let d = Dataset::parse(name);
                datasets
                    .iter()
                    .position(|x| *x == d)
                    .ok_or_else(|| format!("--calib {name}: not one of the evaluated --datasets"))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let methods = MethodSpec::parse_list(&args.methods)?;
    run_plan::<B>(
        &args.grid,
        "eval",
        datasets,
        calibrate_on,
        methods,
        args.prefix,
        device,
    )
}

/// Runs `ttq experiment` on backend `B`.
pub fn run_experiment<B: CliBackend>(
    args: &ExperimentArgs,
    device: B::Device,
) -> Result<(), CliError> {
    let e = experiments::experiment(&args.name)?;
    eprintln!("experiment {}: {}", e.name, e.question);
    let mut methods = e.methods;
    if let Some(n) = args.limit_methods {
        methods.truncate(n);
    }
    let calibrate_on = if methods.iter().any(MethodSpec::needs_calibration) {
        e.calibrate_on
    } else {
        Vec::new()
    };
    run_plan::<B>(
        &args.grid,
        e.name,
        e.datasets,
        calibrate_on,
        methods,
        e.prefix,
        device,
    )
}

fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn run_plan<B: CliBackend>(
    args: &GridArgs,
    name: &str,
    datasets: Vec<Dataset>,
    calibrate_on: Vec<usize>,
    methods: Vec<MethodSpec>,
    prefix: Option<usize>,
    device: B::Device,
) -> Result<(), CliError> {
    // Everything that needs no model is checked before loading it.
    if methods.is_empty() {
        return Err("no methods to run".into());
    }
    if args.seqlen < 2 {
        return Err(format!("--seqlen {} must be at least 2", args.seqlen).into());
    }
    if args.windows == 0 {
        return Err("--windows 0 evaluates nothing: give at least 1".into());
    }
    if let Some(p) = prefix {
        if p == 0 || p >= args.seqlen {
            return Err(format!("prefix {p} must be in 1..{}", args.seqlen).into());
        }
    }
    let calibrated = !calibrate_on.is_empty() && methods.iter().any(MethodSpec::needs_calibration);
    let sampling = CalibrationSampling {
        samples: args.calib_samples,
        len: args.calib_len,
        seed: args.seed,
    };
    if calibrated {
        sampling
            .validate()
            .map_err(|e| format!("--calib-samples / --calib-len: {e}"))?;
    }
    let mut inputs = Inputs::with_model(&args.model);
    for d in &datasets {
        d.check_file(&args.data_dir)?;
        inputs = inputs.file("--datasets", &d.file(&args.data_dir));
    }
    if let Some(out) = &args.out {
        prepare_results_dir(out, args.force, &inputs)?;
    }
    let t0 = Instant::now();
    let mut loaded = ttq_models::load_model_with::<B>(&args.model, &device, B::HOST_TABLES)?;
    use_kernels(&mut loaded.model, &args.runtime)?;
    check_seqlen(&loaded, args.seqlen)?;
    let context = loaded.model.config().max_positions;
    if calibrated {
        if args.calib_len > context {
            return Err(format!(
                "--calib-len {} exceeds the model's context of {context}",
                args.calib_len
            )
            .into());
        }
        ttq_eval::calibration::check_calibration_memory(&loaded.model)?;
    }
    let add_bos = args.bos.resolve(&loaded);
    let texts = datasets
        .into_iter()
        .map(|d| {
            EvalText::load(
                d,
                &args.data_dir,
                &loaded.tokenizer,
                args.seqlen,
                Some(args.windows),
                add_bos,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for t in &texts {
        eprintln!(
            "{}: {} windows of {} (bos {}), {} held-out tokens for calibration",
            t.dataset.label(),
            t.windows.len(),
            args.seqlen,
            if add_bos { "on" } else { "off" },
            t.held_out.len()
        );
    }
    eprintln!(
        "{} methods; loaded in {:.1} s",
        methods.len(),
        t0.elapsed().as_secs_f64()
    );
    let cfg = GridConfig {
        methods,
        calibrate_on,
        sampling,
        prefix,
        bos: if add_bos {
            loaded.tokenizer.bos()
        } else {
            None
        },
        progress: true,
    };
    let header = Header {
        experiment: name.to_string(),
        model: args.model.display().to_string(),
        backend: args.runtime.describe(),
        seqlen: args.seqlen,
        windows: args.windows,
        bos: add_bos,
        calibration: cfg.sampling,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let mut seen: Vec<Record> = Vec::new();
    let mut write_error: Option<String> = None;
    let mut on_record = |r: &Record| {
        println!(
            "{} | {} | {} | {} | ppl {:.4} | quantize {:.1} s, eval {:.1} s",
            r.method,
            r.calibration.as_deref().unwrap_or("-"),
            r.mode,
            r.dataset,
            r.perplexity,
            r.quantize_seconds,
            r.eval_seconds
        );
        seen.push(r.clone());
        if let Some(out) = &args.out {
            if let Err(e) = write_outputs(out, &header, &seen) {
                eprintln!("error: {e}");
                write_error.get_or_insert(e);
            }
        }
    };
    let records = run_grid(&mut loaded.model, &texts, &cfg, &mut on_record)?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    println!("\n{}", markdown_table(&records));
    eprintln!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// What a results folder records about the run besides the measurements.
#[derive(Debug, serde::Serialize)]
struct Header {
    experiment: String,
    model: String,
    backend: String,
    seqlen: usize,
    windows: usize,
    bos: bool,
    calibration: CalibrationSampling,
    command: String,
}

fn write_outputs(out: &Path, header: &Header, records: &[Record]) -> Result<(), String> {
    let json = serde_json::json!({ "run": header, "records": records });
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    write_atomic(&out.join("records.json"), text.as_bytes())?;
    let table = format!(
        "{} on `{}` ({} backend), {} windows x {} tokens, calibration {}x{} seed {}\n\n`{}`\n\n{}",
        header.experiment,
        header.model,
        header.backend,
        header.windows,
        header.seqlen,
        header.calibration.samples,
        header.calibration.len,
        header.calibration.seed,
        header.command,
        markdown_table(records)
    );
    write_atomic(&out.join("table.md"), table.as_bytes())
}
