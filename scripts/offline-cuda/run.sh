#!/usr/bin/env bash
# Runs COMMAND... against the stand-in libcuda.so of setup.sh (DIR from OFFLINE_CUDA, default
# /work/cuda-offline): every CubeCL kernel it launches is generated and compiled by NVRTC
# for sm_90a (a fake H200: 132 SMs, 227 KiB of shared memory per cube), nothing runs, and
# each PTX module lands in PTX_DIR (default ./offline-ptx). Then prints ptxas' registers,
# spills and barriers per kernel. Results and timings of COMMAND are meaningless.
set -uo pipefail
dir=${OFFLINE_CUDA:-/work/cuda-offline}
ptx=${PTX_DIR:-$PWD/offline-ptx}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$ptx"
rm -f "$ptx"/module_*.ptx "$ptx/cubecl.log"
# Test binaries' value checks fail here; keep proptest from saving those "failures" as
# regression seeds in the source tree.
CUDA_PATH="$dir/cuda" LD_LIBRARY_PATH="$dir/lib" FAKE_CUDA_PTX_DIR="$ptx" \
  CUBECL_DEBUG_LOG="$ptx/cubecl.log" PROPTEST_DISABLE_FAILURE_PERSISTENCE=1 "$@"
echo "command exit $? (its results are meaningless without a GPU)"
python3 "$here/ptx_report.py" --ptxas "$dir/x/nvidia/cuda_nvcc/bin/ptxas" "$ptx"
