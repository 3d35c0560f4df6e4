"""What HTTP costs: `matryoshka serve` against the same search in process, then the server under load.

    python -m matryoshka.benchmarks.serve_load INDEX --out results.json [--random 20000,384]

Starts a real server (a uvicorn subprocess on a free port), measures the p50 of `Index.search` for one vector query
at k 10 in this process and the same queries over HTTP one at a time (the difference is the server's overhead),
then a load test at 1, 8 and 32 concurrent clients (threads, one keep-alive httpx client each), each bounded by a
request count and a time limit, reporting p50 / p99 latency, queries per second and errors; `--workers 1,2` repeats
the load test on a server of each worker count. The clients run on the same machine as the server and take CPU
from it: on a small machine the QPS figures are a floor. `--random N,DIM` first builds a seeded random index at
INDEX when none is there.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from matryoshka import indexing, retrieval

from .metrics import percentiles_ms


def start_server(index: Path, *args: str, timeout: float = 120) -> tuple[subprocess.Popen, str, Path]:
    """(the process, its URL, its log) of `matryoshka serve INDEX` on a free port, once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix="serve-load-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "matryoshka.retrieval.cli", "serve", str(index), "--port", str(port),
           "--no-access-log", "--log-level", "warning", *args]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not answer within {timeout} s: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def in_process(index: retrieval.Index, queries: np.ndarray, k: int) -> tuple[list[float], list[list]]:
    """Seconds per `Index.search` and the ids found, one query at a time."""
    for q in queries[:20]:  # warm-up: imports, page faults
        index.search(q, k=k)
    seconds, ids = [], []
    for q in queries:
        t = time.perf_counter()
        hits = index.search(q, k=k)
        seconds.append(time.perf_counter() - t)
        ids.append([h.id for h in hits])
    return seconds, ids


def over_http(url: str, bodies: list[bytes]) -> tuple[list[float], list[list]]:
    """Seconds per POST /search (response parsed, as a client would) and the ids found, one at a time."""
    seconds, ids = [], []
    with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as c:
        for body in bodies[:20]:
            c.post("/search", content=body).raise_for_status()
        for body in bodies:
            t = time.perf_counter()
            r = c.post("/search", content=body)
            r.raise_for_status()
            hits = r.json()["hits"]
            seconds.append(time.perf_counter() - t)
            ids.append([h["id"] for h in hits])
    return seconds, ids


