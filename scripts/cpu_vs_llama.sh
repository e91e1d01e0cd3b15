#!/usr/bin/env bash
# ttq's CPU decode against llama.cpp on the same GGUF file, interleaved so that both see
# the same machine load: ROUNDS rounds of `ttq bench decode` (fp and TTQ-W4) then
# `llama-bench` (2 threads, a 13-token prompt, 64 new tokens).
#
#   cpu_vs_llama.sh MODEL_DIR [ROUNDS]      (MODEL_DIR holds model.gguf)
#
# LLAMA_BENCH is the llama-bench binary (docs/cpu.md says how to build it from the npm
# packages); without it only ttq runs. TTQ (default ttq:w4:g128:a0.25) sets the method.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$(realpath "${1:?usage: cpu_vs_llama.sh MODEL_DIR [ROUNDS]}")
rounds=${2:-3}
ttq=${TTQ_BIN:-$here/../target/release/ttq}
method=${TTQ:-ttq:w4:g128:a0.25}
[ -x "$ttq" ] || { echo "no ttq binary at $ttq (cargo build --release -p ttq-cli)" >&2; exit 2; }
for r in $(seq "$rounds"); do
  echo "== round $r ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$ttq" bench decode --model "$model" --backend cpu --methods "fp,$method" \
    --prompt-tokens 13 --new-tokens 64 --runs 3 2>&1 | grep -E '^\| (fp|ttq)'
  if [ -n "${LLAMA_BENCH:-}" ]; then
    (cd "$(dirname "$LLAMA_BENCH")" &&
      "./$(basename "$LLAMA_BENCH")" -m "$model/model.gguf" -t 2 -p 13 -n 64 -r 3 2>&1 |
      grep -E 'pp13|tg64' | awk -F'|' '{print "| llama.cpp " $7 "|" $8 "|"}')
  fi
done
