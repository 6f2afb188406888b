#!/usr/bin/env bash
# Runs the libFuzzer targets (tests/fuzz/) under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     SECONDS per target (default 60); targets: format_name,
#                                             npy, qpack, calibration (default: all four)
#   QCAST_FUZZ_JOBS=N scripts/fuzz.sh ...     N fuzzing processes a target (default 1)
#   QCAST_FUZZ_MERGE=1 scripts/fuzz.sh ...    afterwards, add to tests/fuzz/corpus/NAME the found inputs
#                                             that reach code the seeds do not (libFuzzer -merge=1), so
#                                             that the test command replays them too
#
# Each target starts from its seed corpus (tests/fuzz/corpus/NAME) plus what earlier runs found
# (build-fuzz/corpus/NAME) and writes crashing inputs to build-fuzz/crashes/NAME/. The summary gives
# each target's executions, corpus size and findings; the exit code is 1 when anything was found.
# A fixed crash belongs in tests/fuzz/crashes/NAME/, where the test command replays it on every run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$QCAST_ROOT"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(format_name npy qpack calibration)
jobs="${QCAST_FUZZ_JOBS:-1}"

QCAST_APT_PACKAGES=(clang libclang-rt-14-dev)
qcast_install_packages

qcast_log "building the fuzz targets with clang, ASan and UBSan (build-fuzz/)"
torch_prefix="$("$QCAST_ROOT/.venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
mkdir -p build-fuzz
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DQCAST_FUZZ=ON -DQCAST_WITH_CUDA=OFF -DQCAST_BUILD_EXAMPLES=OFF >build-fuzz/configure.log 2>&1 ||
  { cat build-fuzz/configure.log; exit 1; }
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/qcast_fuzz_}"

found=0
summary=()
for t in "${targets[@]}"; do
  corpus="build-fuzz/corpus/$t"
  crashes="build-fuzz/crashes/$t"
  mkdir -p "$corpus" "$crashes"
  log="build-fuzz/fuzz-$t.log"
  qcast_log "fuzzing $t for ${seconds}s ($jobs process(es)); log: $log"
  # -rss_limit_mb, -malloc_limit_mb: a reader that allocates what a header claims is a finding (even
  # when the library would catch the failed allocation and report it), not an OOM of the host.
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1 \
    "build-fuzz/tests/fuzz/qcast_fuzz_$t" "$corpus" "tests/fuzz/corpus/$t" -max_total_time="$seconds" \
    -rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=20 -max_len=65536 -artifact_prefix="$crashes/" -print_final_stats=1 \
    -jobs="$jobs" -workers="$jobs" >"$log" 2>&1 || true
  runs=$(grep -h "stat::number_of_executed_units" "$log" fuzz-*.log 2>/dev/null | awk '{s += $2} END {print s + 0}')
  rm -f fuzz-*.log
  if [ "${QCAST_FUZZ_MERGE:-0}" = 1 ]; then
    "build-fuzz/tests/fuzz/qcast_fuzz_$t" -merge=1 "tests/fuzz/corpus/$t" "$corpus" >>"$log" 2>&1
  fi
  findings=$(find "$crashes" -type f | wc -l)
  [ "$findings" -gt 0 ] && found=1
  summary+=("$(printf '%-12s %12s executions  corpus %6s inputs  findings %s' "$t" "$runs" "$(ls "$corpus" | wc -l)" "$findings")")
done
qcast_log "summary (${seconds}s a target)"
printf '%s\n' "${summary[@]}"
exit $found
