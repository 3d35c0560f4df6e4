"""Filtered search at scale: QPS and recall@10 at selectivities from 50% to one row, against exact search over
the passing rows, beside post-filtering an unfiltered search (the baseline), and both filtered paths timed;
also the time to evaluate a condition over every row, by DuckDB (SQL) and by pyarrow (an expression).

    python -m matryoshka.benchmarks.filtered --docs DOCS.npy --out DIR

DOCS.npy is a normalized float16 matrix made by `matryoshka bench` (ids are row numbers); the index is built
in DIR once with an integer attribute `bucket` = row * 7919 mod 1000 and `serial` = row, and reused after.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth
import pyarrow as pa
import pyarrow.compute as pc

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.retrieval.plan import Rules
from matryoshka.retrieval.filters import row_mask

from .data import normalize
from .synthetic import Synthetic

PREDICATES = [("50%", "bucket < 500"), ("5%", "bucket < 50"), ("0.5%", "bucket < 5"), ("one row", "serial = 123457")]
POST_DEPTH = 100  # the baseline keeps the passing rows among an unfiltered search's top 100


def exact(docs: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int = 10, block: int = 65536) -> np.ndarray:
    """(nq, min(k, len(rows))) exact top rows among `rows` by inner product with the stored vectors."""
    blocks = (np.asarray(docs[rows[lo:lo + block]], np.float32) for lo in range(0, len(rows), block))
    _, pos = knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks, k,
                              metric_type=faiss.METRIC_INNER_PRODUCT, ngpu=0)
    return rows[pos[:, :min(k, len(rows))]]


def recall(found: list[list], truth: np.ndarray) -> float:
    want = truth.shape[1]
    return float(np.mean([len(set(f[:want]) & set(t.tolist())) / want for f, t in zip(found, truth)]))


def timed(fn, repeat: int = 2):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    docs = np.load(a.docs, mmap_mode="r")
    n = len(docs)
    rows = np.arange(n)
    bucket = (rows * 7919) % 1000
    out = Path(a.out)
    t = time.perf_counter()
    indexing.build(out / "index", a.docs, attributes={"bucket": bucket, "serial": rows}, quiet=True)
    print(f"index ready ({time.perf_counter() - t:.0f} s)")
    index = retrieval.open_index(out / "index")
    queries = normalize(Synthetic(dim=docs.shape[1], matryoshka=False, clusters=a.clusters,
                                  seed=a.seed).queries(a.queries))
    attrs = pa.table({"bucket": bucket, "serial": rows})
    _, t_sql = timed(lambda: row_mask(attrs, "bucket < 50 AND serial >= 1000"), 3)
    _, t_expr = timed(lambda: row_mask(attrs, (pc.field("bucket") < 50) & (pc.field("serial") >= 1000)), 3)
    print(f"a condition over {n:,} rows: DuckDB (SQL) {t_sql * 1000:.0f} ms, pyarrow (expression) "
          f"{t_expr * 1000:.0f} ms")
    unfiltered, t_unf = timed(lambda: index.search_batch(queries, k=POST_DEPTH, k2=max(POST_DEPTH, index.params.k2)))
    results = {"params": index.params.to_dict(), "unfiltered_qps_at_depth_100": len(queries) / t_unf,
               "condition_ms": {"duckdb_sql": t_sql * 1000, "pyarrow_expression": t_expr * 1000}, "rows": []}
    masks = {"bucket < 500": bucket < 500, "bucket < 50": bucket < 50, "bucket < 5": bucket < 5,
             "serial = 123457": rows == 123457}
    for name, where in PREDICATES:
        passing = np.flatnonzero(masks[where])
        truth = exact(docs, passing, queries)
        row = {"selectivity": name, "where": where, "passing": len(passing)}
        for path, rules in (("default", Rules()), ("first pass", Rules(exact_filter_work=0, exact_filter_scan_ratio=0)),
                            ("exhaustive", Rules(exact_filter_work=1 << 62, exact_filter_scan_ratio=0))):
            index.search_batch(queries[:10], k=10, where=where)  # the predicate's bitmap, cached from here on
            res, secs = timed(lambda: index.search_batch(queries, k=10, where=where, rules=rules))
            row[path] = {"recall_at_10": recall(res.ids, truth), "qps": len(queries) / secs,
                         "exact": "first_pass" not in res.stage_scores}
        post = [[i for i in hits if i is not None and masks[where][i]][:10] for hits in unfiltered.ids]
        row["post_filter"] = {"recall_at_10": recall(post, truth), "qps": len(queries) / t_unf,
                              "mean_hits": float(np.mean([len(h) for h in post]))}
        results["rows"].append(row)
        print(json.dumps(row))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("| selectivity | passing | engine recall@10 | engine QPS | path | first pass QPS | exhaustive QPS "
          "| post-filter recall@10 | post-filter hits |\n|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        d = r["default"]
        print(f"| {r['selectivity']} | {r['passing']:,} | {d['recall_at_10']:.3f} | {d['qps']:,.0f} | "
              f"{'exhaustive' if d['exact'] else 'first pass'} | {r['first pass']['qps']:,.0f} "
              f"({r['first pass']['recall_at_10']:.3f}) | {r['exhaustive']['qps']:,.0f} | "
              f"{r['post_filter']['recall_at_10']:.3f} | {r['post_filter']['mean_hits']:.1f} |")
    print(f"unfiltered search at depth {POST_DEPTH}: {results['unfiltered_qps_at_depth_100']:,.0f} QPS")


if __name__ == "__main__":
    main()
