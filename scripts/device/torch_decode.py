#!/usr/bin/env python3
"""PyTorch peer of `ttq bench decode --random-weights NAME`: fp16 prefill and greedy decode
of a randomly initialised Hugging Face model of the same architecture, on the same GPU.

The model is built from its configuration (no checkpoint) directly on the GPU in fp16, with
eager attention. The prompt is random token ids (seeded); one warm-up generation, then
`--runs` timed ones (CUDA-synchronised wall time): prefill = one forward over the prompt,
decode = `--new-tokens` single-token steps with the KV cache and greedy argmax, as in
`ttq_models::generate::greedy_timed`. Prints a Markdown row; `--json PATH` writes the numbers.
"""

import argparse
import json
import statistics
import time

import torch
import transformers

# Architecture fields of the presets in ttq-models/src/presets.rs (same numbers).
PRESETS = {
    "qwen3-8b": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                     rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=False),
    "qwen3-0.6b": dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                       rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=True),
}


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def run_once(model, ids, new_tokens):
    with torch.no_grad():
        out, t_prefill = timed(lambda: model(ids, use_cache=True))
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)

        def decode():
            nonlocal past, nxt
            for _ in range(new_tokens - 1):
                o = model(nxt, past_key_values=past, use_cache=True)
                past = o.past_key_values
                nxt = o.logits[:, -1:].argmax(-1)
                nxt.item()  # the host needs the token, as in a real decode loop

        _, t_decode = timed(decode)
    return ids.shape[1] / t_prefill, (new_tokens - 1) / t_decode


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="qwen3-8b", choices=sorted(PRESETS))
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    fields = dict(PRESETS[a.preset])
    cfg = transformers.AutoConfig.for_model(**fields)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    model.eval()
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, a.prompt_tokens), generator=g).cuda()
    run_once(model, ids[:, :32], 4)
    runs = [run_once(model, ids, a.new_tokens) for _ in range(a.runs)]
    prefill = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    print(f"torch {torch.__version__} fp16 eager, {a.preset} random weights, "
          f"prompt {a.prompt_tokens}, {a.new_tokens} new tokens, median of {a.runs}, "
          f"{torch.cuda.get_device_name()}; {params / 1e9:.2f} B parameters in {dtypes}")
    print("| method | prefill tok/s | decode tok/s | ms / token |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| torch fp16 | {prefill:.1f} | {decode:.1f} | {1e3 / decode:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(preset=a.preset, prompt_tokens=a.prompt_tokens,
                           new_tokens=a.new_tokens, runs=a.runs, prefill_tok_s=prefill,
                           decode_tok_s=decode, device=torch.cuda.get_device_name(),
                           torch=torch.__version__, parameters=params, dtypes=dtypes,
                           runs_raw=runs), f, indent=2)


if __name__ == "__main__":
    main()
