"""The settings of a build, and which of them decide the index (its identity) rather than how it is made."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path


from matryoshka.core import layout
from matryoshka.core.device import DEVICES
from matryoshka.core.checks import flag, integer, number
from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.core.vectors import check_metric
from matryoshka.storage import tiers
from matryoshka.storage.manifest import read_manifest
from matryoshka.storage.pinned import PinnedFolder

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
    rotation: str | None = None  # "opq" or "random" fixes the rotation; None: measured (select) or random
    lexical: bool = False  # a BM25 index of the texts in every shard, for mode="lexical" / "hybrid" searches
    expected_count: int | None = None  # an iterator input's size, for planning (its length is unknown up front)
    memory_budget: int | str | None = None  # RAM the index will be served with: its operating point is measured so
    row_order: str = "input"  # "lists": int8 and full vectors stored in IVF-list order, so a probed list's rows
    # share pages (fewer device reads from SSD; 4 bytes per vector held in RAM to find them)

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
                                    ("batch_rows", 1, False), ("threads", 1, True),
                                    ("expected_count", 1, True)):
            integer(name, getattr(self, name), low, optional=optional)
        for name in ("fast_scan", "quiet", "overwrite", "tune", "select", "lexical"):
            flag(name, getattr(self, name), optional=name == "fast_scan")
        number("target_recall", self.target_recall, 0, 1, low_open=True)
        if self.memory_budget is not None:
            tiers.parse_bytes(self.memory_budget)
        if self.row_order not in ROW_ORDERS:
            raise InputError(f"row_order must be one of {', '.join(ROW_ORDERS)}; got {self.row_order!r}")
        for name in ("transform", "metric", "device"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name} must be a string; got {getattr(self, name)!r}")
        if self.rotation is not None and self.rotation not in ROTATIONS:
            raise InputError(f"unknown rotation {self.rotation!r}; choose one of {', '.join(ROTATIONS)} or None "
                             "(measured)")
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
            "select", "target_recall", "rotation", "lexical", "row_order")
ROTATIONS = ("random", "opq")
ROW_ORDERS = ("input", "lists")


def plan_options(other: str | os.PathLike) -> dict:
    """The options that repeat the plan of the index at `other` exactly (`--plan-from`): its dims, metric,
    shortening, partition, code and rotation, with nothing measured again."""
    try:
        with PinnedFolder(Path(other)) as folder:
            m = read_manifest(folder)
        nlist, code = layout.parse_factory(m.factory)
        sel = (m.build.get("selection") or {})
        plan = {"index_dim": m.index_dim, "metric": m.metric, "transform": m.transform["kind"],
                "nlist": nlist, "select": False, "rotation": sel.get("rotation_kind", "random")}
    except (IndexFormatError, KeyError, ValueError, TypeError, AttributeError, OSError) as e:
        raise InputError(f"--plan-from {other}: not an index whose plan can be read ({e}); name the folder of "
                         "an index built by this engine") from None
    if code != "Flat":
        m_sub, _, bits = code[2:].removesuffix("fs").partition("x")
        plan.update(fast_scan=code.endswith("fs"), pq_bytes=int(m_sub) * int(bits or 8) // 8)
    return plan
