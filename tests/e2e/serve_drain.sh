#!/usr/bin/env bash
# `trinity serve` as users run it: starts on a free port, answers /health and a chat completion,
# then SIGTERM drains it: a request in flight still completes, /health turns 503, and the process
# exits 0.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"
MODEL=${TRINITY_TEST_MODEL:?the synthetic tiny model}

"$TRINITY" serve -m "$MODEL" --port 0 -c 256 -t 1 2> "$WORK/serve.log" &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "on http://" "$WORK/serve.log" && break
  sleep 0.1
done
URL=$(grep -o "http://[0-9.]*:[0-9]*" "$WORK/serve.log")

"$PY" - "$URL" "$PID" <<'PY'
import json, os, signal, sys, threading, time, urllib.error, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])

def call(path, body=None):
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

status, body = call("/health")
assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)
status, body = call("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
assert status == 200, (status, body)
reply = json.loads(body)
assert reply["object"] == "chat.completion" and reply["usage"]["completion_tokens"] <= 3, reply

# A long request in flight when SIGTERM arrives still completes.
result = {}
def long_request():
    result["status"], result["body"] = call("/v1/completions", {"prompt": "a", "max_tokens": 200, "ignore_eos": True})
t = threading.Thread(target=long_request)
t.start()
for _ in range(500):  # until it holds the slot
    if b"trinity_requests_running 1" in call("/metrics")[1]:
        break
    time.sleep(0.01)
os.kill(pid, signal.SIGTERM)
t.join()
assert result["status"] == 200, result
assert json.loads(result["body"])["usage"]["completion_tokens"] == 200, result
PY

for _ in $(seq 100); do
  kill -0 $PID 2> /dev/null || break
  sleep 0.1
done
if kill -0 $PID 2> /dev/null; then echo "FAIL: trinity serve still running 10 s after SIGTERM"; exit 1; fi
wait $PID
grep -q "draining" "$WORK/serve.log"
echo "serve_drain: ok"
