"""The device check: vectors made on the GPU (nothing large travels to the machine), exact truth computed there, a
GPU build, then the same index searched on the GPU and on the CPU at one setting: per-stage times, QPS at
batch 1 / 100 / 10,000 and recall@10, and the re-scoring stages alone (numpy, torch on the CPU, torch on CUDA).

    python -m matryoshka.benchmarks.gpu_check [--n 10000000] [--dim 384] [--out gpu_check.json]

The report is written after every step, so a run stopped by a time limit keeps what it measured.
`benchmarks/gpu/run_check.sh` installs what a bare GPU machine lacks and runs this. `--device cpu` runs every
step on the CPU (at a tiny size: the test of this module).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from matryoshka import retrieval
from matryoshka.core.vectors import recall_at
from matryoshka.indexing.build import build_index
from matryoshka.indexing.options import BuildOptions
from matryoshka.indexing.sources import ArraySource

from . import device_data, rescore_device

BATCHES = (1, 100, 10_000)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="documents, made on the device (default 10M)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--index-dim", type=int, default=256)
    ap.add_argument("--pq-bytes", type=int, default=32)
    ap.add_argument("--queries", type=int, default=10_000, help="queries (the largest batch; default 10,000)")
    ap.add_argument("--single", type=int, default=200, help="queries searched one at a time (batch 1)")
    ap.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--k1", type=int, default=150)
    ap.add_argument("--k2", type=int, default=20)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="where the data is made and the exact truth computed; cuda also searches on the GPU")
    ap.add_argument("--gpu-memory-budget", help="passed to open_index for the GPU search (e.g. 40G)")
    ap.add_argument("--rescore-rows", type=int, default=1_000_000, help="rows of the stores the stages are timed on")
    ap.add_argument("--index", default="/tmp/gpu-check-index")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = _args(argv)
    cuda = a.device == "cuda"
    report = {"n": a.n, "dim": a.dim, "index_dim": a.index_dim, "metric": a.metric, "queries": a.queries,
              "setting": {"k": 10, "nprobe": a.nprobe, "k1": a.k1, "k2": a.k2},
              "card": torch.cuda.get_device_name() if cuda else None, "cpus": os.cpu_count(),
              "faiss": faiss.__version__, "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
              "torch": torch.__version__, "seconds": {}}

    def step(name: str, seconds: float) -> None:
        report["seconds"][name] = seconds
        a.out.write_text(json.dumps(report, indent=1))
        print(f"{name}: {seconds:.1f} s", flush=True)

    t = _clock(cuda)
    docs = device_data.clustered(a.n, a.dim, a.device, stream=1)
    q = device_data.clustered(a.queries, a.dim, a.device, stream=2)
    step("generate", _clock(cuda) - t)
    t = _clock(cuda)
    truth = device_data.exact_topk(q, docs, 10, a.metric).cpu().numpy()
    step("exact_truth", _clock(cuda) - t)
    host_docs, q = docs.cpu().numpy(), q.cpu().numpy()
    del docs  # the GPU memory goes to faiss
    if cuda:
        torch.cuda.empty_cache()

    t = time.perf_counter()
    opts = BuildOptions.of(device="gpu" if cuda else "cpu", index_dim=a.index_dim, pq_bytes=a.pq_bytes,
                           metric=a.metric, transform="prefix", select=False, tune=False, overwrite=True,
                           quiet=True, shard_size=max(1, a.n // 2))
    build_index(a.index, ArraySource(host_docs, fingerprint={"kind": "gpu_check", "n": a.n}), opts)
    del host_docs
    step("build", time.perf_counter() - t)

    for device in ("gpu", "cpu") if cuda else ("cpu",):
        extra = {"gpu_memory_budget": a.gpu_memory_budget} if device == "gpu" and a.gpu_memory_budget else {}
        index = retrieval.open_index(a.index, device=device, **extra)
        t = time.perf_counter()
        report[device] = search(index, q, truth, a.single, report["setting"])
        index.close()
        step(f"search_{device}", time.perf_counter() - t)

    t = time.perf_counter()
    report["rescore"] = rescore_device.compare(["cpu", "cuda"] if cuda else ["cpu"], min(a.queries, 1000), a.k1,
                                               a.k2, a.index_dim, a.dim, min(a.n, a.rescore_rows), a.metric)
    step("rescore", time.perf_counter() - t)
    return report


def search(index, q: np.ndarray, truth: np.ndarray, single: int, setting: dict) -> dict:
    """Per batch size of BATCHES (`single` queries one at a time, else at least 2,000 queries, at most those
    there are): QPS and ms per query in each stage; recall@10 of the largest; where each store lives."""
    index.search_batch(q[:100], **setting)  # warm: the GPU's first call, the page cache
    out = {"stores": {s: v["tier"] for s, v in index.info()["stores"].items()}, "batches": {}}
    for batch in BATCHES:
        count = min(len(q), single if batch == 1 else max(batch, 2000))
        rows, timings, t = [], {}, time.perf_counter()
        for lo in range(0, count, batch):
            r = index.search_batch(q[lo:lo + batch], **setting)
            rows.append(r.rows)
            for stage, s in r.timings.items():
                timings[stage] = timings.get(stage, 0.0) + s
        out["batches"][batch] = {"queries": count, "qps": count / (time.perf_counter() - t),
                                 "ms_per_query": {stage: 1000 * s / count for stage, s in timings.items()}}
        out["recall_at_10"] = recall_at(np.concatenate(rows), truth[:count], 10)
    return out


def _clock(cuda: bool) -> float:
    """Now, once the GPU has done what it was given."""
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


if __name__ == "__main__":
    main()
