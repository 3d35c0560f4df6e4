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


def real_recall(index: retrieval.Index, queries: np.ndarray, truth: np.ndarray, point: dict) -> float:
    """Recall@10 of `queries` at `point` against their exact top 10 `truth`."""
    params = SearchParams(k=10, nprobe=point["nprobe"], k1=point["k1"], k2=point["k2"],
                          probe_margin=point["probe_margin"], rerank=False)
    found = index.search_batch(queries, params=params).rows
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


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
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    work = Path(a.work).expanduser()
    data = text_dataset(work, a.corpus, a.limit, a.queries, query_part=a.query_part)
    docs = np.ascontiguousarray(data.docs, dtype=np.float32)
    flat = faiss.IndexFlatIP(docs.shape[1])
    flat.add(docs)
    truth = flat.search(data.queries, 10)[1]
    rows = []
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
        rows.append(row)
        print(f"target {target}: {row['factory']}; " + "; ".join(
            f"{when} nprobe {r['point']['nprobe']} k1 {r['point']['k1']} k2 {r['point']['k2']}: sample "
            f"{r['sample_recall']:.3f}, real queries {r['real_recall']:.3f}"
            for when, r in ((w, row[w]) for w in points)), flush=True)
    report = {"command": "python -m matryoshka.benchmarks.point_gap " + " ".join(sys.argv[1:] if argv is None
                                                                                else argv),
              "corpus": a.corpus, "query_part": a.query_part, "docs": len(docs), "real_queries": len(data.queries),
              "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
