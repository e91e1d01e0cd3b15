//! Chat templates: the model's Jinja template (GGUF `tokenizer.chat_template`, or a file),
//! rendered with minijinja (with Python string methods, as Hugging Face templates use them).

use crate::error::{ApiError, ServeError};
use minijinja::{context, Environment, ErrorKind};
use serde::Deserialize;
use std::path::Path;

/// The template used for Gemma 3 models whose file carries none: Gemma's turn format
/// (`<start_of_turn>user … <end_of_turn>`, the assistant's role called `model`). System
/// messages become user turns (Gemma has no system role).
pub const GEMMA_DEFAULT_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}\
{% if m.role == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = 'user' %}{% endif %}\
<start_of_turn>{{ role }}\n{{ m.content | trim }}<end_of_turn>\n{% endfor %}\
{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

/// One chat message, its content a string or a list of text parts.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The text, or OpenAI content parts (`[{"type": "text", "text": …}]`).
    pub content: MessageContent,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// The part's type (`text`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its text.
    #[serde(default)]
    pub text: Option<String>,
}

impl MessageContent {
    /// The text of the content; an error for non-text parts (images, audio).
    pub fn text(&self) -> Result<String, ApiError> {
        match self {
            MessageContent::Text(t) => Ok(t.clone()),
            MessageContent::Parts(parts) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    (kind, _) => Err(ApiError::bad_request(format!(
                        "content parts of type `{kind}` are not supported (text only)"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.concat()),
        }
    }
}

/// A parsed chat template and the special-token strings it is rendered with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Where the template came from, for logs.
    pub origin: String,
}

/// The Jinja template stored in a model file or directory: a `.gguf` file's (or a
/// directory's `model.gguf`'s) `tokenizer.chat_template`, else a Hugging Face directory's
/// `tokenizer_config.json` `chat_template` string. `Ok(None)` if the model has none.
pub fn template_of_model(path: &Path) -> Result<Option<String>, ServeError> {
    let read_err = |e: &dyn std::fmt::Display| {
        ServeError::ChatTemplate(format!("reading the template of {}: {e}", path.display()))
    };
    let gguf = if path.is_dir() {
        path.join("model.gguf")
    } else {
        path.to_path_buf()
    };
    if gguf.is_file() {
        let file = ttq_models::gguf::GgufFile::open(&gguf).map_err(|e| read_err(&e))?;
        return ttq_models::gguf::tokenizer::chat_template(&file)
            .map(|t| t.map(str::to_string))
            .map_err(|e| read_err(&e));
    }
    let config = path.join("tokenizer_config.json");
    if config.is_file() {
        let text = std::fs::read_to_string(&config).map_err(|e| read_err(&e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| read_err(&e))?;
        return Ok(json["chat_template"].as_str().map(str::to_string));
    }
    Ok(None)
}

impl ChatTemplate {
    /// Parses `source`; `bos_token` and `eos_token` are the strings the template may insert.
    pub fn new(
        source: String,
        bos_token: String,
        eos_token: String,
        origin: String,
    ) -> Result<Self, ServeError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Hugging Face templates call raise_exception to reject a conversation.
        env.add_function("raise_exception", |message: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat", source)
            .map_err(|e| ServeError::ChatTemplate(format!("{origin}: {e}")))?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
            origin,
        })
    }

    /// The `<bos>` string the template inserts.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The prompt for `messages`, ending with the opening of the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::bad_request("`messages` is empty"));
        }
        let messages = messages
            .iter()
            .map(|m| Ok(context! { role => m.role.clone(), content => m.content.text()? }))
            .collect::<Result<Vec<_>, ApiError>>()?;
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ApiError::internal(format!("chat template: {e}")))?;
        template
            .render(context! {
                messages => messages,
                bos_token => self.bos_token.clone(),
                eos_token => self.eos_token.clone(),
                add_generation_prompt => true,
            })
            .map_err(|e| {
                ApiError::bad_request(format!("the chat template rejected the messages: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: MessageContent::Text(content.into()),
        }
    }

    fn gemma() -> ChatTemplate {
        ChatTemplate::new(
            GEMMA_DEFAULT_TEMPLATE.into(),
            "<bos>".into(),
            "<eos>".into(),
            "default".into(),
        )
        .unwrap()
    }

    #[test]
    fn the_gemma_default_renders_turns_and_opens_the_model_turn() {
        let text = gemma()
            .render(&[
                msg("user", " Hi! "),
                msg("assistant", "Hello."),
                msg("user", "Bye"),
            ])
            .unwrap();
        assert_eq!(
            text,
            "<bos><start_of_turn>user\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    /// The ChatML template SmolLM2 ships, written the Hugging Face way (Python methods,
    /// raise_exception), renders with minijinja.
    #[test]
    fn hugging_face_style_templates_render() {
        let source = "{% for message in messages %}{% if message['role'] not in ['user', 'system', 'assistant'] %}\
{{ raise_exception('bad role ' + message['role']) }}{% endif %}\
<|im_start|>{{ message['role'] }}\n{{ message['content'].strip() }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::new(source.into(), "".into(), "".into(), "test".into()).unwrap();
        assert_eq!(
            t.render(&[msg("system", "Be brief."), msg("user", " 2+2? ")]).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let e = t.render(&[msg("tool", "x")]).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("bad role tool"), "{}", e.message);
    }

    #[test]
    fn text_parts_are_joined_and_other_parts_are_refused() {
        let parts: MessageContent = serde_json::from_str(
            r#"[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]"#,
        )
        .unwrap();
        assert_eq!(parts.text().unwrap(), "ab");
        let image: MessageContent =
            serde_json::from_str(r#"[{"type": "image_url", "image_url": {"url": "x"}}]"#).unwrap();
        assert!(image.text().unwrap_err().message.contains("image_url"));
        assert!(gemma().render(&[]).is_err());
    }

    #[test]
    fn a_template_that_does_not_parse_is_an_error_at_start() {
        let e = ChatTemplate::new(
            "{% for %}".into(),
            "".into(),
            "".into(),
            "file.jinja".into(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("file.jinja"), "{e}");
    }
}
