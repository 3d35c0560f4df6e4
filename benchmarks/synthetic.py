"""Synthetic embeddings with realistic structure: clusters, a decaying spectrum, Matryoshka-like or not.

Matryoshka-like: the variance decays along the dims, so the leading dims carry most of the information.
Not Matryoshka-like: the same vectors turned by a fixed random rotation, which spreads it over every dim.
Generation is chunked and seeded per chunk, so any row range can be made again without the rest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 65536


@dataclass
class Synthetic:
    dim: int = 768
    matryoshka: bool = True
    clusters: int = 1024
    decay: float = 0.7  # std of dim j is (1 + j)^-decay
    noise: float = 0.5  # within-cluster spread relative to the spread of the centres
    seed: int = 0

    def __post_init__(self):
        rng = np.random.default_rng([self.seed, 0])
        self.std = ((1.0 + np.arange(self.dim)) ** -self.decay).astype(np.float32)
        self.centres = (rng.standard_normal((self.clusters, self.dim)) * self.std).astype(np.float32)
        self.rotation = None
        if not self.matryoshka:
            q, r = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
            self.rotation = (q * np.sign(np.diag(r))).astype(np.float32)

    def rows(self, lo: int, hi: int, stream: int = 1) -> np.ndarray:
        """Rows lo..hi-1 of stream `stream` (1: documents, 2: queries), float32, deterministic."""
        out = np.empty((hi - lo, self.dim), dtype=np.float32)
        for c in range(lo // CHUNK, (hi - 1) // CHUNK + 1):
            a, b = max(lo, c * CHUNK), min(hi, (c + 1) * CHUNK)
            out[a - lo:b - lo] = self._chunk(stream, c)[a - c * CHUNK:b - c * CHUNK]
        return out

    def _chunk(self, stream: int, c: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, c])
        label = rng.integers(0, self.clusters, CHUNK)
        x = self.centres[label] + self.noise * rng.standard_normal((CHUNK, self.dim), dtype=np.float32) * self.std
        return x @ self.rotation if self.rotation is not None else x

    def documents(self, n: int) -> np.ndarray:
        return self.rows(0, n, stream=1)

    def queries(self, n: int) -> np.ndarray:
        return self.rows(0, n, stream=2)

    def write_npy(self, path: str | Path, n: int, dtype=np.float16, progress: bool = True) -> Path:
        """Stream n documents into a .npy file without holding them in RAM."""
        from matryoshka.core.progress import bar
        from matryoshka.storage.npy_writer import NpyAppender
        w = NpyAppender(Path(path), self.dim, dtype)
        with bar(n, "generate", not progress) as pbar:
            for lo in range(0, n, CHUNK):
                hi = min(n, lo + CHUNK)
                w.append(self.rows(lo, hi))
                pbar.update(hi - lo)
        w.close()
        return Path(path)
