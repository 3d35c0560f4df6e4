"""Benchmark datasets: documents (normalized, possibly memory-mapped), queries, optional labels.

Documents are kept as a float16 `.npy` file when they come from a generator, so 10M x 1024 never sits in RAM;
every system reads that same file (or an array of the same values).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import Qrels
from .synthetic import CHUNK, Synthetic

FLAVOURS = ("matryoshka", "rotated")


@dataclass
class Dataset:
    name: str
    docs: np.ndarray  # (n, D) unit rows, float32 array or float16 memory map
    queries: np.ndarray  # (nq, D) unit rows, float32
    qrels: Qrels | None = None  # query row -> {doc row: gain}
    path: Path | None = None  # the .npy the docs live in, when they do
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.docs.shape[0])

    @property
    def dim(self) -> int:
        return int(self.docs.shape[1])

    def block(self, lo: int, hi: int) -> np.ndarray:
        return np.ascontiguousarray(self.docs[lo:hi], dtype=np.float32)

    def build_input(self):
        """What `indexing.build` reads: the .npy path when there is one (streamed), else the array."""
        return str(self.path) if self.path is not None else self.docs

    def subset(self, n: int) -> "Dataset":
        """The first n documents (labels restricted to them)."""
        if n >= self.n:
            return self
        qrels = None if self.qrels is None else \
            {q: {d: g for d, g in r.items() if d < n} for q, r in self.qrels.items()}
        return Dataset(f"{self.name}[:{n}]", self.docs[:n], self.queries, qrels, None, dict(self.meta, subset=n))


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def synthetic(n: int, dim: int, flavour: str, n_queries: int, workdir: Path, clusters: int = 1024,
              seed: int = 0) -> Dataset:
    """Clustered vectors with a decaying spectrum, written once to workdir as normalized float16 `.npy`."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}; got {flavour!r}")
    gen = Synthetic(dim=dim, matryoshka=flavour == "matryoshka", clusters=clusters, seed=seed)
    path = Path(workdir) / f"synthetic-{flavour}-{dim}d-{n}-s{seed}.f16.npy"
    if not path.exists():
        from matryoshka.storage.npy_writer import NpyAppender
        tmp = path.with_name(path.name + ".part")
        w = NpyAppender(tmp, dim, np.float16)
        for lo in range(0, n, CHUNK):
            w.append(normalize(gen.rows(lo, min(n, lo + CHUNK))))
        w.close()
        tmp.rename(path)
    docs = np.load(path, mmap_mode="r")
    meta = {"kind": "synthetic", "flavour": flavour, "clusters": clusters, "seed": seed, "decay": gen.decay}
    return Dataset(f"synthetic-{flavour}", docs, normalize(gen.queries(n_queries)), None, path, meta)
