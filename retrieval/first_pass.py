"""Stage 1: IVF search over every shard with one coarse assignment per query batch."""
from __future__ import annotations

import faiss
import numpy as np

from indexing.device import GPU_MAX_K, to_gpu

from .shard import Shard


def merge_topk(dist: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (nq, k) results (scores, higher is better) into the global top k."""
    if len(dist) == 1:
        return dist[0][:, :k], ids[0][:, :k]
    d, i = np.hstack(dist), np.hstack(ids)
    if d.shape[1] > k:
        part = np.argpartition(-d, k - 1, axis=1)[:, :k]
        d, i = np.take_along_axis(d, part, 1), np.take_along_axis(i, part, 1)
    order = np.argsort(-d, axis=1, kind="stable")
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def search_preassigned(index: faiss.IndexIVF, xq: np.ndarray, k: int, ci: np.ndarray, cd: np.ndarray,
                       params: faiss.SearchParametersIVF) -> tuple[np.ndarray, np.ndarray]:
    """IndexIVF.search_preassigned with per-call parameters, so that concurrent searches never share state
    (faiss's Python wrapper only takes nprobe from the index object)."""
    n = len(xq)
    d = np.empty((n, k), dtype=np.float32)
    i = np.empty((n, k), dtype=np.int64)
    index.search_preassigned_c(n, faiss.swig_ptr(xq), k, faiss.swig_ptr(ci), faiss.swig_ptr(cd),
                               faiss.swig_ptr(d), faiss.swig_ptr(i), False, params)
    return d, i


class FirstPass:
    """CPU: the shared quantizer assigns each query once, then every shard scans those lists.
    GPU: the shards are merged into one GPU index (k and nprobe are capped at faiss's GPU limit)."""

    def __init__(self, trained: faiss.Index, shards: list[Shard], metric: str, device: str):
        self.sign = -1.0 if metric == "l2" else 1.0
        self.device = device
        self.trained = trained  # owns the quantizer below
        self.quantizer = faiss.downcast_index(faiss.extract_index_ivf(trained).quantizer)
        self.shards = [faiss.extract_index_ivf(s.index) for s in shards]
        self.nlist = self.quantizer.ntotal
        if device == "gpu":
            merged = faiss.clone_index(trained)
            for s in shards:
                merged.merge_from(faiss.clone_index(s.index), 0)
            self.gpu = to_gpu(merged)

    def search(self, xq: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global row ids), each (nq, k), best first; missing hits have id -1 and score -inf."""
        nprobe = min(nprobe, self.nlist)
        if self.device == "gpu":
            k, nprobe = min(k, GPU_MAX_K), min(nprobe, GPU_MAX_K)
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            d, i = self.gpu.search(xq, k, params=params)
            return self._scores(d, i), i
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        cd, ci = self.quantizer.search(xq, nprobe)
        ds, is_ = [], []
        for index in self.shards:
            d, i = search_preassigned(index, xq, k, ci, cd, params)
            ds.append(self._scores(d, i))
            is_.append(i)
        return merge_topk(ds, is_, k)

    def _scores(self, d: np.ndarray, i: np.ndarray) -> np.ndarray:
        s = d * self.sign
        s[i < 0] = -np.inf
        return s
