"""Drift: how far added vectors sit from what the index was trained on.

Two figures, each measured the same way on the int8 short vectors the shards store, for the index as it
was when first changed (the reference, kept in the manifest) and for every add: the mean distance from a
vector to its nearest IVF centroid, and the share of int8 values at the clipping bound (+-127). Vectors from
another distribution fall between the centroids and outside the int8 range: both figures grow, and so does
the recall the index loses on them. Past the thresholds below, an add warns and recommends a rebuild.
"""
from __future__ import annotations

import faiss
import numpy as np

from matryoshka.core.codec import Int8Codec

SAMPLE = 20000  # rows measured per figure
MIN_ROWS = 200  # fewer added rows are measured but not judged: their mean is too noisy
DISTANCE_RATIO = 1.25  # warn when added vectors sit this much farther from their nearest centroid
CLIP_RATIO = 3.0  # ... or clip this many times as often
CLIP_FLOOR = 0.002  # ... and at least this often


def measure(codes: np.ndarray, int8: Int8Codec, quantizer: faiss.Index, seed: int = 0) -> dict:
    """{"centroid_distance", "clip_rate", "rows"} of up to SAMPLE rows of int8 short vectors `codes`."""
    if len(codes) > SAMPLE:
        codes = codes[np.sort(np.random.default_rng(seed).choice(len(codes), SAMPLE, replace=False))]
    codes = np.asarray(codes)
    if not len(codes):
        return {"centroid_distance": 0.0, "clip_rate": 0.0, "rows": 0}
    x = int8.decode(codes)
    _, nearest = quantizer.search(x, 1)
    centroids = quantizer.reconstruct_batch(nearest[:, 0])
    return {"centroid_distance": float(np.linalg.norm(x - centroids, axis=1).mean()),
            "clip_rate": float((np.abs(codes.astype(np.int16)) == 127).mean()), "rows": int(len(codes))}


def verdict(added: dict, reference: dict) -> str | None:
    """A warning recommending a rebuild when `added` drifted past the thresholds from `reference`, else None."""
    if added["rows"] < MIN_ROWS:
        return None
    far = added["centroid_distance"] > DISTANCE_RATIO * reference["centroid_distance"]
    clipped = added["clip_rate"] > max(CLIP_RATIO * reference["clip_rate"], CLIP_FLOOR)
    if not (far or clipped):
        return None
    return (f"the added vectors differ from those the index was trained on: mean distance to the nearest centroid "
            f"{added['centroid_distance']:.4f} (index: {reference['centroid_distance']:.4f}), int8 values clipped "
            f"{added['clip_rate']:.2%} (index: {reference['clip_rate']:.2%}). Recall on them will be lower; "
            "rebuild the index from all documents to retrain its partition and codes")
