#!/usr/bin/env bash
# Gathers the build dependencies that a bare GPU machine may lack (Highway, Catch2 v2) from this
# machine's Debian packages into .gpu-deps/ (git-ignored), a prefix that scripts/gpu_check.sh uses
# when QCAST_GPU_DEPS points at it. Run it on a Debian machine with apt; copy the folder along.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.gpu-deps"
rm -rf "$out" && mkdir -p "$out/debs"
(cd "$out/debs" && apt-get download libhwy-dev libhwy1 catch2 >/dev/null)
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$out"; done
rm -rf "$out/debs" "$out/usr/share/doc"
echo "gathered into $out: $(du -sh "$out" | cut -f1)"
