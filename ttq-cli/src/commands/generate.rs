//! `ttq generate`: text from a prompt, with prefill and decode speed.

use super::common::{apply_method, use_kernels, BosChoice, CliBackend, ModelArgs};
use clap::Args;
use std::io::Write;
use std::time::Instant;
use ttq_core::CalibrationPolicy;
use ttq_models::generate::{generate, GenerateOptions, SamplingConfig};

/// Options of `ttq generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prepend `<bos>` to the prompt.
    #[arg(long, value_enum, default_value_t = BosChoice::Auto)]
    pub bos: BosChoice,
}

/// Runs generation on backend `B`.
pub fn run<B: CliBackend>(
    args: &GenerateArgs,
    device: B::Device,
) -> Result<(), Box<dyn std::error::Error>> {
    // Option checks that need no model come before the (slow) load.
    args.model.validate()?;
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling
        .validate()
        .map_err(|e| format!("bad sampling options (--temperature, --top-p): {e}"))?;
    if args.max_new_tokens > ttq_models::config::MAX_POSITIONS {
        return Err(format!(
            "--max-new-tokens {} exceeds any model's context (at most {})",
            args.max_new_tokens,
            ttq_models::config::MAX_POSITIONS
        )
        .into());
    }
    let t0 = Instant::now();
    let mut loaded = ttq_models::load_model_with::<B>(&args.model.model, &device, B::HOST_TABLES)?;
    use_kernels(&mut loaded.model, &args.model.runtime)?;
    eprintln!(
        "loaded {} ({:?}, {} layers) in {:.1} s; method {}; {}",
        loaded.weights.display(),
        loaded.model.config().family,
        loaded.model.config().layers,
        t0.elapsed().as_secs_f64(),
        args.model.describe(),
        args.model.runtime.describe()
    );
    // Serving setting: TTQ calibrates on the prompt and reuses the weights while decoding.
    apply_method(&mut loaded.model, &args.model, CalibrationPolicy::FirstCall)?;
    let mut stop = loaded.model.config().eos_tokens.clone();
    stop.extend(loaded.tokenizer.token_id("<end_of_turn>"));
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_tokens: stop,
        add_bos: args.bos.resolve(&loaded),
    };
    print!("{}", args.prompt);
    let (_, stats) = generate(
        &mut loaded.model,
        &loaded.tokenizer,
        &args.prompt,
        &options,
        |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        },
    )?;
    println!();
    eprintln!(
        "prompt {} tokens: prefill {:.1} tok/s ({:.3} s) | generated {} tokens: decode {:.1} tok/s{}",
        stats.prompt_tokens,
        stats.prefill_tokens_per_second(),
        stats.prefill_seconds,
        stats.generated_tokens,
        stats.decode_tokens_per_second(),
        if stats.stopped { " (stop token)" } else { "" }
    );
    Ok(())
}
