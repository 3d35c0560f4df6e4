"""Dense, lexical and hybrid retrieval on a real labelled task, with and without the int8 / full re-scoring,
beside BM25 alone (bm25s) and exact dense search over the full vectors.

The tasks are `text_corpus`'s held-out ones: GCIDE (a held-out sense of a word; its other senses are relevant)
and the standard library's docstrings (a held-out paragraph of an object; its other paragraphs are relevant).

    python -m matryoshka.benchmarks.hybrid --corpus gcide --limit 120000 --queries 500 \
        --work ~/.cache/matryoshka-bench/gcide --out benchmarks/results/hybrid-gcide.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from matryoshka import indexing, retrieval

from .metrics import label_recall, ndcg_at_10
from .text_corpus import encode_cached, gcide_groups, held_out_task, stdlib_groups

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
K = 100
CONDITIONS = [  # name, search options
    ("dense (cascade)", dict(mode="dense")),
    ("dense, first pass only", dict(mode="dense", int8=False, full=False)),
    ("lexical (BM25, tantivy)", dict(mode="lexical")),
    ("hybrid rrf (cascade)", dict(mode="hybrid", fusion="rrf", lexical_weight=1.0)),
    ("hybrid rrf, first pass only", dict(mode="hybrid", fusion="rrf", lexical_weight=1.0, int8=False, full=False)),
    ("hybrid rrf 0.5 (cascade)", dict(mode="hybrid", fusion="rrf", lexical_weight=0.5)),
    ("hybrid weighted 0.25 (cascade)", dict(mode="hybrid", fusion="weighted", lexical_weight=0.25)),
    ("hybrid weighted 0.5 (cascade)", dict(mode="hybrid", fusion="weighted", lexical_weight=0.5)),
    ("hybrid weighted 1.0 (cascade)", dict(mode="hybrid", fusion="weighted", lexical_weight=1.0)),
    ("hybrid weighted 0.5, first pass only", dict(mode="hybrid", fusion="weighted", lexical_weight=0.5, int8=False,
                                                  full=False)),
]


def task(corpus: str, limit: int, n_queries: int, work: Path):
    groups, texts = gcide_groups() if corpus == "gcide" else stdlib_groups()
    docs, queries, qrels = held_out_task(groups, texts, limit, n_queries)
    return docs, queries, qrels, encode_cached(docs, work, MODEL), encode_cached(queries, work, MODEL)


def rows_of(result: retrieval.SearchResult) -> np.ndarray:
    return result.rows


def timed(index, queries: list[str], q: np.ndarray, opts: dict, singles: int) -> tuple[np.ndarray, float, float]:
    """(rows (nq, K), batch QPS, single-query p50 ms) of one condition."""
    texts = opts.get("mode") == "lexical"
    arg = queries if texts else q
    extra = {} if texts else {"query_texts": queries}
    index.search_batch(arg[:20], k=K, **({} if texts else {"query_texts": queries[:20]}), **opts)  # warm
    t = time.perf_counter()
    rows = index.search_batch(arg, k=K, **extra, **opts).rows
    qps = len(queries) / (time.perf_counter() - t)
    lat = []
    for i in range(singles):
        t = time.perf_counter()
        index.search_batch(arg[i:i + 1], k=K, **({} if texts else {"query_texts": queries[i:i + 1]}), **opts)
        lat.append(time.perf_counter() - t)
    return rows, qps, 1e3 * float(np.median(lat))


def bm25s_rows(docs: list[str], queries: list[str]) -> tuple[np.ndarray, float, float]:
    import bm25s
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(docs, stopwords="en", show_progress=False), show_progress=False)
    t = time.perf_counter()
    found, _ = retriever.retrieve(bm25s.tokenize(queries, stopwords="en", show_progress=False), k=K,
                                  show_progress=False, n_threads=1)
    qps = len(queries) / (time.perf_counter() - t)
    return np.asarray(found, np.int64), qps, float("nan")


def exact_rows(x: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, float, float]:
    import faiss
    t = time.perf_counter()
    _, found = faiss.knn(q.astype(np.float32), x.astype(np.float32), K, metric=faiss.METRIC_INNER_PRODUCT)
    return found, len(q) / (time.perf_counter() - t), float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=("gcide", "stdlib"), default="gcide")
    p.add_argument("--limit", type=int, default=120_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--singles", type=int, default=100, help="queries timed one at a time (p50)")
    p.add_argument("--work", default=os.path.expanduser("~/.cache/matryoshka-bench/hybrid"))
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    work = Path(a.work)
    docs, queries, qrels, x, q = task(a.corpus, a.limit, a.queries, work)
    folder = work / f"hybrid-{a.corpus}-{len(docs)}"
    t = time.perf_counter()
    indexing.build(folder, x, ids=np.arange(len(docs)), texts=docs, lexical=True, quiet=True)
    built = time.perf_counter() - t
    rows = []
    with retrieval.open_index(folder) as index:
        info = index.info()
        for name, opts in CONDITIONS:
            found, qps, p50 = timed(index, queries, q, opts, a.singles)
            rows.append(dict(condition=name, **_scores(found, qrels), qps_batch=qps, p50_ms=p50))
            print(rows[-1], flush=True)
    for name, fn in (("BM25 alone (bm25s, peer)", lambda: bm25s_rows(docs, queries)),
                     ("exact dense, full vectors (ceiling)", lambda: exact_rows(x, q))):
        found, qps, p50 = fn()
        rows.append(dict(condition=name, **_scores(found, qrels), qps_batch=qps, p50_ms=p50))
        print(rows[-1], flush=True)
    lexical_bytes = info["stores"]["lexical"]["bytes"]
    report = {"corpus": a.corpus, "docs": len(docs), "queries": len(queries), "labelled": len(qrels),
              "model": MODEL, "cache": "warm (every store in the page cache)", "build_seconds": built,
              "lexical_bytes": lexical_bytes, "lexical_bytes_per_doc": lexical_bytes / len(docs),
              "lexical_resident": "memory-mapped by tantivy (page cache), nothing held by the process",
              "factory": info["factory"], "operating_point": info["operating_point"], "rows": rows,
              "command": "python -m matryoshka.benchmarks.hybrid " + " ".join(argv or sys.argv[1:])}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1, default=float))
    return 0


def _scores(found: np.ndarray, qrels: dict) -> dict:
    return {"ndcg_at_10": ndcg_at_10(found, qrels), "recall_at_100": label_recall(found, qrels, K)}


if __name__ == "__main__":
    sys.exit(main())
