//! The HTTP layer: routes, body limits, JSON errors, server-sent events.

use crate::api::{ChatRequest, CompletionRequest, Limits, Params};
use crate::chat::ChatTemplate;
use crate::engine::{Engine, Event, Summary};
use crate::error::ApiError;
use crate::metrics::{Metrics, Outcome};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower_http::catch_panic::CatchPanicLayer;
use ttq_models::TextTokenizer;

/// What every handler shares.
pub struct AppState {
    /// The engine's queue.
    pub engine: Engine,
    /// The model's tokenizer (prompts are tokenized and checked before they are queued).
    pub tokenizer: Arc<TextTokenizer>,
    /// The chat template, if the model has one.
    pub chat: Option<ChatTemplate>,
    /// Whether completion prompts get `<bos>` in front.
    pub add_bos: bool,
    /// The model's id in responses and `/v1/models`.
    pub model_id: String,
    /// A line describing the method, for `/v1/models`.
    pub method: String,
    /// Request limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

impl AppState {
    /// Shared state for the handlers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Engine,
        tokenizer: Arc<TextTokenizer>,
        chat: Option<ChatTemplate>,
        add_bos: bool,
        model_id: String,
        method: String,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            tokenizer,
            chat,
            add_bos,
            model_id,
            method,
            limits,
            metrics,
            next_id: AtomicU64::new(1),
        }
    }
}

/// The routes, with a body limit of `max_body_bytes` (413 beyond it) and a JSON 500 for a
/// panicking handler.
pub fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("the request handler panicked").into_response()
            },
        ))
        .with_state(state)
}

/// Which API a request came through: it decides the shape of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Completions,
    Chat,
}

/// Parses a JSON body, turning a too-large body into 413 and bad JSON into 400.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "the request body is larger than this server accepts",
            )
        } else {
            ApiError::new(status, format!("could not read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req = parse::<CompletionRequest>(body);
    let prompt = req.as_ref().map_err(Clone::clone).and_then(|r| {
        let text = r.prompt_text()?;
        Ok((r.params.clone(), text, s.add_bos))
    });
    respond(s, Api::Completions, prompt).await
}

async fn chat_completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prompt = parse::<ChatRequest>(body).and_then(|r| {
        let chat = s.chat.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "this model has no chat template: start the server with --chat-template FILE, \
                 or use /v1/completions",
            )
        })?;
        let text = chat.render(&r.messages)?;
        // The template writes `<bos>` itself when the model wants one.
        let add_bos =
            s.add_bos && (chat.bos_token().is_empty() || !text.starts_with(chat.bos_token()));
        Ok((r.params, text, add_bos))
    });
    respond(s, Api::Chat, prompt).await
}

/// Tokenizes, checks and queues a request, then answers it as JSON or as events.
async fn respond(
    s: Arc<AppState>,
    api: Api,
    prompt: Result<(Params, String, bool), ApiError>,
) -> Response {
    let (params, text, add_bos) = match prompt {
        Ok(p) => p,
        Err(e) => return reject(&s, e),
    };
    let ids = match s.tokenizer.encode(&text, add_bos) {
        Ok(ids) => ids,
        Err(e) => {
            return reject(
                &s,
                ApiError::bad_request(format!("tokenizing the prompt: {e}")),
            )
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let job = match params.job(ids, &s.limits, tx) {
        Ok(job) => job,
        Err(e) => return reject(&s, e),
    };
    if let Err(e) = s.engine.submit(job) {
        let mut r = reject(&s, e);
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return r;
    }
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let id = match api {
        Api::Completions => format!("cmpl-{id}"),
        Api::Chat => format!("chatcmpl-{id}"),
    };
    let meta = Meta {
        id,
        created: unix_seconds(),
        model: s.model_id.clone(),
        api,
    };
    if params.stream() {
        stream_response(meta, rx, params.include_usage())
    } else {
        collect_response(meta, rx).await
    }
}

fn reject(s: &AppState, e: ApiError) -> Response {
    s.metrics.count(Outcome::Rejected);
    e.into_response()
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fields every response and chunk of one request share.
#[derive(Debug, Clone)]
struct Meta {
    id: String,
    created: u64,
    model: String,
    api: Api,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Completions, _) => "text_completion",
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
        }
    }

    /// A response or chunk with `choices` and extra top-level fields.
    fn wrap(&self, chunk: bool, choices: Value, extra: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    }

    /// One choice carrying `text` (a chunk's delta, or a whole answer).
    fn choice(&self, chunk: bool, text: Option<&str>, finish: Option<&str>) -> Value {
        match (self.api, chunk) {
            (Api::Completions, _) => json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish,
            }),
            (Api::Chat, false) => json!({
                "index": 0, "logprobs": null, "finish_reason": finish,
                "message": { "role": "assistant", "content": text.unwrap_or("") },
            }),
            (Api::Chat, true) => json!({
                "index": 0, "logprobs": null, "finish_reason": finish,
                "delta": match text { Some(t) => json!({ "content": t }), None => json!({}) },
            }),
        }
    }
}

fn usage(s: &Summary) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    })
}

/// Waits for the whole answer. Dropping this future (the client went away) drops the
/// receiver, which cancels the job.
async fn collect_response(meta: Meta, mut rx: mpsc::UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Failed(e) => return e.into_response(),
            Event::Done(summary) => {
                let choice = meta.choice(false, Some(&text), Some(summary.finish_reason.as_str()));
                let body = meta.wrap(
                    false,
                    json!([choice]),
                    json!({ "usage": usage(&summary), "ttq": summary.ttq_json() }),
                );
                return Json(body).into_response();
            }
        }
    }
    ApiError::internal("the engine dropped the request").into_response()
}

/// Answers with server-sent events: text chunks, a last chunk with the finish reason (and
/// the `ttq` metadata), an optional usage chunk, then `data: [DONE]`. When the client goes
/// away the stream is dropped, and with it the receiver, which cancels the job.
fn stream_response(
    meta: Meta,
    rx: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    let data = |v: Value| SseEvent::default().data(v.to_string());
    let head = (meta.api == Api::Chat).then(|| {
        let choice = json!({ "index": 0, "delta": { "role": "assistant", "content": "" },
                             "logprobs": null, "finish_reason": null });
        data(meta.wrap(true, json!([choice]), json!({})))
    });
    let body = UnboundedReceiverStream::new(rx).flat_map(move |event| {
        let events: Vec<SseEvent> = match event {
            Event::Text(t) => vec![data(meta.wrap(
                true,
                json!([meta.choice(true, Some(&t), None)]),
                json!({}),
            ))],
            Event::Failed(e) => vec![data(e.body()), SseEvent::default().data("[DONE]")],
            Event::Done(summary) => {
                let last = meta.choice(true, None, Some(summary.finish_reason.as_str()));
                let mut v = vec![data(meta.wrap(
                    true,
                    json!([last]),
                    json!({ "ttq": summary.ttq_json() }),
                ))];
                if include_usage {
                    v.push(data(meta.wrap(
                        true,
                        json!([]),
                        json!({ "usage": usage(&summary) }),
                    )));
                }
                v.push(SseEvent::default().data("[DONE]"));
                v
            }
        };
        stream::iter(events)
    });
    let events = stream::iter(head).chain(body).map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "ttq",
            "max_model_len": s.limits.context,
            "ttq": { "method": s.method, "chat_template": s.chat.as_ref().map(|c| c.origin.clone()) },
        }],
    }))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}