def over_http_lean(url: str, bodies: list[bytes]) -> list[float]:
    """Seconds per POST /search through the standard library's keep-alive HTTPConnection: the server's share
    of the overhead, with little of a Python client's own (httpx takes a few hundred microseconds a request)."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"content-type": "application/json"}
    seconds = []
    try:
        for i, body in enumerate(bodies[:20] + bodies):
            t = time.perf_counter()
            conn.request("POST", "/search", body, headers)
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError(f"POST /search answered {r.status}: {data[:200]!r}")
            json.loads(data)
            if i >= 20:
                seconds.append(time.perf_counter() - t)
    finally:
        conn.close()
    return seconds


def load(url: str, bodies: list[bytes], clients: int, max_requests: int, max_seconds: float) -> dict:
    """`clients` threads sending the bodies in turn until `max_requests` are sent or `max_seconds` pass."""
    counter = itertools.count()  # next() on it is atomic under the GIL: one request number per call

    def client(_: int) -> tuple[list[float], int]:
        seconds, errors = [], 0
        with httpx.Client(base_url=url, timeout=60, headers={"content-type": "application/json"}) as c:
            c.post("/search", content=bodies[0])  # connect before the clock runs
            start.wait(timeout=120)
            deadline = clock["began"] + max_seconds
            while (n := next(counter)) < max_requests and time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    failed = c.post("/search", content=bodies[n % len(bodies)]).status_code != 200
                except httpx.HTTPError:
                    failed = True
                if failed:
                    errors += 1
                else:
                    seconds.append(time.perf_counter() - t)
        return seconds, errors

    clock: dict[str, float] = {}
    # the clock starts when every client has connected: the barrier's action runs before any thread goes on
    start = threading.Barrier(clients + 1, action=lambda: clock.update(began=time.perf_counter()))
    with ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(client, i) for i in range(clients)]
        start.wait(timeout=120)
        done = [f.result() for f in running]
    elapsed = time.perf_counter() - clock["began"]
    seconds = [s for d in done for s in d[0]]
    p50, p99 = percentiles_ms(seconds)
    return {"clients": clients, "requests": len(seconds), "errors": sum(d[1] for d in done),
            "seconds": round(elapsed, 2), "qps": round(len(seconds) / elapsed, 1), "p50_ms": round(p50, 2),
            "p99_ms": round(p99, 2)}


def build_random(path: Path, n: int, dim: int) -> None:
    """A seeded random index (ids 0..n-1, no texts) at `path`."""
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    indexing.build(path, x, quiet=True)


def run(index_path: Path, k: int, n_queries: int, levels: list[int], max_requests: int, max_seconds: float,
        workers: list[int], threads: int | None) -> dict:
    load_at_start = os.getloadavg()[0]  # other work on the machine skews every figure: recorded with them
    index = retrieval.open_index(index_path)
    queries = np.random.default_rng(1).standard_normal((n_queries, index.full_dim)).astype(np.float32)
    bodies = [json.dumps({"vector": q.tolist(), "k": k}).encode() for q in queries]
    local_s, local_ids = in_process(index, queries, k)
    described = {key: index.info()[key] for key in ("count", "live", "full_dim", "index_dim", "factory", "model")}
    index.close()
    levels_out, http_s, http_ids, lean_s = [], None, None, []
    for w in workers:
        args = ["--workers", str(w)] + (["--threads", str(threads)] if threads else [])
        proc, url, log = start_server(index_path, *args)
        try:
            if http_s is None:  # the overhead on the first server (one worker, by default)
                http_s, http_ids = over_http(url, bodies)
                lean_s = over_http_lean(url, bodies)
            levels_out += [{"workers": w, **load(url, bodies, c, max_requests, max_seconds)} for c in levels]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.unlink(missing_ok=True)
    local_p50, local_p99 = percentiles_ms(local_s)
    http_p50, http_p99 = percentiles_ms(http_s)
    return {"index": {"path": str(index_path), **described}, "k": k, "queries": n_queries,
            "machine": {"cpus": os.cpu_count(), "load_average_at_start": round(load_at_start, 2)},
            "server_threads": threads,
            "in_process": {"p50_ms": round(local_p50, 3), "p99_ms": round(local_p99, 3)},
            "http_one_client": {"workers": workers[0], "p50_ms": round(http_p50, 3), "p99_ms": round(http_p99, 3)},
            "http_overhead_p50_ms": round(http_p50 - local_p50, 3),
            "http_stdlib_client": {"p50_ms": round(percentiles_ms(lean_s)[0], 3)},
            "http_overhead_p50_ms_stdlib_client": round(percentiles_ms(lean_s)[0] - local_p50, 3),
            "same_ids": sum(a == b for a, b in zip(local_ids, http_ids)) / n_queries,
            "load": levels_out}


def table(record: dict) -> str:
    """The load levels as a Markdown table."""
    rows = ["| workers | clients | requests | QPS | p50 ms | p99 ms | errors |", "|---:|---:|---:|---:|---:|---:|---:|"]
    rows += [f"| {r['workers']} | {r['clients']} | {r['requests']:,} | {r['qps']:,.0f} | {r['p50_ms']:.1f} | "
             f"{r['p99_ms']:.1f} | {r['errors']} |" for r in record["load"]]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", type=Path, help="index folder")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    ap.add_argument("--random", metavar="N,DIM", help="build a seeded random index of N x DIM at INDEX first, "
                                                      "when none is there")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=300, help="query vectors (seeded random), sent in turn")
    ap.add_argument("--clients", default="1,8,32", help="concurrent clients per load level, comma-separated")
    ap.add_argument("--max-requests", type=int, default=3000, help="requests per load level at most")
    ap.add_argument("--max-seconds", type=float, default=15, help="seconds per load level at most")
    ap.add_argument("--workers", default="1", help="the server's worker processes; several, comma-separated: one "
                                                   "server after the other")
    ap.add_argument("--threads", type=int, help="the server's CPU threads per process (default: every core)")
    a = ap.parse_args(argv)
    if a.random and not (a.index / "manifest.json").exists():
        n, dim = (int(v) for v in a.random.split(","))
        build_random(a.index, n, dim)
    record = run(a.index, a.k, a.queries, [int(c) for c in a.clients.split(",")], a.max_requests, a.max_seconds,
                 [int(w) for w in a.workers.split(",")], a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({key: v for key, v in record.items() if key != "load"}, indent=2))
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
