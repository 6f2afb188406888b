#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: for now the examples and a CLI round
# trip through a .npy file.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"

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
