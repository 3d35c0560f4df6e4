"""The coarse assignment at large nlist: a flat scan of every centroid against an HNSW graph over them.

    python -m matryoshka.benchmarks.coarse_quantizer --nlists 16384,65536,262144 --dim 256 \
        --out benchmarks/results/coarse-quantizer.json

For each nlist, centroids are synthetic clustered unit vectors (`synthetic.Synthetic`, what k-means centroids of
such data look like), the queries other vectors of the same distribution. Each query batch is assigned to its
`--nprobe` nearest lists by the flat quantizer (exact: the reference) and by an HNSW32 graph at several
efSearch; the report gives ms per query (whole batch, best of 3, `--threads` threads) and the share of the exact
lists the graph finds. The build plans an HNSW quantizer from the nlist where the graph is faster at a recall of
the lists of at least 0.99 (`indexing.ivf.HNSW_FROM_NLIST`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from .search_speed import best_of
from .synthetic import Synthetic


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nlists", default="16384,65536,262144")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nprobe", type=int, default=64)
    ap.add_argument("--efs", default="64,128,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    faiss.omp_set_num_threads(a.threads)
    syn = Synthetic(dim=a.dim, clusters=4096, seed=1)
    q = syn.queries(a.queries).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = []
    for nlist in (int(v) for v in a.nlists.split(",")):
        c = np.ascontiguousarray(syn.documents(nlist), dtype=np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        flat = faiss.IndexFlatIP(a.dim)
        flat.add(c)
        secs, (_, exact) = best_of(lambda: flat.search(q, a.nprobe))
        rows.append({"nlist": nlist, "quantizer": "flat", "ms_per_query": 1000 * secs / len(q), "list_recall": 1.0})
        print(f"nlist {nlist:>7}: flat {rows[-1]['ms_per_query']:.4f} ms/query", flush=True)
        t = time.perf_counter()
        graph = faiss.IndexHNSWFlat(a.dim, 32, faiss.METRIC_INNER_PRODUCT)
        graph.add(c)
        build = time.perf_counter() - t
        for ef in (int(v) for v in a.efs.split(",")):
            params = faiss.SearchParametersHNSW(efSearch=max(ef, a.nprobe))
            secs, (_, got) = best_of(lambda: graph.search(q, a.nprobe, params=params))
            recall = float(np.mean([len(set(g) & set(e)) / a.nprobe for g, e in zip(got, exact)]))
            rows.append({"nlist": nlist, "quantizer": "HNSW32", "ef_search": ef, "ms_per_query": 1000 * secs / len(q),
                         "list_recall": recall, "graph_build_s": build})
            print(f"nlist {nlist:>7}: HNSW32 ef {ef:>4} {rows[-1]['ms_per_query']:.4f} ms/query, lists found "
                  f"{recall:.4f} (graph built in {build:.1f} s)", flush=True)
    report = {"command": "python -m matryoshka.benchmarks.coarse_quantizer " +
              " ".join(sys.argv[1:] if argv is None else argv),
              "dim": a.dim, "queries": len(q), "nprobe": a.nprobe, "threads": a.threads,
              "timing": "whole batch, best of 3, warm", "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
