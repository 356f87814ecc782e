"""Load client for the cluster tests (tests/e2e/cluster_*.sh): OpenAI requests through HAProxy,
streaming and not, recording for each one its status, the node that answered (X-Trinity-Node) and
whether it completed. Standard library only.

A request "succeeds" when it gets 200 and a complete body: JSON with `usage` for a non-streaming
one, SSE ending in `data: [DONE]` for a stream. A stream cut by a dead node must surface as an
error (the chunked body ends early), never as a short but apparently complete answer.
"""
import csv
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request


class Result:
    def __init__(self, stream):
        self.stream = stream
        self.status = None  # HTTP status, None when no response arrived
        self.node = None  # X-Trinity-Node
        self.ok = False
        self.done = False  # a stream saw data: [DONE]
        self.error = None  # what went wrong, for the test's message
        self.tokens = 0

    def __repr__(self):
        return (f"Result(stream={self.stream}, status={self.status}, node={self.node}, ok={self.ok}, "
                f"done={self.done}, tokens={self.tokens}, error={self.error!r})")


def _conn(url, timeout):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def complete(url, stream=False, max_tokens=16, prompt="The river", chat=False, on_headers=None, timeout=120):
    """One request through `url`. on_headers(result) is called once the response headers are in
    (for a stream: while it is still generating)."""
    r = Result(stream)
    body = {"max_tokens": max_tokens, "ignore_eos": True, "stream": stream, "temperature": 0}
    if chat:
        path = "/v1/chat/completions"
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        path = "/v1/completions"
        body["prompt"] = prompt
    if stream:
        body["stream_options"] = {"include_usage": True}
    c = _conn(url, timeout)
    try:
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = c.getresponse()
        r.status = resp.status
        r.node = resp.getheader("X-Trinity-Node")
        if on_headers:
            on_headers(r)
        if not stream or resp.status != 200:
            data = resp.read()
            if resp.status != 200:
                r.error = data.decode(errors="replace")[:300]
                return r
            r.tokens = json.loads(data)["usage"]["completion_tokens"]
            r.ok = True
            return r
        buf = b""
        while True:
            # read1, not readline: readline ends quietly at a cut, read1 raises IncompleteRead when
            # the chunked body ends without its last chunk, as it does when a node dies mid-stream.
            data = resp.read1(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                line = line.strip()
                if line == b"data: [DONE]":
                    r.done = True
                elif line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        r.error = event["error"]
                    if event.get("usage"):
                        r.tokens = event["usage"]["completion_tokens"]
        r.ok = r.done and r.error is None
        if not r.done and r.error is None:
            r.error = "stream ended without data: [DONE]"
    except (OSError, http.client.HTTPException, ValueError) as e:
        r.error = f"{type(e).__name__}: {e}"
    finally:
        c.close()
    return r


def run_load(url, n_requests, concurrency, stream_every=3, **kw):
    """n_requests requests from `concurrency` threads; every stream_every-th one streams and every
    other one is a chat request. Returns the results in request order."""
    results = [None] * n_requests
    next_i = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n_requests:
                return
            results[i] = complete(url, stream=(stream_every > 0 and i % stream_every == 0), chat=(i % 2 == 1), **kw)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class Background:
    """Workers that send requests back to back until stop(); results collected in order of
    completion."""

    def __init__(self, url, concurrency, **kw):
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(i, url, kw)) for i in range(concurrency)]
        for t in self._threads:
            t.start()

    def _work(self, w, url, kw):
        i = 0
        while not self._stop.is_set():
            r = complete(url, stream=(i + w) % 2 == 0, chat=(i % 3 == 0), **kw)
            i += 1
            with self._lock:
                self.results.append(r)

    def count(self):
        with self._lock:
            return len(self.results)

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()
        return self.results


def get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(node_url, name):
    """A gauge or counter (summed over labels) from a node's /metrics."""
    _, text = get(node_url + "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def haproxy_states(stats_url):
    """{"node1": "UP", "node2": "DOWN", ...} from HAProxy's statistics CSV."""
    _, text = get(stats_url + "/stats;csv")
    out = {}
    for r in csv.reader(text.splitlines()):
        if len(r) > 17 and r[0] == "trinity_nodes" and r[1] not in ("BACKEND", "FRONTEND"):
            out[r[1]] = r[17]
    return out


def backend_stat(stats_url, column):
    """A counter of the whole backend from HAProxy's statistics CSV (wretr: retries, wredis:
    redispatches, ...)."""
    _, text = get(stats_url + "/stats;csv")
    rows = list(csv.reader(text.splitlines()))
    col = [c.strip("# ") for c in rows[0]].index(column)
    for r in rows[1:]:
        if r[0] == "trinity_nodes" and r[1] == "BACKEND":
            return int(r[col] or 0)
    raise AssertionError("no trinity_nodes backend in HAProxy's statistics")


def wait_for(what, predicate, timeout_s=60, step_s=0.05):
    """Polls predicate() until true; a generous bound so that a loaded machine only slows the test."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def cluster_info(state_dir):
    """URLs and node ports of a cluster started by deploy/cluster.sh --dir state_dir."""
    def read(name):
        with open(f"{state_dir}/{name}") as f:
            return f.read().strip()
    n = int(read("nodes"))
    return {
        "url": read("url"),
        "stats_url": read("stats_url"),
        "nodes": {f"node{i}": f"http://127.0.0.1:{read(f'node{i}.port')}" for i in range(1, n + 1)},
        "pids": {f"node{i}": int(read(f"node{i}.pid")) for i in range(1, n + 1)},
    }


def process_exited(pid):
    """True once pid has exited (a zombie counts: the nodes' parent, deploy/cluster.sh, is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
