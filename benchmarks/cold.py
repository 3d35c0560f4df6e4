"""The engine with its stores cold or on SSD (issue 22): warm page cache, a cold page cache, and memory budgets
that keep only the first-pass codes (or codes and int8) in RAM, each SSD read method, against DiskANN.

    python -m matryoshka.benchmarks.cold [--limit 200000] [--queries 200] [--work ~/.cache/matryoshka-bench/gcide]
                              [--out benchmarks/results/cold-gcide.json] [--diskann-python /tmp/dann/bin/python]

Real text: GCIDE senses encoded with all-MiniLM-L6-v2 (cached in --work). "Cold" means every store not held in
RAM leaves the page cache and the process's maps (`Index.drop_page_cache`) before each single query and before
the batch, which is what a query meets when the stores are many times this machine's RAM; eviction is not timed.
Device bytes are
the process's `read_bytes` from /proc/self/io, so memory-mapped faults, readahead and O_DIRECT count alike.
Memory columns: `ram` is what the process holds in anonymous memory for the stores, `cache` what must stay in
the page cache for the figure to hold (warm rows only).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.storage import row_reader, tiers

from .ground_truth import exact_topk
from .metrics import percentiles_ms, recall
from .resources import set_threads
from .text_corpus import text_dataset

CACHE = Path.home() / ".cache" / "matryoshka-bench" / "gcide"
WARM, COLD, LIMITED = "warm", "cold", "limited"  # page cache state a condition is measured in


def conditions(mode: str) -> list[tuple]:
    """(name, stores kept in RAM beyond the codes or "all" or None for no budget, SSD read options)."""
    if mode == LIMITED:
        return [("memory maps, under the limit", None, None),
                ("full on SSD (pread), under the limit", ("int8",), dict(method="pread")),
                ("int8 + full on SSD (pread), under the limit", (), dict(method="pread")),
                ("int8 + full on SSD (direct), under the limit", (), dict(method="pread", direct=True))]
    rows = [("warm page cache", None, None), ("cold page cache (memory maps)", None, None),
            ("RAM: every store", "all", None)]
    rows += [(f"full on SSD ({m})", ("int8",), dict(method=m)) for m in ("pread", "uring", "willneed", "mmap")]
    rows += [(f"int8 + full on SSD ({m})", (), dict(method="pread", direct=True) if m == "direct" else dict(method=m))
             for m in ("pread", "direct", "uring", "willneed", "mmap")]
    return [r for r in rows if r[2] is None or r[2]["method"] != "uring" or row_reader.uring_available()]


def device_read_bytes() -> int:
    """Bytes this process has had read from storage (page faults and readahead included)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes")).split()[1])


def evict_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            row_reader.evict(p)


def budget_for(root: Path, keep) -> int | None:
    if keep is None:
        return None
    with retrieval.open_index(root) as ix:
        stores = ix.info()["stores"]
    if keep == "all":
        return sum(s["bytes"] for s in stores.values())
    return sum(stores[s]["bytes"] for s in ("codes", *keep))


