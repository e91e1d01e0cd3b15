//! Tensor names of each family in each file format.

use crate::config::Family;

/// The role of a tensor in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Token embedding `[vocab, hidden]`.
    Embed,
    /// Learned positions `[positions + offset, hidden]` (OPT).
    PosEmbed,
    /// Final norm weight / bias.
    FinalNorm,
    /// Final norm bias (LayerNorm).
    FinalNormBias,
    /// LM head `[vocab, hidden]` (absent when tied).
    LmHead,
    /// Pre-attention norm.
    AttnNorm(usize),
    /// Pre-attention norm bias.
    AttnNormBias(usize),
    /// Query projection.
    Q(usize),
    /// Key projection.
    K(usize),
    /// Value projection.
    V(usize),
    /// Attention output projection.
    O(usize),
    /// Query projection bias.
    QBias(usize),
    /// Key projection bias.
    KBias(usize),
    /// Value projection bias.
    VBias(usize),
    /// Output projection bias.
    OBias(usize),
    /// Per-head query norm.
    QNorm(usize),
    /// Per-head key norm.
    KNorm(usize),
    /// Gemma's post-attention norm.
    PostAttnNorm(usize),
    /// Pre-MLP norm.
    FfnNorm(usize),
    /// Pre-MLP norm bias.
    FfnNormBias(usize),
    /// Gemma's post-MLP norm.
    PostFfnNorm(usize),
    /// Gate projection.
    Gate(usize),
    /// Up projection (OPT `fc1`).
    Up(usize),
    /// Down projection (OPT `fc2`).
    Down(usize),
    /// Up projection bias.
    UpBias(usize),
    /// Down projection bias.
    DownBias(usize),
}

/// The file format a name is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hugging Face safetensors.
    HuggingFace,
    /// llama.cpp GGUF.
    Gguf,
}

/// The name of `role` for `family` in `format`.
pub fn tensor_name(family: Family, format: Format, role: Role) -> String {
    match format {
        Format::HuggingFace if family == Family::Opt => opt_name(role),
        Format::HuggingFace => hf_name(family, role),
        Format::Gguf => gguf_name(role),
    }
}

fn opt_name(role: Role) -> String {
    let l = |i: usize, rest: &str| format!("model.decoder.layers.{i}.{rest}");
    match role {
        Role::Embed => "model.decoder.embed_tokens.weight".into(),
        Role::PosEmbed => "model.decoder.embed_positions.weight".into(),
        Role::FinalNorm => "model.decoder.final_layer_norm.weight".into(),
        Role::FinalNormBias => "model.decoder.final_layer_norm.bias".into(),
        Role::LmHead => "lm_head.weight".into(),
        Role::AttnNorm(i) => l(i, "self_attn_layer_norm.weight"),
        Role::AttnNormBias(i) => l(i, "self_attn_layer_norm.bias"),
        Role::Q(i) => l(i, "self_attn.q_proj.weight"),
        Role::K(i) => l(i, "self_attn.k_proj.weight"),
        Role::V(i) => l(i, "self_attn.v_proj.weight"),
        Role::O(i) => l(i, "self_attn.out_proj.weight"),
        Role::QBias(i) => l(i, "self_attn.q_proj.bias"),
        Role::KBias(i) => l(i, "self_attn.k_proj.bias"),
        Role::VBias(i) => l(i, "self_attn.v_proj.bias"),
        Role::OBias(i) => l(i, "self_attn.out_proj.bias"),
        Role::FfnNorm(i) => l(i, "final_layer_norm.weight"),
        Role::FfnNormBias(i) => l(i, "final_layer_norm.bias"),
        Role::Up(i) => l(i, "fc1.weight"),
        Role::UpBias(i) => l(i, "fc1.bias"),
        Role::Down(i) => l(i, "fc2.weight"),
        Role::DownBias(i) => l(i, "fc2.bias"),
        Role::QNorm(i)
        | Role::KNorm(i)
        | Role::PostAttnNorm(i)
        | Role::PostFfnNorm(i)
        | Role::Gate(i) => l(i, "<not in OPT>"),
    }
}

