#!/usr/bin/env bash
# Sets up the offline CUDA compile check (no GPU needed) under DIR (default
# /work/cuda-offline): NVRTC, the CUDA headers and ptxas from their pip wheels, and a stand-in
# libcuda.so built from fake_cuda.c. See README.md here.
set -euo pipefail
dir=${1:-/work/cuda-offline}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/wheels" "$dir/x" "$dir/lib" "$dir/cuda/include"
for p in nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 nvidia-cuda-cccl-cu12 nvidia-cuda-nvcc-cu12; do
  ls "$dir/wheels/" | grep -q "^${p//-/_}-" || pip download --no-deps -d "$dir/wheels" "$p"
done
for w in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$w" "$dir/x/"; done
n="$dir/x/nvidia"
cp -r "$n"/cuda_runtime/include/* "$n"/cuda_nvrtc/include/* "$n"/cuda_cccl/include/* \
  "$n"/cuda_nvcc/include/* "$dir/cuda/include/"
# CubeCL adds `$CUDA_PATH/include/cccl` to the include path when it exists.
ln -sfn . "$dir/cuda/include/cccl"
ln -sf "$n/cuda_nvrtc/lib/libnvrtc.so.12" "$dir/lib/libnvrtc.so"
ln -sf "$n/cuda_nvrtc/lib/libnvrtc.so.12" "$dir/lib/libnvrtc.so.12"
for b in "$n"/cuda_nvrtc/lib/libnvrtc-builtins*.so*; do ln -sf "$b" "$dir/lib/"; done
chmod +x "$n/cuda_nvcc/bin/ptxas"
# nvdisasm (CUDA 13's wheel; it reads sm_90a cubins from the 12.9 ptxas) for sass_ctrl.py.
ls "$dir/wheels/" | grep -q "^nvidia_cuda_nvdisasm-" || pip download --no-deps -d "$dir/wheels" nvidia-cuda-nvdisasm
python3 -m zipfile -e "$(ls "$dir"/wheels/nvidia_cuda_nvdisasm-*.whl | head -1)" "$dir/x/"
chmod +x "$dir"/x/nvidia/cu13/bin/nvdisasm
gcc -shared -fPIC -O1 -I"$dir/cuda/include" -o "$dir/lib/libcuda.so" "$here/fake_cuda.c"
echo "ready: $dir (run commands through $here/run.sh)"
