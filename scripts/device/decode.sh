#!/usr/bin/env bash
# Decode end to end on the GPU machine (docs/decode.md): batch 1, a 512-token prompt,
# NEW (default 128) new tokens, median of 3 runs, random weights of the Qwen3-8B shape in
# f16 (no checkpoint needed):
#   1. `ttq bench decode`: fp16 (Burn's matmul) against TTQ W4 g128 α = 0.25 (our kernels,
#      fused decoder ops); GEMV=tma (or another --gemv value) prefers that GEMV;
#   2. with UNFUSED=1, the same with the decoder ops as Burn ops (`--unfused-ops`);
#   3. the PyTorch peer: the same architecture with a static KV cache and its decode step
#      captured as a CUDA graph, fp16 (cuBLAS) and int4 g128 (torch_decode_graph.py); with
#      PEER=eager, transformers' eager fp16 decode instead (torch_decode.py); PEER=none
#      skips it.
# About 4 minutes on an H100. $BIN/ttq (BIN defaults to .device-kbin) is built with
# --features cuda; results go to $OUT (./device-out when unset).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cuda_libs.sh"
cd "$here/../.."
BIN=${BIN:-.device-kbin}
OUT=${OUT:-device-out}
mkdir -p "$OUT"
if [ ! -x "$BIN/ttq" ]; then
  echo "no ttq binary at $BIN/ttq (cargo xtask bench --gpu builds and copies it)" >&2
  exit 2
fi
nvidia-smi -L | tee "$OUT/gpu.txt"
common=(bench decode --random-weights qwen3-8b --backend cuda --dtype f16
  --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 --new-tokens "${NEW:-128}" --runs 3)
[ -n "${GEMV:-}" ] && common+=(--gemv "$GEMV")
rc=0
echo "== ttq bench decode"
"$BIN/ttq" "${common[@]}" --json "$OUT/decode.json" 2>&1 | tee "$OUT/decode.md"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
if [ "${UNFUSED:-0}" = 1 ]; then
  echo "== ttq bench decode --unfused-ops"
  "$BIN/ttq" "${common[@]}" --unfused-ops --json "$OUT/decode_unfused.json" 2>&1 \
    | tee "$OUT/decode_unfused.md"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
if [ "${PEER:-graph}" = none ]; then
  :
elif [ "${PEER:-graph}" = eager ]; then
  echo "== torch eager decode"
  PYTHONUNBUFFERED=1 python3 scripts/device/torch_decode.py --preset qwen3-8b --prompt-tokens 512 \
    --new-tokens "${NEW:-128}" --runs 3 --json "$OUT/torch_decode.json" 2>&1 | tee "$OUT/torch_decode.md"
else
  echo "== torch decode, CUDA graph"
  PYTHONUNBUFFERED=1 python3 scripts/device/torch_decode_graph.py --preset qwen3-8b \
    --prompt-tokens 512 --new-tokens "${NEW:-128}" --runs 3 --json "$OUT/torch_decode_graph.json" \
    2>&1 | tee "$OUT/torch_decode_graph.md"
fi
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
exit $rc
