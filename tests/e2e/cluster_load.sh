#!/usr/bin/env bash
# Three nodes behind HAProxy (deploy/cluster.sh, the shipped template) under concurrent load, more
# requests at once than the nodes have slots so that HAProxy queues: every request succeeds, every
# stream ends with [DONE], and every node took a share.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"
MODEL=${TRINITY_TEST_MODEL:?the synthetic tiny model}
CLUSTER="deploy/cluster.sh --dir $WORK/cluster --trinity $TRINITY"
trap '$CLUSTER stop > /dev/null 2>&1 || true' EXIT

$CLUSTER start 3 --port 0 --parallel 2 --threads 1 -- -m "$MODEL" -c 256

"$PY" - "$WORK/cluster" <<'PY'
import collections, sys
sys.path.insert(0, "tests/e2e/lib")
from cluster_client import cluster_info, haproxy_states, metric, run_load

info = cluster_info(sys.argv[1])
n_requests, concurrency = 48, 12  # 12 at once against 3 x 2 slots: half of them queue in HAProxy
results = run_load(info["url"], n_requests, concurrency, max_tokens=12)
failed = [r for r in results if not r.ok]
assert not failed, f"{len(failed)} of {n_requests} failed: {failed[:5]}"
assert all(r.tokens == 12 for r in results), [r.tokens for r in results]
per_node = collections.Counter(r.node for r in results)
print("requests per node:", dict(per_node))
assert set(per_node) == set(info["nodes"]), per_node
# The nodes' own counters agree: all 48 were generated, none twice.
served = {n: metric(u, "trinity_requests_total") for n, u in info["nodes"].items()}
print("trinity_requests_total per node:", served)
assert sum(served.values()) == n_requests, served
assert all(s == "UP" for s in haproxy_states(info["stats_url"]).values())
PY
$CLUSTER stop
echo "cluster_load: ok"
