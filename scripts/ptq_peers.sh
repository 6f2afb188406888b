#!/usr/bin/env bash
# Peers of `qcast quantize` on MiniLM (docs/results.md, "Against peers"): Brevitas' GPTQ and GPFQ and a
# plain-PyTorch reference GPTQ, on the same calibration windows and scoring as scripts/ptq_bench.sh.
#   scripts/ptq_peers.sh [--formats mxfp4,nvfp4,int4@g128] [--batch-size 8]
# Brevitas (PyPI, pinned) goes into a venv of its own, .venv-peers, which sees .venv's torch through a
# .pth file, so that Brevitas' dependencies never move the project's torch. QCAST_PTQ_WORK must be
# the work folder of a scripts/ptq_bench.sh run that included minilm_l6 (it holds the tokens); its
# results.jsonl, when present, puts qcast's rows beside the peers'.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"
BREVITAS_VERSION="0.13.4"
work="${QCAST_PTQ_WORK:?set QCAST_PTQ_WORK to the work folder of a scripts/ptq_bench.sh run with minilm_l6}"
[ -f "$work/minilm/minilm_calib.pt" ] || { echo "no $work/minilm/minilm_calib.pt: run scripts/ptq_bench.sh --models minilm_l6 first" >&2; exit 2; }
qcast_install_torch
peers=.venv-peers
if ! "$peers/bin/python" -c "import brevitas, sys; sys.exit(brevitas.__version__ != '$BREVITAS_VERSION')" 2>/dev/null; then
  qcast_log "installing brevitas==$BREVITAS_VERSION into $peers"
  [ -x "$peers/bin/python" ] || python3 -m venv "$peers"
  site="$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')"
  echo "$site" > "$("$peers/bin/python" -c 'import site; print(site.getsitepackages()[0])')/qcast_venv.pth"
  "$peers/bin/pip" install -q --progress-bar off "brevitas==$BREVITAS_VERSION"
fi
extra=()
[ -f "$work/results.jsonl" ] && extra=(--qcast-results "$work/results.jsonl")
"$peers/bin/python" benchmarks/ptq/peers.py --work "$work" --results "$work/peers.jsonl" "${extra[@]}" "$@"
