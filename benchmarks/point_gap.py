"""Does a default operating point keep its word on real queries? Recall@10 on the build's own sample against
recall@10 of held-out real queries, at the stored point of default builds for several targets.

    python -m matryoshka.benchmarks.point_gap --corpus stdlib --targets 0.95,0.98,0.99 \
        --work ~/.cache/matryoshka-bench/stdlib --out benchmarks/results/point-gap-stdlib.json

The corpus is a labelled text task (`text_corpus.text_dataset`: held-out items of a group are the queries),
encoded once with all-MiniLM-L6-v2 and cached in --work. Each target gets a default build (plan selection and
tuning on, no --queries); its stored point's recall on the index sample is compared with the recall@10 of the
real queries at that point, both against exact search over the full vectors.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np

from matryoshka import indexing, retrieval

from .text_corpus import text_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="stdlib", choices=("stdlib", "gcide"))
    ap.add_argument("--limit", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--targets", default="0.95,0.98,0.99")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    work = Path(a.work).expanduser()
    data = text_dataset(work, a.corpus, a.limit, a.queries)
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
            point = index.info()["operating_point"]
            found = index.search_batch(data.queries, k=10, rerank=False).rows
        real = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        rows.append({"target": target, "factory": index.manifest["factory"],
                     "point": {k: point[k] for k in ("nprobe", "k1", "k2", "probe_margin")},
                     "sample_recall": point["recall_at_10"], "sample_queries": point["queries"],
                     "real_recall": real, "real_queries": len(data.queries), "gap": point["recall_at_10"] - real,
                     "meets_target": real >= target})
        print(f"target {target}: {index.manifest['factory']}, point nprobe {point['nprobe']} k1 {point['k1']} k2 "
              f"{point['k2']}: sample {point['recall_at_10']:.3f}, real queries {real:.3f}", flush=True)
    report = {"command": "python -m matryoshka.benchmarks.point_gap " + " ".join(sys.argv[1:] if argv is None
                                                                                else argv),
              "corpus": a.corpus, "docs": len(docs), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