fn hf_name(family: Family, role: Role) -> String {
    let l = |i: usize, rest: &str| format!("model.layers.{i}.{rest}");
    match role {
        Role::Embed => "model.embed_tokens.weight".into(),
        Role::PosEmbed => "<no learned positions>".into(),
        Role::FinalNorm => "model.norm.weight".into(),
        Role::FinalNormBias => "model.norm.bias".into(),
        Role::LmHead => "lm_head.weight".into(),
        Role::AttnNorm(i) => l(i, "input_layernorm.weight"),
        Role::AttnNormBias(i) => l(i, "input_layernorm.bias"),
        Role::Q(i) => l(i, "self_attn.q_proj.weight"),
        Role::K(i) => l(i, "self_attn.k_proj.weight"),
        Role::V(i) => l(i, "self_attn.v_proj.weight"),
        Role::O(i) => l(i, "self_attn.o_proj.weight"),
        Role::QBias(i) => l(i, "self_attn.q_proj.bias"),
        Role::KBias(i) => l(i, "self_attn.k_proj.bias"),
        Role::VBias(i) => l(i, "self_attn.v_proj.bias"),
        Role::OBias(i) => l(i, "self_attn.o_proj.bias"),
        Role::QNorm(i) => l(i, "self_attn.q_norm.weight"),
        Role::KNorm(i) => l(i, "self_attn.k_norm.weight"),
        // Llama's `post_attention_layernorm` is the pre-MLP norm; Gemma's is the sandwich norm.
        Role::PostAttnNorm(i) => l(i, "post_attention_layernorm.weight"),
        Role::FfnNorm(i) if family == Family::Gemma3 => l(i, "pre_feedforward_layernorm.weight"),
        Role::FfnNorm(i) => l(i, "post_attention_layernorm.weight"),
        Role::FfnNormBias(i) => l(i, "post_attention_layernorm.bias"),
        Role::PostFfnNorm(i) => l(i, "post_feedforward_layernorm.weight"),
        Role::Gate(i) => l(i, "mlp.gate_proj.weight"),
        Role::Up(i) => l(i, "mlp.up_proj.weight"),
        Role::Down(i) => l(i, "mlp.down_proj.weight"),
        Role::UpBias(i) => l(i, "mlp.up_proj.bias"),
        Role::DownBias(i) => l(i, "mlp.down_proj.bias"),
    }
}

fn gguf_name(role: Role) -> String {
    let l = |i: usize, rest: &str| format!("blk.{i}.{rest}");
    match role {
        Role::Embed => "token_embd.weight".into(),
        Role::PosEmbed => "position_embd.weight".into(),
        Role::FinalNorm => "output_norm.weight".into(),
        Role::FinalNormBias => "output_norm.bias".into(),
        Role::LmHead => "output.weight".into(),
        Role::AttnNorm(i) => l(i, "attn_norm.weight"),
        Role::AttnNormBias(i) => l(i, "attn_norm.bias"),
        Role::Q(i) => l(i, "attn_q.weight"),
        Role::K(i) => l(i, "attn_k.weight"),
        Role::V(i) => l(i, "attn_v.weight"),
        Role::O(i) => l(i, "attn_output.weight"),
        Role::QBias(i) => l(i, "attn_q.bias"),
        Role::KBias(i) => l(i, "attn_k.bias"),
        Role::VBias(i) => l(i, "attn_v.bias"),
        Role::OBias(i) => l(i, "attn_output.bias"),
        Role::QNorm(i) => l(i, "attn_q_norm.weight"),
        Role::KNorm(i) => l(i, "attn_k_norm.weight"),
        Role::PostAttnNorm(i) => l(i, "post_attention_norm.weight"),
        Role::FfnNorm(i) => l(i, "ffn_norm.weight"),
        Role::FfnNormBias(i) => l(i, "ffn_norm.bias"),
        Role::PostFfnNorm(i) => l(i, "post_ffw_norm.weight"),
        Role::Gate(i) => l(i, "ffn_gate.weight"),
        Role::Up(i) => l(i, "ffn_up.weight"),
        Role::Down(i) => l(i, "ffn_down.weight"),
        Role::UpBias(i) => l(i, "ffn_up.bias"),
        Role::DownBias(i) => l(i, "ffn_down.bias"),
    }
}
