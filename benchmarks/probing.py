"""Query-adaptive probing against a fixed nprobe on one index and real queries: recall@10 of the cascade at
equal mean lists probed, and the time per query of each, measured in one run.

    python -m matryoshka.benchmarks.probing --index IDX --docs DOCS.npy --queries Q.npy --out DIR \
        [--lists 64,96,128,192]

DOCS.npy holds the vectors the index was built from, in its row order (the exact truth is computed over them);
k1 and k2 are the index's stored operating point.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from matryoshka import retrieval
from matryoshka.retrieval.first_pass import lists_probed, prune_lists
from matryoshka.retrieval.tuning import margin_for

from .data import normalize


def _best_ms(fn, n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1000.0 * best / n


def compare(index, queries: np.ndarray, truth: np.ndarray, lists: list[int], cap: int) -> list[dict]:
    """One row per (mean lists, fixed or adaptive): recall@10 against `truth` and ms per query in a batch."""
    p = index.params
    assigned = index.assigner.assign(index.codec.transform.apply(queries), cap)
    rows = []
    for n in lists:
        margin = margin_for(assigned, n, index.metric)
        for kind, opts in (("fixed", {"nprobe": n}), ("adaptive", {"nprobe": cap, "probe_margin": margin})):
            def search(opts=opts):
                return index.search_batch(queries, k=10, k1=p.k1, k2=p.k2, rerank=False, **opts).rows
            found = search()
            recall = float(np.mean([np.isin(t, f).mean() for t, f in zip(truth, found)]))
            probed = n if kind == "fixed" else lists_probed(prune_lists(assigned, margin, index.metric))
            rows.append({"kind": kind, "mean_lists": probed, "cap": cap if kind == "adaptive" else n,
                         "probe_margin": opts.get("probe_margin"), "k1": p.k1, "k2": p.k2, "recall_at_10": recall,
                         "ms_per_query": _best_ms(search, len(queries))})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.probing", description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--docs", required=True, help=".npy of the indexed vectors, in row order")
    ap.add_argument("--queries", required=True, help=".npy of query vectors")
    ap.add_argument("--out", required=True)
    ap.add_argument("--lists", default="64,96,128,192", help="mean lists probed to compare at")
    ap.add_argument("--cap", type=int, default=512, help="nprobe cap of the adaptive rows")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    index = retrieval.open_index(a.index, device="cpu", threads=a.threads)
    docs, queries = (np.load(f).astype(np.float32) for f in (a.docs, a.queries))
    if index.metric == "cosine":  # the index normalizes what it stores and every query
        docs, queries = normalize(docs), normalize(queries)
    mt = faiss.METRIC_L2 if index.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    _, truth = faiss.knn(queries, docs, 10, metric=mt)
    rows = compare(index, queries, truth, [int(x) for x in a.lists.split(",")], a.cap)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m matryoshka.benchmarks.probing " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {"command": command, "index": index.manifest.factory, "queries": len(queries), "threads": a.threads,
           "rows": rows}
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    for r in rows:
        print(f"{r['kind']:>8} {r['mean_lists']:6.1f} lists (cap {r['cap']}): recall@10 {r['recall_at_10']:.4f}, "
              f"{r['ms_per_query']:.3f} ms/query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