def run_condition(root: Path, queries: np.ndarray, warmup: np.ndarray, truth: np.ndarray, setting: dict, keep,
                  ssd, state: str, n_single: int) -> dict:
    """Single-query latency and device bytes, one batch's QPS, recall@10 and the stores' placement.

    warm: every store file read into the page cache first; cold: evicted before each query and the batch;
    limited: `warmup` queries run first, so that the capped page cache holds what it can (a steady state)."""
    with retrieval.open_index(root, memory_budget=budget_for(root, keep), ssd_reads=ssd) as ix:
        ix.search_batch(queries[:4], **setting)  # first-call costs (thread pools, lazy tables) do not count
        if state == WARM:
            for p in root.rglob("*.npy"):
                p.read_bytes()
        elif state == LIMITED:
            ix.search_batch(warmup, **setting)
        times, read = [], []
        for i in range(n_single):
            if state == COLD:
                ix.drop_page_cache()
            b, t = device_read_bytes(), time.perf_counter()
            ix.search_batch(queries[i:i + 1], **setting)
            times.append(time.perf_counter() - t)
            read.append(device_read_bytes() - b)
        if state == COLD:
            ix.drop_page_cache()
        b, t = device_read_bytes(), time.perf_counter()
        res = ix.search_batch(queries, **setting)
        batch_s, batch_read = time.perf_counter() - t, device_read_bytes() - b
        stores = ix.info()["stores"]
    p50, p99 = percentiles_ms(times)
    ram = sum(s["bytes"] for s in stores.values() if s["tier"] == "ram")
    cached = sum(s["bytes"] for s in stores.values() if s["tier"] == "page cache")
    return {"recall@10": recall(res.rows, truth, 10), "p50_ms": p50, "p99_ms": p99,
            "mean_ms": float(np.mean(times) * 1e3), "single_read_kb": float(np.mean(read) / 1024),
            "batch_qps": len(queries) / batch_s, "batch_read_mb": batch_read / 2**20, "state": state,
            "ram_bytes": ram, "cache_bytes": cached if state == WARM else 0,
            "tiers": {k: v["tier"] for k, v in stores.items()}}


def confine(limit: int) -> Path:
    """Move this process into a new memory cgroup capped at `limit` bytes, which its anonymous memory and the page
    cache it faults in share: the stores cannot all stay cached (needs root and a memory controller)."""
    v1 = Path("/sys/fs/cgroup/memory")
    base, knob = (v1, "memory.limit_in_bytes") if v1.is_dir() else (Path("/sys/fs/cgroup"), "memory.max")
    group = base / f"matryoshka-cold-{os.getpid()}"
    group.mkdir(exist_ok=True)
    (group / knob).write_text(str(limit))
    (group / "cgroup.procs").write_text(str(os.getpid()))
    return group


def device_iops(path: Path) -> dict:
    """Random 4 KiB O_DIRECT reads per second at queue depth 1 and 32: what the SSD tier can ask of the disk."""
    return {f"qd{d}_iops": row_reader.random_read_rate(path, depth=d) for d in (1, 32)}


def run_diskann(python: str, docs: Path, queries: Path, work: Path, n_single: int, ram_bytes: int,
                k: int = 10) -> list[dict]:
    """DiskANN's SSD index in its own Python (diskannpy pins numpy 1.25), its in-memory codes given the RAM the
    engine's codes take; see `diskann_worker`."""
    cmd = [python, str(Path(__file__).with_name("diskann_worker.py")), str(docs), str(queries), str(work),
           str(n_single), str(k), str(ram_bytes / 1e9)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"diskann worker failed:\n{p.stderr[-3000:]}")
    return json.loads(next(line for line in reversed(p.stdout.splitlines()) if line.startswith("[")))  # after its log


