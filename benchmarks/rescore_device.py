"""Which re-scoring is faster: today's numpy path (`rerank.rescore`) or torch tensors (`rerank.device_rescore`), on
the CPU and, where torch sees one, on a CUDA device: the int8 stage (k1 candidates of int8 short vectors) and the
full stage (k2 candidates of float16 full vectors) on random rows of stores in RAM, best of `--repeats`.

    python -m matryoshka.benchmarks.rescore_device [--queries 1000] [--k1 150] [--k2 20] [--short-dim 256]
        [--full-dim 384] [--rows 200000] [--out benchmarks/results/rescore-device.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from matryoshka.core.codec import Int8Codec
from matryoshka.rerank import device_rescore, rescore
from matryoshka.storage.device_store import DeviceRows
from matryoshka.storage.row_store import RowStore


def best_seconds(run, repeats: int, sync: bool = False) -> float:
    """The fastest of `repeats` timed runs of `run()`, after one untimed; `sync` waits for CUDA's queue."""
    run()
    best = float("inf")
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        if sync:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def stores(rows: int, short_dim: int, full_dim: int, seed: int = 0) -> tuple[RowStore, RowStore, Int8Codec]:
    """An int8 store and a float16 full store of `rows` random rows (one shard each), and their codec."""
    rng = np.random.default_rng(seed)
    full = rng.standard_normal((rows, full_dim), dtype=np.float32)
    codec = Int8Codec.fit(full[:20000, :short_dim])
    short = RowStore(np.zeros(1), [codec.encode(full[:, :short_dim])], short_dim, np.int8)
    return short, RowStore(np.zeros(1), [full.astype(np.float16)], full_dim, np.float16), codec


def compare(devices: list[str], queries: int = 1000, k1: int = 150, k2: int = 20, short_dim: int = 256,
            full_dim: int = 384, rows: int = 200_000, metric: str = "cosine", repeats: int = 3) -> dict:
    """Seconds of each stage per path: numpy, then torch on each of `devices` (the int8 stage from host rows and
    from rows held on the device), with each torch path's time over numpy's."""
    short, full, codec = stores(rows, short_dim, full_dim)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((queries, full_dim), dtype=np.float32)
    c1, c2 = rng.integers(0, rows, (queries, k1)), rng.integers(0, rows, (queries, k2))
    q = x[:, :short_dim].copy()
    s1 = rescore.int8_scores(q, c1, short, codec, metric)
    runs = {"numpy": {"int8": lambda: rescore.int8_scores(q, c1, short, codec, metric),
                      "full": lambda: rescore.full_scores(x, c2, full, metric),
                      "keep": lambda: rescore.keep(c1.copy(), {"int8": s1}, "int8", k2)}}
    for dev in devices:
        held = DeviceRows(short, dev)
        runs[f"torch-{dev}"] = {
            "int8": lambda dev=dev: device_rescore.int8_scores(q, c1, short, codec, metric, dev),
            "int8_held": lambda dev=dev, held=held: device_rescore.int8_scores(q, c1, held, codec, metric, dev),
            "full": lambda dev=dev: device_rescore.full_scores(x, c2, full, metric, None, dev),
            "keep": lambda dev=dev: device_rescore.keep(c1, {"int8": s1}, "int8", k2, dev)}
    seconds = {path: {stage: best_seconds(run, repeats, sync=path == "torch-cuda") for stage, run in stages.items()}
               for path, stages in runs.items()}
    ratio = {path: {stage: s / seconds["numpy"][stage.removesuffix("_held")] for stage, s in stages.items()}
             for path, stages in seconds.items() if path != "numpy"}
    return {"queries": queries, "k1": k1, "k2": k2, "short_dim": short_dim, "full_dim": full_dim, "rows": rows,
            "metric": metric, "repeats": repeats, "seconds": seconds, "over_numpy": ratio,
            "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "cpu": platform.processor() or
            platform.machine(), "torch": torch.__version__, "numpy": np.__version__,
            "cuda": torch.cuda.get_device_name() if "cuda" in devices else None}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.rescore_device",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k1", type=int, default=150)
    ap.add_argument("--k2", type=int, default=20)
    ap.add_argument("--short-dim", type=int, default=256)
    ap.add_argument("--full-dim", type=int, default=384)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--metric", default="cosine", choices=("cosine", "ip", "l2"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rescore-device.json"))
    a = ap.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    r = compare(devices, a.queries, a.k1, a.k2, a.short_dim, a.full_dim, a.rows, a.metric, a.repeats)
    for path, stages in r["over_numpy"].items():
        print(f"{path} over numpy: " + ", ".join(f"{s} {v:.2f}x" for s, v in stages.items()))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(r, indent=1))
    return r


if __name__ == "__main__":
    main()
