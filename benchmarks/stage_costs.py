"""Where an in-RAM query's time goes: per-stage ms per query (in a batch, best of --repeats, every store warm) at
given settings of a built index, and the first pass's lookup tables with and without residual encoding.

    python -m matryoshka.benchmarks.stage_costs --index IDX --queries Q.npy --points 64/150/20,256/200/20 \
        --single 500 --out benchmarks/results/stage-costs-gcide-120k.json

The stage timings are the engine's own (`SearchResult.timings`): encode, first_pass, int8, full and ids_and_texts
(the external ids and texts of the hits). `--single N` also times N queries one per call (p50 / p99, and the
mean of each stage). The residual part trains two faiss IVF-PQ fast-scan indexes of the
index's short vectors (its own transform, nlist and code), one encoding each vector's residual from its list
centre (a lookup table per probed list) and one the vector itself (one table per query, the engine's choice),
and reports recall@10 of the first pass within k1 and its time.
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
from matryoshka.core import layout


def stage_ms(index: retrieval.Index, queries: np.ndarray, point: tuple[int, int, int], repeats: int) -> dict:
    """Best-of-`repeats` ms per query of each stage at (nprobe, k1, k2), after one untimed batch."""
    nprobe, k1, k2 = point
    index.search_batch(queries, k=10, nprobe=nprobe, k1=k1, k2=k2, rerank=False)
    best: dict[str, float] = {}
    total = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        r = index.search_batch(queries, k=10, nprobe=nprobe, k1=k1, k2=k2, rerank=False)
        total = min(total, time.perf_counter() - t)
        for stage, s in r.timings.items():
            best[stage] = min(best.get(stage, float("inf")), s)
    per = {stage: 1000 * s / len(queries) for stage, s in best.items()}
    return {"nprobe": nprobe, "k1": k1, "k2": k2, "ms_per_query": 1000 * total / len(queries),
            "stages_ms_per_query": per, "ids_share": per.get("ids_and_texts", 0.0) * len(queries) / (1000 * total)}


def single_ms(index: retrieval.Index, queries: np.ndarray, point: tuple[int, int, int], n: int) -> dict:
    """One query per call, `n` calls after 20 untimed ones: p50 / p99 ms and each stage's mean ms."""
    nprobe, k1, k2 = point
    for q in queries[:20]:
        index.search_batch(q[None], k=10, nprobe=nprobe, k1=k1, k2=k2, rerank=False)
    took, stages = [], {}
    for q in queries[:n]:
        t = time.perf_counter()
        r = index.search_batch(q[None], k=10, nprobe=nprobe, k1=k1, k2=k2, rerank=False)
        took.append(time.perf_counter() - t)
        for stage, sec in r.timings.items():
            stages[stage] = stages.get(stage, 0.0) + sec
    return {"p50_ms": 1000 * float(np.median(took)), "p99_ms": 1000 * float(np.percentile(took, 99)),
            "stages_mean_ms": {k: 1000 * v / len(took) for k, v in stages.items()}}


def residual_costs(index: retrieval.Index, queries: np.ndarray, points: list[tuple[int, int, int]],
                   repeats: int) -> list[dict]:
    """The first pass on the index's short vectors with by_residual on and off: coverage of the exact top 10
    within k1, and ms per query."""
    view = index.tunable()
    docs = np.asarray(view.full_vectors(view.live_rows()), np.float32)
    short, q = index.codec.transform.apply(docs), index.codec.transform.apply(queries)
    truth = faiss.knn(queries, docs, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    nlist, code = layout.parse_factory(index.manifest.factory)
    m = int(code[2:].split("x")[0])
    out = []
    for residual in (True, False):
        ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(short.shape[1]), short.shape[1], nlist, m, 4,
                                       faiss.METRIC_INNER_PRODUCT)
        ivf.by_residual = residual
        ivf.train(short)
        ivf.add(short)
        for nprobe, k1, _ in points:
            ivf.nprobe = nprobe
            ivf.search(q, k1)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                found = ivf.search(q, k1)[1]
                best = min(best, time.perf_counter() - t)
            cover = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
            out.append({"by_residual": residual, "nprobe": nprobe, "k1": k1, "recall_at_10_within_k1": cover,
                        "ms_per_query": 1000 * best / len(q)})
            print(f"by_residual {residual!s:5} nprobe {nprobe} k1 {k1}: recall@10 within k1 {cover:.4f}, "
                  f"{out[-1]['ms_per_query']:.4f} ms/query", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True, help=".npy of full-dim query vectors")
    ap.add_argument("--points", default="64/150/20,256/200/20", help="nprobe/k1/k2,...")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-residual", action="store_true", help="skip the by_residual comparison")
    ap.add_argument("--single", type=int, default=0, help="also time this many queries one per call")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    points = [tuple(int(v) for v in p.split("/")) for p in a.points.split(",")]
    queries = np.ascontiguousarray(np.load(a.queries), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with retrieval.open_index(a.index) as index:
        stages = [stage_ms(index, queries, p, a.repeats) for p in points]
        for s, p in zip(stages, points):
            if a.single:
                s["single_query"] = single_ms(index, queries, p, a.single)
                print(f"{p}: single query p50 {s['single_query']['p50_ms']:.3f} ms", flush=True)
        for s in stages:
            print(f"{s['nprobe']}/{s['k1']}/{s['k2']}: {s['ms_per_query']:.4f} ms/query; " + ", ".join(
                f"{k} {v:.4f}" for k, v in s["stages_ms_per_query"].items()), flush=True)
        residual = [] if a.no_residual else residual_costs(index, queries, points, a.repeats)
        report = {"command": "python -m matryoshka.benchmarks.stage_costs " + " ".join(
                      sys.argv[1:] if argv is None else argv),
                  "index": {"count": index.count, "factory": index.manifest.factory, "index_dim": index.index_dim},
                  "queries": len(queries), "threads": faiss.omp_get_max_threads(), "cache": "warm (in RAM)",
                  "stages": stages, "residual": residual}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
