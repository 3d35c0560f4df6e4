"""Does a default operating point keep its word on real queries? Recall@10 of held-out real queries at the point
a default build stores, against the point's recall on its own sample: before (uniform rows of the index, which
had to show a fifth fewer misses than the target) and after (`retrieval.samples.query_like`, which must show
the target).

    python -m matryoshka.benchmarks.point_gap --corpus stdlib --limit 20000 --queries 2000 \
        --work ~/.cache/matryoshka-bench/stdlib --out benchmarks/results/point-gap-stdlib.json

The corpus is a labelled text task (`text_corpus.text_dataset`: a held-out item of a group is the query; with
--query-part name, the group's name is: a headword, an object's dotted name), encoded once with
all-MiniLM-L6-v2 and cached in --work. Each target gets a default build (plan selection and tuning on, no
--queries), kept in --work; the after point is its tuning repeated (`tuning.tune`, nothing saved), the before
point the earlier tuning on the same build. Recall is against exact search over the full vectors.

With --traffic N the real queries split in two halves: the first is searched through a handle that keeps N of
them (`open_index(sample_queries=N)`) and re-tunes from them (`index.tune(from_traffic=True)`); the second,
never seen by the tuner, measures every point. With --drift SHARE one more build per target holds only the
documents below the (1 - SHARE) quantile along the corpus's first principal direction; the rest are added
afterwards and 1,000 of the first deleted (adds from elsewhere than the build's sample), and the stored, now
stale point is compared with a re-tune on the index's own rows and one from traffic.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np

from matryoshka import indexing, retrieval
from matryoshka.core.params import SearchParams
from matryoshka.retrieval import samples, tuning

from .text_corpus import text_dataset

WITHIN = 0.01  # a point keeps its word when real queries reach the target and come no more than this above it


def uniform_point(index: "tuning.Tunable", target: float) -> tuning.OperatingPoint:
    """The point the tuner chose before query-like samples: uniform rows, `sample_target` of the target."""
    own, x = samples.own_rows(index, tuning.SAMPLE_QUERIES)
    return tuning.measure(index, x, own, target)


def real_recall(index: retrieval.Index, queries: np.ndarray, truth: np.ndarray, point: dict,
                by_id: bool = False) -> float:
    """Recall@10 of `queries` at `point` against their exact top 10 `truth` (rows, or with `by_id` the external
    ids: rows move when a change rewrites a shard)."""
    params = SearchParams(k=10, nprobe=point["nprobe"], k1=point["k1"], k2=point["k2"],
                          probe_margin=point["probe_margin"], rerank=False)
    result = index.search_batch(queries, params=params)
    found = result.ids if by_id else result.rows
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


def traffic_point(path: Path, live: np.ndarray, target: float, keep: int) -> dict:
    """The point re-tuned from a handle's sample of `keep` of the live queries `live`, searched 100 at a time at
    its stored point (nothing saved)."""
    with retrieval.open_index(path, sample_queries=keep) as index:
        for lo in range(0, len(live), 100):
            index.search_batch(live[lo:lo + 100], k=10)
        return index.tune(target, from_traffic=True, save=False).to_dict()


def exact(docs: np.ndarray, queries: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """The exact top 10 global rows of each query over `docs` (only `rows` of them when given)."""
    keep = np.arange(len(docs)) if rows is None else rows
    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(np.ascontiguousarray(docs[keep]))
    return keep[flat.search(queries, 10)[1]]


def drift_rows(path: Path, docs: np.ndarray, queries: np.ndarray, target: float, share: float, keep: int) -> dict:
    """A default build of the documents below the (1 - share) quantile of the first principal direction, the rest
    added, 1,000 of the first deleted: real recall on the second half of `queries` at the stale stored point,
    after a re-tune on the index's own rows, and after one from the first half as traffic. A document's id is
    its position along that direction."""
    centred = docs - docs.mean(0)
    direction = np.linalg.svd(centred[::max(1, len(docs) // 20_000)], full_matrices=False)[2][0]
    order = np.argsort(centred @ direction, kind="stable")
    cut = int(len(docs) * (1 - share))
    ordered = np.ascontiguousarray(docs[order])
    gone = np.sort(np.random.default_rng(0).choice(cut, size=min(1000, cut // 10), replace=False))
    if not (path / "manifest.json").exists():
        indexing.build(path, ordered[:cut], ids=np.arange(cut), target_recall=target, quiet=True, overwrite=True)
        indexing.add(path, ordered[cut:], ids=np.arange(cut, len(docs)), quiet=True)
        indexing.delete(path, gone.tolist(), quiet=True)
    half = len(queries) // 2
    live, held = queries[:half], queries[half:]
    truth = exact(ordered, held, np.setdiff1d(np.arange(len(docs)), gone))
    with retrieval.open_index(path) as index:
        stored = index.manifest.operating_point
        points = {"stale": stored, "own_rows": tuning.tune(index.tunable(), target, save=False).to_dict()}
        stale = index.info().get("operating_point_stale")
        row = {"target": target, "factory": index.manifest.factory, "base_docs": cut, "added": len(docs) - cut,
               "deleted": len(gone), "info_says_stale": stale}
        points["traffic"] = traffic_point(path, live, target, keep)
        for when, point in points.items():
            row[when] = summary(point, real_recall(index, held, truth, point, by_id=True), target)
    return row


def summary(point: dict, real: float, target: float) -> dict:
    return {"point": {k: point[k] for k in ("nprobe", "k1", "k2", "probe_margin", "lists_probed")},
            "ms_per_query": point["ms_per_query"], "required_recall": point["required_recall"],
            "sample_recall": point["recall_at_10"], "sample_queries": point["queries"], "real_recall": real,
            "gap": point["recall_at_10"] - real, "meets_target": real >= target,
            "within": target <= real <= target + WITHIN}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="stdlib", choices=("stdlib", "gcide"))
    ap.add_argument("--query-part", default="text", choices=("text", "name"))
    ap.add_argument("--limit", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--targets", default="0.95,0.98,0.99")
    ap.add_argument("--traffic", type=int, default=0, help="live queries kept for a re-tune from traffic (0: none)")
    ap.add_argument("--drift", type=float, default=0.0, help="share of documents added after the build (0: none)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    work = Path(a.work).expanduser()
    data = text_dataset(work, a.corpus, a.limit, a.queries, query_part=a.query_part)
    docs = np.ascontiguousarray(data.docs, dtype=np.float32)
    truth = exact(docs, data.queries)
    rows, drift = [], []
    half = len(data.queries) // 2
    for target in (float(t) for t in a.targets.split(",")):
        path = work / f"point-gap-{a.corpus}-{len(docs)}-{target}"
        if not (path / "manifest.json").exists():
            indexing.build(path, docs, target_recall=target, quiet=True, overwrite=True)
        with retrieval.open_index(path) as index:
            view = index.tunable()
            points = {"before": uniform_point(view, target).to_dict(),
                      "after": tuning.tune(view, target, save=False).to_dict()}
            row = {"target": target, "factory": index.manifest.factory}
            for when, point in points.items():
                row[when] = summary(point, real_recall(index, data.queries, truth, point), target)
            if a.traffic:  # every point again on the half of the queries the traffic tuner never saw
                points["traffic"] = traffic_point(path, data.queries[:half], target, a.traffic)
                row["held_out"] = {when: summary(point, real_recall(index, data.queries[half:], truth[half:], point),
                                                 target) for when, point in points.items()}
        rows.append(row)
        if a.drift:
            drift.append(drift_rows(work / f"point-gap-drift-{a.corpus}-{len(docs)}-{a.drift}-{target}", docs,
                                    data.queries, target, a.drift, a.traffic or half))
            print(f"target {target}, drift: " + "; ".join(f"{w} {drift[-1][w]['real_recall']:.3f}"
                                                        for w in ("stale", "own_rows", "traffic")), flush=True)
        print(f"target {target}: {row['factory']}; " + "; ".join(
            f"{when} nprobe {r['point']['nprobe']} k1 {r['point']['k1']} k2 {r['point']['k2']}: sample "
            f"{r['sample_recall']:.3f}, real queries {r['real_recall']:.3f}"
            for when, r in ((w, row[w]) for w in ("before", "after"))), flush=True)
        if a.traffic:
            print("  held-out half: " + "; ".join(f"{w} {r['real_recall']:.3f}" for w, r in row["held_out"].items()),
                  flush=True)
    report = {"command": "python -m matryoshka.benchmarks.point_gap " + " ".join(sys.argv[1:] if argv is None
                                                                                else argv),
              "corpus": a.corpus, "query_part": a.query_part, "docs": len(docs), "real_queries": len(data.queries),
              "traffic_kept": a.traffic, "drift_share": a.drift, "rows": rows, "drift": drift}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
