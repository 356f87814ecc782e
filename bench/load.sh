#!/usr/bin/env bash
# Load benchmark of `trinity serve`: starts it on a free loopback port, then
# `trinity bench --load URL --concurrency LIST` prints, per concurrency level, requests/s, output
# tokens/s and p50/p90/p99 of time to first token, time per output token and end-to-end latency,
# and draws them (bench/load.svg by default). The numbers in bench/RESULTS.md come from it.
#
#   bash bench/load.sh [-- extra `trinity bench` flags, e.g. --json]
#
# Environment: TRINITY (default build/trinity), MODEL (default: the built-in model), PARALLEL (8),
# CONCURRENCY (1,4,8,16), REQUESTS (per level, 128), MAX_TOKENS (128), PLOT (bench/load.svg),
# SERVE_FLAGS (more `trinity serve` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--" ] && shift
TRINITY=${TRINITY:-build/trinity}
MODEL=${MODEL:-models/trinity-tiny.gguf}
PARALLEL=${PARALLEL:-8}
CONCURRENCY=${CONCURRENCY:-1,4,8,16}
REQUESTS=${REQUESTS:-128}
MAX_TOKENS=${MAX_TOKENS:-128}
PLOT=${PLOT:-bench/load.svg}
LOG=$(mktemp)

# shellcheck disable=SC2086
"$TRINITY" serve -m "$MODEL" --port 0 --parallel "$PARALLEL" ${SERVE_FLAGS:-} 2> "$LOG" &
PID=$!
trap 'kill $PID 2> /dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 300); do
  grep -q "on http://" "$LOG" && break
  kill -0 $PID 2> /dev/null || { cat "$LOG"; echo "load: trinity serve exited"; exit 1; }
  sleep 0.1
done
URL=$(grep -o "http://[0-9.]*:[0-9]*" "$LOG")
echo "load: $("$TRINITY" --version) ($(git rev-parse --short HEAD 2> /dev/null || echo '?')), $MODEL," \
     "serve --parallel $PARALLEL ${SERVE_FLAGS:-}, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$TRINITY" bench --load "$URL" --concurrency "$CONCURRENCY" --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" \
  --plot "$PLOT" --no-progress "$@"
kill -TERM $PID
wait $PID
trap 'rm -f "$LOG"' EXIT
