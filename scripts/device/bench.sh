#!/usr/bin/env bash
# Kernel benchmarks on the GPU machine (docs/kernels.md, "Measurements").
#   bench.sh [peers]      torch_bench.py (cuBLAS fp16 and torch's int4 kernel on this card),
#                         then `ttq bench kernels --peers`: ours beside them, host- and
#                         device-timed, plus the quantize-pack / statistics / prefill table
#                         (about 100 s on an H200)
#   bench.sh ncu          Nsight Compute durations of the one-token GEMVs (the default and
#                         the TMA GEMV) on the four bench shapes, summarised by
#                         scripts/ncu_tile_summary.py (NCU_TILES: other tiles; NCU_TOKENS:
#                         another token count)
#   bench.sh read-ceiling read_ceiling.py: how fast a copy, cuBLAS's GEMV and a sum read
#                         16-470 MB on this card (the ceiling for the GEMV targets)
# Binaries are looked up in $BIN (default .device-kbin/, which `cargo xtask bench --gpu`
# fills with `ttq` built with --features cuda). Results go to $OUT (./device-out when unset).
# BENCH_ARGS adds arguments to `ttq bench kernels`.
set -uo pipefail
# Works from scripts/device/ and from a copy in .device-kbin/.
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$here/cuda_libs.sh" ] && . "$here/cuda_libs.sh"
case "$here" in */.device-kbin) cd "$here/.." ;; *) cd "$here/../.." ;; esac
BIN=${BIN:-.device-kbin}
OUT=${OUT:-device-out}
mkdir -p "$OUT"
scripts=scripts/device
[ -f "$scripts/torch_bench.py" ] || scripts=$BIN
what=${1:-peers}
case "$what" in peers|ncu|read-ceiling) ;; *) sed -n '2,15p' "$0"; exit 2 ;; esac
if [ ! -x "$BIN/ttq" ] && [ "$what" != read-ceiling ]; then
  echo "no ttq binary at $BIN/ttq (cargo xtask bench --gpu builds and copies it)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
case "$what" in
  peers)
    echo "== torch peers"
    PYTHONUNBUFFERED=1 python3 "$scripts/torch_bench.py" --json "$OUT/torch_bench.json" 2>&1 \
      | tee "$OUT/torch_bench.md"
    echo "== ttq bench kernels"
    peers=()
    [ -s "$OUT/torch_bench.json" ] && peers=(--peers "$OUT/torch_bench.json")
    # shellcheck disable=SC2086
    "$BIN/ttq" bench kernels --json "$OUT/bench_kernels.json" ${peers[@]+"${peers[@]}"} \
      ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_kernels.md"
    exit "${PIPESTATUS[0]}"
    ;;
  ncu)
    # The image may have Nsight Compute without putting it on the PATH.
    command -v ncu >/dev/null || PATH="$PATH:$(ls -d /opt/nvidia/nsight-compute/*/ 2>/dev/null | head -1)"
    shapes=4096x4096,2048x8192,4096x14336,14336x4096
    tiles=${NCU_TILES:-tma:4:8:1:2:2}
    # --no-device-timing: a fixed number of launches per tile (4 for the default tile, 5 per
    # listed tile), which the summary counts on.
    ncu --clock-control none -k regex:gemv --csv \
      --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed \
      "$BIN/ttq" bench kernels --shapes "$shapes" --tokens "${NCU_TOKENS:-1}" --reps 1 --batch 1 \
      --no-device-timing --gemv-tiles "$tiles" >"$OUT/ncu_tiles.txt" 2>"$OUT/ncu_tiles.log"
    echo "ncu exit $?"
    python3 scripts/ncu_tile_summary.py "$OUT/ncu_tiles.txt" --shapes "$shapes" \
      --tiles "default,$tiles" | tee "$OUT/ncu_tiles_summary.md"
    ;;
  read-ceiling)
    PYTHONUNBUFFERED=1 python3 "$scripts/read_ceiling.py" --json "$OUT/read_ceiling.json" 2>&1 \
      | tee "$OUT/read_ceiling.md"
    ;;
esac
