#!/usr/bin/env python3
"""Build tiny, randomly initialised reference models + expected logits for ttq.

Pinned versions (asserted at run time; regenerate fixtures and update these if you change them):
    torch        == 2.15.0   (PyPI Linux wheel, run on CPU only)
    transformers == 5.24.0
    safetensors  == 0.8.0
    numpy        == 2.4.6
    python       3.11.7

    (in a virtual environment with: pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 numpy==2.4.6)
Usage (from the repository root):
    python3 scripts/make_fixtures.py [--out ttq-models/tests/fixtures]

For every model <name> it writes fixtures/<name>/:
    config.json          -- as written by transformers.save_pretrained, plus a few legacy
                            (transformers 4.x / Hub-style) keys so that a loader written against
                            real Hub configs finds them (rope_theta, rope_scaling, and for gemma3
                            rope_local_base_freq + sliding_window_pattern). The script re-loads the
                            augmented directory with from_pretrained and checks the logits are unchanged.
    model.safetensors    -- f32 weights (save_pretrained(..., safe_serialization=True))
    expected.safetensors -- input_ids int64 [1, T], logits f32 [1, T, V], logits_incremental f32 [1, T-8, V]
                            (prefill of tokens 0..7, then tokens 8..11 one at a time with the KV cache;
                            logits_incremental[0, k] is the logit row for position 8 + k and equals
                            logits[0, 8 + k] to 1e-5, asserted here).
"""

import argparse
import json
import os
import shutil
import sys

EXPECTED_VERSIONS = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
}

import numpy
import safetensors
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file


def check_versions():
    found = {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }
    bad = {k: (found[k], v) for k, v in EXPECTED_VERSIONS.items() if found[k] != v}
    if bad:
        msg = "\n".join(f"  {k}: installed {f}, expected {e}" for k, (f, e) in bad.items())
        sys.exit(
            "make_fixtures.py: package versions differ from the pinned ones:\n"
            + msg
            + "\nInstall the pinned versions (pip install torch==2.15.0 transformers==5.24.0 "
            "safetensors==0.8.0 numpy==2.4.6) or update EXPECTED_VERSIONS and regenerate all fixtures."
        )


T = 12
PREFILL = 8
SEED = 1234
STD = 0.2

from transformers import (  # noqa: E402
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)


