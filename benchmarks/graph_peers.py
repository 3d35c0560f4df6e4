"""The fastest in-RAM peers: ScaNN (anisotropic hashing + exact reordering) and usearch's HNSW with int8
vectors, measured like every other system (`measure`), with the RAM each really holds.

ScaNN's RAM is its serialized size (the hashed codes, the partitioner, and the float32 vectors it reorders
with); usearch's is its `memory_usage` (the graph and the int8 vectors)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .data import Dataset
from .measure import measure
from .metrics import Qrels
from .peers import _row, skipped

# (dims per block, leaves searched, reorder depth): the settings of issue 33's table and one deeper each
SCANN = ((4, 256, 200), (4, 512, 400), (2, 256, 200), (2, 512, 400))
USEARCH_EF = (64, 128, 256)


def run_scann(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, latency_queries: int, workdir: Path,
              threads: int) -> list[dict]:
    """ScaNN's documented recipe at a few settings: tree partitioning (sqrt(n) leaves), asymmetric hashing,
    reordering by the float32 vectors."""
    try:
        import scann
    except ImportError as e:
        return [skipped("scann", "n/a", ds, f"scann is not installed ({e}): pip install scann")]
    x = np.ascontiguousarray(ds.docs, np.float32)
    leaves = max(16, int(np.sqrt(ds.n)))
    rows = []
    for dims in sorted({d for d, _, _ in SCANN}):
        t = time.perf_counter()
        searcher = (scann.scann_ops_pybind.builder(x, 10, "dot_product")
                    .tree(num_leaves=leaves, num_leaves_to_search=64, training_sample_size=min(ds.n, 250_000))
                    .score_ah(dims, anisotropic_quantization_threshold=0.2).reorder(200).build())
        build_s = time.perf_counter() - t
        with tempfile.TemporaryDirectory(dir=workdir) as d:
            searcher.serialize(d)
            ram = sum(f.stat().st_size for f in Path(d).iterdir()) / ds.n
        for _, search_leaves, reorder in (s for s in SCANN if s[0] == dims):
            def search(q, k):
                rows, _ = searcher.search_batched_parallel(np.ascontiguousarray(q, np.float32), final_num_neighbors=k,
                                                           leaves_to_search=search_leaves,
                                                           pre_reorder_num_neighbors=max(reorder, k))
                return np.asarray(rows, np.int64)
            m = measure(search, ds.queries, truth, qrels, latency_queries)
            rows.append(_row("scann", f"AH {dims} dims/block, leaves {search_leaves}/{leaves}, reorder {reorder}",
                             ds, ram, 0.0, ram, build_s, m))
    return rows


def run_usearch(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, latency_queries: int,
                threads: int) -> list[dict]:
    """usearch's HNSW (connectivity 32) over int8 vectors, at a few expansion depths."""
    try:
        from usearch.index import Index
    except ImportError as e:
        return [skipped("usearch", "n/a", ds, f"usearch is not installed ({e}): pip install usearch")]
    t = time.perf_counter()
    index = Index(ndim=ds.dim, metric="ip", dtype="i8", connectivity=32, expansion_add=128)
    index.add(np.arange(ds.n), np.ascontiguousarray(ds.docs, np.float32), threads=threads)
    build_s = time.perf_counter() - t
    ram = index.memory_usage / ds.n
    rows = []
    for ef in USEARCH_EF:
        index.expansion_search = ef

        def search(q, k):
            return np.asarray(index.search(np.ascontiguousarray(q, np.float32), k, threads=threads).keys, np.int64)
        m = measure(search, ds.queries, truth, qrels, latency_queries)
        rows.append(_row("usearch-hnsw-i8", f"M32,i8,ef={ef}", ds, ram, 0.0, ram, build_s, m))
    return rows
