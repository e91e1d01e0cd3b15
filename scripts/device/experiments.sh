#!/usr/bin/env bash
# The named experiments of docs/results.md on the GPU machine.
# usage: experiments.sh MODEL_DIR OUT_DIR WINDOWS EXPERIMENT...
# Expects the release binary built with `--features cuda` at .device-bin/ttq and the
# evaluation texts at .device-data/ (copies of ../shared/data, carried to the machine).
# Each experiment writes OUT_DIR/NAME/{records.json,table.md} and a log; a failing
# experiment does not stop the others.
set -uo pipefail
model=$1; out=$2; windows=$3; shift 3
for name in "$@"; do
  mkdir -p "$out/$name"
  start=$(date +%s)
  .device-bin/ttq experiment "$name" --backend cuda --model "$model" --data-dir .device-data \
    --windows "$windows" --out "$out/$name" ${EXTRA_ARGS:-} >"$out/$name/stdout.txt" 2>"$out/$name/log.txt"
  echo "$name: exit $? in $(( $(date +%s) - start )) s"
done
