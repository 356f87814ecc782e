#!/usr/bin/env bash
# Builds Trinity and runs the main job: the seed report's 10-request benchmark on the built-in
# model. Extra arguments go to `trinity bench` (e.g. --json, --repeat 3, -m MODEL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target trinity_cli
./build/trinity bench "$@"
