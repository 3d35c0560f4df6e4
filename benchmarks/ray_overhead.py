"""What Ray costs on one machine: fan-out overhead per query batch, and a parallel build against a local one.

    python -m matryoshka.benchmarks.ray_overhead --n 200000 --dim 256 --out /tmp/ray-bench

Needs the `distributed` extra. Starts a local cluster (`ray.init(num_cpus=2)`), builds the same index both
ways, times search_batch locally and through 2 shard workers (median of repeats, same results checked),
and writes benchmarks/results/ray_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from matryoshka import indexing
from matryoshka import retrieval
from .synthetic import Synthetic


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run(n: int, dim: int, out: Path, results: Path) -> dict:
    import ray

    from matryoshka.indexing.distributed_build import build_distributed
    out.mkdir(parents=True, exist_ok=True)
    s = Synthetic(dim=dim, matryoshka=False, clusters=512, seed=3)
    np.save(out / "v.npy", s.documents(n))
    queries = s.queries(1000)
    opts = dict(index_dim=dim // 2, pq_bytes=dim // 16, fast_scan=True, shard_size=(n + 1) // 2, quiet=True)
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        t = time.perf_counter()
        indexing.build(out / "local", str(out / "v.npy"), **opts)
        local_build = time.perf_counter() - t
        t = time.perf_counter()
        build_distributed(out / "ray", str(out / "v.npy"), options=indexing.BuildOptions(**opts), address=None)
        ray_build = time.perf_counter() - t
        builds = {}
        for name in ("local", "ray"):
            m = json.loads((out / name / "manifest.json").read_text())["build"]["seconds"]
            builds[name] = {"total_seconds": round(local_build if name == "local" else ray_build, 2),
                            "train_seconds": round(m["train"], 2)}
        local = retrieval.open_index(out / "local")
        dist = retrieval.open_index(out / "local", ray="auto", workers=2)
        rows = []
        for nq in (1, 10, 100, 1000):
            q = queries[:nq]
            np.testing.assert_array_equal(local.search_batch(q).rows, dist.search_batch(q).rows)
            reps = 5 if nq == 1000 else 15
            t_local = _median_seconds(lambda: local.search_batch(q), reps)
            t_ray = _median_seconds(lambda: dist.search_batch(q), reps)
            rows.append({"queries": nq, "local_ms": round(1000 * t_local, 1), "ray_ms": round(1000 * t_ray, 1),
                         "overhead_ms": round(1000 * (t_ray - t_local), 1)})
        dist.close()
    finally:
        ray.shutdown()
    record = {"n": n, "dim": dim, "shards": 2, "workers": 2, "builds": builds,
              "build_speedup": round(builds["local"]["total_seconds"] / builds["ray"]["total_seconds"], 2),
              "fan_out": rows}
    results.mkdir(parents=True, exist_ok=True)
    (results / "ray_overhead.json").write_text(json.dumps(record, indent=2))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.n, a.dim, a.out, a.results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