def model_specs():
    """name -> (model class, config, extra legacy keys to add to config.json)"""
    specs = {}
    specs["opt"] = (
        OPTForCausalLM,
        OPTConfig(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
            do_layer_norm_before=True,
            activation_function="relu",
            enable_bias=True,
            layer_norm_elementwise_affine=True,
            tie_word_embeddings=True,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
        {},
    )
    specs["qwen3"] = (
        Qwen3ForCausalLM,
        Qwen3Config(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,  # 4 * 16 = 64 != hidden 32 on purpose
            intermediate_size=64,
            hidden_act="silu",
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=False,
            attention_bias=False,
            use_sliding_window=False,
        ),
        {"rope_theta": 10000.0, "rope_scaling": None},
    )
    specs["llama"] = (
        LlamaForCausalLM,
        LlamaConfig(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            hidden_act="silu",
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=True,
            attention_bias=False,
            mlp_bias=False,
        ),
        {"rope_theta": 10000.0, "rope_scaling": None},
    )
    specs["gemma3"] = (
        Gemma3ForCausalLM,
        Gemma3TextConfig(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=64,
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            # explicit per-layer-type rope (transformers 5.x format)
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
            layer_types=["sliding_attention", "full_attention"],
            sliding_window_pattern=2,  # legacy int pattern, consistent with layer_types (layer i is global iff (i+1) % 2 == 0)
            sliding_window=4,
            # deliberately != head_dim (16) so an implementation that scales by head_dim**-0.5 fails
            query_pre_attn_scalar=24,
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
            attention_bias=False,
            tie_word_embeddings=True,
            use_bidirectional_attention=False,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
        ),
        {
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "rope_scaling": None,
            "sliding_window_pattern": 2,
        },
    )
    return specs


def randomize_(model, name):
    """Re-initialise every parameter with N(0, STD) so bugs show up in logits.

    Norm weights: around 1 for LayerNorm / Llama-style RMSNorm (1 + N(0, STD)),
    around 0 for Gemma3RMSNorm (which multiplies by 1 + w). Biases: N(0, STD).
    Tied parameters appear once in named_parameters(), so they stay tied."""
    norm_types = (torch.nn.LayerNorm,)
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            cls = type(module).__name__
            is_norm = isinstance(module, norm_types) or "RMSNorm" in cls
            for p_name, p in module.named_parameters(recurse=False):
                if is_norm and p_name == "weight":
                    if cls == "Gemma3RMSNorm":
                        p.normal_(0.0, STD)
                    else:
                        p.normal_(0.0, STD).add_(1.0)
                else:
                    p.normal_(0.0, STD)


def get_cache(out):
    c = getattr(out, "cache", None)
    if c is None:
        c = getattr(out, "past_key_values", None)
    assert c is not None, "no KV cache returned"
    return c


@torch.no_grad()
def compute_logits(model, input_ids):
    full = model(input_ids=input_ids, use_cache=False).logits.float()
    out = model(input_ids=input_ids[:, :PREFILL], use_cache=True)
    cache = get_cache(out)
    assert torch.allclose(out.logits, full[:, :PREFILL], atol=1e-5, rtol=0), "prefill logits mismatch"
    inc = []
    for t in range(PREFILL, T):
        out = model(input_ids=input_ids[:, t : t + 1], cache=cache, use_cache=True)
        cache = get_cache(out)
        inc.append(out.logits.float())
    inc = torch.cat(inc, dim=1)
    return full, inc


def load(cls, path):
    m = cls.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    m.eval()
    return m


def gemma3_attention_pattern(model, input_ids):
    """Which keys each query attends to, per layer, read from the eager attention weights."""
    out = model(input_ids=input_ids, use_cache=False, output_attentions=True)
    pats = []
    for a in out.attentions:  # [1, heads, T, T]
        pats.append((a[0] > 0).all(dim=0))  # same for all heads
        assert torch.equal((a[0] > 0).all(dim=0), (a[0] > 0).any(dim=0))
    return pats


def sensitivity(cls, d, input_ids, full, variants):
    """Re-run the saved weights under altered configs: each alteration must change the logits,
    otherwise the fixture would not catch that bug."""
    res = {}
    for label, mutate in variants.items():
        cfg = type(load(cls, d).config).from_pretrained(d)
        mutate(cfg)
        cfg._attn_implementation = "eager"
        m = cls(cfg).to(torch.float32)
        sd = load(cls, d).state_dict()
        m.load_state_dict(sd, strict=False)
        if getattr(cfg, "tie_word_embeddings", False):
            m.tie_weights()
        m.eval()
        with torch.no_grad():
            diff = (m(input_ids=input_ids, use_cache=False).logits - full).abs().max().item()
        assert diff > 1e-2, f"{label}: logits insensitive ({diff})"
        res[label] = diff
    return res


def _set_rope(cfg, theta):
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": theta}


def _swap_gemma_rope(cfg):
    rp = cfg.rope_parameters
    rp["full_attention"]["rope_theta"], rp["sliding_attention"]["rope_theta"] = (
        rp["sliding_attention"]["rope_theta"],
        rp["full_attention"]["rope_theta"],
    )


SENSITIVITY = {
    "qwen3": {"rope_theta 1e6 instead of 1e4": lambda c: _set_rope(c, 1e6)},
    "llama": {"rope_theta 1e6 instead of 1e4": lambda c: _set_rope(c, 1e6)},
    "gemma3": {
        "no sliding window (window 64)": lambda c: setattr(c, "sliding_window", 64),
        "sliding window 5 instead of 4 (off-by-one)": lambda c: setattr(c, "sliding_window", 5),
        "sliding window 3 instead of 4 (off-by-one)": lambda c: setattr(c, "sliding_window", 3),
        "query_pre_attn_scalar = head_dim 16 instead of 24": lambda c: setattr(c, "query_pre_attn_scalar", 16),
        "local/global rope thetas swapped": _swap_gemma_rope,
        "layer types swapped": lambda c: setattr(c, "layer_types", ["full_attention", "sliding_attention"]),
    },
}


def main():
    check_versions()
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ttq-models", "tests", "fixtures"))
    args = ap.parse_args()
    out_root = os.path.abspath(args.out)
    os.makedirs(out_root, exist_ok=True)
    torch.set_num_threads(1)

    summary = {}
    for idx, (name, (cls, config, legacy)) in enumerate(model_specs().items()):
        torch.manual_seed(SEED + idx)
        config._attn_implementation = "eager"
        model = cls(config).to(torch.float32)
        randomize_(model, name)
        model.eval()

        gen = torch.Generator().manual_seed(SEED + 100 + idx)
        input_ids = torch.randint(0, config.vocab_size, (1, T), generator=gen, dtype=torch.int64)

        full_mem, _ = compute_logits(model, input_ids)

        d = os.path.join(out_root, name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        model.save_pretrained(d, safe_serialization=True)
        for extra in ("generation_config.json",):
            p = os.path.join(d, extra)
            if os.path.exists(p):
                os.remove(p)

        # add Hub-style legacy keys to config.json
        cfg_path = os.path.join(d, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        for k, v in legacy.items():
            cfg.setdefault(k, v)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")

        # reference logits come from the model re-loaded from disk (what ttq will load)
        model2 = load(cls, d)
        full, inc = compute_logits(model2, input_ids)
        assert torch.equal(full, full_mem) or torch.allclose(full, full_mem, atol=1e-6, rtol=0), (
            f"{name}: reloaded model differs from in-memory model"
        )
        err = (inc - full[:, PREFILL:]).abs().max().item()
        assert err <= 1e-5, f"{name}: incremental decode differs from full forward by {err}"

        save_file(
            {
                "input_ids": input_ids.contiguous(),
                "logits": full.contiguous(),
                "logits_incremental": inc.contiguous(),
            },
            os.path.join(d, "expected.safetensors"),
        )

        with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
            keys = sorted(f.keys())
            shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
            dtypes = {f.get_slice(k).get_dtype() for k in keys}
        info = {
            "n_tensors": len(keys),
            "dtypes": sorted(dtypes),
            "lm_head.weight in file": "lm_head.weight" in keys,
            "tie_word_embeddings": cfg.get("tie_word_embeddings"),
            "max|incremental - full|": err,
            "logits std": full.std().item(),
            "input_ids": input_ids[0].tolist(),
        }
        if name == "gemma3":
            info["layer_types"] = list(model2.config.layer_types)
            info["attn sliding_window per layer"] = [l.self_attn.sliding_window for l in model2.model.layers]
            info["attn scaling per layer"] = [l.self_attn.scaling for l in model2.model.layers]
            info["embed_scale"] = model2.model.embed_tokens.embed_scale.item()
            pats = gemma3_attention_pattern(model2, input_ids)
            info["attended keys (layer0) q=11"] = torch.nonzero(pats[0][11]).flatten().tolist()
            info["attended keys (layer0) q=5"] = torch.nonzero(pats[0][5]).flatten().tolist()
            info["attended keys (layer0) q=2"] = torch.nonzero(pats[0][2]).flatten().tolist()
            info["attended keys (layer1) q=11"] = torch.nonzero(pats[1][11]).flatten().tolist()
            # check the rule: attend iff 0 <= q - k < sliding_window on the sliding layer
            W = model2.config.sliding_window
            qi = torch.arange(T)[:, None]
            ki = torch.arange(T)[None, :]
            rule = (qi - ki >= 0) & (qi - ki < W)
            assert torch.equal(pats[0], rule), "sliding pattern is not 0 <= q-k < W"
            assert torch.equal(pats[1], qi - ki >= 0), "global layer not plain causal"
            info["sliding rule verified"] = f"layer0 attends k iff 0 <= q - k < {W}; layer1 plain causal"
            # inv_freq per layer type
            re = model2.model.rotary_emb
            info["inv_freq full_attention"] = re.full_attention_inv_freq.tolist()
            info["inv_freq sliding_attention"] = re.sliding_attention_inv_freq.tolist()
        if name == "opt":
            # emulate forgetting OPT's position offset of 2 (row p instead of row p + 2)
            m = load(cls, d)
            with torch.no_grad():
                w = m.model.decoder.embed_positions.weight
                w.copy_(torch.roll(w, shifts=2, dims=0))
                diff = (m(input_ids=input_ids, use_cache=False).logits - full).abs().max().item()
            assert diff > 1e-2
            info["sensitivity max|dlogits|"] = {"position offset 0 instead of 2": diff}
        if name in SENSITIVITY:
            info["sensitivity max|dlogits|"] = sensitivity(cls, d, input_ids, full, SENSITIVITY[name])
        for fn in os.listdir(d):
            os.chmod(os.path.join(d, fn), 0o644)
        summary[name] = {"info": info, "shapes": shapes}

    with open(os.path.join(out_root, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for name, s in summary.items():
        print(f"== {name}")
        for k, v in s["info"].items():
            print(f"   {k}: {v}")
        for k, v in s["shapes"].items():
            print(f"   {k}: {v}")
    print("all incremental-decode assertions passed")


if __name__ == "__main__":
    main()
