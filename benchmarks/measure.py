"""Timing one searcher the same way for every system: batch QPS, single-query p50/p99, quality."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .metrics import Qrels, percentiles_ms, quality
from .resources import peak_rss

Search = Callable[[np.ndarray, int], np.ndarray]  # (queries, k) -> rows (nq, k)


def measure(search: Search, queries: np.ndarray, truth: np.ndarray, qrels: Qrels | None,
            latency_queries: int = 100, repeats: int = 3) -> dict:
    """Batch search of every query at k=10 (timed), one query at a time for latency, k=100 again if labelled.

    The timed batches follow an untimed one, so every system and setting is timed in the same steady state: the
    page cache holds the rows its queries read (else the first setting measured pays for every later one).
    QPS is the best of `repeats` batches: on a shared machine one batch was seen to run at half speed."""
    search(queries, 10)
    batch_s = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        rows = search(queries, 10)
        batch_s = min(batch_s, time.perf_counter() - t)
    lat = []
    for i in range(min(latency_queries, len(queries))):
        t = time.perf_counter()
        search(queries[i:i + 1], 10)
        lat.append(time.perf_counter() - t)
    p50, p99 = percentiles_ms(lat)
    out = quality(rows, truth, None)
    if qrels:
        deep = search(queries, 100)
        out.update({k: v for k, v in quality(deep, truth, qrels).items() if k != "recall_at_10"})
    out.update({"qps": len(queries) / batch_s if batch_s > 0 else float("inf"), "batch_seconds": batch_s,
                "batch_repeats": repeats, "p50_ms": p50, "p99_ms": p99, "latency_queries": len(lat),
                "peak_rss_bytes": peak_rss()})
    return out
