"""DiskANN's SSD index (diskannpy) for `benchmarks.cold`, run in its own Python (diskannpy pins numpy 1.25).

    PYTHON diskann_worker.py DOCS.npy QUERIES.npy WORKDIR SINGLE K RAM_GB

Builds a disk index of the unit rows (L2 ranks them as cosine does) whose in-memory PQ codes fit RAM_GB, with
no cached nodes, and prints one JSON line: per search list size, warm and cold (files evicted before each query)
single-query latency, device bytes per query and one batch's QPS, with the rows for recall.
"""
import json
import os
import sys
import time
from pathlib import Path

import diskannpy
import numpy as np


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes")).split()[1])


def evict(folder: Path) -> None:
    for p in folder.iterdir():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    docs, queries, work, single, k, ram_gb = sys.argv[1:7]
    single, k, ram_gb, work = int(single), int(k), float(ram_gb), Path(work)
    q = np.load(queries).astype(np.float32)
    t = time.perf_counter()
    if not (work / "ann_disk.index").exists():
        work.mkdir(parents=True, exist_ok=True)
        diskannpy.build_disk_index(np.load(docs).astype(np.float32), "l2", str(work), complexity=100, graph_degree=64,
                                   search_memory_maximum=ram_gb, build_memory_maximum=8.0, num_threads=2)
    build_s = time.perf_counter() - t
    index = diskannpy.StaticDiskIndex(str(work), num_threads=2, num_nodes_to_cache=0)
    disk = sum(p.stat().st_size for p in work.iterdir())
    rows = []
    for complexity in (20, 40, 80):
        for cold in (False, True):
            index.batch_search(q[:4], k, complexity, 2, beam_width=4)
            times, read = [], []
            for i in range(single):
                if cold:
                    evict(work)
                b, t = read_bytes(), time.perf_counter()
                index.search(q[i], k, complexity, beam_width=4)
                times.append(time.perf_counter() - t)
                read.append(read_bytes() - b)
            if cold:
                evict(work)
            t = time.perf_counter()
            res = index.batch_search(q, k, complexity, 2, beam_width=4)
            batch_s = time.perf_counter() - t
            ms = np.asarray(times) * 1e3
            rows.append({"system": "diskann", "condition": f"DiskANN L={complexity} ({'cold' if cold else 'warm'})",
                         "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "mean_ms": float(ms.mean()), "single_read_kb": float(np.mean(read) / 1024),
                         "batch_qps": len(q) / batch_s, "disk_bytes": disk, "build_s": build_s,
                         "ram_gb_for_codes": ram_gb, "rows": np.asarray(res.identifiers).astype(int).tolist()})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
