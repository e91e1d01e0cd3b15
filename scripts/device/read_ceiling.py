#!/usr/bin/env python3
"""How fast can anything read N bytes on this GPU? The ceiling for the m = 1 GEMV targets.

The one-token GEMV target is a percentage of the copy bandwidth of a 512 MiB copy. A W4 g128
GEMV on 4096x14336 reads only 33 MB, and a kernel that short pays its ramp-up and tail on
a larger share of its time. This script times, for buffers from 16 MB to 470 MB:
- `sum`: `torch.sum` of an f16 buffer into f32 (a read-only reduction, one kernel);
- `gemv`: cuBLAS fp16 `x @ w.T` at m = 1 with `w` [4096, bytes / 8192] (what cuBLAS does
  with the same bytes of weight);
- `copy`: `dst.copy_(src)` of half the bytes each way (read + write = the bytes).

Timing as `torch_bench.py`: CUDA events around a batch behind `torch.cuda._sleep` (launches
hidden), median of repetitions, buffers rotated over more than the L2 cache. Back-to-back
kernels still leave a gap of about a microsecond each, so short kernels read low; run
under Nsight Compute with `--ncu` (`ncu --profile-from-start off … read_ceiling.py --ncu`) for the
kernels' own durations: it then launches each kernel `--ncu-reps` times per size between
`cudaProfilerStart` and `cudaProfilerStop` and writes the launch plan to `--json`.
"""

import argparse
import json

import torch

# The same rotation and launch-hiding timer as the kernel peers (this script's folder is
# on the import path when it runs).
from torch_bench import copies_for, time_call


def time_batch(fn, n):
    return time_call(fn, n, hide_launches=True)


def ops_for(mb):
    """The three operations on buffers of about `mb` MB, each as (name, bytes, fn(i))."""
    cols = max(64, round(mb * 1e6 / (2 * 4096) / 64) * 64)
    nbytes = 4096 * cols * 2
    n = copies_for(nbytes)
    bufs = [torch.rand(nbytes // 2, device="cuda", dtype=torch.float16) for _ in range(n)]
    halves = [torch.rand(nbytes // 4, device="cuda", dtype=torch.float16) for _ in range(n)]
    dst = torch.empty_like(halves[0])
    x = torch.rand(1, cols, device="cuda", dtype=torch.float16)
    ws = [b.view(4096, cols) for b in bufs]
    return n, [
        ("sum", nbytes, lambda i: torch.sum(bufs[i], dtype=torch.float32)),
        ("gemv", nbytes + cols * 2 + 4096 * 2, lambda i: x @ ws[i].T),
        ("copy", nbytes // 2 * 2, lambda i: dst.copy_(halves[i])),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mb", default="16,33,67,117,235,470")
    p.add_argument("--json")
    p.add_argument("--ncu", action="store_true")
    p.add_argument("--ncu-reps", type=int, default=5)
    a = p.parse_args()
    sizes = [float(v) for v in a.mb.split(",")]
    if a.ncu:
        plan = []
        for mb in sizes:
            n, ops = ops_for(mb)
            for name, nbytes, fn in ops:
                if name == "copy":
                    continue  # a cudaMemcpy, not a kernel: Nsight Compute does not see it
                for i in range(3):
                    fn(i % n)
                torch.cuda.synchronize()
                torch.cuda.profiler.start()
                for i in range(a.ncu_reps):
                    fn(i % n)
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
                plan.append({"op": name, "mb": mb, "bytes": nbytes, "launches": a.ncu_reps})
            del ops
            torch.cuda.empty_cache()
        if a.json:
            json.dump(plan, open(a.json, "w"), indent=1)
        return
    big = torch.rand(256 << 20, device="cuda", dtype=torch.float16)
    out = torch.empty_like(big)
    copy_gbs = 4 * big.numel() / time_batch(lambda _: out.copy_(big), 1) / 1e9
    del big, out
    rows = []
    for mb in sizes:
        n, ops = ops_for(mb)
        for name, nbytes, fn in ops:
            t = time_batch(fn, n)
            rows.append({"op": name, "mb": mb, "bytes": nbytes, "us": t * 1e6,
                         "gbs": nbytes / t / 1e9, "pct_copy": 100 * nbytes / t / 1e9 / copy_gbs})
        del ops
        torch.cuda.empty_cache()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; copy_ of 512 MiB "
          f"(read + write): {copy_gbs:.0f} GB/s; events, launches hidden behind a GPU sleep")
    print()
    print("| op | MB | µs | GB/s | % of copy_ |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['op']} | {r['bytes'] / 1e6:.1f} | {r['us']:.1f} | {r['gbs']:.0f} | "
              f"{r['pct_copy']:.0f}% |")
    if a.json:
        json.dump({"copy_gbs": copy_gbs, "rows": rows}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
