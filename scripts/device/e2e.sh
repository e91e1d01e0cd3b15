#!/usr/bin/env bash
# Issue 5 on the GPU machine, in parts that each fit one device call:
#   e2e.sh kernels BIN OUT        kernel property tests, `ttq bench kernels`, torch peers
#   e2e.sh probe   BIN OUT        one call's worth: the Qwen3-8B-shape decode bench, a short
#                                 kernel bench, ncu counters of three kernels, the tests
#   e2e.sh final   BIN OUT GEMMA  tests, full kernel table + tile sweep + torch peers, Gemma
#   e2e.sh decode  BIN OUT GEMMA  the tests, `ttq bench decode` (Qwen3-8B shape with random
#                                 weights, f16; Gemma 3 270M, f32) and `ttq generate`
#   e2e.sh bench   BIN OUT GEMMA  `ttq bench decode` again and the remaining property tests
#   e2e.sh fused   BIN OUT        the tests with the fused decoder ops, the f16 dense-path
#                                 diagnosis, `bench decode` fused against unfused (Qwen3-8B
#                                 and Gemma 3 270M shapes, random weights), launch counts
#   e2e.sh fold    BIN OUT        the whole suite with the f16 dense path as the default
#                                 (input scale folded into the dequantized weight), the
#                                 kernel table's prefill columns, decode A/B again, torch
#   e2e.sh s6      BIN OUT        session 6: the f16 dense-path diagnosis, the whole suite,
#                                 `bench kernels` (host- and device-timed) with a GEMV tile
#                                 sweep, and the torch peers
#   e2e.sh s6b     BIN OUT        session 6: `bench decode` fused / unfused on the Qwen3-8B
#                                 shape and torch's decode
#   e2e.sh s6final BIN OUT        session 6, last call: the Burn f16-after-f32 diagnosis,
#                                 the whole suite, `bench kernels`, decode A/B and torch
#   e2e.sh next    BIN OUT        for the next session: every test, the ignored f16
#                                 DequantMatmul test and diagnoses included, then the bench
#   e2e.sh s6pf    BIN OUT        session 6: which Burn f16 op fails after f32 work, the GEMV
#                                 tile tests with prefetching, and a device-timed tile sweep
#   e2e.sh s7      BIN OUT        session 7: the vectorized GEMV's and the quantizer's tests,
#                                 `bench kernels` with a vector-GEMV tile sweep, the torch
#                                 peers, decode on the Qwen3-8B shape
#   e2e.sh s7all   BIN OUT        session 7: the whole suite, then Nsight Compute counters of
#                                 the vector GEMV (m = 1), the group quantizer and the
#                                 statistics kernel (m = 2048)
#   e2e.sh s7last  BIN OUT        session 7, last call: the vector-GEMV tests, decode (fused
#                                 ops), `bench kernels`, the tile sweep under Nsight Compute
#   e2e.sh s7final BIN OUT        session 7: the GEMV tests, an Nsight Compute duration sweep
#                                 of vector-GEMV tiles at m = 1, `bench kernels`, the torch
#                                 peers, decode fused and unfused on the Qwen3-8B shape
#   e2e.sh s8a     BIN OUT        session 8: the generated CUDA source of every kernel of
#                                 `bench kernels` (CUBECL_DEBUG_LOG), Nsight Compute stall
#                                 reasons per SASS instruction of the vector GEMV (m = 1) and
#                                 the group quantizer, as CSV (source page)
#   e2e.sh s8b     BIN OUT        session 8: the GEMV tests (half2 kernel), an Nsight Compute
#                                 duration sweep of GEMV kernels and tiles at m = 1, decode
#                                 on the Qwen3-8B shape, stall reasons of the half2 GEMV
#   e2e.sh s8c     BIN OUT        session 8: the whole suite, Nsight Compute durations of the
#                                 group quantizer on the four bench shapes, decode (fused)
#   e2e.sh s8d     BIN OUT        session 8: `bench kernels`, the torch peers, decode with the
#                                 fused and the unfused decoder ops, a half2-GEMV tile sweep
#   e2e.sh s8e     BIN OUT        session 8, last call: the quantizer's tests, its Nsight
#                                 Compute durations, a half2-GEMV sweep of taller tiles,
#                                 decode (fused)
#   e2e.sh s8f     BIN OUT        session 8: Nsight Compute details and source pages of the
#                                 half2 GEMV at m = 1 and 4 and of the v8 quantizer
#   e2e.sh s8g     BIN OUT        session 8: the quantizer's tests and Nsight Compute durations
#                                 (32 columns per lane)
#   e2e.sh s9a     BIN OUT        session 9: the tests that depended on order (half2 then
#                                 vector GEMV) and the dense-path tests, `bench kernels`
#                                 (with the transposed dequantizer's own column), Nsight
#                                 Compute durations of the two transposed dequantizers
#   e2e.sh s9b     BIN OUT        session 9: the quantizer's tests (reciprocal division),
#                                 its Nsight Compute durations, half2-GEMV durations at m = 1
#                                 on the four bench shapes
#   e2e.sh s9c     BIN OUT        session 9: `bench kernels` (split statistics kernel), its
#                                 Nsight Compute durations, the whole suite, decode (fused)
#   e2e.sh s9d     BIN OUT        session 9, last call: the statistics tests, `bench kernels`,
#                                 the statistics kernels' Nsight Compute durations, decode
#   e2e.sh s9e     BIN OUT        session 9, after the launcher tidy-up: the dequantizer,
#                                 statistics and dense-path tests
#   e2e.sh s10a    BIN OUT        session 10: the streaming GEMV's tests, Nsight Compute
#                                 durations of its tiles against the half2 GEMV at m = 1,
#                                 `bench kernels` at 1-16 tokens, decode default and streaming
#   e2e.sh s11all  BIN OUT        session 11: the whole GPU suite in one process
#   e2e.sh s11ncu  BIN OUT        session 11: Nsight Compute durations of the statistics
#                                 kernels (planes in the combine) and of three streaming-GEMV
#                                 tiles with more warps per SM, against the half2 default
#   e2e.sh s11bench BIN OUT       session 11: `bench kernels --reps 9` (the default table)
#   e2e.sh s11stats BIN OUT       session 11, last call: the one-pass statistics split kernel's
#                                 tests, its Nsight Compute durations, `bench kernels`
#   e2e.sh s11ab   BIN OUT        session 11: decode on the Qwen3-8B shape with the streaming
#                                 and the default GEMV alternating (stream first), to tell
#                                 the GEMV's effect from the call's warm-up
#   e2e.sh s11gemma BIN OUT GEMMA session 11: Gemma 3 270M end to end on the GPU (`bench
#                                 decode` f32, `ttq generate` TTQ-W4 and fp in f32, f16's
#                                 clear refusal, kernel compilations), decode on the Qwen3-8B
#                                 shape
#   e2e.sh s12a    BIN OUT        session 12 (binaries of 083f183, which had the rolling kernel
#                                 and `--gemv rolling`): the half2 GEMV tests (the rolling prefetch) and
#                                 the streaming GEMV's, Nsight Compute durations of the rolling
#                                 kernel's tiles on the four shapes at m = 1, its stall reasons
#                                 per instruction, decode default and `--gemv rolling`
#   e2e.sh s12b    BIN OUT        session 12: Nsight Compute durations of streaming-GEMV tiles
#                                 with one or two planes per cube (cube barriers that span
#                                 one or two warps) against the half2 default, four shapes
#   e2e.sh s12c    BIN OUT        session 12, last call: the whole GPU suite, `bench kernels
#                                 --reps 9`, decode on the Qwen3-8B shape
#   e2e.sh s12rest BIN OUT        session 12: the ten tests the s12c suite did not reach
#   e2e.sh s12d    BIN OUT        session 12: the streaming GEMV's tests, Nsight Compute durations of
#                                 streaming tiles that read x ⊙ s from global memory (:gx)
#   e2e.sh s14a    BIN OUT        session 14: the TMA GEMV's deeper pipelines and shared
#                                 activations under Nsight Compute (m = 1, four shapes), the
#                                 read ceiling (read_ceiling.py, events and Nsight Compute),
#                                 the new TMA tiles' tests
#   e2e.sh s14b    BIN OUT        session 14: the TMA pipeline tests, then Nsight Compute
#                                 durations of cubes of several row groups (:kN)
#   e2e.sh s14c    BIN OUT        session 14: both TMA tests with the new defaults, decode on
#                                 the Qwen3-8B shape with --gemv tma and the default GEMV
#   e2e.sh s15a..s15e BIN OUT     session 15: the tensor-core products (:mma) under Nsight
#                                 Compute, their test, decode A/B (see each part)
#   e2e.sh s16a    BIN OUT        session 16: column sums made while pairing (reverted): the
#                                 test, Nsight Compute durations at m = 1, decode
#   e2e.sh s16b    BIN OUT        session 16: the tensor-core GEMV's test, Nsight Compute
#                                 durations against the half2 GEMVs at 2, 4 and 8 tokens
#   e2e.sh s16c    BIN OUT        session 16: Auto's tensor-core GEMV at 2-16 tokens: the GEMV
#                                 tests, the kernel table with half2 tiles beside, torch peers
#   e2e.sh s16d    BIN OUT        session 16: 9-16 tokens in one tensor-core launch: tests,
#                                 Nsight Compute at 16 and 8 tokens, the kernel table
#   e2e.sh s16e    BIN OUT        session 16: a 12-token prompt on the Qwen3-8B shape, default
#                                 GEMV and --gemv tma
#   e2e.sh s17a    BIN OUT        session 17: the direct tensor-core GEMV (:dmma): its test,
#                                 Nsight Compute durations of its tiles at m = 1 (loads and
#                                 products alone too) against the half2 and TMA GEMVs, decode
#   e2e.sh s18a    BIN OUT        session 18: `bench kernels` with the differential device
#                                 timing, the torch peers, Nsight Compute
#                                 durations of the same GEMVs at m = 1 to check it, decode
#   e2e.sh s18b    BIN OUT        session 18: the torch peers, then `bench kernels --peers`
#   e2e.sh s18c    BIN OUT        session 18: the property tests of the default paths
# The device returns at most 8 files per call: write OUT outside $OUT and tar it there.
# BIN holds `ttq` (built with --features cuda) and the `cuda_vs_reference` test binary;
# GEMMA is a directory with model.gguf and tokenizer.json. Every step has a time limit and
# writes its own file under OUT; a failing step does not stop the others.
set -uo pipefail
part=$1; bin=$2; out=$3; gemma=${4:-}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
step() { # name limit_s command...
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.txt" 2>"$out/$name.log"
  echo "$name: exit $? in $(( $(date +%s) - t0 )) s" | tee -a "$out/steps.txt"
  # COPY_TO: also copy each step's output there as soon as it exists (a call that runs out
  # of device time still returns what finished).
  if [ -n "${COPY_TO:-}" ]; then
    cp "$out/$name.txt" "$out/steps.txt" "$COPY_TO/"
    tail -c 20000 "$out/$name.log" >"$COPY_TO/$name.log.tail"
  fi
}
# `ttq bench decode` on the Qwen3-8B shape (random weights, f16, prompt 512, 32 new tokens,
# median of 3) with the fused decoder ops or without them (`unfused`), within LIMIT s.
decode_qwen3() { # fused|unfused LIMIT
  local ops=$1 flag=""
  [ "$ops" = unfused ] && flag="--unfused-ops"
  step "decode_qwen3_8b_f16_$ops" "$2" "$bin/ttq" bench decode --random-weights qwen3-8b \
    --backend cuda --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 \
    --new-tokens 32 --runs 3 $flag --json "$out/decode_qwen3_8b_f16_$ops.json"
}
# Decode on the Qwen3-8B shape with `--gemv GEMV` (fused decoder ops), as
# decode_qwen3_8b_f16_GEMV (dashes as underscores).
decode_qwen3_gemv() { # GEMV LIMIT
  local name=${1//-/_}
  step "decode_qwen3_8b_f16_$name" "$2" "$bin/ttq" bench decode --random-weights qwen3-8b \
    --backend cuda --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 \
    --new-tokens 32 --runs 3 --gemv "$1" --json "$out/decode_qwen3_8b_f16_$name.json"
}
# Gemma 3 270M (GEMMA) end to end: `bench decode` in f32 within BENCH_LIMIT s; `ttq generate`
# TTQ-W4 (GEN_LIMIT + 20 s, with its kernel compilations counted) and fp in f32, and f16,
# which must stop with the clear overflow error (GEN_LIMIT s each).
gemma_steps() { # BENCH_LIMIT GEN_LIMIT
  step decode_gemma_f32 "$1" "$bin/ttq" bench decode --model "$gemma" --backend cuda \
    --dtype f32 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 --new-tokens 64 \
    --runs 2 --json "$out/decode_gemma_f32.json"
  CUBECL_DEBUG_LOG="/tmp/cubecl.log" step generate_gemma_ttq $(($2 + 20)) "$bin/ttq" generate \
    --model "$gemma" --backend cuda --dtype f32 --method ttq --bits 4 --alpha 0.25 \
    --prompt "The capital of France is" --max-new-tokens 48
  grep -c "START_KERNEL_COMPILATION" /tmp/cubecl.log > "$out/generate_kernel_compilations.txt" 2>&1
  step generate_gemma_fp "$2" "$bin/ttq" generate --model "$gemma" --backend cuda --dtype f32 \
    --prompt "The capital of France is" --max-new-tokens 48
  step generate_gemma_f16 "$2" "$bin/ttq" generate --model "$gemma" --backend cuda \
    --dtype f16 --prompt "The capital of France is" --max-new-tokens 8
}
# PyTorch's fp16 eager decode on the same shape and settings, within LIMIT s.
torch_decode_qwen3() { # LIMIT
  step torch_decode_qwen3_8b "$1" python3 "$here/torch_decode.py" --preset qwen3-8b \
    --prompt-tokens 512 --new-tokens 32 --runs 3 --json "$out/torch_decode_qwen3_8b.json"
}
# Puts Nsight Compute's `ncu` on the PATH where the image has it but not there.
use_ncu() {
  command -v ncu >/dev/null || PATH="$PATH:$(ls -d /opt/nvidia/nsight-compute/*/ | head -1)"
}
# Kernel durations of every vector-GEMV launch at m = 1 (kernels matching GEMV_KERNELS,
# default gemv_vec; since session 18 4 per shape for the default tile, then 5 per listed
# tile (a checking call, 3 warm-up calls, 1 timed; no device timing), in order; 6 and 7
# before), replayed by Nsight Compute with the clocks left alone, as CSV in ncu_tiles.txt
# (scripts/ncu_tile_summary.py turns it into a table);
# NCU_EXTRA (",metric,...") adds metrics.
ncu_gemv_tiles() { # LIMIT SHAPES TILES (NCU_TOKENS: one token count, 1 by default;
  # NCU_STEP: the step's name, ncu_tiles by default)
  step "${NCU_STEP:-ncu_tiles}" "$1" ncu --clock-control none -k "regex:${GEMV_KERNELS:-gemv_vec}" --csv \
    --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed${NCU_EXTRA:-} \
    "$bin/ttq" bench kernels --shapes "$2" --tokens "${NCU_TOKENS:-1}" --reps 1 --batch 1 \
    --no-device-timing --gemv-tiles "$3"
}
# ncu_gemv_tiles over the four bench shapes for the half2 and TMA GEMVs, with warp
# instruction counts: at one token into ncu_tiles.txt, or at TOKENS tokens into
# ncu_tiles_mTOKENS.txt.
ncu_tma_sweep() { # LIMIT TILES [TOKENS]
  local step=ncu_tiles
  [ -n "${3:-}" ] && step=ncu_tiles_m$3
  GEMV_KERNELS='gemv_(h2|tma)' NCU_EXTRA=,smsp__inst_executed.sum NCU_TOKENS=${3:-1} \
    NCU_STEP=$step ncu_gemv_tiles "$1" 4096x4096,2048x8192,4096x14336,14336x4096 "$2"
}
# Kernel durations, instruction counts and DRAM throughput of every launch of the kernels
# matching REGEX in a one-token `bench kernels` run, as CSV in ncu_quantize.txt
# (scripts/ncu_launch_summary.py groups them by launch configuration).
ncu_quantize() { # LIMIT REGEX
  step ncu_quantize "$1" ncu --clock-control none -k "regex:$2" --csv \
    --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum \
    "$bin/ttq" bench kernels --tokens 1 --reps 1 --batch 1
}
nvidia-smi -L | tee "$out/card.txt"
case $part in
  kernels)
    step tests 300 "$bin/cuda_vs_reference" --test-threads 1
    step bench_kernels 240 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --gemv-tiles 4:4:4,8:4:2,16:4:2,16:8:1,32:4:1,8:8:2,16:2:2
    # Device time of every kernel launch (CubeCL's profiler syncs after each), one shape.
    CUBECL_DEBUG_LOG="$out/profile.log" CUBECL_DEBUG_OPTION=profile step profile 90 \
      "$bin/ttq" bench kernels --shapes 4096x14336 --tokens 1,16,2048 --reps 2 --batch 2
    which nsys ncu >"$out/profilers.txt" 2>&1
    step torch_bench 120 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    ;;
  probe)
    step decode_qwen3_8b_f16 140 "$bin/ttq" bench decode --random-weights qwen3-8b \
      --backend cuda --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 \
      --new-tokens 32 --runs 2 --json "$out/decode_qwen3_8b_f16.json"
    step torch_decode_qwen3_8b 60 python3 "$here/torch_decode.py" --preset qwen3-8b \
      --prompt-tokens 512 --new-tokens 32 --runs 2 --json "$out/torch_decode_qwen3_8b.json"
    step bench_kernels 100 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --shapes 4096x14336,4096x4096 --tokens 1,16,2048 --reps 5 --batch 20 \
      --gemv-tiles 8:4:2:cvt,8:4:4,16:8:2
    # Hardware counters (Firecracker machines) of the first launch of each kernel:
    # duration, throughput, occupancy, stall reasons.
    use_ncu
    for k in gemv_fused:1 gemm_cmma:2048 quantize_pack:1; do
      step "ncu_${k%%:*}" 45 ncu --clock-control none -c 1 -k "regex:${k%%:*}" \
        --section SpeedOfLight --section LaunchStats --section Occupancy \
        --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
        "$bin/ttq" bench kernels --shapes 4096x14336 --tokens "${k##*:}" --reps 1 --batch 1
    done
    # Failure messages as they happen (the summary at the end is lost if the limit hits).
    step tests 160 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    ;;
  final)
    # One call: the tests, the whole kernel table with a GEMV tile sweep, its torch peers
    # on the same card, and Gemma 3 270M end to end (bench decode, generate).
    step tests 140 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    step decode_gemma_f16 80 "$bin/ttq" bench decode --model "$gemma" --backend cuda \
      --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 --new-tokens 64 \
      --runs 2 --json "$out/decode_gemma_f16.json"
    CUBECL_DEBUG_LOG="/tmp/cubecl.log" step generate_gemma_ttq 50 "$bin/ttq" generate \
      --model "$gemma" --backend cuda --dtype f16 --method ttq --bits 4 --alpha 0.25 \
      --prompt "The capital of France is" --max-new-tokens 24
    grep -c "START_KERNEL_COMPILATION" /tmp/cubecl.log > "$out/generate_kernel_compilations.txt" 2>&1
    step generate_gemma_fp 30 "$bin/ttq" generate --model "$gemma" --backend cuda --dtype f16 \
      --prompt "The capital of France is" --max-new-tokens 24
    # Every kernel launch of a short TTQ generation, to count launches per decode step.
    CUBECL_DEBUG_LOG="$out/profile_generate.log" CUBECL_DEBUG_OPTION=profile \
      step profile_generate 30 "$bin/ttq" generate --model "$gemma" --backend cuda \
      --dtype f16 --method ttq --bits 4 --alpha 0.25 --prompt "The capital of France is" \
      --max-new-tokens 4
    gzip -f "$out/profile_generate.log"
    step bench_kernels 160 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --reps 7 --gemv-tiles 8:4:2:cvt,4:8:2,4:8:1,2:8:2,4:4:2,8:8:2
    step torch_bench 60 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    ;;
  decode)
    # The tests again, then decode end to end: Qwen3-8B shape (random weights, f16) and
    # Gemma 3 270M in f32 (Gemma overflows f16; the f16 run must now fail clearly).
    step tests 140 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    step decode_qwen3_8b_f16 140 "$bin/ttq" bench decode --random-weights qwen3-8b \
      --backend cuda --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 \
      --new-tokens 64 --runs 2 --json "$out/decode_qwen3_8b_f16.json"
    gemma_steps 80 30
    CUBECL_DEBUG_LOG="$out/profile_generate.log" CUBECL_DEBUG_OPTION=profile \
      step profile_generate 30 "$bin/ttq" generate --model "$gemma" --backend cuda \
      --dtype f32 --method ttq --bits 4 --alpha 0.25 --prompt "The capital of France is" \
      --max-new-tokens 4
    gzip -f "$out/profile_generate.log"
    ;;
  bench)
    # `ttq bench decode` after the KV-cache and argmax fixes, and the property tests that
    # the decode part's 140 s did not reach.
    step decode_qwen3_8b_f16 150 "$bin/ttq" bench decode --random-weights qwen3-8b \
      --backend cuda --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 \
      --new-tokens 64 --runs 2 --json "$out/decode_qwen3_8b_f16.json"
    step decode_gemma_f32 80 "$bin/ttq" bench decode --model "$gemma" --backend cuda \
      --dtype f32 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 --new-tokens 64 \
      --runs 2 --json "$out/decode_gemma_f32.json"
    step decode_gemma_f16 40 "$bin/ttq" bench decode --model "$gemma" --backend cuda \
      --dtype f16 --methods fp --prompt-tokens 64 --new-tokens 4 --runs 1
    step tests_rest 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      matmul_matches quantize_and stats_match
    ;;
  fused)
    # Session 5: fused RMSNorm / RoPE / masked softmax / gated activation.
    step tests 220 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    step diag_f16_dense 40 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      --include-ignored dense_dequant_f16_steps_after_f32_work
    for ops in fused unfused; do
      flag=""; [ $ops = unfused ] && flag="--unfused-ops"
      decode_qwen3 $ops 100
      step "decode_gemma_f32_$ops" 50 "$bin/ttq" bench decode --random-weights gemma3-270m \
        --backend cuda --dtype f32 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 512 \
        --new-tokens 64 --runs 3 $flag --json "$out/decode_gemma_f32_$ops.json"
    done
    # Every launch of a short TTQ decode (prefill 16 tokens, 4 new), fused ops.
    CUBECL_DEBUG_LOG="$out/profile_decode.log" CUBECL_DEBUG_OPTION=profile \
      step profile_decode 40 "$bin/ttq" bench decode --random-weights gemma3-270m \
      --backend cuda --dtype f32 --methods ttq:w4:g128:a0.25 --prompt-tokens 16 \
      --new-tokens 4 --runs 1
    gzip -f "$out/profile_decode.log"
    torch_decode_qwen3 60
    ;;
  fold)
    step diag_f16_dense 40 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      --include-ignored dense_dequant_f16_steps_after_f32_work
    step tests 240 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    step bench_kernels 100 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --tokens 1,2048 --reps 5
    for ops in fused unfused; do decode_qwen3 $ops 80; done
    CUBECL_DEBUG_LOG="$out/profile_decode.log" CUBECL_DEBUG_OPTION=profile \
      step profile_decode 40 "$bin/ttq" bench decode --random-weights gemma3-270m \
      --backend cuda --dtype f32 --methods ttq:w4:g128:a0.25 --prompt-tokens 16 \
      --new-tokens 4 --runs 1
    gzip -f "$out/profile_decode.log"
    CUBECL_DEBUG_LOG="$out/profile_decode_qwen3_8b.log" CUBECL_DEBUG_OPTION=profile \
      step profile_decode_qwen3_8b 40 "$bin/ttq" bench decode --random-weights qwen3-8b \
      --backend cuda --dtype f16 --methods ttq:w4:g128:a0.25 --prompt-tokens 16 \
      --new-tokens 4 --runs 1
    gzip -f "$out/profile_decode_qwen3_8b.log"
    torch_decode_qwen3 60
    ;;
  s6)
    step diag_f16_dense 40 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      --include-ignored dense_dequant_f16_steps_after_f32_work
    step tests 230 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    step bench_kernels 140 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    step torch_bench 80 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    step bench_tiles 60 "$bin/ttq" bench kernels --json "$out/bench_tiles.json" \
      --shapes 4096x14336,14336x4096 --tokens 1 --reps 9 \
      --gemv-tiles 8:4:2,8:8:2,8:16:1,4:8:2,4:16:2,2:16:2,16:8:2,16:4:2
    ;;
  next)
    step tests_all 300 "$bin/cuda_vs_reference" --test-threads 1 --nocapture --include-ignored
    step bench_kernels 120 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    ;;
  s6final)
    step diag_burn_f16 40 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      --include-ignored burn_f16_ops_after_f32_work
    step tests 230 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    step bench_kernels 100 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    step torch_bench 80 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    decode_qwen3 fused 90
    torch_decode_qwen3 70
    decode_qwen3 unfused 90
    ;;
  s6pf)
    step diag_burn_f16 60 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      --include-ignored burn_f16_ops_after_f32_work
    step tests_gemv 120 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_tiles gemv_token_counts matmul_matches_f16
    step bench_tiles 150 "$bin/ttq" bench kernels --json "$out/bench_tiles.json" \
      --shapes 4096x14336,14336x4096,4096x4096 --tokens 1,4,16 --reps 15 \
      --gemv-tiles 8:4:2:pf,8:16:1,8:16:1:pf,4:8:2:pf,16:8:2:pf,8:8:2:pf,4:4:2:pf
    ;;
  s7)
    step tests_vec 150 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_vector_layouts quantize_and_dequantize_match_f16 large_layer dense_dequant_matmul_f16
    step bench_kernels 150 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    step bench_tiles 80 "$bin/ttq" bench kernels --json "$out/bench_tiles.json" \
      --shapes 4096x14336,14336x4096,4096x4096 --tokens 1,4 --reps 9 \
      --gemv-tiles 8:4:1,4:4:2,8:8:1,4:8:1,16:4:1,2:4:4,8:4:2:fused
    step torch_bench 80 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    decode_qwen3 fused 90
    ;;
  s7all)
    step tests_all 400 "$bin/cuda_vs_reference" --test-threads 1 --nocapture
    use_ncu
    for k in gemv_vec:1 quantize_pack_groups:1 channel_stats:2048; do
      step "ncu_${k%%:*}" 45 ncu --clock-control none -c 1 -k "regex:${k%%:*}" \
        --section SpeedOfLight --section LaunchStats --section Occupancy \
        --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
        --section InstructionStats \
        "$bin/ttq" bench kernels --shapes 4096x14336 --tokens "${k##*:}" --reps 1 --batch 1
    done
    ;;
  s7last)
    # Most important first: the call may run out of device time (run with COPY_TO).
    step tests_gemv 160 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_vector_layouts large_layer matmul_matches
    decode_qwen3 fused 80
    step bench_kernels 110 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9 \
      --tokens 1,4,16,2048
    use_ncu
    ncu_gemv_tiles 80 4096x14336,14336x4096 4:4:1,4:4:2,6:4:1,5:4:1,8:8:1,16:4:1
    ;;
  s7final)
    step tests_gemv 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_vector_layouts gemv_tiles gemv_token_counts matmul_matches large_layer
    use_ncu
    ncu_gemv_tiles 90 4096x14336,14336x4096,4096x4096 \
      8:4:1,4:4:1,4:4:2,6:4:1,5:4:1,8:8:1,16:4:1,8:2:2
    step bench_kernels 150 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    step torch_bench 80 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    for ops in fused unfused; do decode_qwen3 $ops 90; done
    ;;
  s8a)
    CUBECL_DEBUG_LOG="$out/cubecl_source.log" step cubecl_source 60 "$bin/ttq" bench kernels \
      --shapes 4096x14336 --tokens 1,2048 --reps 1 --batch 1
    use_ncu
    for k in gemv_vec:1 quantize_pack_groups:1; do
      step "ncu_src_${k%%:*}" 60 ncu --clock-control none -c 1 -k "regex:${k%%:*}" \
        --section SourceCounters --section WarpStateStats --section InstructionStats \
        --section SpeedOfLight --import-source yes -o "$out/ncu_${k%%:*}" \
        "$bin/ttq" bench kernels --shapes 4096x14336 --tokens "${k##*:}" --reps 1 --batch 1
      step "ncu_sass_${k%%:*}" 60 ncu -i "$out/ncu_${k%%:*}.ncu-rep" --page source --csv \
        --print-source sass
      step "ncu_details_${k%%:*}" 60 ncu -i "$out/ncu_${k%%:*}.ncu-rep" --page details
    done
    ;;
  s8b)
    step tests_gemv 220 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_half2_layouts gemv_vector_layouts large_layer matmul_matches
    use_ncu
    GEMV_KERNELS='gemv_(h2|vec)' ncu_gemv_tiles 100 4096x14336,14336x4096 \
      8:4:1:pf,8:4:1:f32,4:4:1,4:4:1:pf,8:4:2:pf,4:8:1:pf,16:4:1:pf
    decode_qwen3 fused 90
    step ncu_src_gemv_h2 60 ncu --clock-control none -c 1 -k regex:gemv_h2 \
      --section SourceCounters --section WarpStateStats --section InstructionStats \
      --section SpeedOfLight --import-source yes -o "$out/ncu_gemv_h2" \
      "$bin/ttq" bench kernels --shapes 4096x14336 --tokens 1 --reps 1 --batch 1
    step ncu_sass_gemv_h2 60 ncu -i "$out/ncu_gemv_h2.ncu-rep" --page source --csv \
      --print-source sass
    ;;
  s8c)
    step tests_all 430 "$bin/cuda_vs_reference" --test-threads 1
    use_ncu
    ncu_quantize 60 quantize_pack
    decode_qwen3 fused 70
    ;;
  s8d)
    step bench_kernels 170 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    step torch_bench 80 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    for ops in fused unfused; do decode_qwen3 $ops 80; done
    use_ncu
    GEMV_KERNELS=gemv_h2 ncu_gemv_tiles 60 4096x14336,14336x4096 8:8:1,4:8:1,8:2:1,4:4:2,2:4:4
    ;;
  s8e)
    step tests_quant 200 "$bin/cuda_vs_reference" --test-threads 1 \
      quantize_and_dequantize_match large_layer matmul_matches_f16
    use_ncu
    ncu_quantize 60 quantize_pack_groups
    GEMV_KERNELS=gemv_h2 ncu_gemv_tiles 60 4096x14336,14336x4096 16:4:1,16:2:1,12:4:1,8:2:1
    decode_qwen3 fused 70
    ;;
  s8f)
    use_ncu
    for k in gemv_h2:1 gemv_h2:4 quantize_pack_groups:1; do
      name="${k%%:*}_m${k##*:}"
      step "ncu_src_$name" 60 ncu --clock-control none -c 1 -k "regex:${k%%:*}" \
        --section SourceCounters --section WarpStateStats --section InstructionStats \
        --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section MemoryWorkloadAnalysis --import-source yes -o "$out/ncu_$name" \
        "$bin/ttq" bench kernels --shapes 4096x14336 --tokens "${k##*:}" --reps 1 --batch 1
      step "ncu_sass_$name" 60 ncu -i "$out/ncu_$name.ncu-rep" --page source --csv \
        --print-source sass
      step "ncu_details_$name" 60 ncu -i "$out/ncu_$name.ncu-rep" --page details
    done
    ;;
  s8g)
    step tests_quant 200 "$bin/cuda_vs_reference" --test-threads 1 \
      quantize_and_dequantize_match large_layer
    use_ncu
    ncu_quantize 60 quantize_pack_groups
    ;;
  s9a)
    step tests_focus 230 "$bin/cuda_vs_reference" --test-threads 1 \
      gemv_half2_layouts gemv_vector_layouts dequantize_transposed dense_ matmul_matches
    step bench_kernels 200 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    use_ncu
    ncu_quantize 60 dequantize_t
    ;;
  s9b)
    step tests_quant 200 "$bin/cuda_vs_reference" --test-threads 1 \
      quantize_ large_layer
    use_ncu
    ncu_quantize 60 quantize_pack_groups
    GEMV_KERNELS=gemv_h2 ncu_gemv_tiles 60 4096x4096,2048x8192,4096x14336,14336x4096 8:4:1
    ;;
  s9c)
    step bench_kernels 90 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    use_ncu
    ncu_quantize 40 channel_stats
    step tests_all 330 "$bin/cuda_vs_reference" --test-threads 1
    decode_qwen3 fused 80
    ;;
  s9d)
    step tests_stats 120 "$bin/cuda_vs_reference" --test-threads 1 stats_ ttq_scales
    step bench_kernels 90 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    use_ncu
    ncu_quantize 40 channel_stats
    decode_qwen3 fused 80
    ;;
  s9e)
    step tests_tidy 200 "$bin/cuda_vs_reference" --test-threads 1 \
      dequantize_transposed stats_ dense_ matmul_matches
    ;;
  s11all)
    step tests_all 420 "$bin/cuda_vs_reference" --test-threads 1
    ;;
  s11ncu)
    use_ncu
    ncu_quantize 40 channel_stats
    GEMV_KERNELS='gemv_(h2|stream)' ncu_gemv_tiles 90 4096x14336,14336x4096 \
      "${S11_TILES:-1:16:4:st:c2,2:16:2:st:c2,2:8:4:st:c3}"
    ;;
  s11bench)
    step bench_kernels 120 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    ;;
  s11stats)
    step tests_stats 60 "$bin/cuda_vs_reference" --test-threads 1 stats_ ttq_scales
    use_ncu
    ncu_quantize 40 channel_stats
    step bench_kernels 90 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    ;;
  s11ab)
    for k in 1 2; do
      step "decode_qwen3_8b_f16_stream_$k" 80 "$bin/ttq" bench decode --random-weights qwen3-8b \
        --backend cuda --dtype f16 --methods ttq:w4:g128:a0.25 --prompt-tokens 512 \
        --new-tokens 32 --runs 3 --gemv stream --json "$out/decode_qwen3_8b_f16_stream_$k.json"
      step "decode_qwen3_8b_f16_default_$k" 80 "$bin/ttq" bench decode --random-weights qwen3-8b \
        --backend cuda --dtype f16 --methods ttq:w4:g128:a0.25 --prompt-tokens 512 \
        --new-tokens 32 --runs 3 --json "$out/decode_qwen3_8b_f16_default_$k.json"
    done
    ;;
  s11gemma)
    gemma_steps 100 40
    decode_qwen3 fused 80
    ;;
  s12a)
    step tests_h2 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_half2_layouts gemv_stream
    use_ncu
    GEMV_KERNELS=gemv_h2 ncu_gemv_tiles 150 4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S12_TILES:-8:4:1:pf,8:2:1:pf,8:1:1:pf,4:4:1:pf,4:2:1:pf,16:1:1:pf,16:2:1:pf}"
    # Where the rolling kernel waits (session 8 call 6's method).
    name=gemv_h2_rolling_m1
    step "ncu_src_$name" 60 ncu --clock-control none -c 1 -k regex:gemv_h2_rolling \
      --section SourceCounters --section WarpStateStats --section InstructionStats \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section MemoryWorkloadAnalysis --import-source yes -o "$out/ncu_$name" \
      "$bin/ttq" bench kernels --shapes 4096x14336 --tokens 1 --reps 1 --batch 1 \
      --gemv-tiles "${S12_SRC_TILE:-8:2:1:pf}"
    step "ncu_sass_$name" 60 ncu -i "$out/ncu_$name.ncu-rep" --page source --csv \
      --print-source sass
    step "ncu_details_$name" 60 ncu -i "$out/ncu_$name.ncu-rep" --page details
    decode_qwen3 fused 80
    step decode_qwen3_8b_f16_rolling 80 "$bin/ttq" bench decode --random-weights qwen3-8b \
      --backend cuda --dtype f16 --methods ttq:w4:g128:a0.25 --prompt-tokens 512 \
      --new-tokens 32 --runs 3 --gemv rolling --json "$out/decode_qwen3_8b_f16_rolling.json"
    ;;
  s12b)
    use_ncu
    GEMV_KERNELS='gemv_(h2|stream)' ncu_gemv_tiles 150 4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S12B_TILES:-4:1:2:st,8:1:1:st,2:1:4:st,4:1:4:st,8:1:2:st,4:2:2:st,2:2:4:st}"
    ;;
  s12c)
    step tests_all 420 "$bin/cuda_vs_reference" --test-threads 1
    step bench_kernels 120 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9
    decode_qwen3 fused 80
    ;;
  s12rest)
    # The tests call 3's suite did not reach before its time limit.
    step tests_rest 250 "$bin/cuda_vs_reference" --test-threads 1 \
      matmul_matches_f32 quantize_ rms_norm rope stats_ ttq_scales
    ;;
  s12d)
    # The streaming GEMV's tests (global-x tiles added).
    step tests_stream 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_stream_layouts
    use_ncu
    GEMV_KERNELS='gemv_(h2|stream)' ncu_gemv_tiles 150 4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S12D_TILES:-2:1:4:st:gx,4:1:2:st:gx,8:1:1:st:gx,4:1:2:st:gx:c24,2:1:4:st:gx:c32,4:2:2:st:gx,4:4:2:st:gx,2:4:2:st:gx}"
    ;;
  s13a)
    # The TMA GEMV: its tests, then Nsight Compute durations of it and the default at m = 1.
    step tests_tma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_layouts
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma)' ncu_gemv_tiles 150 4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S13A_TILES:-8:1:1:tma,8:2:1:tma,8:4:1:tma,8:8:1:tma,8:2:2:tma,8:4:2:tma,4:4:1:tma,16:4:1:tma}"
    decode_qwen3_gemv tma 80
    decode_qwen3 fused 80
    ;;
  s13b)
    # The TMA GEMV's halves alone (:lo copies, :co products), and where it waits.
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma)' ncu_gemv_tiles 150 4096x14336,14336x4096,4096x4096 \
      "${S13B_TILES:-8:4:1:tma,8:4:1:tma:lo,8:4:1:tma:co,8:1:1:tma,8:1:1:tma:lo,8:1:1:tma:co,8:2:1:tma:lo,8:2:1:tma:co}"
    name=gemv_tma_m1
    step "ncu_src_$name" 60 ncu --clock-control none -c 1 -k regex:gemv_tma \
      --section SourceCounters --section WarpStateStats --section InstructionStats \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      --section MemoryWorkloadAnalysis --import-source yes -o "$out/ncu_$name" \
      "$bin/ttq" bench kernels --shapes 4096x14336 --tokens 1 --reps 1 --batch 1 \
      --gemv-tiles "${S13B_SRC_TILE:-8:4:1:tma}"
    step "ncu_sass_$name" 60 ncu -i "$out/ncu_$name.ncu-rep" --page source --csv \
      --print-source sass
    step "ncu_details_$name" 60 ncu -i "$out/ncu_$name.ncu-rep" --page details
    ;;
  s13c)
    # The TMA GEMV with its activations by tensor copy: tests, Nsight Compute durations,
    # the kernel table with TMA tiles, decode A/B.
    step tests_tma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_layouts
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma)' ncu_gemv_tiles 120 \
      4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S13C_TILES:-8:4:1:tma,8:2:1:tma,8:1:1:tma,8:4:1:tma:lo,8:4:1:tma:co,8:1:1:tma:co,8:2:2:tma,16:4:1:tma,4:4:1:tma}"
    step ncu_xs_pairs 40 ncu --clock-control none -k regex:xs_pairs --csv \
      --metrics gpu__time_duration.sum,launch__grid_size,dram__throughput.avg.pct_of_peak_sustained_elapsed \
      "$bin/ttq" bench kernels --shapes 4096x14336,14336x4096 --tokens 1 --reps 1 --batch 1 \
      --gemv-tiles 8:4:1:tma
    step bench_kernels 150 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9 \
      --tokens 1,4,16 --gemv-tiles "${S13C_BENCH_TILES:-8:4:1:tma,8:2:1:tma,8:1:1:tma}"
    decode_qwen3_gemv tma 80
    decode_qwen3 fused 80
    ;;
  s18a)
    # Session 18: the bench's device-timed columns now come from the difference of a short
    # and a long run of calls behind one filler. The issue's table (with the TMA and
    # direct tensor-core GEMVs' tiles beside the default), the torch peers (call 1 of the
    # session ran a torch_bench.py that also timed plain reads; see read_ceiling.py), then
    # Nsight Compute durations of the same GEMVs at one token, to check the device-timed
    # column against, then decode.
    step bench_kernels 360 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --gemv-tiles 4:8:1:tma:k2,16:8:4:dmma
    step torch_bench 120 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma|mma)' ncu_gemv_tiles 200 \
      4096x4096,2048x8192,4096x14336,14336x4096 4:8:1:tma:k2,16:8:4:dmma
    decode_qwen3 fused 70
    ;;
  s18b)
    # Session 18: the torch peers, then the issue's table with them side by side
    # (`--peers`), the filler sized for its own queueing too.
    step torch_bench 120 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    step bench_kernels 300 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --peers "$out/torch_bench.json" --gemv-tiles 4:8:1:tma:k2,16:8:4:dmma
    ;;
  s18c)
    # Session 18: every property test of a default path (the opt-in GEMVs' own layout and
    # pipeline sweeps, run in sessions 11-17, are skipped to fit one call).
    step tests_default 540 "$bin/cuda_vs_reference" --test-threads 1 --skip gemv_stream_layouts \
      --skip gemv_tma_layouts --skip gemv_tma_pipelines --skip gemv_mma_direct --skip gemv_tiles
    ;;
  s17a)
    # Session 17: the direct tensor-core GEMV (codes loaded straight into registers, no
    # shared memory for the weight, x ⊙ s staged once per cube): its test, then Nsight
    # Compute durations and instruction counts at one token against the half2 default and
    # the best TMA tile, its loads alone (:lo) and products alone (:co), then decode.
    step tests_mma_direct 300 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_mma_direct
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma|mma)' NCU_EXTRA=,smsp__inst_executed.sum \
      ncu_gemv_tiles 240 4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S17A_TILES:-4:8:1:tma:k2,16:8:4:dmma,16:4:4:dmma,16:16:4:dmma,16:8:2:dmma,16:8:8:dmma,16:4:8:dmma,32:8:4:dmma,32:4:4:dmma,32:8:2:dmma,16:8:4:dmma:lo,32:8:4:dmma:lo,16:8:4:dmma:co}"
    decode_qwen3_gemv mma 70
    decode_qwen3 fused 70
    ;;
  s16a)
    # Session 16: the tensor-core products with the column sums made once per plane and
    # block while pairing (8 mmas per 2048 weights instead of 16): its test, Nsight
    # Compute durations and instruction counts at m = 1 (with the products and the copies
    # alone), then decode on the Qwen3-8B shape, tma-mma and the default back to back.
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    use_ncu
    ncu_tma_sweep 220 \
      "${S16A_TILES:-4:8:1:tma:k2,4:4:1:tma:k1,4:8:1:tma:k2:co,16:4:1:tma:mma:k4:d1,16:2:1:tma:mma:k2:d1,16:4:1:tma:mma:k2:d1,16:8:1:tma:mma:k8:d1,16:1:1:tma:mma:k1:d1,32:2:1:tma:mma:k2:d1,32:4:1:tma:mma:k4:d1,32:1:1:tma:mma:k1:d1,16:4:1:tma:mma:k4:d2,16:4:1:tma:mma:k4:d1:co,32:2:1:tma:mma:k2:d1:co,16:4:1:tma:mma:k4:d1:lo}"
    decode_qwen3_gemv tma-mma 70
    decode_qwen3 fused 70
    ;;
  s16b)
    # Session 16: the tensor-core GEMV against the half2 GEMVs at 2, 4 and 8 tokens (the
    # half2 products grow with the tokens, the mma's do not): its test, then Nsight
    # Compute durations and instruction counts per token count.
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    use_ncu
    small='8:2:1:tma,4:8:1:tma:k2,16:4:1:tma:mma:k4:d1,16:2:1:tma:mma:k2:d1,32:4:1:tma:mma:k4:d1,16:4:1:tma:mma:k4:d2'
    for t in 2 4 8; do
      tiles=$small
      # Eight planes' paired activations do not fit beside their codes at 8 tokens.
      [ "$t" -lt 8 ] && tiles=$tiles,16:8:1:tma:mma:k8:d1
      ncu_tma_sweep 150 "$tiles" "$t"
    done
    ;;
  s16c)
    # Session 16: GemvVariant::Auto takes the tensor-core GEMV at 2 to 16 tokens: the GEMV
    # tests it touches, then the issue's kernel table (with the half2 GEMV's default tiles
    # as explicit tiles beside it: 8:4:1 is its default up to 4 tokens, 4:4:1 above) and
    # the torch peers on the same machine.
    step tests_gemv 300 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_auto_tensor_cores gemv_half2_layouts gemv_token_counts bad_shapes_are_errors
    step bench_kernels 240 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --gemv-tiles 8:4:1,4:4:1
    step torch_bench 120 python3 "$here/torch_bench.py" --json "$out/torch_bench.json"
    ;;
  s16d)
    # Session 16: the tensor-core GEMV with a second block of 8 B columns (9-16 tokens in
    # one launch): its tests, Nsight Compute durations at 16 and 8 tokens against the half2
    # GEMV's default tile (4:4:1 above 4 tokens), then the kernel table.
    step tests_mma 300 "$bin/cuda_vs_reference" --test-threads 1 --nocapture \
      gemv_tma_mma gemv_auto_tensor_cores
    use_ncu
    ncu_tma_sweep 150 \
      4:4:1,16:4:1:tma:mma:k4:d1,16:2:1:tma:mma:k2:d1,16:1:1:tma:mma:k1:d1,16:4:1:tma:mma:k2:d1 16
    ncu_tma_sweep 150 4:4:1 8
    step bench_kernels 240 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" \
      --gemv-tiles 8:4:1,4:4:1
    ;;
  s16e)
    # Session 16: the default GEMV's tensor-core path inside the model: prefill of a
    # 12-token prompt on the Qwen3-8B shape (every linear layer at m = 12), default and
    # --gemv tma (the TMA half2 GEMV) back to back.
    for g in auto tma; do
      step "short_prompt_qwen3_8b_f16_$g" 90 "$bin/ttq" bench decode --random-weights qwen3-8b \
        --backend cuda --dtype f16 --methods fp,ttq:w4:g128:a0.25 --prompt-tokens 12 \
        --new-tokens 16 --runs 3 --gemv "$g" --json "$out/short_prompt_qwen3_8b_f16_$g.json"
    done
    ;;
  s15e)
    # Session 15: gemv_tma_mma with its slot counts fixed (s15d's 32:3:1 with three slots
    # was over the shared-memory cap at 8 tokens, refused as it should be).
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    ;;
  s15d)
    # Session 15: the tensor-core products' defaults from call 3 (one slot, P = K = 4):
    # its test, then decode on the Qwen3-8B shape with --gemv tma-mma, --gemv tma and the
    # default, back to back on one machine.
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    decode_qwen3_gemv tma-mma 70
    decode_qwen3_gemv tma 70
    decode_qwen3 fused 70
    ;;
  s15c)
    # Session 15: the tensor-core products with x and s read from global memory (no
    # activation copies: smaller cubes) and one-slot pipelines, for more warps per SM;
    # its test, then Nsight Compute durations and instruction counts at m = 1.
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    use_ncu
    ncu_tma_sweep 220 \
      "${S15C_TILES:-4:8:1:tma:k2,4:4:1:tma:k1,16:4:1:tma:mma:k4,16:4:1:tma:mma:k4:d1,16:7:1:tma:mma:k7:d1,16:2:1:tma:mma:k2,16:2:1:tma:mma:k2:d1,16:1:1:tma:mma:k1,16:1:1:tma:mma:k1:d1,16:4:1:tma:mma:k2:d1,32:2:1:tma:mma:k2,32:2:1:tma:mma:k2:d1,16:8:1:tma:mma:k8:d1,16:4:1:tma:mma:k4:co,16:2:1:tma:mma:k2:d1:co}"
    ;;
  s15b)
    # Session 15: the tensor-core products without per-pair bias (codes as 1024 + c and
    # 1024 + 16c, corrected per step with column sums from two more mmas) and with the
    # activations paired once per plane and block; its test, Nsight Compute durations
    # and instruction counts at m = 1, then decode on the Qwen3-8B shape with
    # --gemv tma-mma and with the default GEMV.
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    use_ncu
    ncu_tma_sweep 200 \
      "${S15B_TILES:-4:8:1:tma:k2,4:4:1:tma:k1,16:4:1:tma:mma:k1,16:4:1:tma:mma:k2,16:4:1:tma:mma:k4,16:2:1:tma:mma:k2,16:8:1:tma:mma:k4,32:4:1:tma:mma:k4,32:2:1:tma:mma:k2,32:2:1:tma:mma:k1,16:4:1:tma:mma:k4:co,32:2:1:tma:mma:k2:co,16:4:1:tma:mma:k1:co}"
    decode_qwen3_gemv tma-mma 75
    decode_qwen3 fused 75
    ;;
  s15a)
    # Session 15: the TMA GEMV with tensor-core products (:mma): its test, then Nsight
    # Compute durations and instruction counts at m = 1 against session 14's TMA tiles,
    # with the products (:co) and the copies (:lo) alone.
    step tests_tma_mma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_mma
    use_ncu
    ncu_tma_sweep 260 \
      "${S15A_TILES:-4:8:1:tma:k2,4:4:1:tma:k1,16:4:1:tma:mma:k1,16:4:1:tma:mma:k2,16:4:1:tma:mma:k4,16:2:1:tma:mma:k2,16:8:1:tma:mma:k4,16:8:1:tma:mma:k2,32:4:1:tma:mma:k4,32:2:1:tma:mma:k2,32:4:1:tma:mma:k1,16:4:2:tma:mma:k4,16:4:1:tma:mma:k4:co,32:4:1:tma:mma:k4:co,16:4:1:tma:mma:k4:lo,4:8:1:tma:k2:co}"
    ;;
  s14c)
    # Session 14, new TMA defaults (4:8:1 with K = 2 from 6 blocks, else 4:4:1 with K = 1,
    # at one token): both TMA tests, decode on the Qwen3-8B shape with --gemv tma and with
    # the default GEMV.
    step tests_tma_layouts 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_layouts
    step tests_tma_pipelines 170 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_pipelines
    decode_qwen3_gemv tma 75
    decode_qwen3 fused 75
    ;;
  s14b)
    # Session 14: TMA GEMV cubes of several row groups that each split the row's blocks
    # (:kN below P), for more warps per SM at 4-8 rows per plane; as s14a.
    step tests_tma 230 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_pipelines
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma)' ncu_gemv_tiles 170 \
      4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S14B_TILES:-8:2:1:tma,4:4:1:tma:k1,4:8:1:tma:k2,4:8:1:tma:k4,8:4:1:tma:k2,8:8:1:tma:k4,4:8:1:tma:k2:d3,4:16:1:tma:k4,8:8:1:tma:k2,4:8:1:tma:k1,8:4:1:tma:k2:co,4:8:1:tma:k2:co,4:8:1:tma:k2:lo}"
    ;;
  s14a)
    # Session 14: the TMA GEMV with 3-4 pipeline slots and with planes that share the
    # activations' copies (:sx), Nsight Compute durations at m = 1 against session 13's
    # best tile; how fast torch and cuBLAS read the same byte counts; the new tiles' tests.
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma)' ncu_gemv_tiles 170 \
      4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S14A_TILES:-8:2:1:tma,8:2:1:tma:d3,8:2:1:tma:d4,4:4:1:tma:sx,4:4:1:tma:sx:d3,4:4:1:tma:sx:d4,2:8:1:tma:sx:d3,8:2:1:tma:sx:d3,4:2:1:tma:sx:d4,2:4:1:tma:sx:d4,4:4:2:tma:sx,4:4:1:tma:sx:d3:lo,4:4:1:tma:sx:d3:co,8:2:1:tma:lo}"
    step read_ceiling 60 python3 "$here/read_ceiling.py" --json "$out/read_ceiling.json"
    step ncu_read_ceiling 100 ncu --clock-control none --profile-from-start off \
      -k 'regex:reduce|gemv|gemm|Kernel' --csv \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum \
      python3 "$here/read_ceiling.py" --ncu --json "$out/read_ceiling_plan.json"
    step tests_tma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_pipelines
    ;;
  s13d)
    # The TMA GEMV with x and s by tensor copy (no pairing kernel): as s13c.
    step tests_tma 200 "$bin/cuda_vs_reference" --test-threads 1 --nocapture gemv_tma_layouts
    use_ncu
    GEMV_KERNELS='gemv_(h2|tma)' ncu_gemv_tiles 120 \
      4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S13D_TILES:-8:4:1:tma,8:2:1:tma,8:1:1:tma,8:4:1:tma:lo,8:4:1:tma:co,8:2:1:tma:co,8:1:1:tma:co,8:2:2:tma,4:2:1:tma}"
    step bench_kernels 150 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9 \
      --tokens 1,4 --gemv-tiles "${S13D_BENCH_TILES:-8:4:1:tma,8:2:1:tma,8:1:1:tma}"
    decode_qwen3_gemv tma 80
    decode_qwen3 fused 80
    ;;
  s10a)
    step tests_stream 200 "$bin/cuda_vs_reference" --test-threads 1 \
      gemv_stream gemv_half2_layouts
    use_ncu
    # Tiles chosen by their offline register counts (results/host-2026-12-01/
    # s10-offline-bench-ptxas.md: 40-96 registers; 4:4:4 and 8:4:2 take 128-168).
    GEMV_KERNELS='gemv_(h2|stream)' ncu_gemv_tiles 200 4096x4096,2048x8192,4096x14336,14336x4096 \
      "${S10_TILES:-4:4:1:st,4:4:2:st,2:4:2:st,1:4:4:st,2:8:4:st,8:4:1:st,4:4:2:st:c2,4:4:2:st:c3}"
    step bench_kernels 120 "$bin/ttq" bench kernels --json "$out/bench_kernels.json" --reps 9 \
      --tokens 1,4,16 --gemv-tiles "${S10_BENCH_TILES:-4:4:2:st,4:4:4:st,8:4:2:st}"
    decode_qwen3 fused 80
    decode_qwen3_gemv stream 80
    ;;
  s6b)
    for ops in fused unfused; do decode_qwen3 $ops 90; done
    torch_decode_qwen3 70
    ;;
  *) echo "unknown part $part"; exit 2 ;;
esac
