#!/usr/bin/env bash
# `ttq serve` on the GPU machine (docs/serve.md, "GPU"): random weights of the Qwen3-8B shape
# in f16, TTQ W4 g128 alpha 0.25, then scripts/serve_load.py with 1 client and with 16
# concurrent clients (streaming, 64 new tokens each); the target is 16-client throughput at
# least 6x the 1-client throughput. $BIN/ttq (BIN defaults to .device-kbin) is built with
# --features cuda; TOKENIZER is a tokenizer.json (default .device-model/tokenizer.json, e.g.
# Gemma 3's: the vocabulary then grows to its 262,144 tokens). Results go to $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
BIN=${BIN:-.device-kbin}
OUT=${OUT:-device-out}
TOKENIZER=${TOKENIZER:-.device-model/tokenizer.json}
PORT=${PORT:-8089}
mkdir -p "$OUT"
for f in "$BIN/ttq" "$TOKENIZER"; do
  [ -e "$f" ] || { echo "missing $f (see the header of this script)" >&2; exit 2; }
done
nvidia-smi -L | tee "$OUT/gpu.txt"
"$BIN/ttq" serve --random-weights qwen3-8b --model "$TOKENIZER" --backend cuda --dtype f16 \
  --method ttq --bits 4 --group 128 --alpha 0.25 --port "$PORT" --queue 256 \
  2> "$OUT/serve.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server' EXIT
for _ in $(seq 1 300); do
  python3 - "$PORT" <<'PY' && break
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
except Exception:
    sys.exit(1)
PY
  sleep 1
done
rc=0
for clients in 1 16; do
  echo "== $clients clients"
  python3 scripts/serve_load.py --url "http://127.0.0.1:$PORT" --clients "$clients" \
    --requests $((clients * 4)) --max-tokens 64 --prompt-words 256 --stream \
    --json "$OUT/serve_load_$clients.json" | tee "$OUT/serve_load_$clients.md"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
done
python3 - "$OUT" <<'PY'
import json, sys
one = json.load(open(f"{sys.argv[1]}/serve_load_1.json"))["summary"]["tokens_per_second"]
many = json.load(open(f"{sys.argv[1]}/serve_load_16.json"))["summary"]["tokens_per_second"]
print(f"16 clients / 1 client throughput: {many:.1f} / {one:.1f} tok/s = {many / one:.2f}x (target 6x)")
PY
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt" 2>/dev/null || true
exit $rc
