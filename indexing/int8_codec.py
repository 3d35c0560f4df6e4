"""int8 scalar quantization of short vectors with per-dimension offsets and scales."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIP_QUANTILE = 1e-4  # the extreme 0.01% of each dim is clipped rather than widening every step


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
