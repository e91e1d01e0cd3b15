#!/usr/bin/env python3
"""Generate test vectors for the Rust GGUF dequantizers from an independent implementation.

Reference implementation: the numpy dequantizers in `gguf.quants` (llama.cpp's gguf-py).
Pinned versions used to produce testdata/dequant_vectors.json:

    gguf==0.19.0
    numpy==2.4.6

Setup:
    python3 -m venv venv && venv/bin/pip install gguf==0.19.0 numpy==2.4.6

Usage:
    venv/bin/python scripts/make_dequant_vectors.py \
        --gemma  /path/to/gemma3-270m/model.gguf \
        --smollm2 /path/to/smollm2-135m/model.gguf \
        --out testdata/dequant_vectors.json

For each ggml type, the vectors hold raw block bytes and the float32 values gguf-py turns them
into. Blocks are taken from the two real model files where the type occurs there (from the
start and from the middle of a tensor); types that do not occur get random bytes with sane
f16 scale fields. Output format (all hex is little-endian bytes):

    {"generator": ..., "versions": {...},
     "vectors": [{"type": "Q4_K", "type_id": 12, "source": "...", "n_blocks": 2,
                  "raw_hex": "...", "expected_f32_hex": "..."}, ...]}
"""

import argparse
import json
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

PINNED = {"gguf": "0.19.0", "numpy": "2.4.6"}
SEED = 20240607


def tensor_bytes(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    raw = np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
    return t.tensor_type, raw


def real_vector(path, label, reader, name, n_blocks, where):
    qtype, raw = tensor_bytes(reader, name)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    total = raw.size // size
    first = 0 if where == "start" else total // 2
    chunk = raw[first * size:(first + n_blocks) * size].copy()
    return make_vector(qtype, chunk, f"{label} {name} blocks {first}..{first + n_blocks} ({where})")


def make_vector(qtype, raw, source):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert raw.dtype == np.uint8 and raw.size % size == 0
    values = np.asarray(dequantize(raw, qtype), dtype=np.float32).reshape(-1)
    assert values.size == raw.size // size * block
    return {
        "type": qtype.name,
        "type_id": int(qtype.value),
        "source": source,
        "n_blocks": raw.size // size,
        "raw_hex": raw.tobytes().hex(),
        "expected_f32_hex": values.astype("<f4").tobytes().hex(),
    }


def random_blocks(rng, qtype, n_blocks, f16_fields):
    """Random block bytes; the f16 fields at the given byte offsets get sane scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off, lo, hi in f16_fields:
        vals = rng.uniform(lo, hi, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def random_f16(rng):
    vals = (rng.standard_normal(120) * 10).astype(np.float16)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, -65504.0, 6e-8, 1e-5],
                        dtype=np.float16)
    return np.concatenate([vals, specials]).view(np.uint8)


def random_bf16(rng):
    vals = (rng.standard_normal(120) * 100).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 3.0e38, 1e-38, 1e-40, 1.0],
                        dtype=np.float32)
    bits = np.concatenate([vals, specials]).view(np.uint32)
    # Truncate to the top 16 bits, as a bf16 bit pattern.
    return (bits >> 16).astype("<u2").view(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemma", required=True)
    ap.add_argument("--smollm2", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    versions = {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "?",
                "numpy": np.__version__}
    try:
        from importlib.metadata import version
        versions["gguf"] = version("gguf")
    except Exception:
        pass
    if versions != PINNED:
        print(f"warning: versions {versions} differ from pinned {PINNED}", file=sys.stderr)

    gemma = gguf.GGUFReader(args.gemma)
    smol = gguf.GGUFReader(args.smollm2)
    rng = np.random.default_rng(SEED)
    vectors = []

    # Real blocks, from the start and the middle of a tensor.
    real = [
        (args.gemma, "gemma3-270m", gemma, "token_embd.weight", 8),       # Q8_0
        (args.gemma, "gemma3-270m", gemma, "blk.0.attn_q.weight", 8),     # Q5_0
        (args.gemma, "gemma3-270m", gemma, "blk.0.attn_output.weight", 2),  # Q4_K
        (args.gemma, "gemma3-270m", gemma, "blk.0.ffn_down.weight", 2),   # Q6_K
        (args.gemma, "gemma3-270m", gemma, "blk.0.attn_norm.weight", 32),  # F32
        (args.smollm2, "smollm2-135m", smol, "blk.0.ffn_down.weight", 8),  # Q4_1
        (args.smollm2, "smollm2-135m", smol, "token_embd.weight", 4),      # Q8_0
        (args.smollm2, "smollm2-135m", smol, "output_norm.weight", 32),    # F32
    ]
    for path, label, reader, name, n in real:
        for where in ("start", "middle"):
            vectors.append(real_vector(path, label, reader, name, n, where))

    # Random blocks: the f16 scale fields at (offset, low, high).
    rand = [
        (T.Q4_0, 16, [(0, -0.2, 0.2)]),
        (T.Q5_1, 16, [(0, 0.0, 0.2), (2, -1.0, 1.0)]),
        (T.Q5_K, 3, [(0, 0.0, 0.01), (2, 0.0, 0.01)]),
        # Also random blocks of the types seen in real files, to cover other bit patterns.
        (T.Q4_1, 4, [(0, 0.0, 0.2), (2, -1.0, 1.0)]),
        (T.Q5_0, 4, [(0, -0.2, 0.2)]),
        (T.Q8_0, 4, [(0, -0.05, 0.05)]),
        (T.Q4_K, 1, [(0, 0.0, 0.01), (2, 0.0, 0.01)]),
        (T.Q6_K, 1, [(208, -0.01, 0.01)]),
    ]
    for qtype, n, fields in rand:
        vectors.append(make_vector(qtype, random_blocks(rng, qtype, n, fields),
                                   f"random bytes (seed {SEED}), f16 fields {fields}"))
    vectors.append(make_vector(T.F16, random_f16(rng), f"random f16 values and specials (seed {SEED})"))
    vectors.append(make_vector(T.BF16, random_bf16(rng), f"random bf16 values and specials (seed {SEED})"))

    doc = {
        "generator": "scripts/make_dequant_vectors.py",
        "reference": "gguf.quants.dequantize (llama.cpp gguf-py)",
        "versions": versions,
        "vectors": vectors,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    counts = {}
    for v in vectors:
        counts[v["type"]] = counts.get(v["type"], 0) + v["n_blocks"]
    print(f"wrote {len(vectors)} vectors: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
