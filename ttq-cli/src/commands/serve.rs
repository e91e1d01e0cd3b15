//! `ttq serve`: an OpenAI-compatible HTTP server that quantizes the model for each request
//! (the server itself is the ttq-serve crate; this command loads the model and parses
//! options).

use super::common::{use_kernels, BosChoice, CliBackend, CliError, ModelArgs};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use ttq_models::{CausalLm, Family};
use ttq_serve::{ChatTemplate, EngineModel, ServeConfig};

/// Options of `ttq serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests that may wait for the model; one more gets 503.
    #[arg(long, default_value_t = 128)]
    pub queue: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// `max_tokens` of a request that gives none.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Largest request body in bytes; a larger one gets 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// A Jinja chat template file (default: the model's own, else Gemma's turn format for
    /// Gemma models, else none: chat requests get 400).
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Prepend `<bos>` to completion prompts (auto: on for Gemma).
    #[arg(long, value_enum, default_value_t = BosChoice::Auto)]
    pub bos: BosChoice,
    /// The model's id in responses (default: the model's file or directory name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Serve random weights of this architecture (a preset such as qwen3-8b, or a
    /// config.json), for speed runs without a checkpoint (the text is meaningless);
    /// `--model` then names a tokenizer.json (or a folder holding one).
    #[arg(long)]
    pub random_weights: Option<String>,
}

/// Loads the model and serves it until Ctrl-C or SIGTERM.
pub fn run<B: CliBackend>(args: &ServeArgs, device: B::Device) -> Result<(), CliError>
where
    CausalLm<B>: Send + 'static,
{
    args.model.validate()?;
    // Read the template file before the (slow) model load, so a bad path fails at once.
    let template_file = match &args.chat_template {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("--chat-template {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let Served {
        model,
        tokenizer,
        add_bos,
        mut stop_tokens,
        template,
    } = match &args.random_weights {
        None => load_checkpoint::<B>(args, &device)?,
        Some(name) => random_weights::<B>(args, name, &device)?,
    };
    let (source, origin) = match (template_file, &args.chat_template) {
        (Some(t), Some(p)) => (Some(t), p.display().to_string()),
        _ => template.map_or((None, String::new()), |(t, o)| (Some(t), o)),
    };
    let token_text = |id: Option<u32>| id.and_then(|i| tokenizer.token(i)).unwrap_or_default();
    let chat = source
        .map(|s| {
            ChatTemplate::new(
                s,
                token_text(tokenizer.bos()),
                token_text(stop_tokens.first().copied()),
                origin,
            )
        })
        .transpose()?;
    stop_tokens.extend(tokenizer.token_id("<end_of_turn>"));
    let model_id = args.model_id.clone().unwrap_or_else(|| {
        args.model
            .model
            .file_name()
            .map_or("ttq".into(), |n| n.to_string_lossy().into_owned())
    });
    let config = ServeConfig {
        model_id,
        method: format!(
            "{}; {}",
            args.model.describe(),
            args.model.runtime.describe()
        ),
        queue_capacity: args.queue,
        max_body_bytes: args.max_body_bytes,
        max_tokens: args.max_tokens,
        default_max_tokens: args.default_max_tokens,
        add_bos,
        ..ServeConfig::default()
    };
    let engine_model = EngineModel {
        model,
        tokenizer: Arc::new(tokenizer),
        method: args.model.method::<B>()?,
        stop_tokens,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .map_err(|e| format!("listening on {}:{}: {e}", args.host, args.port))?;
        eprintln!(
            "ttq serve: {} ({}) on http://{}; chat template: {}",
            config.model_id,
            config.method,
            listener.local_addr()?,
            chat.as_ref().map_or("none", |c| c.origin.as_str())
        );
        ttq_serve::serve(engine_model, chat, config, listener, shutdown_signal()).await?;
        eprintln!("ttq serve: stopped");
        Ok(())
    })
}

/// A model to serve and what goes with it.
struct Served<B: CliBackend> {
    model: CausalLm<B>,
    tokenizer: ttq_models::TextTokenizer,
    add_bos: bool,
    stop_tokens: Vec<u32>,
    /// The chat template and where it came from.
    template: Option<(String, String)>,
}

/// A checkpoint with its tokenizer and chat template (the file's, else Gemma's default for
/// Gemma models).
fn load_checkpoint<B: CliBackend>(
    args: &ServeArgs,
    device: &B::Device,
) -> Result<Served<B>, CliError> {
    let mut loaded = ttq_models::load_model_with::<B>(&args.model.model, device, B::HOST_TABLES)?;
    use_kernels(&mut loaded.model, &args.model.runtime)?;
    let add_bos = args.bos.resolve(&loaded);
    let template = match ttq_serve::template_of_model(&args.model.model)? {
        Some(t) => Some((t, "the model file".to_string())),
        None if loaded.model.config().family == Family::Gemma3 => Some((
            ttq_serve::GEMMA_DEFAULT_TEMPLATE.to_string(),
            "ttq's Gemma default (the model file has none)".to_string(),
        )),
        None => None,
    };
    Ok(Served {
        stop_tokens: loaded.model.config().eos_tokens.clone(),
        model: loaded.model,
        tokenizer: loaded.tokenizer,
        add_bos,
        template,
    })
}

/// Random weights of architecture `name` with the tokenizer.json given as `--model`; the
/// vocabulary grows to the tokenizer's if that is larger (the LM head then has more rows
/// than the architecture's; the reply says so).
fn random_weights<B: CliBackend>(
    args: &ServeArgs,
    name: &str,
    device: &B::Device,
) -> Result<Served<B>, CliError> {
    let path = &args.model.model;
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.clone()
    };
    let tokenizer = ttq_models::TextTokenizer::from_file(&file, None)?;
    let mut config = ttq_models::presets::config_by_name(name)?;
    if tokenizer.vocab_size() > config.vocab {
        eprintln!(
            "ttq serve: the vocabulary grows from {} to the tokenizer's {} tokens",
            config.vocab,
            tokenizer.vocab_size()
        );
        config.vocab = tokenizer.vocab_size();
    }
    let stop_tokens = config.eos_tokens.clone();
    let mut model = CausalLm::<B>::random(config, device)?;
    use_kernels(&mut model, &args.model.runtime)?;
    Ok(Served {
        model,
        tokenizer,
        add_bos: false,
        stop_tokens,
        template: None,
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("ttq serve: shutting down (finishing the requests in flight)");
}
