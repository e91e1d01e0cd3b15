//! Building blocks shared by every family: norms, rotary embeddings, attention with a KV
//! cache, MLPs, the token embedding and the LM head.

pub mod attention;
pub mod kv_cache;
pub mod mlp;
pub mod norm;
pub mod rope;
pub mod vocab;
