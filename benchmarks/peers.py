"""The peers measured beside the engine, on the same data and threads.

flat   : exact inner-product search on the full float32 vectors (the quality ceiling).
ivfpq  : faiss IVF-PQ on the full vectors with the engine's code bytes and nlist (same RAM per vector).
faiss  : faiss's own one-line cascades at their own RAM: IVF-PQ fast-scan + RFlat or Refine(SQfp16),
         IVF-RaBitQ + Refine(SQfp16), and HNSW32 over float32 vectors (see `faiss_cascades`).
binary : sentence-transformers' documented recipe: a binary index (quantize_embeddings 'ubinary') searched
         for rescore_multiplier * k, then re-scored with int8 embeddings (kept memory-mapped, as documented).
autofaiss: see autofaiss_peer.py.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from matryoshka.indexing import ivf

from .data import Dataset
from .ground_truth import BLOCK, exact_topk, fits_in_ram, flat_index
from .measure import measure
from .metrics import Qrels
from .resources import reset_peak

TRAIN_MAX = 100_000


def _row(system: str, setting: str, ds: Dataset, ram: float, mmap: float, disk: float, build_s: float,
         m: dict, **extra) -> dict:
    return {"system": system, "setting": setting, "dataset": ds.name, "n": ds.n, "dim": ds.dim,
            "ram_bytes_per_vector": ram, "mmap_bytes_per_vector": mmap, "disk_bytes_per_vector": disk,
            "build_seconds": build_s, "build_vectors_per_second": ds.n / build_s if build_s > 0 else None,
            **m, **extra}


def _sample(ds: Dataset, n: int, seed: int = 0) -> np.ndarray:
    rows = np.sort(np.random.default_rng(seed).choice(ds.n, size=min(n, ds.n), replace=False))
    return np.ascontiguousarray(ds.docs[rows], dtype=np.float32)


def run_flat(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, latency_queries: int) -> dict:
    reset_peak()
    t = time.perf_counter()
    if fits_in_ram(ds):
        index = flat_index(ds)
        build_s = time.perf_counter() - t

        def search(q, k):
            return index.search(np.ascontiguousarray(q), k)[1]
        setting = "IndexFlatIP"
    else:  # streamed from the memory map: the same arithmetic, read block by block
        build_s = 0.0

        def search(q, k):
            return exact_topk(ds, k, q)[0]
        setting, latency_queries = "exhaustive_search (streamed)", min(latency_queries, 5)
    m = measure(search, ds.queries, truth, qrels, latency_queries)
    return _row("flat", setting, ds, 4.0 * ds.dim, 0.0, 4.0 * ds.dim, build_s, m)


def run_ivfpq(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, code: str, nlist: int, nprobes: list[int],
              latency_queries: int, workdir: Path) -> list[dict]:
    """IVF{nlist},{code} over the full vectors, trained on up to TRAIN_MAX rows; one row per nprobe."""
    factory = f"IVF{nlist},{code}"
    if ds.dim % int(code[2:].split("x")[0]):
        return [skipped("ivfpq", factory, ds, f"{code} needs a dim divisible by its sub-quantizer count")]
    index, build_s, disk = _built(ds, factory, ivf.train_size(ds.n, nlist, code), workdir)
    inner = faiss.extract_index_ivf(index)
    ram = inner.code_size + 8 + nlist * ds.dim * 4 / ds.n
    rows = []
    for nprobe in nprobes:
        params = faiss.SearchParametersIVF(nprobe=min(nprobe, nlist))

        def search(q, k):
            return index.search(np.ascontiguousarray(q), k, params=params)[1]
        m = measure(search, ds.queries, truth, qrels, latency_queries)
        rows.append(_row(f"ivfpq-{code}", f"{factory},nprobe={nprobe}", ds, ram, 0.0, disk, build_s, m,
                         nprobe=nprobe))
    return rows


def _built(ds: Dataset, factory: str, train_rows: int, workdir: Path) -> tuple[faiss.Index, float, float]:
    """(index, build seconds, bytes per vector of its file): `factory` on the full vectors, trained on up to
    TRAIN_MAX rows, filled block by block."""
    reset_peak()
    t = time.perf_counter()
    index = faiss.index_factory(ds.dim, factory, faiss.METRIC_INNER_PRODUCT)
    if "IVF" in factory:
        inner = faiss.downcast_index(faiss.extract_index_ivf(index))
        if hasattr(inner, "do_polysemous_training"):
            inner.do_polysemous_training = False
    if not index.is_trained:
        index.train(_sample(ds, min(TRAIN_MAX, train_rows)))
    for lo in range(0, ds.n, BLOCK):
        index.add(ds.block(lo, min(ds.n, lo + BLOCK)))
    build_s = time.perf_counter() - t
    path = workdir / "peer.faiss"
    faiss.write_index(index, str(path))
    disk = path.stat().st_size / ds.n
    path.unlink()
    return index, build_s, disk


def faiss_cascades(nlist: int, dim: int) -> dict[str, tuple[str, list[tuple[str, object]]]]:
    """The one-line faiss indexes a user could pick instead, each with the search settings swept.

    IVF-PQ fast-scan re-ranked by the float32 vectors (RFlat) or by float16 ones (Refine(SQfp16)), IVF-RaBitQ
    re-ranked by float16 vectors, and HNSW over float32 vectors; all held in RAM."""
    def ivf(nprobe, k_factor):
        return faiss.IndexRefineSearchParameters(k_factor=k_factor,
                                                 base_index_params=faiss.SearchParametersIVF(nprobe=nprobe))
    grid = [(32, 10), (64, 20), (128, 20)]
    m = dim // 4 if dim % 4 == 0 else dim // 2
    return {
        "faiss-ivfpq-rflat": (f"IVF{nlist},PQ{m}x4fs,RFlat",
                              [(f"nprobe={p},k_factor={f}", ivf(p, f)) for p, f in grid]),
        "faiss-ivfpq-sqfp16": (f"IVF{nlist},PQ{m}x4fs,Refine(SQfp16)",
                               [(f"nprobe={p},k_factor={f}", ivf(p, f)) for p, f in grid]),
        "faiss-ivf-rabitq": (f"IVF{nlist},RaBitQ,Refine(SQfp16)",
                             [(f"nprobe={p},k_factor={f}", ivf(p, f)) for p, f in grid]),
        "faiss-hnsw": ("HNSW32,Flat", [(f"efSearch={e}", faiss.SearchParametersHNSW(efSearch=e))
                                       for e in (64, 128, 256)]),
        "faiss-hnsw-sq8": ("HNSW32,SQ8", [(f"efSearch={e}", faiss.SearchParametersHNSW(efSearch=e))
                                          for e in (64, 128, 256)]),
    }


def run_faiss(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, system: str, factory: str,
              settings: list[tuple[str, object]], latency_queries: int, workdir: Path) -> list[dict]:
    """One faiss index, one row per search setting; RAM is its serialized size (what it holds in memory)."""
    index, build_s, disk = _built(ds, factory, TRAIN_MAX, workdir)
    rows = []
    for name, params in settings:
        def search(q, k):
            return index.search(np.ascontiguousarray(q), k, params=params)[1]
        m = measure(search, ds.queries, truth, qrels, latency_queries)
        rows.append(_row(system, f"{factory},{name}", ds, disk, 0.0, disk, build_s, m))
    return rows


class BinaryInt8:
    """Binary first pass over every vector, int8 re-scoring of rescore_multiplier * k from a memory map."""

    def __init__(self, ds: Dataset, workdir: Path):
        from sentence_transformers.util.quantization import quantize_embeddings
        self.quantize = quantize_embeddings
        cal = _sample(ds, 10_000)
        self.ranges = np.vstack([cal.min(0), cal.max(0)]).astype(np.float32)
        self.index = faiss.IndexBinaryFlat(ds.dim)
        fd, name = tempfile.mkstemp(suffix=".i8.npy", dir=workdir)
        os.close(fd)
        self.path = Path(name)
        store = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.int8, shape=(ds.n, ds.dim))
        for lo in range(0, ds.n, BLOCK):
            x = ds.block(lo, min(ds.n, lo + BLOCK))
            self.index.add(quantize_embeddings(x, precision="ubinary"))
            store[lo:lo + len(x)] = quantize_embeddings(x, precision="int8", ranges=self.ranges)
        store.flush()
        del store
        self.int8 = np.load(self.path, mmap_mode="r")
        self.steps = (self.ranges[1] - self.ranges[0]) / 255.0
        self.multiplier = 4

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        q = np.ascontiguousarray(q, dtype=np.float32)
        depth = min(k * self.multiplier, self.index.ntotal)
        _, cand = self.index.search(self.quantize(q, precision="ubinary"), depth)
        out = np.empty((len(q), min(k, depth)), dtype=np.int64)
        step = max(1, (64 << 20) // (depth * q.shape[1] * 4))  # bound the dequantized block
        for lo in range(0, len(q), step):
            c, qq = cand[lo:lo + step], q[lo:lo + step]
            uniq, inv = np.unique(c.clip(0), return_inverse=True)
            # int8 code c stands for range start + (c + 128 + 0.5) * step, as quantize_embeddings bucketed it
            block = (self.int8[uniq].astype(np.float32) + 128.5) * self.steps + self.ranges[0]
            scores = np.einsum("qkd,qd->qk", block[inv.reshape(c.shape)], qq)
            scores[c < 0] = -np.inf
            order = np.argsort(-scores, axis=1)[:, :k]
            out[lo:lo + step] = np.take_along_axis(c, order, 1)
        return out

    def close(self) -> None:
        del self.int8
        self.path.unlink(missing_ok=True)


def run_binary(ds: Dataset, truth: np.ndarray, qrels: Qrels | None, multipliers: list[int],
               latency_queries: int, workdir: Path) -> list[dict]:
    reset_peak()
    t = time.perf_counter()
    peer = BinaryInt8(ds, workdir)
    build_s = time.perf_counter() - t
    ram = ds.dim / 8.0
    rows = []
    try:
        for mult in multipliers:
            peer.multiplier = mult
            m = measure(peer.search, ds.queries, truth, qrels, latency_queries)
            rows.append(_row("binary+int8", f"rescore_multiplier={mult}", ds, ram, float(ds.dim),
                             ram + ds.dim, build_s, m, rescore_multiplier=mult))
    finally:
        peer.close()
    return rows


def skipped(system: str, setting: str, ds: Dataset, reason: str) -> dict:
    """A row that records why a peer did not run."""
    nan = float("nan")
    return {"system": system, "setting": setting, "dataset": ds.name, "n": ds.n, "dim": ds.dim,
            "recall_at_10": nan, "qps": nan, "p50_ms": nan, "p99_ms": nan, "ram_bytes_per_vector": nan,
            "disk_bytes_per_vector": nan, "skipped": reason}
