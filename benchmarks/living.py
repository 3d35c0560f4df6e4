"""What changes cost on a large index, measured on a copy of it: delete latency, add throughput, compaction
time, and recall@10 at the index's default operating point against exact search over the live documents,
after each step.

    python -m matryoshka.benchmarks.living --index IDX --docs DOCS.npy --out DIR [--delete 0.1] [--add 100000]

DOCS.npy is the file the index was built from (its ids are its row numbers), made by `matryoshka bench` with
the synthetic generator; the added documents and the queries are further rows of that generator.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth

from matryoshka import indexing
from matryoshka import retrieval
from .data import normalize
from .synthetic import Synthetic

POOL = 200  # exact neighbours kept per query: the live top 10 is within them whatever 10% is deleted


def exact_pool(docs: np.ndarray, added: np.ndarray, queries: np.ndarray, block: int = 65536) -> np.ndarray:
    """(nq, POOL) ids of the exact nearest documents by inner product over docs (ids = rows) and added (ids
    after them)."""
    n = len(docs)
    blocks = (np.concatenate([np.asarray(docs[lo:min(lo + block, n)], np.float32),
                              np.asarray(added[max(lo - n, 0):max(lo + block - n, 0)], np.float32)])
              for lo in range(0, n + len(added), block))
    return knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks, POOL,
                            metric_type=faiss.METRIC_INNER_PRODUCT, ngpu=0)[1]


def measure(root: Path, queries: np.ndarray, pool: np.ndarray, live: np.ndarray) -> dict:
    """Recall@10 against the exact top 10 of the live documents, and QPS (best of 2), at the defaults."""
    index = retrieval.open_index(root)
    truth = [row[live[row]][:10] for row in pool]
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        found = index.search_batch(queries, k=10).ids
        best = min(best, time.perf_counter() - t)
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))
    return {"recall_at_10": recall, "qps": len(queries) / best, "live": index.live, "dead": index.count - index.live,
            "generation": index.generation, "params": index.params.to_dict()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="a built index (copied, never changed)")
    p.add_argument("--docs", required=True, help="the .npy it was built from")
    p.add_argument("--out", required=True, help="folder for the copy and results.json")
    p.add_argument("--delete", type=float, default=0.1, help="share of the documents deleted")
    p.add_argument("--add", type=int, default=100_000, help="documents added")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--clusters", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    work = out / "index"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(a.index, work)
    docs = np.load(a.docs, mmap_mode="r")
    n = len(docs)
    gen = Synthetic(dim=docs.shape[1], matryoshka=False, clusters=a.clusters, seed=a.seed)
    queries = normalize(gen.queries(a.queries))
    added = normalize(gen.rows(n, n + a.add))
    t = time.perf_counter()
    pool = exact_pool(docs, added, queries)
    print(f"exact neighbours of {a.queries} queries over {n + a.add:,} documents: {time.perf_counter() - t:.1f} s")
    live = np.zeros(n + a.add, bool)
    live[:n] = True
    steps = {"built": measure(work, queries, pool, live)}

    dead = np.sort(np.random.default_rng(1).choice(n, int(a.delete * n), replace=False))
    singles = []
    for i in dead[:5]:  # one id per call: the latency of a single delete
        t = time.perf_counter()
        indexing.delete(work, [int(i)], quiet=True)
        singles.append(time.perf_counter() - t)
    t = time.perf_counter()
    indexing.delete(work, dead[5:].tolist(), quiet=True)
    bulk = time.perf_counter() - t
    live[dead] = False
    steps["deleted"] = {**measure(work, queries, pool, live), "seconds": bulk, "ids": len(dead) - 5,
                        "single_id_seconds_median": float(np.median(singles))}

    t = time.perf_counter()
    rec = indexing.add(work, added, quiet=True)
    seconds = time.perf_counter() - t
    live[n:] = True
    steps["added"] = {**measure(work, queries, pool, live), "seconds": seconds, "vectors_per_second": a.add / seconds,
                      "drift": rec["drift"], "warning": rec["warning"]}

    t = time.perf_counter()
    rec = indexing.compact(work, min_dead=a.delete / 2, quiet=True)
    steps["compacted"] = {**measure(work, queries, pool, live), "seconds": time.perf_counter() - t,
                          "removed_rows": rec["removed_rows"], "shards_rewritten": len(rec["rewritten"])}
    (out / "results.json").write_text(json.dumps(steps, indent=2))
    print("| step | live | deleted | recall@10 | QPS | seconds |\n|---|---|---|---|---|---|")
    for name, s in steps.items():
        print(f"| {name} | {s['live']:,} | {s['dead']:,} | {s['recall_at_10']:.3f} | {s['qps']:,.0f} | "
              f"{s.get('seconds', 0):.1f} |")
    print(f"single-id delete: {steps['deleted']['single_id_seconds_median'] * 1000:.0f} ms (median of 5); "
          f"add: {steps['added']['vectors_per_second']:,.0f} vectors/s; compaction: "
          f"{steps['compacted']['seconds']:.1f} s for {steps['compacted']['removed_rows']:,} rows removed")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
