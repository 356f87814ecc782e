"""Closed-loop load client for Trinity's OpenAI routes (one node or HAProxy in front of several):
CONCURRENCY clients each send streaming completions back to back until REQUESTS are done.
Measured at the client, per docs/serving.md: requests/s, output tokens/s, and p50/p90/p99 of
time to first token, time per output token and end-to-end latency. Standard library only.

  python3 bench/cluster_load.py URL [--requests N] [--concurrency C] [--max-tokens T] [--no-stream] [--json]

--no-stream sends non-streaming requests (end-to-end latency only): the client then spends one JSON
parse per request instead of one per token, which matters when it shares the cores with the nodes.
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def one_request(host, port, max_tokens, prompt, stream=True):
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=600)
    try:
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = c.getresponse()
        if resp.status != 200:
            return {"ok": False, "error": f"HTTP {resp.status}: {resp.read()[:200]!r}"}
        if not stream:
            tokens = json.loads(resp.read())["usage"]["completion_tokens"]
            e2e = time.perf_counter() - t0
            return {"ok": True, "tokens": tokens, "ttft": float("nan"), "tpot": float("nan"), "e2e": e2e,
                    "node": resp.getheader("X-Trinity-Node")}
        ttft = None
        tokens = 0
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if line == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    return {"ok": False, "error": str(event["error"])}
                if event.get("choices") and event["choices"][0].get("text") and ttft is None:
                    ttft = time.perf_counter() - t0
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
        e2e = time.perf_counter() - t0
        if not done:
            return {"ok": False, "error": "stream ended without [DONE]"}
        ttft = ttft if ttft is not None else e2e
        tpot = (e2e - ttft) / (tokens - 1) if tokens > 1 else 0.0
        return {"ok": True, "tokens": tokens, "ttft": ttft, "tpot": tpot, "e2e": e2e,
                "node": resp.getheader("X-Trinity-Node")}
    except (OSError, http.client.HTTPException, ValueError) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        c.close()


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def run(url, n_requests, concurrency, max_tokens, stream=True, prompt="The river"):
    u = urllib.parse.urlsplit(url)
    results = []
    lock = threading.Lock()
    next_i = [0]

    def client():
        while True:
            with lock:
                if next_i[0] >= n_requests:
                    return
                next_i[0] += 1
            r = one_request(u.hostname, u.port, max_tokens, prompt, stream)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    out = {
        "url": url, "requests": n_requests, "concurrency": concurrency, "max_tokens": max_tokens, "stream": stream,
        "failed": len(results) - len(ok), "wall_s": wall,
        "requests_per_s": len(ok) / wall, "output_tokens_per_s": sum(r["tokens"] for r in ok) / wall,
        "nodes": {},
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
    }
    for r in ok:
        if r["node"]:
            out["nodes"][r["node"]] = out["nodes"].get(r["node"], 0) + 1
    for key in ("ttft", "tpot", "e2e"):
        for p in (50, 90, 99):
            out[f"{key}_p{p}_ms"] = 1000 * percentile([r[key] for r in ok], p)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT/TPOT)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    a = ap.parse_args()
    r = run(a.url, a.requests, a.concurrency, a.max_tokens, stream=not a.no_stream)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['url']}: {r['requests']} requests x {r['max_tokens']} tokens, concurrency {r['concurrency']}, "
              f"{r['failed']} failed")
        print(f"  {r['requests_per_s']:.2f} req/s, {r['output_tokens_per_s']:.1f} output tok/s")
        for key, name in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "end-to-end")):
            print(f"  {name} p50/p90/p99: {r[key + '_p50_ms']:.1f} / {r[key + '_p90_ms']:.1f} / "
                  f"{r[key + '_p99_ms']:.1f} ms")
    return 1 if r["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
