"""What a query costs as the same vectors are split into more shards: one plan, one setting, 1 to 200 shards.

    python -m matryoshka.benchmarks.shard_scaling --n 400000 --dim 384 --shards 1,10,50,200 \
        --work ~/shard-scaling --out benchmarks/results/shard-scaling-400k.json

The vectors are synthetic clusters (`data.synthetic`, flavour rotated); every index is built with the same
fixed plan (PCA to 256, IVF1024, 4-bit fast-scan PQ32, seed 0, no plan selection or tuning), so the shard
count is the only difference. Each is searched warm (every store in the page cache) with the whole query batch
at one setting, best of `--repeats`, by one process with `--threads` threads; the stage timings are those of
the best run. The report also says whether every index returned the same rows as the one-shard index.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import faiss
import numpy as np

from matryoshka import indexing, retrieval

from .data import synthetic
from .search_speed import best_of


def _build(path: Path, data, shards: int, n: int) -> Path:
    if not (path / "manifest.json").exists():
        indexing.build(path, data.build_input(), index_dim=256, transform="pca", pq_bytes=32, fast_scan=True,
                       nlist=1024, shard_size=-(-n // shards), select=False, tune=False, seed=0, quiet=True,
                       overwrite=True)
    return path


def _search(index, q: np.ndarray, setting: dict, repeats: int):
    return best_of(lambda: index.search_batch(q, k=10, rerank=False, **setting), repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--shards", default="1,10,50,200")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--setting", default="32/1000/100", help="nprobe/k1/k2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=0, help="also time this many queries one per call (p50)")
    ap.add_argument("--work", required=True, help="folder for the vectors and the indexes (reused)")
    ap.add_argument("--out", required=True, help="the JSON report")
    a = ap.parse_args(argv)
    work = Path(a.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    data = synthetic(a.n, a.dim, "rotated", a.queries, work)
    nprobe, k1, k2 = (int(v) for v in a.setting.split("/"))
    setting = {"nprobe": nprobe, "k1": k1, "k2": k2}
    q = data.queries
    flat = faiss.IndexFlatIP(a.dim)
    for lo in range(0, data.n, 100_000):
        flat.add(data.block(lo, min(data.n, lo + 100_000)))
    truth = flat.search(q, 10)[1]
    rows, reference = [], None
    for shards in (int(v) for v in a.shards.split(",")):
        path = _build(work / f"idx-{a.n}-{shards}", data, shards, a.n)
        with retrieval.open_index(path, threads=a.threads) as index:
            index.search_batch(q[:100], k=10, rerank=False, **setting)  # warm: every store read once
            _search(index, q, setting, 1)
            secs, r = _search(index, q, setting, a.repeats)
            found = np.array([[int(i) if i is not None else -1 for i in row] for row in r.ids])
            recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
            same = None if reference is None else bool(np.array_equal(r.rows, reference))
            reference = r.rows if reference is None else reference
            per_q = {k: 1000 * v / len(q) for k, v in r.timings.items()}
            rows.append({"shards": len(index.manifest.shards), "ms_per_query": 1000 * secs / len(q),
                         "stage_ms_per_query": per_q, "recall_at_10": recall, "same_rows_as_one_shard": same})
            if a.single:
                rows[-1]["single_query_p50_ms"] = 1000 * float(np.median([
                    best_of(lambda: index.search_batch(q[i:i + 1], k=10, rerank=False, **setting), 1)[0]
                    for i in range(a.single)]))
            print(f"{rows[-1]['shards']:>4} shards: {rows[-1]['ms_per_query']:.3f} ms/query, first pass "
                  f"{per_q.get('first_pass', 0):.3f}, int8 {per_q.get('int8', 0):.3f}, recall@10 {recall:.3f}, "
                  f"same rows as 1 shard: {same}" + (f", one query p50 {rows[-1]['single_query_p50_ms']:.3f} ms"
                                                      if a.single else ""), flush=True)
    base = rows[0]
    for r in rows:
        r["x_one_shard"] = r["ms_per_query"] / base["ms_per_query"]
        r["first_pass_x_one_shard"] = (r["stage_ms_per_query"].get("first_pass", 0) /
                                       max(base["stage_ms_per_query"].get("first_pass", 1e-9), 1e-9))
    args = sys.argv[1:] if argv is None else argv
    report = {"command": "python -m matryoshka.benchmarks.shard_scaling " + " ".join(args),
              "n": a.n, "dim": a.dim, "setting": setting, "queries": len(q), "threads": a.threads,
              "cache": "warm (every store in the page cache), whole batch, best of %d" % a.repeats,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
