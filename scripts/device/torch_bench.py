#!/usr/bin/env python3
"""PyTorch peers of `ttq bench-kernels`, on the same GPU and shapes.

For each layer shape (d_out x d_in) and token count m it times
- cuBLAS fp16: `x @ w.T` with x f16 [m, d_in], w f16 [d_out, d_in];
- torch's int4 kernel (tinygemm): `torch.ops.aten._weight_int4pack_mm(x, w_packed, 128, sz)`
  with x bf16 (the CUDA kernel takes bf16 activations), w packed by
  `torch.ops.aten._convert_weight_to_int4pack(w_uint8 [d_out, d_in/2], inner_k_tiles=8)`,
  and `sz` the bf16 scales and zeros `[d_in/128, d_out, 2]` (group size 128).

Timing: CUDA events around a batch of calls, median over repetitions, after a warm-up;
calls rotate over enough weight copies to exceed the L2 cache (as `ttq bench-kernels` does).
Each time is taken twice: `*_us` as the events see it (gaps where the host was slower to
launch than the GPU to run are included), and `*_dev_us` with launches hidden: the batch
is queued behind `torch.cuda._sleep` (a GPU busy-wait of about 2 ms, recorded before the
start event), so the events time the kernels back to back, as `ttq bench kernels`'s
device-timed columns do.
Prints one Markdown table; `--json PATH` also writes the numbers.
"""

import argparse
import json
import statistics

import torch

ROTATE_BYTES = 256 << 20
MAX_COPIES = 16


def copies_for(nbytes):
    return max(1, min(MAX_COPIES, -(-ROTATE_BYTES // max(1, nbytes))))


SLEEP_CYCLES = 4_000_000  # about 2 ms at the H200's clock


def time_call(fn, n_copies, reps=15, batch=10, hide_launches=False):
    for i in range(3):
        fn(i % n_copies)
    torch.cuda.synchronize()
    samples = []
    calls = 0
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        if hide_launches:
            torch.cuda._sleep(SLEEP_CYCLES)
        start.record()
        for _ in range(batch):
            fn(calls % n_copies)
            calls += 1
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / batch)
    return statistics.median(samples)


def copy_bandwidth():
    n = 256 << 20
    src = torch.rand(n, device="cuda", dtype=torch.float16)
    dst = torch.empty_like(src)
    t = time_call(lambda _: dst.copy_(src), 1)
    return 4 * n / t / 1e9


def int4_weights(d_out, d_in, group=128):
    codes = torch.randint(0, 16, (d_out, d_in), dtype=torch.int32, device="cuda")
    packed_u8 = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
    w = torch.ops.aten._convert_weight_to_int4pack(packed_u8, 8)
    sz = torch.rand(d_in // group, d_out, 2, device="cuda", dtype=torch.bfloat16) + 0.5
    return w, sz


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="4096x4096,4096x14336,14336x4096,2048x8192")
    p.add_argument("--tokens", default="1,4,16,256,2048")
    p.add_argument("--json")
    a = p.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    tokens = [int(t) for t in a.tokens.split(",")]

    name = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    print(f"torch {torch.__version__}, {name}; copy bandwidth (cudaMemcpy D2D via copy_, "
          f"read + write): {bw:.0f} GB/s\n")
    rows = []
    for d_out, d_in in shapes:
        nd = copies_for(d_out * d_in * 2)
        dense = [torch.randn(d_out, d_in, device="cuda", dtype=torch.float16) for _ in range(nd)]
        int4 = None
        int4_err = None
        try:
            nq = copies_for(d_out * d_in // 2)
            int4 = [int4_weights(d_out, d_in) for _ in range(nq)]
        except Exception as e:  # report, keep going with cuBLAS
            int4_err = f"{type(e).__name__}: {e}"
        for m in tokens:
            x16 = torch.randn(m, d_in, device="cuda", dtype=torch.float16)
            fp16 = lambda i: torch.matmul(x16, dense[i].t())
            t_fp16 = time_call(fp16, nd)
            t_fp16_dev = time_call(fp16, nd, hide_launches=True)
            t_int4 = t_int4_dev = None
            if int4 is not None:
                xb = x16.to(torch.bfloat16)
                i4 = lambda i: torch.ops.aten._weight_int4pack_mm(xb, int4[i][0], 128, int4[i][1])
                try:
                    t_int4 = time_call(i4, len(int4))
                    t_int4_dev = time_call(i4, len(int4), hide_launches=True)
                except Exception as e:
                    int4_err = f"{type(e).__name__}: {e}"
            bytes_int4 = d_out * d_in // 2 + (d_in // 128) * d_out * 4 + m * (d_in + d_out) * 2
            rows.append({
                "shape": f"{d_out}x{d_in}", "m": m,
                "fp16_us": t_fp16 * 1e6,
                "fp16_tflops": 2 * m * d_out * d_in / t_fp16 / 1e12,
                "int4_us": None if t_int4 is None else t_int4 * 1e6,
                "int4_gbs": None if t_int4 is None else bytes_int4 / t_int4 / 1e9,
                "int4_speedup": None if t_int4 is None else t_fp16 / t_int4,
                "fp16_dev_us": t_fp16_dev * 1e6,
                "int4_dev_us": None if t_int4_dev is None else t_int4_dev * 1e6,
                "int4_dev_gbs": None if t_int4_dev is None else bytes_int4 / t_int4_dev / 1e9,
            })
        del dense, int4
        torch.cuda.empty_cache()
        if int4_err:
            print(f"note: int4 kernel on {d_out}x{d_in}: {int4_err}")

    print("events: launch gaps included; dev: launches hidden behind a GPU sleep\n")
    print("| shape (d_out x d_in) | m | cuBLAS fp16 µs | dev µs | fp16 TFLOP/s | torch int4 g128 µs | dev µs | dev GB/s | dev % copy BW | int4 speedup | dev |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        i4 = r["int4_us"]
        print(f"| {r['shape']} | {r['m']} | {r['fp16_us']:.1f} | {r['fp16_dev_us']:.1f} | {r['fp16_tflops']:.1f} | "
              + ("n/a | n/a | n/a | n/a | n/a | n/a |" if i4 is None else
                 f"{i4:.1f} | {r['int4_dev_us']:.1f} | {r['int4_dev_gbs']:.0f} | "
                 f"{100 * r['int4_dev_gbs'] / bw:.0f}% | {r['int4_speedup']:.2f}x | "
                 f"{r['fp16_dev_us'] / r['int4_dev_us']:.2f}x |"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "copy_gbs": bw, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
