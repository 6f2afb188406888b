# Sourced by scripts/test.sh and scripts/demo.sh: installs what is missing (Debian packages, the
# pinned LibTorch wheel in .venv) and configures + builds the project in build/. Idempotent: a
# second run installs nothing and rebuilds only what changed (through ccache).
set -euo pipefail

QCAST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QCAST_TORCH_VERSION="2.11.0"   # its wheel links CUDA 13.0, the toolkit of this machine kind
# Test-only Python packages: safetensors reads the export; torchao is the peer it is compared with
# (installed without dependencies, so that it cannot replace the pinned torch).
QCAST_SAFETENSORS_VERSION="0.8.0"
QCAST_TORCHAO_VERSION="0.18.0"
# scipy: HiGHS (scipy.optimize.milp), the independent solver the mixed-precision test checks the
# allocation against.
QCAST_SCIPY_VERSION="1.17.1"
# fmt, CLI11 and nlohmann-json are header-only here (fmt as a library only in builds without Torch).
# chromium-headless-shell: the browser the HTML report's test opens it in.
QCAST_APT_PACKAGES=(build-essential cmake ccache git libhwy-dev catch2 libfmt-dev libcli11-dev nlohmann-json3-dev libgloo-dev
                    chromium-headless-shell)

qcast_log() { printf '\033[1m[qcast]\033[0m %s\n' "$*"; }

qcast_install_packages() {
  local missing=()
  for p in "${QCAST_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  qcast_log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

qcast_install_torch() {
  local venv="$QCAST_ROOT/.venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import torch, numpy, sys; sys.exit(torch.__version__.split('+')[0] != '$QCAST_TORCH_VERSION')" 2>/dev/null; then
    qcast_install_python_test_packages
    return 0
  fi
  qcast_log "installing torch==$QCAST_TORCH_VERSION and numpy into .venv (a few minutes the first time)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --progress-bar off --upgrade pip
  "$venv/bin/pip" install -q --progress-bar off "torch==$QCAST_TORCH_VERSION" numpy
  qcast_install_python_test_packages
}

qcast_install_python_test_packages() {
  local venv="$QCAST_ROOT/.venv"
  "$venv/bin/python" -c "import safetensors, torchao, scipy, sys; sys.exit(safetensors.__version__ != '$QCAST_SAFETENSORS_VERSION' or torchao.__version__.split('+')[0] != '$QCAST_TORCHAO_VERSION' or scipy.__version__ != '$QCAST_SCIPY_VERSION')" 2>/dev/null && return 0
  qcast_log "installing safetensors==$QCAST_SAFETENSORS_VERSION, scipy==$QCAST_SCIPY_VERSION and torchao==$QCAST_TORCHAO_VERSION into .venv"
  "$venv/bin/pip" install -q --progress-bar off "safetensors==$QCAST_SAFETENSORS_VERSION" "scipy==$QCAST_SCIPY_VERSION"
  "$venv/bin/pip" install -q --progress-bar off --no-deps "torchao==$QCAST_TORCHAO_VERSION"
}

# qcast_build DIR [cmake options...]
qcast_build() {
  local dir="$1"
  shift
  local torch_prefix
  torch_prefix="$("$QCAST_ROOT/.venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
  [ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
  mkdir -p "$dir"
  cmake -S "$QCAST_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix" "$@" >"$dir/configure.log" 2>&1 ||
    { cat "$dir/configure.log"; return 1; }
  cmake --build "$dir" -j "$(nproc)"
}

qcast_install_packages
qcast_install_torch
