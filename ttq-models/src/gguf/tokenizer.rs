//! Building a `tokenizers::Tokenizer` from the vocabulary stored in GGUF metadata.
//!
//! Supported: `tokenizer.ggml.model == "gpt2"` (byte-level BPE, as used by GPT-2, SmolLM,
//! StarCoder, ...) with the pre-tokenizer types listed in [`PRE_TYPES`]. SentencePiece
//! vocabularies (`"llama"`, used by Gemma and Llama 2) are rejected with an error: for those,
//! load the model's `tokenizer.json` instead.
//!
//! Keys read: `tokenizer.ggml.{model, pre, tokens, merges, token_type, bos_token_id,
//! eos_token_id, add_bos_token, add_eos_token}`.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::{GgufError, GgufFile};

/// GGUF token type: an ordinary vocabulary entry.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// GGUF token type: the unknown token.
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// GGUF token type: a control token such as `<|im_start|>`; never produced by splitting text.
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type: a user-defined token matched verbatim in the input.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Pre-tokenizer types (`tokenizer.ggml.pre`) understood, and how each splits text.
///
/// * GPT-2 style (`default`, `gpt2`, or the key absent): the byte-level regex only.
/// * StarCoder style (`smollm`, `starcoder`, `refact`, `codeshell`): every digit is split off
///   on its own first, then the byte-level regex.
pub const PRE_TYPES: &[&str] = &[
    "default",
    "gpt2",
    "smollm",
    "starcoder",
    "refact",
    "codeshell",
];

/// Special-token ids and flags from the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unknown: Option<u32>,
    pub padding: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (absent: false).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token` (absent: false).
    pub add_eos: bool,
}

/// Read the special-token ids and add-bos/eos flags.
pub fn special_tokens(file: &GgufFile) -> Result<SpecialTokens, GgufError> {
    let id = |k: &str| -> Result<Option<u32>, GgufError> {
        match file.meta_u64_opt(k)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| GgufError::WrongType {
                    file: file.path().to_path_buf(),
                    key: k.to_string(),
                    expected: "a u32 token id".to_string(),
                    found: v.to_string(),
                }),
        }
    };
    Ok(SpecialTokens {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos: id("tokenizer.ggml.eos_token_id")?,
        unknown: id("tokenizer.ggml.unknown_token_id")?,
        padding: id("tokenizer.ggml.padding_token_id")?,
        add_bos: file
            .meta_bool_opt("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false),
        add_eos: file
            .meta_bool_opt("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
    })
}

/// The Jinja chat template (`tokenizer.chat_template`), if the file has one.
pub fn chat_template(file: &GgufFile) -> Result<Option<&str>, GgufError> {
    file.meta_str_opt("tokenizer.chat_template")
}

/// Build a tokenizer equivalent to the one llama.cpp would use for this file.
///
/// Byte-level BPE from `tokens` + `merges`, a byte-level pre-tokenizer (no prefix space) and
/// decoder; tokens of type control (3) become special added tokens and user-defined (4)
/// ordinary added tokens; BOS/EOS are added by a post-processor when the metadata says so.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<Tokenizer, GgufError> {
    let err = |message: String| GgufError::Tokenizer {
        file: file.path().to_path_buf(),
        message,
    };

    let model = file.meta_str("tokenizer.ggml.model")?;
    match model {
        "gpt2" => {}
        "llama" => {
            return Err(err(
                "tokenizer model 'llama' (SentencePiece) is not supported from GGUF metadata; \
                 load the model's tokenizer.json instead"
                    .to_string(),
            ))
        }
        other => {
            return Err(err(format!(
                "tokenizer model '{other}' is not supported (only 'gpt2' byte-level BPE is)"
            )))
        }
    }

    let pre = file
        .meta_str_opt("tokenizer.ggml.pre")?
        .unwrap_or("default");
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "default" | "gpt2" => byte_level.into(),
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        other => {
            return Err(err(format!(
                "pre-tokenizer type '{other}' is not supported (supported: {})",
                PRE_TYPES.join(", ")
            )))
        }
    };

    let tokens = file.meta_str_array("tokenizer.ggml.tokens")?;
    let n_vocab = u32::try_from(tokens.len()).map_err(|_| {
        err(format!(
            "vocabulary of {} tokens is too large",
            tokens.len()
        ))
    })?;
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, tok) in (0..n_vocab).zip(tokens) {
        if let Some(prev) = vocab.insert(tok.clone(), id) {
            return Err(err(format!(
                "token {tok:?} appears twice in the vocabulary (ids {prev} and {id})"
            )));
        }
    }

    let merges = file
        .meta_str_array("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    err(format!(
                        "merge #{i} {m:?} is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let types = file
        .meta_i32_array_opt("tokenizer.ggml.token_type")?
        .unwrap_or(&[]);
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(err(format!(
            "token_type has {} entries but there are {} tokens",
            types.len(),
            tokens.len()
        )));
    }

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(format!("invalid BPE vocabulary/merges: {e}")))?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let added = |ty: i32, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|(_, &t)| t == ty)
            .map(|(tok, _)| AddedToken::from(tok.clone(), special).normalized(false))
            .collect()
    };
    tokenizer.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
    tokenizer.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));

    let specials = special_tokens(file)?;
    let token_of = |what: &str, id: Option<u32>| -> Result<(String, u32), GgufError> {
        let id = id.ok_or_else(|| {
            err(format!(
                "add_{what}_token is set but {what}_token_id is missing"
            ))
        })?;
        let tok = tokens
            .get(id as usize)
            .ok_or_else(|| err(format!("{what}_token_id {id} is outside the vocabulary")))?;
        Ok((tok.clone(), id))
    };
    if specials.add_bos || specials.add_eos {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut marks = Vec::new();
        if specials.add_bos {
            let (tok, id) = token_of("bos", specials.bos)?;
            single.push(tok.clone());
            pair.push(tok.clone());
            marks.push((tok, id));
        }
        single.push("$A".to_string());
        pair.push("$A".to_string());
        if specials.add_eos {
            let (tok, id) = token_of("eos", specials.eos)?;
            single.push(tok.clone());
            pair.push(tok.clone());
            marks.push((tok, id));
        }
        pair.push("$B:1".to_string());
        let post = TemplateProcessing::builder()
            .try_single(single.join(" "))
            .and_then(|b| b.try_pair(pair.join(" ")))
            .map_err(|e| err(format!("post-processor template: {e}")))?
            .special_tokens(marks)
            .build()
            .map_err(|e| err(format!("post-processor: {e}")))?;
        tokenizer.with_post_processor(Some(post));
    }

    Ok(tokenizer)
}
