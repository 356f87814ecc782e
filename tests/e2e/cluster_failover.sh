#!/usr/bin/env bash
# kill -9 of a node under load, behind HAProxy: non-streaming requests it held are replayed on
# another node and succeed; a stream it was sending is cut and the client sees an error (no
# `data: [DONE]`, a truncated chunked body), never a short answer that looks complete; restarted,
# the node passes its health checks and takes requests again.
set -euo pipefail
TRINITY=$1; PY=$2; WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"
MODEL=${TRINITY_TEST_MODEL:?the synthetic tiny model}
CLUSTER="deploy/cluster.sh --dir $WORK/cluster --trinity $TRINITY"
trap '$CLUSTER stop > /dev/null 2>&1 || true' EXIT

$CLUSTER start 3 --port 0 --parallel 2 --threads 1 -- -m "$MODEL" -c 512

"$PY" - "$WORK/cluster" "$CLUSTER" <<'PY'
import os, signal, subprocess, sys, threading
sys.path.insert(0, "tests/e2e/lib")
from cluster_client import backend_stat, cluster_info, complete, haproxy_states, metric, run_load, wait_for

state_dir, cluster = sys.argv[1], sys.argv[2].split()
info = cluster_info(state_dir)
url = info["url"]
LONG = 400  # tokens of the stream: the victim is still sending it when it is killed
SHORT = 40  # tokens of the others: short enough that the replayed ones never wait out the queue

# One stream first; its headers name the node that is sending it: that node is the victim.
victim_known = threading.Event()
stream = {}
def on_headers(r):
    stream["node"] = r.node
    victim_known.set()
def run_stream():
    stream["result"] = complete(url, stream=True, max_tokens=LONG, on_headers=on_headers)
threading.Thread(target=run_stream).start()
assert victim_known.wait(60), "the stream's headers never came"
victim = stream["node"]
print("victim:", victim)

# Then more non-streaming requests than there are free slots (3 nodes x 2 - 1): every node fills up.
results = [None] * 7
def run_one(i):
    results[i] = complete(url, stream=False, max_tokens=SHORT, chat=(i % 2 == 0))
workers = [threading.Thread(target=run_one, args=(i,)) for i in range(len(results))]
for w in workers:
    w.start()
# Kill when the victim holds both its slots: the stream and one non-streaming request.
wait_for(f"{victim} to hold 2 requests", lambda: metric(info["nodes"][victim], "trinity_requests_running") == 2)
os.kill(info["pids"][victim], signal.SIGKILL)
for w in workers:
    w.join()

cut = stream["result"]
print("stream:", cut)
assert not cut.ok and not cut.done, f"the cut stream must not look complete: {cut}"
# Cut at the protocol level: the chunked body ends without its last chunk (curl: error 18).
assert cut.error and cut.error.startswith("IncompleteRead"), cut
failed = [r for r in results if not r.ok]
assert not failed, f"non-streaming requests failed: {failed}"
assert all(r.tokens == SHORT and r.node != victim for r in results), results
print("non-streaming answered by:", sorted(r.node for r in results))
# The victim held one of them when it died: HAProxy replayed it on another node.
redispatched = backend_stat(info["stats_url"], "wredis")
print("HAProxy redispatches:", redispatched, "retries:", backend_stat(info["stats_url"], "wretr"))
assert redispatched >= 1

wait_for(f"HAProxy to mark {victim} down", lambda: haproxy_states(info["stats_url"])[victim].startswith("DOWN"))
# While it is down, load goes to the others without a failure.
load = run_load(url, 12, 6, max_tokens=8)
assert all(r.ok and r.node != victim for r in load), load

# Restarted on its port, it rejoins: HAProxy marks it up and sends it work again.
subprocess.run(cluster + ["node", victim.removeprefix("node"), "start"], check=True)
wait_for(f"HAProxy to mark {victim} up", lambda: haproxy_states(info["stats_url"])[victim] == "UP")
info = cluster_info(state_dir)
served_by_victim = 0
for _ in range(20):  # leastconn gives the idle node work; bounded so a bug cannot hang the test
    load = run_load(url, 12, 6, stream_every=2, max_tokens=8)
    assert all(r.ok for r in load), load
    served_by_victim += sum(r.node == victim for r in load)
    if served_by_victim:
        break
assert served_by_victim > 0, f"{victim} never served after rejoining"
assert metric(info["nodes"][victim], "trinity_requests_total") >= served_by_victim
print(f"{victim} rejoined and served {served_by_victim} request(s)")
PY
grep -q "node1\|node2\|node3" "$WORK/cluster/haproxy.log"
$CLUSTER stop
echo "cluster_failover: ok"
