"""Choosing, training and cloning the IVF index shared by every shard."""
from __future__ import annotations

import math
import re

import faiss
import numpy as np

from matryoshka.core.device import to_gpu
from matryoshka.core.errors import InputError

MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points per centroid
MAX_POINTS_PER_LIST = 256
MAX_AUTO_NLIST = 8192  # beyond this, k-means on 2 CPU cores takes longer than the rest of the build
MAX_TRAIN_ROWS = 40 * MAX_AUTO_NLIST  # the default sample: bounds the build's peak memory whatever N is
# from this many lists the coarse assignment searches an HNSW graph over the centroids instead of scanning them
# all: where the graph is faster at a recall of the lists >= 0.99 (benchmarks/results/coarse-quantizer.json)
HNSW_FROM_NLIST = 32768
HNSW_M = 32


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def choose_nlist(n: int, cap: int | None = MAX_AUTO_NLIST) -> int:
    """About 4 sqrt(N) lists, a power of two, at most MAX_AUTO_NLIST (pass nlist for more), and never more than
    the data can train."""
    if n < MIN_POINTS_PER_LIST * 2:
        return 1
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    nlist = min(nlist, cap) if cap else nlist
    return max(1, min(nlist, 2 ** int(math.log2(n // MIN_POINTS_PER_LIST))))


def code_string(pq_bytes: int, fast_scan: bool, dim: int) -> str:
    """'PQ32' (8-bit codes, GPU-friendly) or 'PQ64x4fs' (4-bit fast-scan, same bytes, fast on CPU)."""
    m = pq_bytes * 2 if fast_scan else pq_bytes
    if pq_bytes < 1 or dim % m:
        raise InputError(f"PQ with {m} sub-quantizers needs an index dim divisible by {m}; got index dim {dim}: "
                         "change --pq-bytes or --index-dim")
    return f"PQ{m}x4fs" if fast_scan else f"PQ{m}"


def min_train_points(code: str) -> int:
    """Training points below which the PQ codebooks cannot be trained well."""
    m = re.fullmatch(r"PQ(\d+)(x(\d+))?(fs)?", code)
    if not m:
        return 1
    nbits = int(m.group(3) or 8)
    return MIN_POINTS_PER_LIST * (1 << nbits)


def train_size(n: int, nlist: int, code: str, selecting: bool = False) -> int:
    """64 points per list (at least what PQ needs), capped at MAX_TRAIN_ROWS unless nlist needs more; for twice
    the lists when `selecting` (indexing.selection measures up to 2 x nlist)."""
    want = max(64 * nlist * (2 if selecting else 1), min_train_points(code))
    return int(min(n, max(min(want, MAX_TRAIN_ROWS), MIN_POINTS_PER_LIST * nlist)))


def plan_factory(n: int, dim: int, pq_bytes: int, fast_scan: bool, nlist: int | None) -> tuple[str, list[str]]:
    """The faiss factory string for n vectors, and notes on any fallback taken for small corpora."""
    notes = []
    code = f"PQ{pq_bytes * 2}x4fs" if fast_scan else f"PQ{pq_bytes}"
    if n >= min_train_points(code):
        code = code_string(pq_bytes, fast_scan, dim)
    else:
        notes.append(f"{n} vectors are too few to train {code} (it needs {min_train_points(code)}); "
                     "the first pass stores the short vectors exactly (IVF-Flat)")
        code = "Flat"
    auto = choose_nlist(n)
    if nlist is None:
        nlist = auto
    elif nlist > max(1, n // MIN_POINTS_PER_LIST):
        notes.append(f"nlist={nlist} needs at least {nlist * MIN_POINTS_PER_LIST} vectors; using nlist={auto}")
        nlist = auto
    coarse = f"_HNSW{HNSW_M}" if nlist >= HNSW_FROM_NLIST else ""
    if coarse:
        notes.append(f"{nlist} lists: queries are assigned through an HNSW{HNSW_M} graph over the centroids "
                     f"(from {HNSW_FROM_NLIST} lists it is faster than scanning them all)")
    return f"IVF{nlist}{coarse},{code}", notes


def new_index(factory: str, dim: int, metric: str) -> faiss.Index:
    """An untrained index for one of this engine's factory strings (IVF{n}[_HNSW{M}],Flat / PQ{m} / PQ{m}x4fs),
    built from its classes: the faiss-cuda 1.14 wheels raise std::bad_cast from index_factory's regex parser.
    An HNSW coarse quantizer is trained by k-means over a flat index, then holds the centroids in its graph."""
    m = re.fullmatch(r"IVF(\d+)(_HNSW(\d+))?,(Flat|PQ(\d+)(x4fs)?)", factory)
    mt = faiss_metric(metric)
    if not m:
        return faiss.index_factory(dim, factory, mt)
    nlist = int(m.group(1))
    flat = faiss.IndexFlatL2(dim) if mt == faiss.METRIC_L2 else faiss.IndexFlatIP(dim)
    quantizer = faiss.IndexHNSWFlat(dim, int(m.group(3)), mt) if m.group(2) else flat
    if m.group(4) == "Flat":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, mt)
    elif m.group(6):
        index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, int(m.group(5)), 4, mt)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, int(m.group(5)), 8, mt)
    if m.group(2):
        index.clustering_index = flat
        index.referenced_objects.append(flat)  # faiss's wrapper keeps the quantizer alive so; this one too
    return index


def train(factory: str, sample: np.ndarray, metric: str, device: str) -> faiss.Index:
    index = new_index(factory, sample.shape[1], metric)
    inner = faiss.downcast_index(faiss.extract_index_ivf(index))
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False  # unused by this engine, and most of the training time
    if device == "gpu" and "fs" not in factory:
        gpu = to_gpu(index)
        gpu.train(sample)
        return faiss.index_gpu_to_cpu(gpu)
    index.train(sample)
    return index


def serialize(index: faiss.Index) -> np.ndarray:
    return faiss.serialize_index(index)


def clone_empty(blob: np.ndarray) -> faiss.Index:
    """A copy of the trained, empty index to add one shard to (without the L2 precomputed table, which
    adding does not use)."""
    return faiss.deserialize_index(blob, faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
