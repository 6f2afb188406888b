#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test through ctest; then builds the core tests
# once more under AddressSanitizer + UndefinedBehaviorSanitizer and runs them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"

qcast_log "building (build/)"
qcast_build build -DQCAST_REQUIRE_TORCH=ON
qcast_log "running every test"
(cd build && ctest --output-on-failure)

qcast_log "building the core tests with ASan + UBSan (build-sanitize/)"
qcast_build build-sanitize -DQCAST_WITH_TORCH=OFF -DQCAST_WITH_CUDA=OFF -DQCAST_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
qcast_log "running the core tests under ASan + UBSan"
(cd build-sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -L "core|cli|fuzz")
