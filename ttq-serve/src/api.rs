//! The OpenAI request bodies ttq accepts and the checks that turn one into a [`Job`].

use crate::chat::ChatMessage;
use crate::engine::Job;
use crate::error::ApiError;
use serde::Deserialize;
use std::time::Instant;
use ttq_models::generate::SamplingConfig;

/// A string or a list of strings (`prompt`, `stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// The generation parameters shared by completions and chat completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Params {
    /// The model's id (any value is accepted: the server has one model).
    #[serde(default)]
    pub model: Option<String>,
    /// Tokens to generate at most.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// The chat API's newer name for `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature in [0, 2] (0: greedy; default 1, as OpenAI's).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Stop strings (at most [`MAX_STOP_STRINGS`]).
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    /// Sampling seed (default: drawn per request).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is supported.
    #[serde(default)]
    pub n: Option<u64>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt: a string, or a list holding one string.
    pub prompt: OneOrMany,
    /// Everything else.
    #[serde(flatten)]
    pub params: Params,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Everything else.
    #[serde(flatten)]
    pub params: Params,
}

/// Stop strings a request may give.
pub const MAX_STOP_STRINGS: usize = 16;

/// Limits the server applies to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The model's context in tokens (prompt + generated).
    pub context: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens: usize,
    /// `max_tokens` when the request gives none (capped by what the context leaves).
    pub default_max_tokens: usize,
}

impl CompletionRequest {
    /// The prompt text (a list must hold exactly one prompt: one choice per request).
    pub fn prompt_text(&self) -> Result<String, ApiError> {
        let prompts = self.prompt.clone().into_vec();
        match <[String; 1]>::try_from(prompts) {
            Ok([p]) => Ok(p),
            Err(v) => Err(ApiError::bad_request(format!(
                "`prompt` must be one string (got a list of {}); send one request per prompt",
                v.len()
            ))),
        }
    }
}

impl Params {
    /// Whether to stream.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// Checks the parameters against `limits` and the prompt's length and builds the job.
    pub fn job(
        &self,
        prompt_ids: Vec<u32>,
        limits: &Limits,
        events: tokio::sync::mpsc::UnboundedSender<crate::engine::Event>,
    ) -> Result<Job, ApiError> {
        let arrived = Instant::now();
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_request(format!(
                "n = {n} is not supported: ttq returns one choice per request"
            )));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(format!(
                "temperature must be in [0, 2], got {temperature}"
            )));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::bad_request(format!(
                "top_p must be in (0, 1], got {top_p}"
            )));
        }
        let stop = self
            .stop
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
        if stop.len() > MAX_STOP_STRINGS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                stop.len()
            )));
        }
        let prompt = prompt_ids.len();
        if prompt == 0 {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        let room = limits.context.saturating_sub(prompt);
        if room == 0 {
            return Err(ApiError::bad_request(format!(
                "the prompt has {prompt} tokens and fills the model's context of {} tokens",
                limits.context
            )));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            None => limits.default_max_tokens.min(room),
            Some(0) => return Err(ApiError::bad_request("max_tokens must be at least 1")),
            Some(n) if n > limits.max_tokens as u64 => {
                return Err(ApiError::bad_request(format!(
                    "max_tokens {n} is more than this server allows ({})",
                    limits.max_tokens
                )))
            }
            Some(n) if n > room as u64 => {
                return Err(ApiError::bad_request(format!(
                    "the prompt ({prompt} tokens) + max_tokens ({n}) exceeds the model's \
                     context of {} tokens",
                    limits.context
                )))
            }
            Some(n) => n as usize,
        };
        let seed = self.seed.unwrap_or_else(|| {
            // No seed: a different draw per request, as OpenAI's.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(Job {
            prompt_ids,
            max_tokens,
            sampling: SamplingConfig {
                temperature,
                top_k: 0,
                top_p,
                seed,
            },
            stop,
            arrived,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        context: 64,
        max_tokens: 32,
        default_max_tokens: 16,
    };

    fn params(json: &str) -> Params {
        serde_json::from_str(json).unwrap()
    }

    fn job(json: &str, prompt: usize) -> Result<Job, ApiError> {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        params(json).job(vec![5; prompt], &LIMITS, tx)
    }

    #[test]
    fn defaults_follow_openai_and_fit_the_context() {
        let j = job("{}", 10).unwrap();
        assert_eq!(
            (j.max_tokens, j.sampling.temperature, j.sampling.top_p),
            (16, 1.0, 1.0)
        );
        assert_eq!(job("{}", 60).unwrap().max_tokens, 4);
        let j = job(
            r#"{"max_completion_tokens": 7, "stop": "x", "seed": 3}"#,
            10,
        )
        .unwrap();
        assert_eq!(
            (j.max_tokens, j.stop, j.sampling.seed),
            (7, vec!["x".to_string()], 3)
        );
    }

    #[test]
    fn impossible_requests_are_400s_with_the_reason() {
        for (json, prompt, needle) in [
            (r#"{"max_tokens": 0}"#, 10, "at least 1"),
            (
                r#"{"max_tokens": 33}"#,
                10,
                "more than this server allows (32)",
            ),
            (
                r#"{"max_tokens": 30}"#,
                40,
                "exceeds the model's context of 64",
            ),
            ("{}", 64, "fills the model's context"),
            ("{}", 0, "empty"),
            (r#"{"temperature": 2.5}"#, 10, "temperature"),
            (r#"{"top_p": 0}"#, 10, "top_p"),
            (r#"{"n": 2}"#, 10, "one choice"),
        ] {
            let e = job(json, prompt).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{json}");
            assert!(e.message.contains(needle), "{json}: {}", e.message);
        }
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        let json = serde_json::json!({ "stop": many }).to_string();
        assert!(job(&json, 10).unwrap_err().message.contains("at most 16"));
    }

    #[test]
    fn a_prompt_list_must_hold_one_prompt() {
        let one: CompletionRequest = serde_json::from_str(r#"{"prompt": ["a"]}"#).unwrap();
        assert_eq!(one.prompt_text().unwrap(), "a");
        let two: CompletionRequest = serde_json::from_str(r#"{"prompt": ["a", "b"]}"#).unwrap();
        assert!(two.prompt_text().unwrap_err().message.contains("list of 2"));
    }
}
