#!/usr/bin/env bash
# Prefill cost of TTQ with the test-time alpha search (ttqs) against plain TTQ and fp16, on
# random weights of the Qwen3-8B shape in f16 with this repository's kernels (issue target:
# ttqs prefill at most 1.3x plain TTQ's at 512 and 2048 prompt tokens). Prefill includes
# the test-time work of every layer: statistics, the search (ttqs only), quantize, GEMMs.
#   prefill_search.sh            -> $OUT/prefill-{512,2048}.{md,json}, $OUT/gpu.txt
# SEARCH adds ttqs variants to time (default: the default grid, and a 4-point grid on 64
# rows). About 5 minutes on an H200. $BIN/ttq (default .device-kbin) is built with
# --features cuda; results go to $OUT (./device-out when unset).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
BIN=${BIN:-.device-kbin}
OUT=${OUT:-device-out}
SEARCH=${SEARCH:-ttqs:w4:g128,ttqs:w4:g128:amax0.3:n4:rows64}
mkdir -p "$OUT"
if [ ! -x "$BIN/ttq" ]; then
  echo "no ttq binary at $BIN/ttq (build with --features cuda and carry it)" >&2
  exit 2
fi
nvidia-smi -L | tee "$OUT/gpu.txt"
rc=0
for tokens in 512 2048; do
  echo "== prefill $tokens tokens"
  start=$(date +%s)
  "$BIN/ttq" bench decode --random-weights qwen3-8b --backend cuda --dtype f16 \
    --methods "fp,ttq:w4:g128:a0.25,$SEARCH" --prompt-tokens "$tokens" --new-tokens 4 \
    --runs 5 --json "$OUT/prefill-$tokens.json" 2>&1 | tee "$OUT/prefill-$tokens.md"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  echo "prefill $tokens: $(($(date +%s) - start)) s" | tee -a "$OUT/times.txt"
done
exit $rc
