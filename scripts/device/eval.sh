#!/usr/bin/env bash
# The perplexity runs of docs/results.md on the GPU machine (it has no cargo: the release
# binary travels).
#   eval.sh experiments MODEL_DIR OUT_DIR WINDOWS NAME...
#       `ttq experiment NAME` (methods, groups, domain, sensitivity) for each NAME; each
#       writes OUT_DIR/NAME/{records.json,table.md,stdout.txt,log.txt}. EXTRA_ARGS adds
#       arguments (e.g. --seqlen).
#   eval.sh ppl MODEL_DIR OUT_DIR SEQLEN WINDOWS DATASET...
#       `ttq ppl --sweep "$SWEEP"` on each text (WINDOWS may be `all`); writes
#       OUT_DIR/MODEL-DATASET.{json,log} and appends the rows to OUT_DIR/table.txt.
# $BIN/ttq (BIN defaults to .device-kbin) is built with --features cuda; the texts are in
# $DATA (default .device-data, a copy of ../shared/data carried to the machine). A failing
# run does not stop the others.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cuda_libs.sh"
cd "$here/../.."
BIN=${BIN:-.device-kbin}
DATA=${DATA:-.device-data}
usage() { sed -n '2,13p' "$0"; exit 2; }
[ $# -ge 1 ] || usage
what=$1; shift
case "$what" in
  experiments)
    [ $# -ge 4 ] || usage
    model=$1 out=$2 windows=$3; shift 3
    for name in "$@"; do
      mkdir -p "$out/$name"
      start=$(date +%s)
      # shellcheck disable=SC2086
      "$BIN/ttq" experiment "$name" --backend cuda --model "$model" --data-dir "$DATA" \
        --windows "$windows" --out "$out/$name" ${EXTRA_ARGS:-} \
        >"$out/$name/stdout.txt" 2>"$out/$name/log.txt"
      echo "$name: exit $? in $(( $(date +%s) - start )) s"
    done
    ;;
  ppl)
    [ $# -ge 5 ] || usage
    model=$1 out=$2 seqlen=$3 windows=$4; shift 4
    sweep=${SWEEP:-fp,rtn:4,ttq:4:128:0.5,ttq:4:128:0.25,rtn:3,ttq:3:128:0.5,ttq:3:128:0.25}
    mkdir -p "$out"
    for ds in "$@"; do
      name=$(basename "$model")-$ds
      win_arg=()
      [ "$windows" != all ] && win_arg=(--windows "$windows")
      "$BIN/ttq" ppl --backend cuda --model "$model" --dataset "$ds" --data-dir "$DATA" \
        --seqlen "$seqlen" ${win_arg[@]+"${win_arg[@]}"} --sweep "$sweep" \
        --json "$out/$name.json" 2>"$out/$name.log" | tee -a "$out/table.txt"
      echo "$name: exit ${PIPESTATUS[0]}"
    done
    ;;
  *) usage ;;
esac
