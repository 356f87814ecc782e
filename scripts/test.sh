#!/usr/bin/env bash
# Builds Trinity and runs the whole test suite, then the AArch64 cross build's tests under
# qemu-user (TRINITY_SKIP_ARM=1 skips them), then the unit tests again under AddressSanitizer +
# UndefinedBehaviorSanitizer. Works on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

# AArch64: cross-built, kernel and model tests under qemu-user (NEON and the portable path).
if [ "${TRINITY_SKIP_ARM:-0}" != 1 ]; then
  bash scripts/test-arm.sh
fi

# Sanitizers: every GoogleTest suite and the C API example (the Python-driven end-to-end
# comparisons run once, above: they exercise the same code on the same inputs).
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRINITY_SANITIZE=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -E '^e2e_'
