#!/usr/bin/env bash
# `trinity serve` driven by the official OpenAI Node SDK, as users do: installs the pinned `openai`
# npm package (tests/openai_client/package-lock.json) into the work folder with `npm ci`, starts
# the server on a free loopback port with the built-in model, and runs tests/openai_client/test.mjs.
# Needs node and npm and the npm registry (or a warm npm cache): without them this test fails,
# saying so.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
SRC=$(cd "$(dirname "$0")/../openai_client" && pwd)
rm -rf "$WORK"; mkdir -p "$WORK"

for tool in node npm; do
  if ! command -v $tool > /dev/null; then
    echo "FAIL: '$tool' is not installed; this test drives the server with the openai npm package" \
         "(Debian: apt-get install nodejs npm; scripts/install-deps.sh does it)"
    exit 1
  fi
done
cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/test.mjs" "$WORK/"
if ! (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error > npm.log 2>&1); then
  cat "$WORK/npm.log"
  echo "FAIL: 'npm ci' could not install the openai package (is the npm registry reachable?" \
       "registry: $(npm config get registry))"
  exit 1
fi

# The built-in model (real text, its own chat template); one slot and no queue so that the test
# can provoke 429; a context of 2048 (past the model's 256, harmless here) so that the request
# holding the slot can be long.
MODEL=$(pwd)/models/trinity-tiny.gguf
KEY=test-key-$RANDOM
"$TRINITY" serve -m "$MODEL" --port 0 -c 2048 -t 1 --parallel 1 --queue 0 --api-key "$KEY" 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q "on http://" "$WORK/serve.log" && break
  kill -0 $PID 2> /dev/null || { cat "$WORK/serve.log"; echo "FAIL: trinity serve exited"; exit 1; }
  sleep 0.1
done
URL=$(grep -o "http://[0-9.]*:[0-9]*" "$WORK/serve.log")

echo "node $(node --version), openai $(node -p 'require("'"$WORK"'/node_modules/openai/package.json").version')"
(cd "$WORK" && TRINITY_URL=$URL TRINITY_API_KEY=$KEY node test.mjs)

kill -0 $PID 2> /dev/null || { cat "$WORK/serve.log"; echo "FAIL: trinity serve died"; exit 1; }
kill -TERM $PID
wait $PID
echo "openai_client: ok"
