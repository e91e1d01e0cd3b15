#!/usr/bin/env python3
"""Per-decode-step kernel counts and device time from two CubeCL profile logs.

CubeCL writes one line per kernel, `| <duration> | <kernel name>`, when its profiling logger
is on (CUBECL_DEBUG_LOG=FILE CUBECL_DEBUG_OPTION=profile); each kernel is then timed on
the device with events. Two runs that differ only in the number of generated tokens (SHORT
and LONG new tokens, same prompt, same warm-up) differ by exactly LONG - SHORT decode
steps, so the difference of their per-kernel totals divided by that count is one decode
step: how many kernels it launches, and how long the device is busy with each.

usage: kernel_profile.py SHORT_LOG SHORT_TOKENS LONG_LOG LONG_TOKENS [--json OUT]
"""
import argparse
import collections
import json
import re
import sys

UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
LINE = re.compile(r"^\|\s*([0-9.]+)\s*(ns|µs|us|ms|s)\s*\|\s*(.+?)\s*$")


def totals(path):
    """{kernel name: [launches, device µs]} over the whole log."""
    out = collections.defaultdict(lambda: [0, 0.0])
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            name = re.sub(r"\s+", " ", m.group(3))
            out[name][0] += 1
            out[name][1] += float(m.group(1)) * UNITS[m.group(2)]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("short_log")
    p.add_argument("short_tokens", type=int)
    p.add_argument("long_log")
    p.add_argument("long_tokens", type=int)
    p.add_argument("--json")
    a = p.parse_args()
    steps = a.long_tokens - a.short_tokens
    if steps <= 0:
        sys.exit("LONG_TOKENS must be larger than SHORT_TOKENS")
    short, long_ = totals(a.short_log), totals(a.long_log)
    if not long_:
        sys.exit(f"no profiled kernel lines in {a.long_log}")
    rows = []
    for name in set(short) | set(long_):
        n = (long_[name][0] - short[name][0]) / steps
        us = (long_[name][1] - short[name][1]) / steps
        if n > 0.01:
            rows.append({"kernel": name, "launches": n, "device_us": us})
    rows.sort(key=lambda r: -r["device_us"])
    launches = sum(r["launches"] for r in rows)
    busy = sum(r["device_us"] for r in rows)
    print(f"one decode step ({steps} steps differenced): {launches:.0f} kernel launches, "
          f"device busy {busy / 1e3:.2f} ms\n")
    print("| kernel | launches/step | device µs/step | share |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows[:40]:
        print(f"| `{r['kernel'][:90]}` | {r['launches']:.1f} | {r['device_us']:.0f} | "
              f"{100 * r['device_us'] / busy:.1f}% |")
    if len(rows) > 40:
        rest = rows[40:]
        print(f"| {len(rest)} other kernels | {sum(r['launches'] for r in rest):.1f} | "
              f"{sum(r['device_us'] for r in rest):.0f} | "
              f"{100 * sum(r['device_us'] for r in rest) / busy:.1f}% |")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"steps": steps, "launches_per_step": launches,
                       "device_busy_us_per_step": busy, "kernels": rows}, f, indent=1)


if __name__ == "__main__":
    main()
