//! `ttq bench decode`: prefill and decode speed of a model, full precision against
//! quantized methods, on a real checkpoint or on random weights of a named architecture.
//!
//! Method: the same prompt of random token ids (seeded) for every method; per method one
//! untimed warm-up generation (kernels compile at first use), then `--runs` timed ones, of
//! which the median prefill and decode rates are reported. A run is one prefill of
//! `--prompt-tokens` tokens (where TTQ computes its statistics and quantizes every layer:
//! `CalibrationPolicy::FirstCall`) followed by `--new-tokens` greedy steps with the KV cache;
//! each step reads back only the argmax token id (see `ttq_models::generate::greedy_timed`).
//! Speed does not depend on the weights' values, so random weights of a model's shape time
//! that model.

use super::common::{use_kernels, CliBackend, CliError, RuntimeArgs};
use super::output::{check_output, write_atomic, Inputs};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use ttq_core::CalibrationPolicy;
use ttq_eval::MethodSpec;
use ttq_models::{generate::greedy_timed, presets, CausalLm};

/// Options of `ttq bench decode`.
#[derive(Debug, Args)]
pub struct BenchDecodeArgs {
    /// Model: a Hugging Face directory, a directory with model.gguf, or a .gguf file.
    #[arg(long, conflicts_with = "random_weights")]
    pub model: Option<PathBuf>,
    /// Random weights of an architecture instead of a checkpoint: a preset (qwen3-8b,
    /// qwen3-0.6b, llama3-8b, gemma3-270m) or a Hugging Face config.json.
    #[arg(long)]
    pub random_weights: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Comma-separated methods (data-free ones: fp, rtn:…, ttq:…, ttqlr:…; see `ttq eval`).
    #[arg(long, default_value = "fp,ttq:w4:g128")]
    pub methods: String,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Generated tokens per run.
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Timed runs per method (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seed of the prompt's token ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Token ids drawn uniformly from `0..vocab` by a small seeded generator (SplitMix64).
fn prompt_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % vocab as u64) as u32
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark on backend `B`.
pub fn run<B: CliBackend>(args: &BenchDecodeArgs, device: B::Device) -> Result<(), CliError> {
    if args.runs == 0 || args.prompt_tokens == 0 || args.new_tokens < 2 {
        return Err(
            "--runs and --prompt-tokens must be positive and --new-tokens at least 2".into(),
        );
    }
    let limit = ttq_models::config::MAX_POSITIONS;
    if args
        .prompt_tokens
        .checked_add(args.new_tokens)
        .is_none_or(|n| n > limit)
    {
        return Err(format!(
            "--prompt-tokens {} + --new-tokens {} exceeds any model's context (at most {limit})",
            args.prompt_tokens, args.new_tokens
        )
        .into());
    }
    let methods = MethodSpec::parse_list(&args.methods).map_err(|e| format!("--methods: {e}"))?;
    if let Some(m) = methods.iter().find(|m| m.needs_calibration()) {
        return Err(format!(
            "method `{}` needs calibration data; bench decode takes data-free methods",
            m.label()
        )
        .into());
    }
    if let Some(path) = &args.json {
        let inputs = match &args.model {
            Some(m) => Inputs::with_model(m),
            None => Inputs::default(),
        };
        let inputs = match &args.random_weights {
            Some(r) => inputs.file("--random-weights", std::path::Path::new(r)),
            None => inputs,
        };
        check_output("--json", path, &inputs)?;
    }
    let t0 = Instant::now();
    let (mut model, source) = match (&args.model, &args.random_weights) {
        (Some(path), None) => {
            let loaded = ttq_models::load_model_with::<B>(path, &device, B::HOST_TABLES)?;
            (loaded.model, loaded.weights.display().to_string())
        }
        (None, Some(name)) => {
            let config = presets::config_by_name(name)?;
            (
                CausalLm::<B>::random(config, &device)?,
                format!("random weights, {name} architecture"),
            )
        }
        _ => return Err("give --model or --random-weights".into()),
    };
    let kernels = use_kernels(&mut model, &args.runtime)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let c = model.config().clone();
    let params = model.quantizable_parameters();
    eprintln!(
        "{source}: {} layers, width {}, {:.2} B quantizable weights; {}; loaded in {:.1} s",
        c.layers,
        c.hidden,
        params as f64 / 1e9,
        args.runtime.describe(),
        load_seconds
    );
    let ids = prompt_ids(args.prompt_tokens, c.vocab, args.seed);

    let mut rows = Vec::new();
    for spec in &methods {
        model.dequantize_all();
        if let Some(m) = spec.build::<B>()? {
            model.quantize(m, CalibrationPolicy::FirstCall)?;
        }
        // Warm-up: compiles every kernel the timed runs use (short prompt and decode).
        greedy_timed(&mut model, &ids[..ids.len().min(32)], 4)?;
        greedy_timed(&mut model, &ids, 2)?;
        let mut prefill = Vec::new();
        let mut prefill_s = Vec::new();
        let mut decode = Vec::new();
        for run in 0..args.runs {
            let (_, stats) = greedy_timed(&mut model, &ids, args.new_tokens)?;
            eprintln!(
                "{} run {}: prefill {:.1} tok/s, decode {:.1} tok/s",
                spec.label(),
                run + 1,
                stats.prefill_tokens_per_second(),
                stats.decode_tokens_per_second()
            );
            prefill.push(stats.prefill_tokens_per_second());
            prefill_s.push(stats.prefill_seconds);
            decode.push(stats.decode_tokens_per_second());
        }
        rows.push(json!({
            "method": spec.label(),
            "prefill_tok_s": median(prefill),
            "prefill_s": median(prefill_s),
            "decode_tok_s": median(decode),
        }));
    }
    let fp_decode = rows
        .iter()
        .find(|r| r["method"] == "fp")
        .and_then(|r| r["decode_tok_s"].as_f64());
    println!(
        "{source}; {}; loaded in {load_seconds:.2} s; prompt {} tokens, {} new tokens, median of {} runs\n",
        args.runtime.describe(),
        args.prompt_tokens,
        args.new_tokens,
        args.runs
    );
    println!(
        "| method | prefill s | prefill tok/s | decode tok/s | ms / token | decode speedup vs fp |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &mut rows {
        let decode = r["decode_tok_s"].as_f64().unwrap_or(f64::NAN);
        let speedup = fp_decode.map(|f| decode / f);
        r["decode_speedup_vs_fp"] = json!(speedup);
        println!(
            "| {} | {:.3} | {:.1} | {:.1} | {:.2} | {} |",
            r["method"].as_str().unwrap_or("?"),
            r["prefill_s"].as_f64().unwrap_or(f64::NAN),
            r["prefill_tok_s"].as_f64().unwrap_or(f64::NAN),
            decode,
            1e3 / decode,
            speedup.map_or("-".into(), |s| format!("{s:.2}x")),
        );
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "model": source,
            "runtime": args.runtime.describe(),
            "kernels": kernels,
            "load_seconds": load_seconds,
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens,
            "runs": args.runs,
            "quantizable_parameters": params,
            "results": rows,
        });
        write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_are_in_range_and_seeded() {
        let a = prompt_ids(1000, 37, 5);
        assert!(a.iter().all(|&t| t < 37));
        assert_eq!(a, prompt_ids(1000, 37, 5));
        assert_ne!(a, prompt_ids(1000, 37, 6));
        // Uniform enough that every id shows up.
        assert!((0..37).all(|t| a.contains(&t)));
    }
}
