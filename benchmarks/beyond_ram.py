"""An index larger than this machine's RAM, built, served from SSD under a memory cap, and measured (issue 22).

    python -m matryoshka.benchmarks.beyond_ram --n 50000000 --dim 384 --work /work/data/beyond-50m

1. Build: the streaming build reads a generated source (`benchmarks.synthetic`: clustered, a decaying spectrum
   turned by a random rotation) batch by batch, so no input file is ever written; its own process, whose wall
   time and peak RSS are recorded.
2. Truth: exact top-10 of `--queries` held-out queries (stream 2 of the generator, never corpus rows), computed
   out of core from the index's own float16 full store, block by block.
3. Serve: per condition, a process confined to a memory cgroup (its anonymous memory and every page it
   faults in or reads into the page cache count), index files evicted first, opened under a memory budget. Per
   setting: recall@10, single-query p50 / p99, QPS at batch 1 / 100 / 1,000 (each batch pass over every query,
   the stores not in RAM dropped from the page cache first), device reads and bytes per query, and the cgroup's
   peak (the working set the run needed).

Conditions: the budget holds the codes only (int8 and full read from SSD), or the codes and the int8 store
(full read from SSD); the cgroup's limit is that budget plus `--memory-limit`. `warm` is the reference: no
budget, no cgroup, every file read into the page cache first. The results go to
`benchmarks/results/beyond-ram-<n>.json`.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .synthetic import CHUNK, Synthetic

SETTINGS = "32/400/50,64/1000/100,128/2000/200"  # nprobe/k1/k2 measured in each condition
CONDITIONS = {"codes": (), "codes+int8": ("int8",), "warm": None}  # what the memory budget holds in RAM (warm: no
# budget, every store in the page cache, read there first; no cgroup)


def corpus(dim: int) -> Synthetic:
    return Synthetic(dim=dim, matryoshka=False, clusters=8192, seed=22)


def build_step(root: Path, n: int, dim: int, row_order: str) -> None:
    from matryoshka import indexing
    syn = corpus(dim)
    batches = ((None, syn.rows(lo, min(n, lo + CHUNK))) for lo in range(0, n, CHUNK))
    # select/tune off: measuring half and twice the lists, or exact truth, over 50M rows costs hours on 2 cores
    indexing.build(root, batches, select=False, tune=False, threads=2, expected_count=n, row_order=row_order)


def truth_step(root: Path, queries: np.ndarray, k: int = 10, block: int = 1 << 18) -> np.ndarray:
    """Exact top-k rows by inner product over the full float16 store, read shard by shard, block by block."""
    import faiss
    from faiss.contrib.exhaustive_search import knn_ground_truth

    from matryoshka.core import layout
    from matryoshka.storage.row_reader import evict
    from matryoshka.rerank.rescore import _f32
    shards = sorted(_manifest(root).shards, key=lambda s: s.id_start)

    def blocks():
        for s in shards:
            path = root / layout.shard_dir(s.number) / layout.FULL_FILE
            full = np.load(path, mmap_mode="r")
            for lo in range(0, len(full), block):
                yield _f32(full[lo:lo + block])
            del full
            evict(path)  # the truth pass leaves no store in the page cache
    _, at = knn_ground_truth(np.ascontiguousarray(queries, np.float32), blocks(), k,
                             metric_type=faiss.METRIC_INNER_PRODUCT, ngpu=0)
    return rows_of_positions(root, shards, at)


def rows_of_positions(root: Path, shards: list, at: np.ndarray) -> np.ndarray:
    """Global rows of positions in the shards' full stores read back to back: a list-ordered shard stores row r
    at its slot (`slots[r]`), so position p of such a shard holds the row whose slot is p."""
    from matryoshka.core import layout
    rows, start = at.copy(), 0
    for s in shards:
        inside = (at >= start) & (at < start + s.count)
        if layout.SLOTS_FILE in s.files:
            row_at_slot = np.argsort(np.load(root / layout.shard_dir(s.number) / layout.SLOTS_FILE))
            rows[inside] = s.id_start + row_at_slot[at[inside] - start]
        else:
            rows[inside] = s.id_start + at[inside] - start
        start += s.count
    return rows


def _io_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes")).split()[1])


def _reads(ix) -> dict:
    stores = ix.info()["stores"]
    return {s: dict(stores[s].get("reads", {})) for s in ("int8", "full")}


def _per_query(before: dict, after: dict, nq: int) -> dict:
    return {s: {k: (after[s].get(k, 0) - before[s].get(k, 0)) / nq for k in ("reads", "pages", "rows")}
            for s in after}


def serve_step(root: Path, queries: np.ndarray, truth: np.ndarray, budget: int | None, singles: int,
               settings: list[tuple[int, int, int]], batches: list[int], device_iops: float) -> dict:
    """Per setting: single-query latency, then each batch size's QPS over all `queries` (recall@10 on the
    results of the largest batch size), with device reads and bytes per query."""
    from matryoshka import retrieval
    from matryoshka.storage.row_reader import evict

    from .metrics import percentiles_ms, recall
    for p in root.rglob("*"):
        if p.is_file() and budget is None:  # warm: every file read into the page cache first
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        elif p.is_file():
            evict(p)
    t = time.perf_counter()
    ix = retrieval.open_index(root, memory_budget=budget, threads=2, device="cpu")
    out = {"open_s": time.perf_counter() - t, "stores": ix.info()["stores"], "settings": []}
    for nprobe, k1, k2 in settings:
        setting = dict(k=10, nprobe=nprobe, k1=k1, k2=k2, rerank=False)
        row = {"nprobe": nprobe, "k1": k1, "k2": k2}
        ix.search_batch(queries[-4:], **setting)  # thread pools and lazy tables
        r0, b0, times = _reads(ix), _io_bytes(), []
        for i in range(singles):
            t = time.perf_counter()
            ix.search_batch(queries[i:i + 1], **setting)
            times.append(time.perf_counter() - t)
        row["p50_ms"], row["p99_ms"] = percentiles_ms(times)
        row["mean_ms"] = float(np.mean(times) * 1e3)
        row["qps_batch_1"] = singles / sum(times)
        row["reads_per_query"] = _per_query(r0, _reads(ix), singles)
        row["device_kib_per_query"] = (_io_bytes() - b0) / singles / 1024
        for size in batches:
            if budget is not None:  # each pass cold: the pages an earlier pass read would answer this one
                ix.drop_page_cache()
            r0, b0, t, found = _reads(ix), _io_bytes(), time.perf_counter(), []
            for lo in range(0, len(queries), size):
                found.append(ix.search_batch(queries[lo:lo + size], **setting).rows)
            row[f"qps_batch_{size}"] = len(queries) / (time.perf_counter() - t)
            # bytes the device delivered (the pages read, unless the page cache already held some)
            row[f"device_kib_per_query_batch_{size}"] = (_io_bytes() - b0) / len(queries) / 1024
            reads = sum(v["reads"] for v in _per_query(r0, _reads(ix), len(queries)).values())
            row[f"reads_per_query_batch_{size}"] = reads
            # what the device allows: its random-read rate over the reads a query needs in this batch size
            row[f"device_bound_qps_batch_{size}"] = device_iops / reads if reads else None
        row["recall@10"] = recall(np.concatenate(found), truth[:len(queries)], 10)
        row["recall_queries"] = len(queries)
        out["settings"].append(row)
        print(json.dumps(row), flush=True)
    ix.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.beyond_ram", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="single queries timed per setting")
    ap.add_argument("--work", type=Path, required=True, help="folder for the index and the truth (about 1.1 KB a "
                                                            "vector at 384 dims)")
    ap.add_argument("--conditions", default="codes,codes+int8",
                    help="what the memory budget holds in RAM, per condition: codes, codes+int8, warm (no budget)")
    ap.add_argument("--memory-limit", default="4G",
                    help="memory cgroup of the serving process, beyond the stores its budget holds")
    ap.add_argument("--settings", default=SETTINGS, help="nprobe/k1/k2 settings, comma-separated")
    ap.add_argument("--serve-queries", type=int, help="queries of the batch passes (default: all --queries)")
    ap.add_argument("--batches", default="100,1000", help="batch sizes timed per setting")
    ap.add_argument("--row-order", choices=("lists", "input"), default="lists",
                    help="int8 and full rows in IVF-list order (fewer device reads a query) or in input order")
    ap.add_argument("--condition", help=argparse.SUPPRESS)
    ap.add_argument("--step", choices=("build", "serve"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    root = a.work / "index"
    queries = corpus(a.dim).rows(0, a.queries, stream=2)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    if a.step == "build":
        build_step(root, a.n, a.dim, a.row_order)
        return 0
    truth_path = a.work / f"truth-{a.queries}.npy"
    settings = [tuple(int(v) for v in t.split("/")) for t in a.settings.split(",")]
    if a.step == "serve":
        from matryoshka.core import layout

        from .cold import confine
        warm = CONDITIONS[a.condition] is None
        budget = None if warm else _budget(root, CONDITIONS[a.condition])
        group = None if warm else confine(budget + _bytes(a.memory_limit))
        iops = random_read_rate(root / layout.shard_dir(0) / layout.FULL_FILE)
        res = serve_step(root, queries[:a.serve_queries or len(queries)], np.load(truth_path), budget, a.single,
                         settings, [int(b) for b in a.batches.split(",")], iops)
        res["device_qd32_iops"] = iops
        res["cache"] = "warm: every store in the page cache" if warm else "cold: files evicted, then in a cgroup"
        if group is not None:
            peak = group / "memory.max_usage_in_bytes"
            res["cgroup_limit_bytes"] = budget + _bytes(a.memory_limit)
            res["cgroup_peak_bytes"] = int((peak if peak.exists() else group / "memory.peak").read_text())
        print(json.dumps(res, default=float))
        return 0
    report: dict = {"n": a.n, "dim": a.dim, "queries": a.queries, "memory_limit": a.memory_limit,
                    "command": " ".join(["python -m matryoshka.benchmarks.beyond_ram",
                                         *(sys.argv[1:] if argv is None else argv)])}
    me = [sys.executable, "-m", "matryoshka.benchmarks.beyond_ram", *(sys.argv[1:] if argv is None else argv)]
    if not (root / "manifest.json").exists():
        t = time.perf_counter()
        subprocess.run([*me, "--step", "build"], check=True)
        report["build_s"] = time.perf_counter() - t
        report["build_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report["disk_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    manifest = _manifest(root)
    report["factory"], report["build_log"] = manifest.factory, json.loads((root / "build-log.json").read_text())
    if not truth_path.exists():
        t = time.perf_counter()
        np.save(truth_path, truth_step(root, queries))
        report["truth_s"] = time.perf_counter() - t
    report["serve"] = {}
    for condition in a.conditions.split(","):
        p = subprocess.run([*me, "--step", "serve", "--condition", condition], capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"serving {condition} failed:\n{p.stderr[-3000:]}")
        sys.stdout.write(p.stdout)
        report["serve"][condition] = json.loads(p.stdout.splitlines()[-1])
    out = a.out or Path("benchmarks/results") / f"beyond-ram-{a.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {out}")
    return 0


def random_read_rate(path: Path) -> float:
    from matryoshka.storage.row_reader import random_read_rate as rate
    return rate(path)


def _bytes(size: str) -> int:
    from matryoshka.storage.tiers import parse_bytes
    return parse_bytes(size)


def _budget(root: Path, keep: tuple) -> int:
    """The memory budget that holds the first-pass codes and the stores `keep`, and nothing else."""
    import faiss

    from matryoshka.core import layout
    from matryoshka.storage.tiers import store_sizes
    manifest = _manifest(root)
    sizes = store_sizes(manifest, faiss.read_index(str(root / layout.TRAINED)))
    return sum(sizes[s] for s in ("codes", *keep)) + (64 << 20)  # the id files' estimate is not what RAM holds


def _manifest(root: Path):
    from matryoshka.storage.manifest import read_manifest
    from matryoshka.storage.pinned import PinnedFolder
    with PinnedFolder(root) as folder:
        return read_manifest(folder)


if __name__ == "__main__":
    sys.exit(main())
