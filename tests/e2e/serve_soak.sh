#!/usr/bin/env bash
# A short soak of `trinity serve` (bench/soak.sh with a few hundred requests): mixed routes,
# random client disconnects mid-stream; nothing may fail, nothing may be left running, the
# server stays healthy and exits 0 on SIGTERM. The full run (3000+ requests) is in bench/RESULTS.md.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"
# The RSS bound is loose here (a short run is mostly warm-up); the full soak uses the default.
TRINITY=$TRINITY WORK=$WORK PARALLEL=4 CONCURRENCY=6 MAX_TOKENS=8 \
  bash "$(dirname "$0")/../../bench/soak.sh" 300 -- --max-rss-growth-mib 64
