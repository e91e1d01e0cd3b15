#!/usr/bin/env python3
"""Reference numbers for the Rust tests that run on the real model files.

Pinned versions used to produce testdata/real_tensor_stats.json and the constants quoted in
tests/real_files.rs:

    gguf==0.19.0
    numpy==2.4.6
    tokenizers==0.23.3
    regex==2026.11.19

Setup:
    python3 -m venv venv && venv/bin/pip install gguf==0.19.0 numpy==2.4.6 tokenizers==0.23.3 regex==2026.11.19

Usage:
    venv/bin/python scripts/make_real_file_reference.py \
        --gemma  /path/to/gemma3-270m/model.gguf \
        --smollm2 /path/to/smollm2-135m/model.gguf \
        --out testdata/real_tensor_stats.json

It writes, for every tensor of both files, one line with the type, element count, float64 sum
and sum of absolute values of the tensor as dequantised by gguf-py, and its first four values
(exact float32 bit patterns, hex). It prints the token ids of a few strings under the
SmolLM2 vocabulary, computed two ways that must agree: with the `tokenizers` library
(BPE + digit splitting + byte-level, built from the GGUF metadata) and with a from-scratch
byte-level BPE in plain Python.
"""

import argparse
import json
import sys

import numpy as np
import regex
import gguf
from gguf.quants import dequantize

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, 366 days passed; it's a leap-year!",
    "  multiple   spaces\nand\ttabs",
    "naïve café — unicode ✓ 日本語",
    "<|im_start|>user\nHi there<|im_end|>",
]


def field(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def tensor_stats(path):
    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
        v = np.asarray(dequantize(raw, t.tensor_type), dtype=np.float32).reshape(-1)
        assert v.size == int(np.prod(t.shape)), t.name
        v64 = v.astype(np.float64)
        # [type, element count, sum, sum of |x|, first four values as f32 hex]
        out[t.name] = [
            t.tensor_type.name,
            int(v.size),
            float(v64.sum()),
            float(np.abs(v64).sum()),
            v[:4].astype("<f4").tobytes().hex(),
        ]
    return out


# ---- from-scratch byte-level BPE (GPT-2 algorithm) -------------------------------------------

def bytes_to_unicode():
    # Printable bytes map to themselves; the rest to code points from 256 upwards, in order.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


# GPT-2 split pattern (the one used for SmolLM in llama.cpp, after splitting digits).
GPT2_PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def scratch_encode(text, vocab, ranks, specials):
    b2u = bytes_to_unicode()
    ids = []
    # Split off special tokens first (longest first).
    pat = "(" + "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    for seg in regex.split(pat, text):
        if not seg:
            continue
        if seg in specials:
            ids.append(vocab[seg])
            continue
        # Digits: every digit is its own pre-token; then the GPT-2 pattern on the rest.
        for piece in regex.split(r"(\p{N})", seg):
            if not piece:
                continue
            for word in GPT2_PAT.findall(piece):
                syms = [b2u[b] for b in word.encode("utf-8")]
                while len(syms) > 1:
                    best = min(((ranks.get((a, b), 1 << 60), i) for i, (a, b) in enumerate(zip(syms, syms[1:]))))
                    if best[0] == 1 << 60:
                        break
                    i = best[1]
                    syms = syms[:i] + [syms[i] + syms[i + 1]] + syms[i + 2:]
                ids.extend(vocab[s] for s in syms)
    return ids


def smollm2_token_ids(path):
    from tokenizers import Tokenizer, AddedToken, models, pre_tokenizers, decoders

    r = gguf.GGUFReader(path)
    tokens = field(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    types = field(r, "tokenizer.ggml.token_type")
    vocab = {t: i for i, t in enumerate(tokens)}
    specials = [t for t, ty in zip(tokens, types) if ty == 3]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])

    ranks = {m: i for i, m in enumerate(merges)}
    result = {}
    for text in TEXTS:
        a = tok.encode(text).ids
        b = scratch_encode(text, vocab, ranks, set(specials))
        if a != b:
            print(f"MISMATCH for {text!r}:\n tokenizers: {a}\n scratch:    {b}", file=sys.stderr)
            sys.exit(1)
        assert tok.decode(a, skip_special_tokens=False) == text
        result[text] = a
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma", required=True)
    ap.add_argument("--smollm2", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    stats = {
        "generator": "scripts/make_real_file_reference.py",
        "reference": "gguf.quants.dequantize (llama.cpp gguf-py)",
        "gemma3-270m": tensor_stats(args.gemma),
        "smollm2-135m": tensor_stats(args.smollm2),
    }
    with open(args.out, "w") as f:
        # One tensor per line: small diffs, still valid JSON.
        f.write("{\n")
        f.write(f'"generator": {json.dumps(stats["generator"])},\n')
        f.write(f'"reference": {json.dumps(stats["reference"])},\n')
        f.write('"columns": ["type", "n", "sum", "sum_abs", "first4_f32_hex"]')
        for model in ("gemma3-270m", "smollm2-135m"):
            f.write(f',\n"{model}": {{\n')
            f.write(",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(stats[model].items())))
            f.write("\n}")
        f.write("\n}\n")
    for model in ("gemma3-270m", "smollm2-135m"):
        for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_output.weight",
                     "blk.0.ffn_down.weight", "output_norm.weight"):
            ty, n, total, total_abs, first_hex = stats[model][name]
            first4 = np.frombuffer(bytes.fromhex(first_hex), dtype="<f4").tolist()
            print(f"{model} {name} {ty} n={n} sum={total!r} sum_abs={total_abs!r} first4={first4}")

    for text, ids in smollm2_token_ids(args.smollm2).items():
        print(f"smollm2 ids {text!r}: {ids}")


if __name__ == "__main__":
    main()
