"""The settings of a build, and which of them decide the index (its identity) rather than how it is made."""
from __future__ import annotations

from dataclasses import dataclass, fields

from matryoshka.core.errors import InputError


@dataclass
class BuildOptions:
    """Settings of a build. Those in IDENTITY decide the index; the rest only decide how it is made."""

    index_dim: int = 256
    transform: str = "auto"
    metric: str = "cosine"
    pq_bytes: int = 32
    fast_scan: bool = False
    nlist: int | None = None
    shard_size: int = 1_000_000
    train_size: int | None = None
    seed: int = 0
    batch_rows: int = 16384
    device: str = "auto"
    threads: int | None = None
    quiet: bool = False
    overwrite: bool = False

    @classmethod
    def of(cls, **options) -> "BuildOptions":
        """Options by name; an unknown name is an InputError listing the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = set(options) - set(known)
        if unknown:
            raise InputError(f"unknown build option(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
        return cls(**options)


IDENTITY = ("index_dim", "transform", "metric", "pq_bytes", "fast_scan", "nlist", "shard_size", "train_size", "seed")
