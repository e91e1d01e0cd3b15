#!/usr/bin/env bash
# Runs the GPU kernel benchmarks on the device machine:
#   bench.sh [bench]   scripts/device/torch_bench.py (cuBLAS fp16 and torch's int4 kernel),
#                      then `ttq bench kernels --peers` (our kernels vs Burn's dense f16
#                      matmul, and a table of ours beside the torch peers); about 100 s
#   bench.sh tests     the property tests of the CUDA kernels' default paths against the CPU
#                      reference (the opt-in GEMVs' layout sweeps skipped; TEST_ARGS
#                      replaces the skips); about 8 minutes on an H200
#   bench.sh all       both (longer than one 10-minute device call: prefer two calls)
# Binaries are looked up in .device-kbin/ (copied there by `cargo xtask bench --gpu`, plus
# the test binary for `tests`); results go to $OUT (or ./bench-out when $OUT is unset).
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
what=${1:-bench}
case "$what" in bench|tests|all) ;; *) echo "usage: bench.sh [bench|tests|all]" >&2; exit 2 ;; esac
if [ "$what" != bench ]; then
  if [ ! -x "$BIN/cuda_vs_reference" ]; then
    echo "no test binary at $BIN/cuda_vs_reference (cargo test --release -p ttq-kernels --features cuda --no-run prints its path)" >&2
    exit 2
  fi
  echo "== property tests"
  # shellcheck disable=SC2086
  (cd "$BIN" && ./cuda_vs_reference --test-threads 1 ${TEST_ARGS:---skip gemv_stream_layouts \
    --skip gemv_tma_layouts --skip gemv_tma_pipelines --skip gemv_mma_direct --skip gemv_tiles}) \
    > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; grep -E "^test |test result" "$OUT/tests.log"
  [ "$what" = tests ] && exit 0
fi
echo "== torch"
PYTHONUNBUFFERED=1 python3 "$TORCH_BENCH" --json "$OUT/torch_bench.json" 2>&1 | tee "$OUT/torch_bench.md"
echo "== ttq bench kernels"
peers=()
[ -s "$OUT/torch_bench.json" ] && peers=(--peers "$OUT/torch_bench.json")
"$BIN/ttq" bench kernels --json "$OUT/bench_kernels.json" ${peers[@]+"${peers[@]}"} ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_kernels.md"
