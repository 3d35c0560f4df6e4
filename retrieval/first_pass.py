"""Stage 1: one IVF search over every shard's codes, with one coarse assignment per query batch."""
from __future__ import annotations

from typing import Callable

import faiss
import numpy as np

from matryoshka.core.device import GPU_MAX_K, to_gpu
from matryoshka.core.errors import IndexFormatError
from matryoshka.core.params import coarse_ef
from matryoshka.storage.shard_files import Shard
from matryoshka.storage.tombstones import live_bitmap

MAX_ROWS = 0xFFFFFFFE  # rows below this merge by a packed 64-bit key; larger indexes fall back to lexsort


def _order_keys(d: np.ndarray, i: np.ndarray) -> np.ndarray:
    """A uint64 key per hit that orders by score, then by lower row: unique, so any merge order gives one result."""
    b = np.ascontiguousarray(d, dtype=np.float32).view(np.uint32).astype(np.uint64)
    ordered = np.where(b & 0x80000000, ~b & 0xFFFFFFFF, b | 0x80000000)
    return (ordered << np.uint64(32)) | (np.uint64(0xFFFFFFFF) - (i + 1).astype(np.uint64))


def merge_topk(dist: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (nq, k) results (scores, higher is better) into the global top k.

    Ties are broken by the lower row id, so merging shards one level or two levels deep (per worker, then
    across workers) gives the identical result.
    """
    if not dist:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64)
    d, i = (dist[0], ids[0]) if len(dist) == 1 else (np.hstack(dist), np.hstack(ids))
    if d.shape[1] == 0:
        return d, i
    if len(i) and i.max(initial=-1) >= MAX_ROWS:
        order = np.lexsort((i, -d), axis=1)[:, :k]
    else:
        key = _order_keys(d, i)
        if key.shape[1] > k:
            part = np.argpartition(key, key.shape[1] - k, axis=1)[:, -k:]
            d, i, key = (np.take_along_axis(a, part, 1) for a in (d, i, key))
        order = np.argsort(key, axis=1)[:, ::-1]
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


def share_quantizer(ivf: faiss.IndexIVF, shared: faiss.Index) -> None:
    """Point a shard's IVF at the one shared quantizer and free the centroids its file carried (nlist x dim
    floats per shard: 8 MB at nlist 8192, 256 dims). `shared` must outlive `ivf`.

    The old quantizer's storage is emptied rather than the object deleted: handing its ownership to Python
    (faiss.contrib.ivf_tools.replace_ivf_quantizer) corrupts SWIG's type table for fast-scan indexes in
    faiss 1.15, and the empty object left behind is a few hundred bytes."""
    old = faiss.downcast_index(ivf.quantizer)
    if old.ntotal != shared.ntotal or old.d != shared.d:
        raise IndexFormatError(f"a shard has {old.ntotal} centroids of {old.d} dims but the index has "
                               f"{shared.ntotal} of {shared.d}: the shard belongs to another index; rebuild it")
    ivf.own_fields = False
    ivf.quantizer = shared
    if isinstance(old, faiss.IndexHNSW):  # the graph's links and its flat storage of the centroids
        old.hnsw.neighbors = faiss.MaybeOwnedVectorInt32()
        old = faiss.downcast_index(old.storage)
    if isinstance(old, faiss.IndexFlatCodes):
        old.codes = faiss.MaybeOwnedVectorUInt8()


def append_lists(merged: faiss.IndexIVF, other: faiss.IndexIVF) -> None:
    """`merged.merge_from(other, 0)`: every list of `other` moved to the end of the same list of `merged`.

    faiss 1.15's fast-scan lists (`BlockInvertedLists.add_entries`) copy as many blocks as the whole list holds
    when the list's size is a non-zero multiple of its block size in bytes, past the end of the buffer (a heap
    corruption, seen merging 200 shards): such lists are appended here, block-aligned as they are, and the rest
    by faiss."""
    dst = faiss.downcast_InvertedLists(merged.invlists)
    if isinstance(dst, faiss.BlockInvertedLists):
        src = other.invlists
        for lst in range(merged.nlist):
            o, n = dst.list_size(lst), src.list_size(lst)
            if n and o and o % dst.block_size == 0:  # o is a whole number of blocks too (block_size % 32 == 0)
                nbytes = -(-n // dst.n_per_block) * dst.block_size
                dst.resize(lst, o + n)
                start = o // dst.n_per_block * dst.block_size
                faiss.rev_swig_ptr(dst.get_codes(lst), start + nbytes)[start:] = \
                    faiss.rev_swig_ptr(src.get_codes(lst), nbytes)
                faiss.rev_swig_ptr(dst.get_ids(lst), o + n)[o:] = faiss.rev_swig_ptr(src.get_ids(lst), n)
                src.resize(lst, 0)
    total = merged.ntotal + other.ntotal
    merged.merge_from(other, 0)
    merged.ntotal = total


def truncate_lists(ivf: faiss.IndexIVF, end: int) -> bool:
    """Cut every list of `ivf` to its codes of rows below `end` (its lists hold rows ascending); False, with
    nothing cut, when a list is not in that order."""
    invlists = ivf.invlists
    cuts = []
    for lst in range(ivf.nlist):
        n = invlists.list_size(lst)
        if not n:
            continue
        ids = faiss.rev_swig_ptr(invlists.get_ids(lst), n)
        if n > 1 and (ids[1:] < ids[:-1]).any():
            return False
        cut = int(np.searchsorted(ids, end))
        if cut < n:
            cuts.append((lst, cut))
    for lst, cut in cuts:
        invlists.resize(lst, cut)
    ivf.ntotal = sum(invlists.list_size(i) for i in range(ivf.nlist))
    return True


def by_row_within_ties(s: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A faiss result (best first) with equal scores ordered by the lower row, as `merge_topk` orders them; rows
    without ties are left as they are."""
    tied = (s[:, 1:] == s[:, :-1]) & (i[:, 1:] >= 0)
    rows = np.flatnonzero(tied.any(1))
    if len(rows):
        s[rows], i[rows] = merge_topk([s[rows]], [i[rows]], s.shape[1])
    return s, i


