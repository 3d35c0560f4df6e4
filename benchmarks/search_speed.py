"""Queries per second of an opened index, for the whole cascade and for the first pass alone.

    python -m matryoshka.benchmarks.search_speed IDX --data VECTORS.npy [--queries 1000] [--points 8/200,32/500/50]
        [--batches 1000] [--threads 2]

Queries are rows of the index's own input with a little noise. Points are nprobe/k1 or nprobe/k1/k2. With
several batch sizes, the queries are searched in batches of each size in turn (the cascade's QPS only). Each
figure is the best of three runs. Meant for before/after comparisons on one machine (run both in one session
and compare ratios).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from matryoshka import retrieval
def best_of(fn, repeats: int = 3) -> tuple[float, object]:
    """(the fastest of `repeats` runs of fn() in seconds, that run's result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        r = fn()
        s = time.perf_counter() - t
        if s < best:
            best, out = s, r
    return best, out


def best_seconds(fn, repeats: int = 3) -> float:
    return best_of(fn, repeats)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index")
    ap.add_argument("--data", required=True, help="the .npy the index was built from (queries are noisy rows)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--points", default="8/200,32/500", help="nprobe/k1 pairs, comma-separated")
    ap.add_argument("--batches", default="", help="batch sizes, comma-separated (default: all queries at once)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    index = retrieval.open_index(a.index, threads=a.threads)
    x = np.load(a.data, mmap_mode="r")
    rng = np.random.default_rng(0)
    q = x[np.sort(rng.choice(len(x), a.queries, replace=False))].astype(np.float32)
    q += 0.05 * rng.standard_normal(q.shape).astype(np.float32)
    index.search_batch(q[:100], k=10)  # warm up
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {a.threads} threads, {a.queries} queries")
    for point in a.points.split(","):
        depths = dict(zip(("nprobe", "k1", "k2"), (int(v) for v in point.split("/"))))
        if a.batches:
            for b in (int(v) for v in a.batches.split(",")):
                secs = best_seconds(lambda: [index.search_batch(q[lo:lo + b], k=10, **depths)
                                             for lo in range(0, len(q), b)])
                print(f"{point}: batches of {b}: cascade {a.queries / secs:,.0f} QPS")
            continue
        cascade = best_seconds(lambda: index.search_batch(q, k=10, **depths))
        first = best_seconds(lambda: index.search_batch(q, k=10, nprobe=depths["nprobe"], k1=10, int8=False,
                                                        full=False))
        print(f"{point}: cascade {a.queries / cascade:,.0f} QPS, first pass alone {a.queries / first:,.0f} QPS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
