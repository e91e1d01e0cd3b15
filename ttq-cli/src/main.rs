//! `ttq`: test-time quantization of LLMs from the command line.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Test-time quantization (TTQ) of large language models.
#[derive(Debug, Parser)]
#[command(name = "ttq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quantize a random linear layer whose input has outlier channels, and print the output
    /// error of RTN and TTQ side by side.
    Demo(commands::demo::DemoArgs),
    /// Generate text from a prompt and report prefill and decode speed.
    Generate(commands::generate::GenerateArgs),
    /// Perplexity on WikiText-2, PTB, C4 or a text file.
    Ppl(commands::ppl::PplArgs),
    /// Perplexity of many methods (RTN, AWQ, GPTQ, TTQ, TTQ + low-rank) on many texts, with
    /// calibration sets for AWQ/GPTQ; writes records.json and table.md.
    Eval(commands::eval::EvalArgs),
    /// One of the named experiments of docs/results.md: methods, groups, domain, sensitivity.
    Experiment(commands::eval::ExperimentArgs),
    /// Every method of records.json files against a baseline method: perplexity ratios with
    /// paired bootstrap intervals over windows.
    Compare(commands::compare::CompareArgs),
    /// Per-request against per-batch TTQ calibration on mixed-domain batches.
    CalibBatching(commands::calib_batching::CalibBatchingArgs),
    /// An OpenAI-compatible HTTP server that quantizes the model for each request.
    Serve(commands::serve::ServeArgs),
    /// Benchmarks: `ttq bench kernels` (CUDA kernels against dense f16) and `ttq bench
    /// decode` (prefill and decode speed of a model, fp against quantized).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Old name of `ttq bench kernels`.
    #[command(hide = true)]
    BenchKernels(commands::bench_kernels::BenchKernelsArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time the CUDA kernels (int4 matmul, quantize, statistics) against dense f16.
    Kernels(commands::bench_kernels::BenchKernelsArgs),
    /// Prefill and decode tokens/s of fp and quantized methods, on a checkpoint or on random
    /// weights of a named architecture (`--random-weights qwen3-8b`).
    Decode(commands::bench_decode::BenchDecodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The server runs its own threads (tokio, and the model's worker, see `ttq-serve`).
        command @ Command::Serve(_) => run(command).map_err(|e| e.to_string()),
        // Everything else runs on a thread of rayon's pool, so that the CPU kernels' parallel
        // loops split work between that thread and the pool's others instead of waking the
        // pool from outside and sleeping until it is done (a futex round trip per kernel, and
        // one thread more than cores; perf: 20% of a CPU decode step's main thread).
        command => rayon::scope(|_| run(command).map_err(|e| e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command on the calling thread.
fn run(command: Command) -> Result<(), commands::common::CliError> {
    match command {
        Command::Demo(args) => commands::demo::run(&args),
        Command::Generate(args) => {
            with_backend!(
                args.model.runtime,
                |B, device| commands::generate::run::<B>(&args, device)
            )
        }
        Command::Ppl(args) => with_backend!(
            args.model.runtime,
            |B, device| commands::ppl::run::<B>(&args, device)
        ),
        Command::Eval(args) => {
            with_backend!(
                args.grid.runtime,
                |B, device| commands::eval::run_eval::<B>(&args, device)
            )
        }
        Command::Experiment(args) => with_backend!(args.grid.runtime, |B, device| {
            commands::eval::run_experiment::<B>(&args, device)
        }),
        Command::Compare(args) => commands::compare::run(&args),
        Command::CalibBatching(args) => with_backend!(args.model.runtime, |B, device| {
            commands::calib_batching::run::<B>(&args, device)
        }),
        Command::Serve(args) => with_backend!(
            args.model.runtime,
            |B, device| commands::serve::run::<B>(&args, device)
        ),
        Command::Bench(BenchCommand::Kernels(args)) | Command::BenchKernels(args) => {
            commands::bench_kernels::run(&args)
        }
        Command::Bench(BenchCommand::Decode(args)) => with_backend!(args.runtime, |B, device| {
            commands::bench_decode::run::<B>(&args, device)
        }),
    }
}
