#!/usr/bin/env python3
"""The fair PyTorch peer of `ttq bench decode --random-weights qwen3-8b`: a Qwen3-shaped
decoder written directly in PyTorch with a static KV cache, its decode step captured once
as a CUDA graph and replayed per token, so no Python or per-op dispatch is paid per token.

Two weight formats, same random architecture (no checkpoint):
- `fp16`: every linear layer is `F.linear` in fp16 (cuBLAS);
- `int4`: every linear layer of the blocks is torch's int4 kernel
  (`torch.ops.aten._weight_int4pack_mm`, groups of 128, bf16 activations, as it requires),
  the LM head stays dense (bf16), as ttq keeps its LM head in 16 bits.

Prefill (the prompt in one eager forward, causal attention, filling the cache) and decode
(`--new-tokens` greedy steps: replay the graph, then read the new token id on the host, as
a server streaming tokens must) are timed with CUDA-synchronised wall clocks; one warm-up,
then `--runs` timed generations, median reported. The position lives in a device tensor
and the cache covers the whole context, so one captured graph serves every step.

Prints a Markdown table; `--json PATH` writes the numbers.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

PRESETS = {
    # Same numbers as ttq-models/src/presets.rs.
    "qwen3-8b": dict(hidden=4096, inter=12288, layers=36, heads=32, kv_heads=8, head_dim=128,
                     vocab=151936, eps=1e-6, theta=1e6),
    "qwen3-0.6b": dict(hidden=1024, inter=3072, layers=28, heads=16, kv_heads=8, head_dim=128,
                       vocab=151936, eps=1e-6, theta=1e6),
}


def rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


class Linear:
    """`x @ W.T` in the chosen format."""

    def __init__(self, d_out, d_in, fmt, dtype, gen):
        self.fmt = fmt
        self.d_out = d_out
        if fmt == "fp16":
            self.w = (torch.randn(d_out, d_in, device="cuda", dtype=dtype, generator=gen)
                      * (1.0 / math.sqrt(d_in)))
        else:
            codes = torch.randint(0, 16, (d_out, d_in), dtype=torch.int32, device="cuda",
                                  generator=gen)
            packed = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
            self.w = torch.ops.aten._convert_weight_to_int4pack(packed, 8)
            groups = d_in // 128
            scale = torch.full((groups, d_out, 1), 0.02 / math.sqrt(d_in / 4096),
                               device="cuda", dtype=torch.bfloat16)
            zero = torch.zeros((groups, d_out, 1), device="cuda", dtype=torch.bfloat16)
            self.sz = torch.cat([scale, zero], dim=2).contiguous()

    def __call__(self, x):
        if self.fmt == "fp16":
            return F.linear(x, self.w)
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, shape[-1]), self.w, 128, self.sz)
        return y.reshape(*shape[:-1], self.d_out)


class Model:
    def __init__(self, cfg, fmt, max_len, seed):
        self.cfg = cfg
        self.dtype = torch.float16 if fmt == "fp16" else torch.bfloat16
        gen = torch.Generator(device="cuda").manual_seed(seed)
        h, hd = cfg["hidden"], cfg["head_dim"]
        nh, kvh = cfg["heads"], cfg["kv_heads"]
        self.layers = []
        for _ in range(cfg["layers"]):
            self.layers.append(dict(
                ln1=torch.ones(h, device="cuda", dtype=self.dtype),
                ln2=torch.ones(h, device="cuda", dtype=self.dtype),
                qn=torch.ones(hd, device="cuda", dtype=self.dtype),
                kn=torch.ones(hd, device="cuda", dtype=self.dtype),
                q=Linear(nh * hd, h, fmt, self.dtype, gen),
                k=Linear(kvh * hd, h, fmt, self.dtype, gen),
                v=Linear(kvh * hd, h, fmt, self.dtype, gen),
                o=Linear(h, nh * hd, fmt, self.dtype, gen),
                gate=Linear(cfg["inter"], h, fmt, self.dtype, gen),
                up=Linear(cfg["inter"], h, fmt, self.dtype, gen),
                down=Linear(h, cfg["inter"], fmt, self.dtype, gen),
            ))
        self.embed = torch.randn(cfg["vocab"], h, device="cuda", dtype=self.dtype,
                                 generator=gen) * 0.02
        self.lm_head = torch.randn(cfg["vocab"], h, device="cuda", dtype=self.dtype,
                                   generator=gen) * (1.0 / math.sqrt(h))
        self.norm = torch.ones(h, device="cuda", dtype=self.dtype)
        self.k_cache = torch.zeros(cfg["layers"], 1, kvh, max_len, hd, device="cuda",
                                   dtype=self.dtype)
        self.v_cache = torch.zeros_like(self.k_cache)
        inv = 1.0 / (cfg["theta"] ** (torch.arange(0, hd, 2, device="cuda").float() / hd))
        ang = torch.arange(max_len, device="cuda").float()[:, None] * inv[None, :]
        ang = torch.cat([ang, ang], dim=-1)
        self.cos = ang.cos().to(self.dtype)
        self.sin = ang.sin().to(self.dtype)
        self.positions = torch.arange(max_len, device="cuda")
        self.max_len = max_len

    def rope(self, x, pos):
        # x: [1, heads, t, hd]; pos: [t] device positions
        cos = self.cos.index_select(0, pos)[None, None]
        sin = self.sin.index_select(0, pos)[None, None]
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rot * sin

    def forward(self, ids, pos):
        """ids: [t] token ids; pos: [t] their positions (device). Returns last logits [vocab]."""
        cfg = self.cfg
        t = ids.shape[0]
        nh, kvh, hd, eps = cfg["heads"], cfg["kv_heads"], cfg["head_dim"], cfg["eps"]
        x = self.embed.index_select(0, ids)[None]  # [1, t, h]
        # Visible cache positions for each query: j <= its position.
        mask = self.positions[None, :] <= pos[:, None]  # [t, max_len]
        for i, L in enumerate(self.layers):
            a = rms_norm(x, L["ln1"], eps)
            q = L["q"](a).view(1, t, nh, hd).transpose(1, 2)
            k = L["k"](a).view(1, t, kvh, hd).transpose(1, 2)
            v = L["v"](a).view(1, t, kvh, hd).transpose(1, 2)
            q = self.rope(rms_norm(q, L["qn"], eps), pos)
            k = self.rope(rms_norm(k, L["kn"], eps), pos)
            self.k_cache[i].index_copy_(2, pos, k)
            self.v_cache[i].index_copy_(2, pos, v)
            o = F.scaled_dot_product_attention(q, self.k_cache[i], self.v_cache[i],
                                               attn_mask=mask[None, None], enable_gqa=True)
            x = x + L["o"](o.transpose(1, 2).reshape(1, t, nh * hd))
            m = rms_norm(x, L["ln2"], eps)
            x = x + L["down"](F.silu(L["gate"](m)) * L["up"](m))
        last = rms_norm(x[:, -1], self.norm, eps)
        return F.linear(last, self.lm_head)[0]


def generate(model, prompt, new_tokens, graph_state):
    """Prefill + greedy decode; returns (prefill s, decode s)."""
    dev_pos = torch.arange(prompt.shape[0], device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    logits = model.forward(prompt, dev_pos)
    nxt = int(torch.argmax(logits).item())
    prefill = time.perf_counter() - t0
    g, tok, pos, out = graph_state
    tok.fill_(nxt)
    pos.fill_(prompt.shape[0])
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        g.replay()
        _ = int(out.item())  # the host reads each token, as a streaming server does
    decode = time.perf_counter() - t1
    return prefill, decode


def capture(model):
    tok = torch.zeros(1, dtype=torch.long, device="cuda")
    pos = torch.zeros(1, dtype=torch.long, device="cuda")
    out = torch.zeros(1, dtype=torch.long, device="cuda")

    def step():
        logits = model.forward(tok, pos)
        nxt = torch.argmax(logits).view(1)
        out.copy_(nxt)
        tok.copy_(nxt)
        pos.add_(1)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up outside the graph (allocator, cuBLAS workspaces)
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g, tok, pos, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="qwen3-8b", choices=sorted(PRESETS))
    p.add_argument("--formats", default="fp16,int4")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args()
    cfg = PRESETS[a.preset]
    torch.manual_seed(a.seed)
    rows = []
    for fmt in a.formats.split(","):
        model = Model(cfg, fmt, a.prompt_tokens + a.new_tokens + 8, a.seed)
        prompt = torch.randint(0, cfg["vocab"], (a.prompt_tokens,), device="cuda")
        with torch.inference_mode():
            state = capture(model)
            generate(model, prompt, a.new_tokens, state)  # warm-up
            pre, dec = [], []
            for _ in range(a.runs):
                p_s, d_s = generate(model, prompt, a.new_tokens, state)
                pre.append(a.prompt_tokens / p_s)
                dec.append((a.new_tokens - 1) / d_s)
        rows.append(dict(format=fmt, prefill_tok_s=statistics.median(pre),
                         decode_tok_s=statistics.median(dec),
                         ms_per_token=1e3 / statistics.median(dec)))
        del model, state
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name()
    print(f"PyTorch {torch.__version__}, {name}, {a.preset} random weights, static KV cache, "
          f"decode step as a CUDA graph; prompt {a.prompt_tokens}, {a.new_tokens} new tokens, "
          f"median of {a.runs}\n")
    print("| peer | prefill tok/s | decode tok/s | ms / token |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        label = "torch fp16 (cuBLAS)" if r["format"] == "fp16" else \
            "torch int4 g128 (_weight_int4pack_mm, bf16)"
        print(f"| {label} | {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} | "
              f"{r['ms_per_token']:.2f} |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(dict(device=name, torch=torch.__version__, preset=a.preset,
                           prompt_tokens=a.prompt_tokens, new_tokens=a.new_tokens,
                           runs=a.runs, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
