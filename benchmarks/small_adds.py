"""Search cost after many small adds, against a fresh build of the same documents (issue: fifty adds of ten rows
took an index from 3 shards to 53 and a 240-query batch from 32 to 561 ms).

    python -m matryoshka.benchmarks.small_adds [--n 240000] [--dim 384] [--shard-size 100000] [--adds 50] [--rows 10]

Builds a synthetic index (warm page cache: every store fits in RAM here), then adds `adds` batches of `rows`
documents, then compacts, and times one batch of 240 queries at a fixed setting after each step (best of 5
after an untimed run), with the shard counts; the fresh index of all the documents is the reference.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from matryoshka import indexing
from matryoshka import retrieval
from .synthetic import Synthetic

SETTING = dict(k=10, nprobe=16, k1=200, k2=20, rerank=False)


def batch_ms(path: Path, queries: np.ndarray) -> tuple[float, int]:
    """(best ms for the batch, shards) of the index at `path`."""
    with retrieval.open_index(path) as index:
        index.search_batch(queries, **SETTING)
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            index.search_batch(queries, **SETTING)
            best = min(best, time.perf_counter() - t)
        return best * 1e3, len(index.manifest.shards)


def run(n: int, dim: int, shard_size: int, adds: int, rows: int, work: Path) -> dict:
    s = Synthetic(dim=dim, clusters=1024, seed=5)
    docs, extra, queries = s.documents(n), s.documents(adds * rows + n)[n:], s.queries(240)
    opts = dict(shard_size=shard_size, quiet=True, tune=False, select=False, nlist=1024)
    indexing.build(work / "live", docs, **opts)
    out = {"n": n, "dim": dim, "shard_size": shard_size, "adds": adds, "rows_per_add": rows,
           "cache": "warm (every store in the page cache)", "setting": SETTING}
    out["built"] = batch_ms(work / "live", queries)
    t = time.perf_counter()
    for i in range(adds):
        indexing.add(work / "live", extra[i * rows:(i + 1) * rows], quiet=True)
    out["add_seconds_each"] = (time.perf_counter() - t) / adds
    out["after_adds"] = batch_ms(work / "live", queries)
    indexing.compact(work / "live", quiet=True)
    out["after_compact"] = batch_ms(work / "live", queries)
    indexing.build(work / "fresh", np.vstack([docs, extra]), **opts)
    out["fresh"] = batch_ms(work / "fresh", queries)
    out["after_adds_vs_fresh"] = out["after_adds"][0] / out["fresh"][0]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--adds", type=int, default=50)
    ap.add_argument("--rows", type=int, default=10)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "small-adds.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="small-adds-") as work:
        record = run(a.n, a.dim, a.shard_size, a.adds, a.rows, Path(work))
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