def prune_lists(assigned: tuple[np.ndarray, np.ndarray], margin: float, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The coarse assignment without the lists whose centroid trails the query's nearest by more than `margin`
    (list key -1: faiss's search_preassigned skips it). On real text a query's neighbours sit in few lists
    when its nearest centroid stands out, and spread when many are close: a margin spends probes where needed."""
    cd, ci = assigned
    far = cd > cd[:, :1] + margin if metric == "l2" else cd < cd[:, :1] - margin
    return cd, np.where(far, -1, ci)


def lists_probed(assigned: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean lists a query probes under an assignment (pruned lists are -1)."""
    return float((assigned[1] >= 0).sum(1).mean()) if assigned[1].size else 0.0


class FirstPass:
    """One IVF holding every shard's codes under their global rows: a query builds its lookup tables once per
    probed list and keeps one top k over all the shards' codes in it, so its cost follows the lists it probes,
    not the number of shards (each list holds its shards' codes one after another, rows ascending).

    CPU: the shared quantizer assigns each query batch once (`assign`) and the merged IVF scans those lists.
    GPU: a copy of the merged IVF without the deleted rows on the device (k and nprobe capped at faiss's GPU
    limit); a filtered search runs on the CPU copy, since faiss's GPU IVF takes no selector.

    `previous` (the first pass of the generation before) lends its codes: shards whose codes did not change
    are not read again (`Shard.codes_key`); `read_codes(shard)` reads a shard's codes that were lent to the
    previous merged IVF but must be added again (after an earlier shard changed)."""

    def __init__(self, trained: faiss.Index, shards: list[Shard], metric: str, device: str,
                 previous: "FirstPass | None" = None, read_codes: Callable[[Shard], faiss.Index] | None = None):
        self.sign = -1.0 if metric == "l2" else 1.0
        # 4-bit fast-scan codes have no GPU implementation: such an index is searched on the CPU
        fast_scan = "FastScan" in type(faiss.downcast_index(faiss.extract_index_ivf(trained))).__name__
        self.device = "cpu" if fast_scan else device
        self.trained = trained  # owns the quantizer below
        self.quantizer = faiss.downcast_index(faiss.extract_index_ivf(trained).quantizer)
        self.nlist = self.quantizer.ntotal
        self.graph = isinstance(self.quantizer, faiss.IndexHNSW)  # lists assigned through an HNSW graph
        if self.graph:
            self.device = "cpu"  # faiss's GPU IVF takes a flat quantizer only
        self.keys = [s.codes_key for s in shards]
        self.index, self.lender = self._merge(trained, shards, previous, read_codes)
        # deleted rows: the scan skips them through one bitmap over global rows, so that k live hits come back
        # whenever k exist (filtering afterwards would return fewer)
        self.live, self.selector = None, None
        if any(s.dead is not None for s in shards):
            size = max(s.id_start + s.count for s in shards)
            self.live = live_bitmap([(s.id_start, s.dead) for s in shards if s.dead is not None], size)
            self.selector = faiss.IDSelectorBitmap(len(self.live), faiss.swig_ptr(self.live))  # reads self.live
        if self.device == "gpu":
            merged = faiss.clone_index(self.index)
            if self.selector is not None:  # faiss's GPU IVF takes no selector: drop the dead rows' codes instead
                merged.remove_ids(faiss.IDSelectorNot(self.selector))
            self.gpu = to_gpu(merged)

    def _merge(self, trained: faiss.Index, shards: list[Shard], previous: "FirstPass | None",
               read_codes) -> tuple[faiss.IndexIVF, "FirstPass | None"]:
        """(the merged IVF, the first pass whose quantizer it uses when shared unchanged)."""
        keep = 0
        if previous is not None:
            while keep < min(len(self.keys), len(previous.keys)) and self.keys[keep] == previous.keys[keep]:
                keep += 1
        if previous is not None and keep == len(self.keys) == len(previous.keys):
            return previous.index, previous.lender or previous  # nothing changed in the codes: shared, read-only
        merged = None
        if keep:  # the unchanged leading shards' codes: copied from the previous IVF, cut where they end
            merged = faiss.clone_index(previous.index)
            end = shards[keep - 1].id_start + shards[keep - 1].count
            if not truncate_lists(merged, end):
                merged, keep = None, 0
        if merged is None:
            merged = faiss.clone_index(faiss.extract_index_ivf(trained))
        share_quantizer(merged, self.quantizer)
        for s in shards[keep:]:
            codes = s.index if s.index is not None else read_codes(s)  # owns the IVF below: keep it alive
            ivf = faiss.extract_index_ivf(codes)
            share_quantizer(ivf, self.quantizer)  # checks the shard was trained with this index's quantizer
            append_lists(merged, ivf)  # moves the codes: the shard keeps none
            s.index = codes = ivf = None
        return merged, None

    def list_sizes(self) -> np.ndarray:
        """Codes per IVF list over every shard."""
        return np.array([self.index.invlists.list_size(i) for i in range(self.nlist)], np.int64)

    def assign(self, xq: np.ndarray, nprobe: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The coarse assignment (distances, lists), each (nq, nprobe): computed once per batch. An HNSW
        quantizer searches its graph `coarse_ef(nprobe, ef)` deep."""
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        nprobe = min(nprobe, self.nlist)
        if self.graph:
            return self.quantizer.search(xq, nprobe, params=faiss.SearchParametersHNSW(efSearch=coarse_ef(nprobe, ef)))
        return self.quantizer.search(xq, nprobe)

    def search(self, xq: np.ndarray, k: int, nprobe: int, assigned: tuple[np.ndarray, np.ndarray] | None = None,
               selector: faiss.IDSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global row ids), each (nq, k), best first; missing hits have id -1 and score -inf.

        `assigned` is the result of `assign` for these queries (computed here when not given). `selector`
        (a filter's rows, deleted ones left out) replaces the live-row selector; a filtered search runs on the
        CPU shards, since faiss's GPU IVF takes no selector."""
        nprobe = min(nprobe, self.nlist)
        if self.device == "gpu" and selector is None:
            k, nprobe = min(k, GPU_MAX_K), min(nprobe, GPU_MAX_K)
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            d, i = self.gpu.search(xq, k, params=params)
            return self._scores(d, i), i
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if (selector or self.selector) is not None:
            params.sel = selector or self.selector
        xq = np.ascontiguousarray(xq, dtype=np.float32)
        cd, ci = assigned if assigned is not None else self.assign(xq, nprobe)
        cd, ci = np.ascontiguousarray(cd[:, :nprobe]), np.ascontiguousarray(ci[:, :nprobe])
        d, i = search_preassigned(self.index, xq, k, ci, cd, params)
        return by_row_within_ties(self._scores(d, i), i)

    def _scores(self, d: np.ndarray, i: np.ndarray) -> np.ndarray:
        s = d * self.sign
        s[i < 0] = -np.inf
        return s
