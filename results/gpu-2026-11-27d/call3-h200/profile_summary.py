#!/usr/bin/env python3
"""Launch counts and profiled times per kernel from a CUBECL_DEBUG_OPTION=profile log.

Usage: profile_summary.py profile_generate.log.gz
The log of call 3 came from (scripts/device/e2e.sh final):
  CUBECL_DEBUG_LOG=profile_generate.log CUBECL_DEBUG_OPTION=profile ttq generate \
    --model gemma --backend cuda --dtype f16 --method ttq --bits 4 --alpha 0.25 \
    --prompt "The capital of France is" --max-new-tokens 4
Each profiled launch is a line `| <time> | <Kernel> | <Runtime>`; the time includes the
synchronisation the profiler adds and, at a kernel's first launch, its compilation. Kernel
compilations are `[START_KERNEL_COMPILATION]` blocks; the launch index at which each starts
shows in which forward pass it happened.
"""
import collections
import gzip
import re
import statistics
import sys

UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
times = collections.defaultdict(list)
compiles_at = []
n = 0
with gzip.open(sys.argv[1], "rt", errors="replace") as f:
    for line in f:
        if line.startswith("[START_KERNEL_COMPILATION]"):
            compiles_at.append(n)
        m = re.match(r"\|\s*([\d.]+)\s*(ns|µs|us|ms|s)\s*\|\s*(\S+)\s*\|", line)
        if m:
            n += 1
            times[m.group(3)].append(float(m.group(1)) * UNITS[m.group(2)])
print(f"{n} launches, {len(compiles_at)} kernel compilations")
print("compilations per 1000 launches:", dict(collections.Counter(c // 1000 for c in compiles_at)))
print("| kernel | launches | median µs | total ms |")
print("| --- | ---: | ---: | ---: |")
for k, v in sorted(times.items(), key=lambda kv: -len(kv[1])):
    print(f"| {k} | {len(v)} | {statistics.median(v):.1f} | {sum(v) / 1e3:.1f} |")
