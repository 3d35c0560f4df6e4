"""Search options as one value: what the CLI builds, what an index stores as its operating point, what
benchmarks sweep."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .errors import InputError, UnknownOption

DEPTHS = ("k", "nprobe", "k1", "k2", "k3")


@dataclass(frozen=True)
class SearchParams:
    """Depth and switch of each stage of the cascade.

    nprobe: IVF lists scanned; k1: first-pass depth; k2: kept after int8 re-scoring; k3: kept after full
    re-scoring for the cross-encoder; k: returned. int8 / full / rerank switch stages off (rerank=None runs
    it when a reranker is configured and texts exist); full_dims re-scores with only the first dims (a
    cheaper tier). probe_margin makes nprobe a cap: a query skips the lists whose centroid scores trail its
    nearest centroid's by more than the margin (CPU first pass; the tuner measures it).
    """

    k: int = 10
    nprobe: int = 32
    k1: int = 500
    k2: int = 100
    k3: int = 50
    int8: bool = True
    full: bool = True
    rerank: bool | None = None
    full_dims: int | None = None
    probe_margin: float | None = None

    def updated(self, **changes) -> "SearchParams":
        """A copy with some fields changed; an unknown name is an InputError listing the known ones. A new nprobe
        without a probe_margin is probed in full (a stored margin made the old nprobe a cap)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UnknownOption(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}: not search "
                                f"options; known: {', '.join(sorted(known))}")
        if "nprobe" in changes:
            changes.setdefault("probe_margin", None)
        return replace(self, **changes)

    def checked(self, full_dim: int) -> "SearchParams":
        """Validated, with the depths made consistent: k <= k3 <= k2 <= k1."""
        for name in DEPTHS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name} must be a positive integer; got {v!r}")
        if self.probe_margin is not None and (isinstance(self.probe_margin, bool) or not isinstance(
                self.probe_margin, (int, float, np.floating)) or not 0 <= self.probe_margin < float("inf")):
            raise InputError(f"probe_margin must be a number >= 0 or None; got {self.probe_margin!r}")
        if self.full_dims is not None and not 1 <= self.full_dims <= full_dim:
            raise InputError(f"full_dims must be between 1 and {full_dim}; got {self.full_dims}")
        k1 = max(self.k1, self.k)
        k2 = min(max(self.k2, self.k), k1)
        return replace(self, k1=k1, k2=k2, k3=min(max(self.k3, self.k), k2))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchParams":
        return cls().updated(**d)
