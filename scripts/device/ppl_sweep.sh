#!/usr/bin/env bash
# Perplexity sweep on the GPU machine (see docs/results.md for how it was run).
# usage: ppl_sweep.sh MODEL_DIR OUT_DIR SEQLEN WINDOWS DATASETS...
# Expects the release binary built with `--features cuda` at .device-bin/ttq and the
# evaluation texts at .device-data/ (copies of ../shared/data, carried to the machine).
set -uo pipefail
model=$1; out=$2; seqlen=$3; windows=$4; shift 4
sweep=${SWEEP:-fp,rtn:4,ttq:4:128:0.5,ttq:4:128:0.25,rtn:3,ttq:3:128:0.5,ttq:3:128:0.25}
mkdir -p "$out"
for ds in "$@"; do
  name=$(basename "$model")-$ds
  win_arg=()
  [ "$windows" != all ] && win_arg=(--windows "$windows")
  .device-bin/ttq ppl --backend cuda --model "$model" --dataset "$ds" --data-dir .device-data \
    --seqlen "$seqlen" "${win_arg[@]}" --sweep "$sweep" --json "$out/$name.json" 2>"$out/$name.log" \
    | tee -a "$out/table.txt"
done
