#!/usr/bin/env bash
# Aggregate throughput of several nodes behind HAProxy against one node, side by side: one
# single-threaded node (directly, and behind HAProxy) and NODES single-threaded nodes behind HAProxy,
# each with one slot, measured in interleaved rounds under the same closed-loop load
# (bench/cluster_load.py, streaming completions, tokens counted at the client).
#
#   bash bench/cluster_bench.sh [ROUNDS] [NODES]        (defaults 3 and 2; needs haproxy, build/trinity)
#   env: TRINITY (binary), MODEL (default: the built-in model), REQUESTS (32), CONCURRENCY (4),
#        MAX_TOKENS (128), CTX (256), STREAM (1; 0 = non-streaming requests, cheaper for the client)
#
# A benchmark, not a test: the ratio depends on what else the machine runs. Results: bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
NODES=${2:-2}
TRINITY=${TRINITY:-build/trinity}
MODEL=${MODEL:-models/trinity-tiny.gguf}
REQUESTS=${REQUESTS:-32}
CONCURRENCY=${CONCURRENCY:-4}
MAX_TOKENS=${MAX_TOKENS:-128}
CTX=${CTX:-256}
STREAM=${STREAM:-1}
PY=${PY:-python3}
WORK=$(mktemp -d /tmp/trinity-cluster-bench.XXXXXX)
ONE=(deploy/cluster.sh --dir "$WORK/one" --trinity "$TRINITY")
MANY=(deploy/cluster.sh --dir "$WORK/many" --trinity "$TRINITY")
trap '"${ONE[@]}" stop > /dev/null 2>&1 || true; "${MANY[@]}" stop > /dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

"${ONE[@]}" start 1 --port 0 --parallel 1 --threads 1 -- -m "$MODEL" -c "$CTX"
"${MANY[@]}" start "$NODES" --port 0 --parallel 1 --threads 1 -- -m "$MODEL" -c "$CTX"
direct="http://127.0.0.1:$(cat "$WORK/one/node1.port")"
one_lb=$(cat "$WORK/one/url")
many_lb=$(cat "$WORK/many/url")

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: $REQUESTS completions (stream=$STREAM) x $MAX_TOKENS tokens, $CONCURRENCY clients; model $MODEL; $ROUNDS rounds"
"$PY" - "$ROUNDS" "$NODES" "$direct" "$one_lb" "$many_lb" "$REQUESTS" "$CONCURRENCY" "$MAX_TOKENS" "$STREAM" <<'PY'
import statistics, sys
sys.path.insert(0, "bench")
from cluster_load import run

rounds, nodes, direct, one_lb, many_lb = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6]
n, conc, max_tokens, stream = map(int, sys.argv[6:10])
setups = [("1 node, direct", direct), ("1 node, HAProxy", one_lb), (f"{nodes} nodes, HAProxy", many_lb)]
run(direct, 4, 2, 16)  # warm-up
table = {name: [] for name, _ in setups}
ratios = []
for r in range(rounds):
    for name, url in setups:
        res = run(url, n, conc, max_tokens, stream=bool(stream))
        if res["failed"]:
            sys.exit(f"{name}: {res['failed']} requests failed: {res['errors']}")
        table[name].append(res)
    tps = [table[name][-1]["output_tokens_per_s"] for name, _ in setups]
    ratios.append((tps[2] / tps[0], tps[2] / tps[1]))
    print(f"round {r + 1}: " + ", ".join(f"{name} {t:.0f} tok/s" for (name, _), t in zip(setups, tps)) +
          f"; {nodes} nodes / 1 node = {ratios[-1][0]:.2f}x (direct), {ratios[-1][1]:.2f}x (HAProxy)", flush=True)
print()
print("| setup | output tok/s (median of rounds) | req/s | TTFT p50 / p99 ms | TPOT p50 ms | end-to-end p50 / p99 ms |")
print("|---|---|---|---|---|---|")
for name, _ in setups:
    rs = table[name]
    med = lambda k: statistics.median(x[k] for x in rs)
    print(f"| {name} | {med('output_tokens_per_s'):.0f} | {med('requests_per_s'):.2f} | "
          f"{med('ttft_p50_ms'):.1f} / {med('ttft_p99_ms'):.1f} | {med('tpot_p50_ms'):.2f} | "
          f"{med('e2e_p50_ms'):.0f} / {med('e2e_p99_ms'):.0f} |")
print()
for k, vs in enumerate(("1 node direct", "1 node behind HAProxy")):
    print(f"{nodes} nodes / {vs}, per round: " + ", ".join(f"{x[k]:.2f}x" for x in ratios) +
          f"; median {statistics.median(x[k] for x in ratios):.2f}x")
print("requests per node (last round):", table[setups[2][0]][-1]["nodes"])
PY
