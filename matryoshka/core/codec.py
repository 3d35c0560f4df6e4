"""The shortening codec: full vector -> short vector (prefix or projection) -> int8 codes, saved as one file.

Built once by training (see `indexing.transform`), stored as `transform.npz`, and applied unchanged to every
document and every query.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

CLIP_QUANTILE = 1e-4  # the extreme 0.01% of each dim is clipped rather than widening every step


@dataclass
class ShortTransform:
    """x (n, D) -> (n, d). `prefix` keeps the first d dims, `pca` multiplies by a fitted (D, d) matrix.

    Both end with a fixed random rotation of the d dims (folded into the pca matrix): it keeps every inner
    product and spreads the variance, which the leading dims hold, evenly over PQ's sub-quantizers. Measured
    on 200k rotated synthetic vectors (1024 -> 256, IVF1024,PQ32): first-pass recall@10 0.27 -> 0.53.
    """

    kind: str
    full_dim: int
    dim: int
    renormalize: bool
    matrix: np.ndarray | None = None  # (D, d) for pca, the rotation included
    rotation: np.ndarray | None = None  # (d, d) after a prefix

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "prefix":
            # a copy: for one row the slice is already contiguous, and re-normalizing a view rewrote the caller's
            # query (found by tests/test_fuzz_build.py)
            y = np.array(x[:, : self.dim], dtype=np.float32, order="C")
            if self.renormalize:
                y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
            return y @ self.rotation if self.rotation is not None else y
        return np.ascontiguousarray(x @ self.matrix, dtype=np.float32)

    def rotated(self, rotation: np.ndarray) -> "ShortTransform":
        """This transform followed by an orthogonal (d, d) rotation (a learned OPQ rotation, say), folded in."""
        r = np.asarray(rotation, dtype=np.float32)
        if self.kind == "prefix":
            return replace(self, rotation=r if self.rotation is None else np.ascontiguousarray(self.rotation @ r))
        return replace(self, matrix=np.ascontiguousarray(self.matrix @ r))

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"kind": np.array(self.kind), "full_dim": np.array(self.full_dim), "dim": np.array(self.dim),
               "renormalize": np.array(self.renormalize)}
        for name in ("matrix", "rotation"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_arrays(cls, a) -> "ShortTransform":
        return cls(kind=str(a["kind"]), full_dim=int(a["full_dim"]), dim=int(a["dim"]),
                   renormalize=bool(a["renormalize"]), matrix=a["matrix"] if "matrix" in a else None,
                   rotation=a["rotation"] if "rotation" in a else None)


@dataclass
class Int8Codec:
    """x ~= offset + scale * code, code in [-127, 127]. Out-of-range values clip, never wrap."""

    offset: np.ndarray  # (d,) float32
    scale: np.ndarray  # (d,) float32

    @classmethod
    def fit(cls, sample: np.ndarray) -> "Int8Codec":
        lo = np.quantile(sample, CLIP_QUANTILE, axis=0)
        hi = np.quantile(sample, 1 - CLIP_QUANTILE, axis=0)
        scale = np.maximum((hi - lo) / 254.0, 1e-8)
        return cls(offset=((hi + lo) / 2).astype(np.float32), scale=scale.astype(np.float32))

    def encode(self, x: np.ndarray) -> np.ndarray:
        codes = np.rint((x - self.offset) / self.scale)
        np.clip(codes, -127, 127, out=codes)
        return codes.astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float32) * self.scale + self.offset

    def fold_query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q . decode(c) = q . offset + (q * scale) . c: returns (q * scale, q . offset) for scoring raw codes."""
        return (q * self.scale).astype(np.float32), (q @ self.offset).astype(np.float32)

    def inner_products(self, codes: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(n, k, d) codes . (n, d) queries -> (n, k) inner products with the decoded rows, as one batched
        matrix-vector product on the raw codes."""
        qs, const = self.fold_query(q)
        return np.matmul(codes.astype(np.float32), qs[:, :, None])[..., 0] + const[:, None]


@dataclass
class Codec:
    """The shortening transform and the int8 codec of its output: what `transform.npz` holds."""

    transform: ShortTransform
    int8: Int8Codec

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **self.transform.to_arrays(), int8_offset=self.int8.offset, int8_scale=self.int8.scale)
        return buf.getvalue()

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> "Codec":
        """The codec saved by `save` (`path` may be an open binary file)."""
        with np.load(path) as a:
            return cls(ShortTransform.from_arrays(a), Int8Codec(a["int8_offset"], a["int8_scale"]))
