"""`matryoshka demo`: index the Python standard library's docstrings with all-MiniLM-L6-v2 and search them."""
from __future__ import annotations

import sys
import time

import faiss
import numpy as np

from matryoshka.indexing import BuildOptions, build_index
from matryoshka.retrieval.api import tune_new_index
from matryoshka.indexing.stdlib_docs import stdlib_passages
from matryoshka.indexing.text_source import TextSource
from matryoshka.core.encoder import DEFAULT_MODEL
from matryoshka.core.errors import RerankerUnavailable
from matryoshka.core.vectors import recall_at
from matryoshka.rerank.cross_encoder import DEFAULT_RERANKER, CrossEncoderReranker

from .api import open_index

QUERIES = [
    "how do I parse command line arguments",
    "compress a file with gzip",
    "send an email through an SMTP server",
    "run a shell command and capture its output",
    "read rows from a CSV file",
]


def run_demo(out: str = "matryoshka-demo-index", limit: int | None = None, reranker: str | None = DEFAULT_RERANKER,
             k: int = 5, quiet: bool = False) -> dict:
    """Build (or reuse) the demo index, answer the sample queries, print hits and each stage's scores."""
    t0 = time.perf_counter()
    ids, texts = stdlib_passages(limit)
    print(f"corpus: {len(texts):,} docstring passages of the Python {sys.version.split()[0]} standard library")
    source = TextSource(texts, ids, DEFAULT_MODEL)
    # 4-bit fast-scan PQ trains on ~10k vectors; 8-bit PQ32 would want 10k training points for itself alone.
    opts = BuildOptions(index_dim=256, transform="auto", pq_bytes=32, fast_scan=True, shard_size=4000, quiet=quiet)
    build_index(out, source, opts, finish=tune_new_index)
    print(f"index: {out} (built or reused in {time.perf_counter() - t0:.1f} s)")
    rr = None
    if reranker:
        try:
            rr = CrossEncoderReranker(reranker)
        except RerankerUnavailable as e:
            print(f"note: cross-encoder stage off: {e}")
    index = open_index(out, reranker=rr)
    sel = index.manifest.transform["selection"]
    print(f"shortening: {sel['chosen']} {index.full_dim} -> {index.index_dim} dims "
          f"(neighbours kept in the short space: {sel.get('recall_at_10_in_short_space', 'n/a')})")
    t = time.perf_counter()
    result = index.search_batch(QUERIES, k=k)
    elapsed = time.perf_counter() - t
    for q, hits in zip(QUERIES, result):
        print(f"\nquery: {q}")
        for rank, h in enumerate(hits, 1):
            stages = "  ".join(f"{s}={v:.3f}" for s, v in h.scores.items())
            print(f"  {rank}. {h.id}\n     {h.text[:110]}\n     {stages}")
    exact = _exact_recall(index, QUERIES, result, k)
    print(f"\n{len(QUERIES)} queries in {elapsed * 1000:.0f} ms (including encoding); recall@{k} of the cascade "
          f"against exact full-dim search: {exact:.2f}")
    return {"recall": exact, "seconds": time.perf_counter() - t0}


def _exact_recall(index, queries, result, k) -> float:
    q = index.encode(queries)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    live = index.backend.live_rows()
    _, gt = faiss.knn(q, index.backend.full_vectors(live), k, metric=faiss.METRIC_INNER_PRODUCT)
    gt = live[gt]
    rows = result.rows if "rerank" not in result.stage_scores else None
    if rows is None:  # with a cross-encoder the final order is its own; compare the full-dim stage instead
        rows = index.search_batch(queries, k=k, rerank=False).rows
    return recall_at(rows, gt, k)

