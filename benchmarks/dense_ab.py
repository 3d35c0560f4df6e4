"""Dense search speed of two checkouts of the engine on the same index, for a before / after comparison:
batch QPS (200 queries) and single-query mean, medians of 5 passes, one process per run (run the two
alternately, several times).

    git worktree add /tmp/old <commit>
    python benchmarks/dense_ab.py /tmp/old; python benchmarks/dense_ab.py "$PWD"    # as a script, not with -m

The index is `benchmarks.cold`'s (GCIDE, 120,000 senses); the checkout named first on sys.path is imported.
"""
import json
import os
import sys
import time

import numpy as np

CACHE = os.path.expanduser("~/.cache/matryoshka-bench/gcide")


def main(checkout: str) -> None:
    sys.path.insert(0, checkout)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import matryoshka
    if not matryoshka.__file__.startswith(checkout):
        raise SystemExit(f"imported {matryoshka.__file__}, not {checkout}: run this file as a script")
    from matryoshka import retrieval
    index = retrieval.open_index(os.path.join(CACHE, "index-120000"))
    q = np.load(os.path.join(CACHE, "queries-200.npy"))
    index.search_batch(q, k=10)
    batch, single = [], []
    for _ in range(5):
        t = time.perf_counter()
        index.search_batch(q, k=10)
        batch.append(time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(100):
            index.search_batch(q[i:i + 1], k=10)
        single.append((time.perf_counter() - t) / 100)
    print(json.dumps({"code": checkout, "batch_qps": len(q) / float(np.median(batch)),
                      "single_ms": 1e3 * float(np.median(single))}))


if __name__ == "__main__":
    main(sys.argv[1])
