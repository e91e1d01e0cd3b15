#!/usr/bin/env bash
# The error-bar evaluations of docs/results.md on the GPU machine: per-window NLLs of every
# method on WINDOWS windows of 2048 tokens of WikiText-2, PTB and the C4 sample, then
# `ttq compare` (paired bootstrap of the perplexity ratio) against AWQ.
#
#   errorbars.sh MODEL_DIR OUT_DIR [STEP...]
#
# Steps run in the order given (default: the main table, in priority order), one `ttq eval`
# process each, into OUT_DIR/STEP/{records.json,table.md,log.txt}. A step whose records.json
# is complete is skipped, so a later call with the same OUT_DIR (carried back) resumes where
# an earlier one stopped. Before each step the script checks the time left: it starts no
# step after DEADLINE seconds (default 540) from its own start, and gives each step only the
# time that is left. At the end it writes OUT_DIR/compare-awq.{md,json} from every finished
# step, and OUT_DIR/times.txt holds each step's exit code and wall seconds (device time).
#
# Steps (AWQ and GPTQ calibrated on 64 x 2048 = 131,072 tokens of the C4 sample, seed 0):
#   awq-g128 awq-g32     AWQ W4 and W3
#   ttq-g128 ttq-g32     TTQ alpha = $ALPHA (default 0.25) and TTQ-search (ttqs), W4 and W3
#   paper-g128 paper-g32 TTQ alpha = 0.5 (the paper's), W4 and W3
#   ref-g128 ref-g32     RTN W4 and W3 (ref-g128 also fp)
#   gptq-g128 gptq-g32   GPTQ act-order W4 and W3
#   domain-CALIB         (CALIB = wikitext2, ptb or c4) AWQ and GPTQ W4/W3 g128 calibrated on
#                        CALIB, scored on tokens 1024-2047 of each window
#   domain-ttq           TTQ alpha $ALPHA and ttqs W4/W3 g128, window and prefix-1024 modes,
#                        scored on the same tokens
# $BIN/ttq (default .device-kbin) is built with --features cuda; texts in $DATA (default
# .device-data, a copy of ../shared/data); WINDOWS (default 32) windows per text.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
BIN=${BIN:-.device-kbin}
DATA=${DATA:-.device-data}
WINDOWS=${WINDOWS:-32}
DEADLINE=${DEADLINE:-540}
ALPHA=${ALPHA:-0.25}
usage() { sed -n '2,30p' "$0"; exit 2; }
[ $# -ge 2 ] || usage
model=$1 out=$2; shift 2
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(awq-g128 ttq-g128 awq-g32 ttq-g32 paper-g32 paper-g128
  ref-g128 ref-g32 gptq-g128 gptq-g32)
if [ ! -x "$BIN/ttq" ]; then
  echo "no ttq binary at $BIN/ttq (build with --features cuda and carry it)" >&2
  exit 2
fi
if [ ! -e "$model" ]; then
  echo "no model at $model" >&2
  exit 2
fi
mkdir -p "$out"
nvidia-smi -L >"$out/card.txt" 2>&1
start=$(date +%s)
calib=(--calib c4 --calib-samples 64 --calib-len 2048 --seed 0)
texts=(--datasets wikitext2,ptb,c4)

# The methods of a step (W4 and W3 at the step's group), and its extra arguments.
plan() {
  local step=$1 g=${1##*-g}
  args=("${texts[@]}")
  case "$step" in
    awq-g*) methods="awq:w4:g$g,awq:w3:g$g"; args+=("${calib[@]}") ;;
    ttq-g*) methods="ttqs:w4:g$g,ttqs:w3:g$g,ttq:w4:g$g:a$ALPHA,ttq:w3:g$g:a$ALPHA" ;;
    paper-g*) methods="ttq:w4:g$g:a0.5,ttq:w3:g$g:a0.5" ;;
    ref-g128) methods="fp,rtn:w4:g128,rtn:w3:g128" ;;
    ref-g*) methods="rtn:w4:g$g,rtn:w3:g$g" ;;
    gptq-g*) methods="gptq:w4:g$g:act,gptq:w3:g$g:act"; args+=("${calib[@]}") ;;
    domain-ttq)
      methods="fp,ttq:w4:a$ALPHA,ttq:w3:a$ALPHA,ttqs:w4,ttqs:w3"
      args+=(--prefix 1024) ;;
    domain-wikitext2 | domain-ptb | domain-c4)
      methods="awq:w4,awq:w3,gptq:w4:act,gptq:w3:act"
      args+=(--prefix 1024 --calib "${step#domain-}" --calib-samples 64 --calib-len 2048
        --seed 0) ;;
    *) echo "unknown step $step" >&2; return 1 ;;
  esac
}

# Records a finished step would hold: methods x 3 texts (x 2 modes for dynamic methods with
# a prefix), so that a step cut short is run again rather than skipped.
expected() {
  local n=0 m
  IFS=, read -ra list <<<"$methods"
  for m in "${list[@]}"; do
    if [[ " ${args[*]} " == *" --prefix "* && $m == ttq* ]]; then n=$((n + 2)); else n=$((n + 1)); fi
  done
  echo $((n * 3))
}

for step in "${steps[@]}"; do
  plan "$step" || continue
  dir="$out/$step"
  if [ -f "$dir/records.json" ] &&
    [ "$(grep -c '"method":' "$dir/records.json")" -ge "$(expected)" ]; then
    echo "$step: done earlier, skipped"
    continue
  fi
  left=$((DEADLINE - ($(date +%s) - start)))
  if [ "$left" -lt 30 ]; then
    echo "$step: not started, ${left} s left of ${DEADLINE}" | tee -a "$out/times.txt"
    continue
  fi
  mkdir -p "$dir"
  t0=$(date +%s)
  timeout "$left" "$BIN/ttq" eval --backend cuda --model "$model" --data-dir "$DATA" \
    --windows "$WINDOWS" --methods "$methods" "${args[@]}" --out "$dir" --force \
    >"$dir/stdout.txt" 2>"$dir/log.txt"
  rc=$?
  echo "$step: exit $rc in $(($(date +%s) - t0)) s (start $(date -u -d @"$t0" +%FT%TZ))" |
    tee -a "$out/times.txt"
done

# The comparisons, from whatever finished (a step cut short still left its records).
main=()
for f in "$out"/{awq,ttq,paper,ref,gptq}-g*/records.json; do [ -f "$f" ] && main+=("$f"); done
if [ ${#main[@]} -gt 0 ]; then
  "$BIN/ttq" compare "${main[@]}" --baseline awq --json "$out/compare-awq.json" \
    >"$out/compare-awq.md" 2>&1 || echo "compare: exit $?" | tee -a "$out/times.txt"
fi
dom=()
for f in "$out"/domain-*/records.json; do [ -f "$f" ] && dom+=("$f"); done
if [ ${#dom[@]} -gt 0 ]; then
  for c in wikitext2 ptb c4; do
    label=$c
    case $c in wikitext2) label=WikiText-2 ;; ptb) label=PTB ;; c4) label=C4 ;; esac
    "$BIN/ttq" compare "${dom[@]}" --baseline awq --baseline-calib "$label" \
      --json "$out/compare-domain-awq-$c.json" >"$out/compare-domain-awq-$c.md" 2>&1 ||
      echo "compare domain $c: exit $?" | tee -a "$out/times.txt"
  done
fi
echo "total $(($(date +%s) - start)) s" | tee -a "$out/times.txt"
