#!/usr/bin/env bash
# SIGTERM to a node under load, behind HAProxy: it fails its health check, finishes what it holds
# and exits; requests that reach it meanwhile get 503 and HAProxy replays them elsewhere. No request
# is lost: every one succeeds, every stream ends with [DONE].
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"
MODEL=${TRINITY_TEST_MODEL:?the synthetic tiny model}
CLUSTER="deploy/cluster.sh --dir $WORK/cluster --trinity $TRINITY"
trap '$CLUSTER stop > /dev/null 2>&1 || true' EXIT

$CLUSTER start 3 --port 0 --parallel 2 --threads 1 -- -m "$MODEL" -c 256

"$PY" - "$WORK/cluster" <<'PY'
import os, signal, sys
sys.path.insert(0, "tests/e2e/lib")
from cluster_client import Background, backend_stat, cluster_info, haproxy_states, metric, process_exited, wait_for

info = cluster_info(sys.argv[1])
victim = "node2"
pid = info["pids"][victim]
# 8 clients back to back against 6 slots, half of them streaming.
load = Background(info["url"], 8, max_tokens=24)
wait_for(f"{victim} to hold 2 requests", lambda: metric(info["nodes"][victim], "trinity_requests_running") == 2)
before = load.count()
os.kill(pid, signal.SIGTERM)
wait_for(f"{victim} to drain and exit", lambda: process_exited(pid))
# Keep the load on until HAProxy has noticed and 12 more requests have finished without it.
wait_for(f"HAProxy to mark {victim} down", lambda: haproxy_states(info["stats_url"])[victim].startswith("DOWN"))
after_exit = load.count()
wait_for("12 more requests", lambda: load.count() >= after_exit + 12)
results = load.stop()

failed = [r for r in results if not r.ok]
print(f"{len(results)} requests ({sum(r.stream for r in results)} streams), {before} finished before SIGTERM; "
      f"HAProxy retries {backend_stat(info['stats_url'], 'wretr')}, redispatches {backend_stat(info['stats_url'], 'wredis')}")
assert not failed, f"{len(failed)} failed: {failed[:5]}"
assert all(r.tokens == 24 for r in results), [r.tokens for r in results if r.tokens != 24]
PY
grep -q "draining" "$WORK/cluster/node2.log"
grep -q "stopped" "$WORK/cluster/node2.log"
$CLUSTER stop
echo "cluster_drain: ok"
