# Sourced by the device scripts: puts the directory of libcublas on LD_LIBRARY_PATH, so that
# ttq's dense products load cuBLAS at run time (ttq-kernels/src/cuda/cublas.rs). Looks in
# the loader cache, the CUDA toolkit and PyTorch's bundled NVIDIA wheels, in that order.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so'; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    "$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null)"; do
    if [ -n "$d" ] && ls "$d"/libcublas.so* >/dev/null 2>&1; then
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      break
    fi
  done
fi
