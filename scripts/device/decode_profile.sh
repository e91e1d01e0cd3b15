#!/usr/bin/env bash
# Where one GPU decode step spends its time (docs/decode.md): kernels launched per token and
# how long the device is busy with each, from CubeCL's own profiler (every kernel timed on
# the device with events). Two `ttq bench decode` runs differ only in the number of new
# tokens (SHORT and LONG), so the difference of their per-kernel totals is exactly
# LONG - SHORT decode steps; kernel_profile.py divides it out. Random Qwen3-8B-shaped
# weights in f16, a 512-token prompt, METHODS (default TTQ W4 g128 α = 0.25).
# Profiling syncs after every kernel: the run's tok/s is meaningless, use decode.sh for
# speed. $BIN/ttq (default .device-kbin) is built with --features cuda; results go to $OUT.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cuda_libs.sh"
cd "$here/../.."
BIN=${BIN:-.device-kbin}
OUT=${OUT:-device-out}
METHODS=${METHODS:-ttq:w4:g128:a0.25}
PRESET=${PRESET:-qwen3-8b}
SHORT=${SHORT:-4}
LONG=${LONG:-12}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ ! -x "$BIN/ttq" ]; then
  echo "no ttq binary at $BIN/ttq (cargo xtask bench --gpu builds and copies it)" >&2
  exit 2
fi
rc=0
for n in "$SHORT" "$LONG"; do
  log="$OUT/profile_${PRESET}_${n}.log"
  rm -f "$log"
  echo "== profiled bench decode, $n new tokens"
  CUBECL_DEBUG_LOG="$log" CUBECL_DEBUG_OPTION=profile "$BIN/ttq" bench decode \
    --random-weights "$PRESET" --backend cuda --dtype f16 --methods "$METHODS" \
    --prompt-tokens 512 --new-tokens "$n" --runs 1 ${TTQ_ARGS:-} 2>&1 | tail -3
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  # Keep only the kernel lines: the compilation log beside them is large.
  grep -E '^\|' "$log" > "$log.kernels" && mv "$log.kernels" "$log"
done
python3 "$here/kernel_profile.py" "$OUT/profile_${PRESET}_${SHORT}.log" "$SHORT" \
  "$OUT/profile_${PRESET}_${LONG}.log" "$LONG" --json "$OUT/profile_${PRESET}.json" \
  | tee "$OUT/profile_${PRESET}.md"
[ "${PIPESTATUS[0]}" = 0 ] || rc=1
exit $rc
