#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job end to end: the examples, a CLI round trip
# through a .npy file, then post-training quantization of a CNN it trains on Fashion-MNIST (Debian's
# dataset-fashion-mnist) with RTN, GPTQ and Error Diffusion, and the accuracy table: nvfp4, where
# 4-bit block scaling already keeps this CNN's accuracy and every method ties, then 3-bit and 2-bit
# integer weights in groups of 32, where round-to-nearest loses accuracy and the methods separate.
# QCAST_DEMO_TRAIN_SECONDS (default 90) sets the training time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"
QCAST_APT_PACKAGES+=(dataset-fashion-mnist)
qcast_install_packages

qcast_build build -DQCAST_REQUIRE_TORCH=ON
qcast_log "example 01: the format core alone"
build/examples/01_cast_core
qcast_log "example 02: the LibTorch adapter"
build/examples/02_torch_adapter
qcast_log "the qcast tool: a .npy through nvfp4"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -c "import numpy as np; np.save('$tmp/x.npy', np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32))"
build/qcast cast --format nvfp4 "$tmp/x.npy" "$tmp/y.npy"
.venv/bin/python -c "
import numpy as np
x, y = np.load('$tmp/x.npy'), np.load('$tmp/y.npy')
print('nvfp4 of a 4x64 normal matrix: relative error %.4f, %d distinct values' % (np.linalg.norm(y - x) / np.linalg.norm(x), len(np.unique(y))))"

qcast_log "post-training quantization: a small CNN trained on Fashion-MNIST"
.venv/bin/python examples/fashion_mnist/fashion_mnist.py train --out "$tmp" --seconds "${QCAST_DEMO_TRAIN_SECONDS:-90}"
models=("$tmp/cnn.pt")
for format in nvfp4 int3@g32 int2@g32; do
  tag="${format//@/-}"  # file names without '@'
  for method in rtn gptq ed; do
    qcast_log "qcast quantize --format $format --method $method"
    start=$(date +%s%N)
    build/qcast quantize "$tmp/cnn.pt" --format "$format" --method "$method" --calib "$tmp/calib.pt" \
      -o "$tmp/cnn_${tag}_${method}.pt" --export "$tmp/cnn_${tag}_${method}.safetensors" --quiet \
      --report "$tmp/cnn_${tag}_${method}.json" > "$tmp/cnn_${tag}_${method}.txt"
    echo "$tag $method $(( ($(date +%s%N) - start) / 1000000 ))" >> "$tmp/times.txt"
    models+=("$tmp/cnn_${tag}_${method}.pt")
  done
done
qcast_log "test accuracy (10,000 Fashion-MNIST test images; calibration: 512 training images)"
.venv/bin/python examples/fashion_mnist/fashion_mnist.py evaluate "${models[@]}" > "$tmp/accuracy.txt"
awk -v tmp="$tmp/" 'FNR == NR { t[$1 "_" $2] = $3 / 1000; next }
  { name = $1; sub(tmp, "", name); sub(/\.pt$/, "", name); sub(/^cnn_?/, "", name)
    if (name == "") { printf "%-9s %-6s %9s %10s\n", "format", "method", "accuracy", "quant. s"; printf "%-9s %-6s %9.4f %10s\n", "float", "-", $2, "-"; next }
    split(name, p, "_"); f = p[1]; sub(/-/, "@", f); printf "%-9s %-6s %9.4f %10.1f\n", f, p[2], $2, t[name] }' "$tmp/times.txt" "$tmp/accuracy.txt"