def _line(r: dict) -> str:
    ram = f"  ram {r['ram_bytes'] / 2**20:6.1f} MiB" if "ram_bytes" in r else ""
    return (f"{r['condition']:46} recall {r['recall@10']:.3f}  p50 {r['p50_ms']:7.2f} ms  mean {r['mean_ms']:7.2f} ms"
            f"  read {r['single_read_kb']:7.1f} KiB/q  batch {r['batch_qps']:7.0f} q/s{ram}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.cold", description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200_000, help="GCIDE senses to index (default 200k)")
    ap.add_argument("--queries", type=int, default=200,
                    help="queries for recall and the batch (default 200; the rest of 500 warm a capped cache)")
    ap.add_argument("--single", type=int, default=100, help="single queries timed per condition (default 100)")
    ap.add_argument("--setting", help="nprobe/k1/k2 (default: the index's measured operating point)")
    ap.add_argument("--memory-limit", help="run every condition in a memory cgroup of this size (e.g. 700M), "
                                           "page cache included, instead of dropping the cache before each query")
    ap.add_argument("--work", type=Path, default=CACHE)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cold-gcide.json"))
    ap.add_argument("--diskann-python", help="a Python with diskannpy (it pins numpy 1.25), e.g. /tmp/dann/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--row-order", choices=("input", "lists"), default="input",
                    help="lists: the int8 and full stores in IVF-list order (the plan of the row-order index repeated)")
    a = ap.parse_args(argv)
    set_threads(a.threads)
    ds = text_dataset(a.work, "gcide", limit=a.limit, n_queries=500)
    queries = np.ascontiguousarray(ds.queries[:a.queries], np.float32)
    warmup = np.ascontiguousarray(ds.queries[a.queries:], np.float32)
    truth, _ = exact_topk(ds, 10, queries=queries)
    root = a.work / f"index-{ds.n}"
    if not (root / "manifest.json").exists():
        indexing.build(root, ds.docs, queries=warmup, quiet=True)
    if a.row_order == "lists":  # the same plan and operating point, the stores in IVF-list order
        ordered = a.work / f"index-{ds.n}-lists"
        if not (ordered / "manifest.json").exists():
            indexing.build(ordered, ds.docs, queries=warmup, quiet=True, plan_from=root, row_order="lists")
        root = ordered
    with retrieval.open_index(root) as ix:
        params, info = ix.params, ix.info()
    setting = dict(k=10, rerank=False)
    if a.setting:
        setting.update(zip(("nprobe", "k1", "k2"), (int(v) for v in a.setting.split("/"))))
    else:
        setting.update(nprobe=params.nprobe, k1=params.k1, k2=params.k2, probe_margin=params.probe_margin)
    full_path = root / layout.shard_dir(0) / layout.FULL_FILE
    iops = device_iops(full_path)
    docs_path, q_path = a.work / f"docs-{info['count']}.npy", a.work / f"queries-{len(queries)}.npy"
    if a.diskann_python and not docs_path.exists():
        np.save(docs_path, np.ascontiguousarray(ds.docs, np.float32))
    del ds  # the documents leave memory before any cap applies
    group = None
    if a.memory_limit:
        gc.collect()
        evict_tree(root)
        group = confine(tiers.parse_bytes(a.memory_limit))
    rows = []
    for name, keep, ssd in conditions(LIMITED if group else None):
        state = LIMITED if group else WARM if name.startswith("warm") else COLD
        rows.append({"system": "engine", "condition": name,
                     **run_condition(root, queries, warmup, truth, setting, keep, ssd, state, a.single)})
        print(_line(rows[-1]), flush=True)
    if a.diskann_python:
        np.save(q_path, queries)
        for r in run_diskann(a.diskann_python, docs_path, q_path, a.work / f"diskann-{info['count']}", a.single,
                             info["stores"]["codes"]["bytes"]):
            r["recall@10"] = recall(np.asarray(r.pop("rows")), truth, 10)
            rows.append(r)
            print(_line(r), flush=True)
    report = {"n": info["count"], "dim": info["full_dim"], "queries": len(queries), "single_queries": a.single,
              "setting": setting, "threads": a.threads, "device": iops, "stores": info["stores"],
              "memory_limit": a.memory_limit and tiers.parse_bytes(a.memory_limit), "rows": rows,
              "command": " ".join(["python -m matryoshka.benchmarks.cold", *(sys.argv[1:] if argv is None else argv)])}
    if group:
        report["cgroup_peak_bytes"] = int((group / "memory.max_usage_in_bytes").read_text()) \
            if (group / "memory.max_usage_in_bytes").exists() else int((group / "memory.peak").read_text())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1, default=float))
    print(f"device: {iops['qd1_iops']:.0f} random 4 KiB reads/s at queue depth 1, {iops['qd32_iops']:.0f} at 32; "
          f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
