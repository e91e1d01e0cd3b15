#!/usr/bin/env bash
# The GPU property tests: every CUDA kernel against the CPU reference. Runs the whole `cuda`
# test binary (ttq-kernels/tests/cuda/: statistics, quantize, GEMV, dense path, decoder
# ops), one test at a time (in parallel, one test's memory-pool poisoning can race with
# another thread's stream). Before its GEMV tables were trimmed a whole run took longer
# than one 10-minute device call on an H100; name modules to split it over calls, e.g.
#   tests.sh decoder_ops:: dense:: gemv::     and then     tests.sh matmul:: quantize:: stats::
# The binary is $BIN/cuda (BIN defaults to .device-kbin): copy there the test binary that
#   cargo test --release -p ttq-kernels --features cuda --test cuda --no-run
# prints (target/release/deps/cuda-<hash>; `cargo xtask bench --gpu` copies it). Extra
# arguments go to the binary (name filters, --nocapture). The log goes to $OUT/tests.log (./device-out when OUT is unset).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cuda_libs.sh"
cd "$here/../.."
BIN=${BIN:-.device-kbin}
OUT=${OUT:-device-out}
mkdir -p "$OUT"
if [ ! -x "$BIN/cuda" ]; then
  echo "no test binary at $BIN/cuda (cargo test --release -p ttq-kernels --features cuda --test cuda --no-run prints its path)" >&2
  exit 2
fi
nvidia-smi -L | tee "$OUT/gpu.txt"
"$BIN/cuda" --test-threads 1 "$@" 2>&1 | tee "$OUT/tests.log"
exit "${PIPESTATUS[0]}"
