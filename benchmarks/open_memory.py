"""Resident memory of an opened index, measured: anonymous RSS of a fresh process before and after opening.

    python -m matryoshka.benchmarks.open_memory DIR [DIR ...] [--queries 1000] [--out results.json]

Memory-mapped stores are file-backed, so they do not count; what is left is what must fit in RAM: the
first-pass codes and ids, the centroids, the transform, and faiss's own tables. The index is opened twice
and the second opening is measured, so that one-time costs (imports, Arrow's thread pools) do not count.
What one batch of queries leaves on the heap (working buffers the allocator keeps) is reported apart: it
depends on the batch and the depths, not on n. A batch of queries is run
after opening, so that anything allocated lazily on the first search is counted too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import ctypes, json, sys
import numpy as np

def anon():  # resident anonymous memory once freed heap is handed back (glibc), so slack does not count
    ctypes.CDLL(None).malloc_trim(0)
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) * 1024

from matryoshka import retrieval
warm = retrieval.open_index(sys.argv[1], threads=1)  # pays the one-time costs: imports, Arrow's thread pools
base = anon()
index = retrieval.open_index(sys.argv[1], threads=1)
opened = anon()
del warm
before_search = anon()
q = np.random.default_rng(0).standard_normal((int(sys.argv[2]), index.full_dim)).astype(np.float32)
index.search_batch(q, k=10)
searched = anon()
print(json.dumps({"count": index.count, "shards": len(index.backend.shards), "metric": index.metric,
                  "factory": index.manifest.factory, "open_bytes": opened - base,
                  "search_heap_bytes": searched - before_search,
                  "info_ram_bytes_per_vector": index.info()["ram_bytes_per_vector"]}))
"""


def measure(path: Path, queries: int) -> dict:
    """Open `path` in a fresh interpreter and return what it holds in anonymous memory."""
    p = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(queries)], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"opening {path} failed:\n{p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["path"] = str(path)
    r["open_bytes_per_vector"] = round(r["open_bytes"] / r["count"], 1)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("indexes", nargs="+", type=Path)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    rows = [measure(p, a.queries) for p in a.indexes]
    for r in rows:
        print(f"{r['path']}: {r['count']:,} vectors, {r['shards']} shard(s), {r['metric']}, {r['factory']}: "
              f"{r['open_bytes_per_vector']} B/vector resident after opening (info() says "
              f"{r['info_ram_bytes_per_vector']:.1f}); a batch of {a.queries} queries left "
              f"{r['search_heap_bytes'] / 2**20:.0f} MiB more on the heap")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
