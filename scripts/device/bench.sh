#!/usr/bin/env bash
# Runs the GPU kernel benchmarks on the device machine, in one call:
#   1. ttq's property tests of the CUDA kernels against the CPU reference (if present),
#   2. scripts/device/torch_bench.py (cuBLAS fp16 and torch's int4 kernel),
#   3. `ttq bench kernels --peers` (our kernels vs Burn's dense f16 matmul, and a table of
#      ours beside the torch peers of step 2).
# Binaries are looked up in .device-kbin/ (copied there from a `--features cuda` release
# build, see docs/kernels.md); results go to $OUT (or ./bench-out when $OUT is unset).
set -uo pipefail
# Works from scripts/device/ and from a copy in .device-kbin/ (what travels to the device).
here=$(cd "$(dirname "$0")" && pwd)
case "$here" in */.device-kbin) cd "$here/.." ;; *) cd "$here/../.." ;; esac
BIN=${BIN:-.device-kbin}
TORCH_BENCH=scripts/device/torch_bench.py
[ -f "$BIN/torch_bench.py" ] && TORCH_BENCH="$BIN/torch_bench.py"
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
if [ -x "$BIN/cuda_vs_reference" ]; then
  echo "== property tests"
  (cd "$BIN" && ./cuda_vs_reference --test-threads 1) > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^test |test result" "$OUT/tests.log"
fi
echo "== torch"
PYTHONUNBUFFERED=1 python3 "$TORCH_BENCH" --json "$OUT/torch_bench.json" 2>&1 | tee "$OUT/torch_bench.md"
echo "== ttq bench kernels"
peers=()
[ -s "$OUT/torch_bench.json" ] && peers=(--peers "$OUT/torch_bench.json")
"$BIN/ttq" bench kernels --json "$OUT/bench_kernels.json" "${peers[@]}" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_kernels.md"
