"""The GPU path at a modest scale: a GPU build with its measured operating point, then the same index searched
with the first pass on the GPU and on the CPU. Run on a machine with faiss's GPU build:

    python -m matryoshka.benchmarks.gpu_check [--n 500000] [--dim 384] [--out gpu_check.json]
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core.vectors import recall_at
from .synthetic import Synthetic


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--index", default="/tmp/gpu-check-index")
    ap.add_argument("--out", default="gpu_check.json")
    a = ap.parse_args(argv)
    s = Synthetic(dim=a.dim, clusters=1024, seed=0)
    docs, q = s.documents(a.n), s.queries(a.queries)
    t = time.perf_counter()
    indexing.build(a.index, docs, device="gpu", overwrite=True, shard_size=max(1, a.n // 2), quiet=True)
    report = {"gpus": faiss.get_num_gpus(), "n": a.n, "dim": a.dim, "build_seconds": time.perf_counter() - t}
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    truth = faiss.knn(unit(q), unit(docs), 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    for device in ("gpu", "cpu"):
        index = retrieval.open_index(a.index, device=device)
        index.search_batch(q[:10])
        t = time.perf_counter()
        r = index.search_batch(q)
        seconds = time.perf_counter() - t
        report[device] = {"qps": len(q) / seconds, "factory": index.manifest["factory"],
                          "recall_at_10": recall_at(r.rows, truth, 10),
                          "params": index.params.to_dict(),
                          "ms_per_query": {k: 1000 * v / len(q) for k, v in r.timings.items()}}
    report["operating_point"] = {k: v for k, v in index.manifest["operating_point"].items() if k != "tried"}
    print(json.dumps(report, indent=1))
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
