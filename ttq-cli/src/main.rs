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
    /// Time the CUDA kernels (int4 matmul, quantize, statistics) against dense f16.
    BenchKernels(commands::bench_kernels::BenchKernelsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(&args),
        Command::Generate(args) => {
            with_backend!(
                args.model.backend,
                |B, device| commands::generate::run::<B>(&args, device)
            )
        }
        Command::Ppl(args) => with_backend!(
            args.model.backend,
            |B, device| commands::ppl::run::<B>(&args, device)
        ),
        Command::Eval(args) => {
            with_backend!(
                args.grid.backend,
                |B, device| commands::eval::run_eval::<B>(&args, device)
            )
        }
        Command::Experiment(args) => with_backend!(args.grid.backend, |B, device| {
            commands::eval::run_experiment::<B>(&args, device)
        }),
        Command::BenchKernels(args) => commands::bench_kernels::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
