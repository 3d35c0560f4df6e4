"""The settings of a build, and which of them decide the index (its identity) rather than how it is made."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from matryoshka.core.device import DEVICES
from matryoshka.core.errors import InputError
from matryoshka.core.vectors import check_metric

TRANSFORMS = ("prefix", "pca", "auto")


@dataclass
class BuildOptions:
    """Settings of a build. Those in IDENTITY decide the index; the rest only decide how it is made."""

    index_dim: int = 256
    transform: str = "auto"
    metric: str = "cosine"
    pq_bytes: int = 32
    fast_scan: bool | None = None  # None: 4-bit fast-scan PQ on a CPU build, 8-bit PQ on a GPU build
    nlist: int | None = None
    shard_size: int = 1_000_000
    train_size: int | None = None
    seed: int = 0
    batch_rows: int = 16384
    device: str = "auto"
    threads: int | None = None
    quiet: bool = False
    overwrite: bool = False
    tune: bool = True  # measure the default operating point at the end of the build (retrieval.tuning)
    select: bool = True  # choose nlist, code and rotation by measurement on the sample (indexing.selection)
    target_recall: float = 0.95  # recall@10 the plan and the default operating point are measured for

    @classmethod
    def of(cls, **options) -> "BuildOptions":
        """Options by name; an unknown name is an InputError listing the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = set(options) - set(known)
        if unknown:
            raise InputError(f"unknown build option(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
        return cls(**options)

    def check(self) -> "BuildOptions":
        """Refuse values no build can use, naming the option, before anything is written."""
        for name, low, optional in (("index_dim", 1, False), ("pq_bytes", 1, False), ("nlist", 1, True),
                                    ("shard_size", 1, False), ("train_size", 1, True), ("seed", 0, False),
                                    ("batch_rows", 1, False), ("threads", 1, True)):
            v = getattr(self, name)
            if v is None and optional:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise InputError(f"{name} must be an integer >= {low}{' or None' if optional else ''}; got {v!r}")
        for name in ("fast_scan", "quiet", "overwrite", "tune", "select"):
            if not isinstance(getattr(self, name), (bool, np.bool_)) and not (name == "fast_scan" and
                                                                               self.fast_scan is None):
                raise InputError(f"{name} must be True or False; got {getattr(self, name)!r}")
        t = self.target_recall
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating)) or not 0 < t <= 1:
            raise InputError(f"target_recall must be a number in (0, 1]; got {t!r}")
        if self.transform not in TRANSFORMS:
            raise InputError(f"unknown transform {self.transform!r}; choose one of {', '.join(TRANSFORMS)}")
        check_metric(self.metric)
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        return self

    def for_device(self, device: str, dim: int) -> "BuildOptions":
        """Options with the code chosen for `device` and index dim `dim` where the user left it open: 4-bit
        fast-scan PQ scans 2-3x faster than 8-bit PQ on a CPU at equal recall (benchmarks/results), so a CPU
        build takes it wherever its 2 x pq_bytes sub-quantizers divide the dim; faiss's GPU IVF-PQ has no
        fast-scan, so a GPU build keeps 8-bit codes."""
        if self.fast_scan is not None:
            return self
        return replace(self, fast_scan=device != "gpu" and dim % (2 * self.pq_bytes) == 0)


IDENTITY = ("index_dim", "transform", "metric", "pq_bytes", "fast_scan", "nlist", "shard_size", "train_size", "seed",
            "select", "target_recall")
