//! # ttq-serve
//!
//! An OpenAI-compatible HTTP server (tokio + axum) for a ttq model that is quantized for
//! each request: the request's prompt calibrates the weights its decode uses (test-time
//! quantization), so a deployment never carries stale calibration statistics.
//!
//! - `POST /v1/completions`, `POST /v1/chat/completions` (the model's Jinja chat template,
//!   rendered with minijinja), streaming as server-sent events ending in `data: [DONE]`;
//! - `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text);
//! - one engine thread runs requests in arrival order from a bounded queue (503 when full);
//!   a client that goes away cancels its request; a panic fails only its own request;
//! - every response carries a `ttq` object with the request's calibration time and the
//!   shift of its activation statistics from the recent traffic's ([`shift`]).
//!
//! The crate depends on ttq-models only (not on the command line), so a program can embed
//! the server with its own model loading; `ttq serve` is one such program.

pub mod api;
pub mod chat;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod server;
pub mod shift;
pub mod stop;

pub use chat::{template_of_model, ChatTemplate, GEMMA_DEFAULT_TEMPLATE};
pub use engine::{Engine, EngineModel};
pub use error::{ApiError, ServeError};

use burn::tensor::backend::Backend;
use std::future::Future;
use std::sync::Arc;
use ttq_models::CausalLm;

/// Server options.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model's id in responses.
    pub model_id: String,
    /// A line describing the quantization, for `/v1/models`.
    pub method: String,
    /// Requests that may wait for the model; one more is refused with 503.
    pub queue_capacity: usize,
    /// Largest request body in bytes; a larger one is refused with 413.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens: usize,
    /// `max_tokens` of a request that gives none.
    pub default_max_tokens: usize,
    /// Weight of the newest request in the recent-traffic average of the shift metric.
    pub shift_decay: f64,
    /// Prepend `<bos>` to completion prompts (chat templates write their own).
    pub add_bos: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_id: "ttq".into(),
            method: "fp".into(),
            queue_capacity: 128,
            max_body_bytes: 1 << 20,
            max_tokens: 4096,
            default_max_tokens: 256,
            shift_decay: 0.1,
            add_bos: false,
        }
    }
}

/// Serves `model` on `listener` until `shutdown` completes, then stops accepting
/// connections, finishes the requests in flight and returns.
pub async fn serve<B: Backend>(
    model: EngineModel<B>,
    chat: Option<ChatTemplate>,
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    CausalLm<B>: Send + 'static,
{
    if config.max_body_bytes == 0 || config.default_max_tokens == 0 || config.max_tokens == 0 {
        return Err(ServeError::Config(
            "the body limit, max_tokens and default max_tokens must be positive".into(),
        ));
    }
    let context = model.model.config().max_positions;
    let tokenizer = model.tokenizer.clone();
    let metrics = Arc::new(metrics::Metrics::new());
    let engine = Engine::start(
        model,
        config.queue_capacity,
        config.shift_decay,
        metrics.clone(),
    )?;
    let limits = api::Limits {
        context,
        max_tokens: config.max_tokens,
        default_max_tokens: config.default_max_tokens,
    };
    let state = Arc::new(server::AppState::new(
        engine,
        tokenizer,
        chat,
        config.add_bos,
        config.model_id,
        config.method,
        limits,
        metrics,
    ));
    let app = server::router(state.clone(), config.max_body_bytes);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    if let Ok(state) = Arc::try_unwrap(state) {
        // Wait for the engine to finish (every connection is closed by now).
        tokio::task::spawn_blocking(move || state.engine.stop())
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    }
    Ok(())
}
