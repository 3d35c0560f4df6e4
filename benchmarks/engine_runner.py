"""Build this engine's index on a dataset and measure every stage of the cascade at a few operating points."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.retrieval import SearchParams

from .data import Dataset
from .measure import measure
from .metrics import Qrels, quality
from .resources import reset_peak

DEFAULT_POINTS = ((8, 200, 100), (16, 500, 100), (32, 500, 100), (64, 1000, 200), (128, 2000, 200))


CODES = {"auto": None, "pq": False, "fs": True}  # the build's measured choice, 8-bit PQ, 4-bit fast-scan


@dataclass
class EngineSetting:
    """One build: index dim, code bytes, and the code: measured by the build (None), 8-bit PQ or fast-scan."""
    index_dim: int
    pq_bytes: int
    fast_scan: bool | None
    transform: str = "auto"
    target_recall: float = 0.95  # what the build measures its plan and default operating point for

    @property
    def code(self) -> str:
        if self.fast_scan is None:
            return f"{self.pq_bytes}B"
        return f"PQ{self.pq_bytes * 2}x4fs" if self.fast_scan else f"PQ{self.pq_bytes}"

    @property
    def name(self) -> str:
        return f"engine-{self.code}"


def default_settings(dim: int, index_dim: int | None = None, pq_bytes: int | None = None,
                     codes: tuple[str, ...] = ("auto", "pq", "fs"), target_recall: float = 0.95) -> list[EngineSetting]:
    """256 dims (or half the full dim), 32-byte codes (8 dims per byte where the dim is small), one build per
    code: the build's own measured choice ("auto"), 8-bit PQ ("pq"), 4-bit fast-scan ("fs")."""
    d = index_dim or min(256, dim // 2)
    b = pq_bytes or min(32, max(1, d // 8))
    return [EngineSetting(d, b, CODES[c], target_recall=target_recall) for c in codes]


def run_engine(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, setting: EngineSetting, threads: int,
               workdir: Path, points=DEFAULT_POINTS, latency_queries: int = 100) -> list[dict]:
    """Build once, then one row per (nprobe, k1, k2) with the final recall and each stage's quality and time."""
    out = Path(workdir) / f"{ds.name}-{setting.name}-{setting.index_dim}d".replace("/", "_")
    reset_peak()
    t = time.perf_counter()
    indexing.build(out, ds.build_input(), index_dim=setting.index_dim, pq_bytes=setting.pq_bytes,
                   fast_scan=setting.fast_scan, transform=setting.transform, target_recall=setting.target_recall,
                   threads=threads, quiet=True,
                   overwrite=True, shard_size=max(ds.n, 1))
    build_wall = time.perf_counter() - t
    index = retrieval.open_index(out, device="cpu", threads=threads)
    info = index.info()
    build = info["build"]
    rows = []
    stored = index.params  # the operating point the build measured (retrieval.tuning)
    nlist = layout.parse_factory(info["factory"])[0]
    lists = (info["operating_point"] or {}).get("lists_probed")
    for label, (nprobe, k1, k2), margin in [("default", (stored.nprobe, stored.k1, stored.k2), stored.probe_margin)] + \
            [("", p, None) for p in points]:
        k1, k2 = min(k1, ds.n), min(k2, k1)
        point = SearchParams(k=10, nprobe=nprobe, k1=k1, k2=k2, k3=10, rerank=False, probe_margin=margin)

        def search(q, k, point=point):
            return index.search_batch(q, params=point.updated(k=k, k1=max(point.k1, k), k2=max(point.k2, k),
                                                              k3=k)).rows
        m = measure(search, ds.queries, truth, qrels, latency_queries)
        timed = index.search_batch(ds.queries, params=point)
        per_q = {s: 1000.0 * v / len(ds.queries) for s, v in timed.timings.items()}
        first = index.search_batch(ds.queries, params=point.updated(k=k1, int8=False, full=False))
        mid = index.search_batch(ds.queries, params=point.updated(k=k2, full=False))
        stages = {"first_pass": quality(first.rows, truth, qrels, k1), "int8": quality(mid.rows, truth, qrels, k2),
                  "full": quality(timed.rows, truth, qrels, 10)}
        # what each stage reads per query: the codes of nprobe lists, then k1 int8 rows, then k2 full rows
        probed = lists if margin is not None and lists else min(nprobe, nlist)
        scanned = {"first_pass": ds.n * probed / nlist, "int8": k1, "full": k2}
        for s, q in stages.items():
            q["ms_per_query_in_batch"] = per_q.get(s)
            q["candidates_per_query"] = scanned[s]
            q["ns_per_candidate"] = 1e6 * per_q[s] / scanned[s] if per_q.get(s) else None
        name = f"nprobe={nprobe},k1={k1},k2={k2}" if margin is None else \
            f"nprobe<={nprobe},margin={margin:.3g} ({probed:.0f} lists),k1={k1},k2={k2}"
        rows.append({
            "system": setting.name, "setting": f"{label} ({name})" if label else name, "dataset": ds.name,
            "n": ds.n, "dim": ds.dim, "index_dim": info["index_dim"], "factory": info["factory"],
            "transform": info["transform"]["kind"], "nprobe": nprobe, "k1": k1, "k2": k2, "probe_margin": margin,
            **m, "stages": stages,
            "ram_bytes_per_vector": info["ram_bytes_per_vector"],
            "mmap_bytes_per_vector": info["mmap_bytes_per_vector"],
            "disk_bytes_per_vector": info["disk_bytes_per_vector"],
            "build_seconds": build_wall, "build_vectors_per_second": ds.n / build_wall,
            "build_add_vectors_per_second": build.get("vectors_per_second"),
            "build_stage_seconds": build.get("seconds"),
            "transform_selection": info["transform"].get("selection"),
            "plan_selection": build.get("selection"),
            "operating_point": info["operating_point"] and {k: v for k, v in info["operating_point"].items()
                                                            if k != "tried"},
        })
    return rows
