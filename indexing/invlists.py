"""Copying the codes of kept rows from one IVF index to another, unchanged: compaction re-uses each document's
code instead of encoding it again, so a compacted shard holds what a fresh build of its live rows would."""
from __future__ import annotations

import faiss
import numpy as np


def list_entries(ivf: faiss.IndexIVF, list_no: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, codes) of one inverted list, codes one row per entry (fast-scan blocks unpacked)."""
    il = faiss.downcast_InvertedLists(ivf.invlists)
    n = il.list_size(list_no)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, ivf.code_size), np.uint8)
    ids = faiss.rev_swig_ptr(il.get_ids(list_no), n).copy()
    if not isinstance(il, faiss.BlockInvertedLists):
        return ids, faiss.rev_swig_ptr(il.get_codes(list_no), n * il.code_size).reshape(n, il.code_size).copy()
    packer = ivf.get_CodePacker()
    blocks = -(-n // packer.nvec)
    packed = faiss.rev_swig_ptr(il.get_codes(list_no), blocks * packer.block_size)
    codes = np.empty((blocks * packer.nvec, packer.code_size), np.uint8)
    for b in range(blocks):
        packer.unpack_all(faiss.swig_ptr(packed[b * packer.block_size:]), faiss.swig_ptr(codes[b * packer.nvec:]))
    return ids, codes[:n]


def append_entries(ivf: faiss.IndexIVF, list_no: int, ids: np.ndarray, codes: np.ndarray) -> None:
    """Append (ids, codes) to an empty inverted list of `ivf` (fast-scan codes are packed into blocks here)."""
    il = faiss.downcast_InvertedLists(ivf.invlists)
    n = len(ids)
    if isinstance(il, faiss.BlockInvertedLists):
        packer = ivf.get_CodePacker()
        blocks = -(-n // packer.nvec)
        padded = np.zeros((blocks * packer.nvec, packer.code_size), np.uint8)
        padded[:n] = codes
        packed = np.zeros(blocks * packer.block_size, np.uint8)
        for b in range(blocks):
            packer.pack_all(faiss.swig_ptr(padded[b * packer.nvec:]), faiss.swig_ptr(packed[b * packer.block_size:]))
        codes = packed
    il.add_entries(list_no, n, faiss.swig_ptr(np.ascontiguousarray(ids, np.int64)),
                   faiss.swig_ptr(np.ascontiguousarray(codes)))
    ivf.ntotal += n


def copy_kept(sources: list[tuple[faiss.Index, np.ndarray, int]], dst: faiss.Index) -> None:
    """Copy into the empty `dst` (same trained IVF) every entry of each source (index, new_ids, first) whose id
    `first + i` has new_ids[i] >= 0, renamed new_ids[i]: each list holds the sources' entries in their order,
    each source's in its own order (so merged shards hold what a fresh build of their live rows would)."""
    d = faiss.extract_index_ivf(dst)
    ivfs = [(faiss.extract_index_ivf(src), new_ids, first) for src, new_ids, first in sources]
    for list_no in range(d.nlist):
        all_ids, all_codes = [], []
        for s, new_ids, first in ivfs:
            ids, codes = list_entries(s, list_no)
            renamed = new_ids[ids - first]
            keep = renamed >= 0
            all_ids.append(renamed[keep])
            all_codes.append(codes[keep])
        ids = np.concatenate(all_ids)
        if len(ids):
            append_entries(d, list_no, ids, np.concatenate(all_codes))
    dst.ntotal = d.ntotal
