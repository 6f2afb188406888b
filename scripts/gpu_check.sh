#!/usr/bin/env bash
# On a machine with a CUDA GPU: builds qcast against the LibTorch of this machine's Python torch,
# runs the GPU tests (ctest label gpu) and the GPU benchmarks (casts, codecs, the Hadamard transform).
# Usage:
#   scripts/gpu_check.sh [BUILD_DIR]         (default build-gpu)
# Environment:
#   PYTHON          the Python whose torch to build against (default python3)
#   QCAST_GPU_DEPS  a prefix holding Highway and Catch2 v2 where the system has none (scripts/gpu_deps.sh)
#   QCAST_BENCH     extra arguments of `qcast bench --device cuda` (default: the issue's formats)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$root/build-gpu}"
python="${PYTHON:-python3}"
log() { printf '\033[1m[gpu_check]\033[0m %s\n' "$*"; }

torch_prefix="$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
log "torch $("$python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
prefix="$torch_prefix"
if [ -n "${QCAST_GPU_DEPS:-}" ]; then
  deps="$(cd "$QCAST_GPU_DEPS" && pwd)"
  prefix="$deps/usr;$prefix"
  export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# LibTorch's CMake files take the GPU architectures from TORCH_CUDA_ARCH_LIST: this GPU's.
arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' ')"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$arch}"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

log "configuring $dir (CUDA architecture $TORCH_CUDA_ARCH_LIST)"
cmake -S "$root" -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DQCAST_REQUIRE_TORCH=ON -DQCAST_BUILD_EXAMPLES=OFF >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
grep -q "QCAST_HAVE_CUDA:INTERNAL=ON\|qcast_cuda" "$dir/CMakeCache.txt" || true
log "building the GPU tests and the CLI"
cmake --build "$dir" --target qcast_gpu_tests qcast_torch_gpu_tests qcast_cli qcast_hadamard_bench -j "$(nproc)"

log "GPU tests"
(cd "$dir" && ctest -L gpu --output-on-failure)

log "GPU benchmark"
read -r -a extra <<<"${QCAST_BENCH:---repeats 20 --formats mxfp4,nvfp4,fp8_e4m3,mxfp8_e4m3,mxfp6_e2m3,mxint8,int4@g128,int8@channel,int8}"
"$dir/qcast" bench --device cuda "${extra[@]}"
"$dir/qcast" bench --device cuda --op encode "${extra[@]}"
"$dir/qcast" bench --device cuda --op decode "${extra[@]}"
log "GPU benchmark: nvfp4 with a given tensor amax (one pass, no statistics pass)"
"$dir/qcast" bench --device cuda --static-tensor-amax --repeats 20 --formats nvfp4
"$dir/qcast" bench --device cuda --static-tensor-amax --repeats 20 --op encode --formats nvfp4
log "GPU benchmark: the block Hadamard transform of --rotate hadamard"
"$dir/qcast_hadamard_bench" --device cuda --elements 67108864 --blocks 16,32,128,4096,16384 --repeats 20
