"""Exact top-k by brute-force inner product on the full vectors: the ground truth and the flat peer."""
from __future__ import annotations

import time

import faiss
import numpy as np

from .data import Dataset

IN_RAM_LIMIT = 8 << 30  # float32 bytes above which the flat index is streamed block by block
BLOCK = 262144


def fits_in_ram(ds: Dataset) -> bool:
    return ds.n * ds.dim * 4 <= IN_RAM_LIMIT


def flat_index(ds: Dataset) -> faiss.IndexFlatIP:
    """Every document as float32 in one IndexFlatIP (4 * dim bytes per vector in RAM)."""
    index = faiss.IndexFlatIP(ds.dim)
    for lo in range(0, ds.n, BLOCK):
        index.add(ds.block(lo, min(ds.n, lo + BLOCK)))
    return index


def exact_topk(ds: Dataset, k: int = 100, queries: np.ndarray | None = None,
               index: faiss.Index | None = None) -> tuple[np.ndarray, float]:
    """(rows (nq, k), search seconds). In RAM when it fits, else `faiss.contrib.exhaustive_search` over blocks."""
    q = np.ascontiguousarray(ds.queries if queries is None else queries, dtype=np.float32)
    k = min(k, ds.n)
    t = time.perf_counter()
    if index is not None or fits_in_ram(ds):
        index = index or flat_index(ds)
        t = time.perf_counter()
        _, rows = index.search(q, k)
        return rows, time.perf_counter() - t
    from faiss.contrib.exhaustive_search import knn_ground_truth
    blocks = (ds.block(lo, min(ds.n, lo + BLOCK)) for lo in range(0, ds.n, BLOCK))
    _, rows = knn_ground_truth(q, blocks, k, metric_type=faiss.METRIC_INNER_PRODUCT, ngpu=0)
    return rows, time.perf_counter() - t
