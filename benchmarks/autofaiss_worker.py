"""Run inside an interpreter that has autofaiss (it pins numpy < 2, so usually a separate venv).

Standalone on purpose: imports nothing from this project. Usage:
    python autofaiss_worker.py DOCS.npy QUERIES.npy BUDGET_BYTES THREADS LATENCY_QUERIES OUTDIR
Writes OUTDIR/rows10.npy, OUTDIR/rows100.npy and OUTDIR/result.json.
"""
import json
import sys
import time

import numpy as np


def main(docs_path, queries_path, budget, threads, latency_queries, out):
    import faiss
    from autofaiss import build_index
    threads, latency_queries = int(threads), int(latency_queries)
    faiss.omp_set_num_threads(threads)
    docs = np.ascontiguousarray(np.load(docs_path, mmap_mode="r"), dtype=np.float32)
    queries = np.ascontiguousarray(np.load(queries_path), dtype=np.float32)
    t = time.perf_counter()
    index, infos = build_index(docs, save_on_disk=False, max_index_memory_usage=f"{int(budget)}B",
                               current_memory_available="16G", metric_type="ip", nb_cores=threads,
                               min_nearest_neighbors_to_retrieve=100, verbose=40)
    build_s = time.perf_counter() - t
    faiss.omp_set_num_threads(threads)
    index.search(queries[:1], 10)
    t = time.perf_counter()
    _, rows10 = index.search(queries, 10)
    batch_s = time.perf_counter() - t
    lat = []
    for i in range(min(latency_queries, len(queries))):
        t = time.perf_counter()
        index.search(queries[i:i + 1], 10)
        lat.append(time.perf_counter() - t)
    _, rows100 = index.search(queries, min(100, len(docs)))
    np.save(f"{out}/rows10.npy", rows10)
    np.save(f"{out}/rows100.npy", rows100)
    blob = faiss.serialize_index(index)
    res = {"build_seconds": build_s, "batch_seconds": batch_s, "latency_seconds": lat,
           "index_key": (infos or {}).get("index_key"), "index_param": (infos or {}).get("index_param"),
           "index_bytes": int(blob.size), "infos": {k: str(v) for k, v in (infos or {}).items()}}
    with open(f"{out}/result.json", "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
