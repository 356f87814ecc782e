#!/usr/bin/env bash
# Soak run: starts `trinity serve` on a free loopback port, sends thousands of mixed requests
# (chat and completions, streamed and not, the task route; a fraction of the streams cut by their
# client mid-way) with `trinity bench --load URL --soak`, which samples the server's RSS, then
# checks that nothing failed, nothing is left running, /health answers, memory stayed flat, and
# the server drains and exits 0 on SIGTERM.
#
#   bash bench/soak.sh [REQUESTS] [-- extra `trinity bench` flags]
#
# Environment: TRINITY (default build/trinity), MODEL (default: the built-in model), PARALLEL (8),
# CONCURRENCY (12: more clients than slots, so requests queue), MAX_TOKENS (16), CTX (the model's),
# WORK (a temporary folder for the server log).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-3000}
shift || true
[ "${1:-}" = "--" ] && shift
TRINITY=${TRINITY:-build/trinity}
MODEL=${MODEL:-models/trinity-tiny.gguf}
PARALLEL=${PARALLEL:-8}
CONCURRENCY=${CONCURRENCY:-12}
MAX_TOKENS=${MAX_TOKENS:-16}
CTX=${CTX:-}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"

"$TRINITY" serve -m "$MODEL" --port 0 ${CTX:+-c "$CTX"} --parallel "$PARALLEL" 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q "on http://" "$WORK/serve.log" && break
  kill -0 $PID 2> /dev/null || { cat "$WORK/serve.log"; echo "soak: trinity serve exited"; exit 1; }
  sleep 0.1
done
URL=$(grep -o "http://[0-9.]*:[0-9]*" "$WORK/serve.log")
echo "soak: $("$TRINITY" --version), $MODEL, --parallel $PARALLEL, $(nproc) cores, $REQUESTS requests from $CONCURRENCY clients"

status=0
"$TRINITY" bench --load "$URL" --soak --requests "$REQUESTS" --concurrency "$CONCURRENCY" --max-tokens "$MAX_TOKENS" \
  --server-pid $PID --no-progress "$@" || status=$?

if ! kill -0 $PID 2> /dev/null; then
  echo "soak: FAIL: the server died"; tail -20 "$WORK/serve.log"; exit 1
fi
kill -TERM $PID
server_status=0
wait $PID || server_status=$?
trap - EXIT
if [ $server_status -ne 0 ]; then
  echo "soak: FAIL: the server exited with status $server_status after SIGTERM"; tail -20 "$WORK/serve.log"; exit 1
fi
if [ $status -ne 0 ]; then echo "soak: FAIL"; exit $status; fi
echo "soak: server drained and exited 0"
