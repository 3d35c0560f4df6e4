"""Resident memory of an opened index, measured: anonymous RSS of a fresh process before and after opening.

    python -m benchmarks.open_memory DIR [DIR ...] [--queries 1000] [--out results.json]

Memory-mapped stores are file-backed, so they do not count; what is left is what must fit in RAM: the
first-pass codes and ids, the centroids, the transform, and faiss's own tables. Fixed per-process costs
(importing torch, Arrow's first Parquet read) are paid before the baseline, so the figure scales with n. A batch of queries is run
after opening, so that anything allocated lazily on the first search is counted too.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, sys
import numpy as np

def anon():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) * 1024

import pyarrow as pa, pyarrow.parquet as pq, torch  # noqa: F401 - fixed per-process costs, not the index
import retrieval
from pathlib import Path
pq.read_table(next(Path(sys.argv[1]).glob("shards/*/ids.parquet")))  # Arrow's one-time thread and pool setup
pa.default_memory_pool().release_unused()
base = anon()
index = retrieval.open_index(sys.argv[1], threads=1)
opened = anon()
q = np.random.default_rng(0).standard_normal((int(sys.argv[2]), index.full_dim)).astype(np.float32)
index.search_batch(q, k=10)
searched = anon()
print(json.dumps({"count": index.count, "shards": len(index.shards), "metric": index.metric,
                  "factory": index.manifest["factory"], "open_bytes": opened - base,
                  "after_search_bytes": searched - base, "info_ram_bytes_per_vector": index.info()["ram_bytes_per_vector"]}))
"""


def measure(path: Path, queries: int) -> dict:
    """Open `path` in a fresh interpreter and return what it holds in anonymous memory."""
    p = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(queries)], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"opening {path} failed:\n{p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["path"] = str(path)
    r["open_bytes_per_vector"] = round(r["open_bytes"] / r["count"], 1)
    r["after_search_bytes_per_vector"] = round(r["after_search_bytes"] / r["count"], 1)
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
              f"{r['open_bytes_per_vector']} B/vector after opening, {r['after_search_bytes_per_vector']} after "
              f"a search batch (info() says {r['info_ram_bytes_per_vector']:.1f})")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
