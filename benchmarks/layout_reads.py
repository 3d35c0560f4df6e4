"""Device reads a query costs with the stores in row order (today's layout) and in IVF-list order (issue 22):
counted, not timed, from a real index's candidates.

    python -m matryoshka.benchmarks.layout_reads INDEX --queries Q.npy [--setting 128/200/20] [--batch 1,100]

For each query (and each batch of `--batch` queries, whose reads are gathered together), the int8 stage reads
its k1 first-pass candidates and the full stage its k2 best; a read is one run of neighbouring pages
(`row_reader.extents`). In list order the rows of one IVF list sit together, so candidates found in the same
list can share pages; the count says how much that would save before any file is rewritten.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np

from matryoshka import retrieval
from matryoshka.storage.row_reader import extents

NPY_OFFSET = 128  # where numpy's .npy header ends and row 0 begins


def list_order(ix) -> np.ndarray:
    """new_position[row]: each row's place if every shard stored its rows list by list."""
    new = np.empty(ix.count, np.int64)
    for shard in ix.backend.shards:
        invlists = faiss.extract_index_ivf(shard.index).invlists
        rows = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                for i in range(invlists.nlist) if invlists.list_size(i)]
        order = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        new[order] = shard.id_start + np.arange(len(order))
    return new


def reads(rows: np.ndarray, row_bytes: int) -> tuple[int, int]:
    """(reads, pages) to fetch these rows: distinct rows sorted, neighbouring pages coalesced."""
    rows = np.unique(rows[rows >= 0])
    if not len(rows):
        return 0, 0
    first, pages, _ = extents(rows, NPY_OFFSET, row_bytes)
    return len(first), int(pages.sum())


def measure(ix, queries: np.ndarray, nprobe: int, k1: int, k2: int, batch: int) -> dict:
    cand = ix.search_batch(queries, k=k1, nprobe=nprobe, k1=k1, int8=False, full=False, rerank=False).rows
    best = ix.search_batch(queries, k=k2, nprobe=nprobe, k1=k1, k2=k2, full=False, rerank=False).rows
    moved = list_order(ix)
    out = {}
    for name, order in (("row order", None), ("list order", moved)):
        totals = {"int8": [0, 0], "full": [0, 0]}
        for lo in range(0, len(queries), batch):
            for store, rows, width in (("int8", cand, ix.index_dim), ("full", best, 2 * ix.full_dim)):
                r = rows[lo:lo + batch].ravel()
                r = r[r >= 0]
                n, p = reads(order[r] if order is not None else r, width)
                totals[store][0] += n
                totals[store][1] += p
        out[name] = {s: {"reads_per_query": v[0] / len(queries), "pages_per_query": v[1] / len(queries)}
                     for s, v in totals.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m matryoshka.benchmarks.layout_reads",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("--queries", required=True, help=".npy of full-dim query vectors")
    ap.add_argument("--setting", help="nprobe/k1/k2 (default: the index's operating point)")
    ap.add_argument("--batch", default="1,100", help="batch sizes whose reads are gathered together")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    queries = np.load(a.queries).astype(np.float32)
    with retrieval.open_index(a.index, device="cpu") as ix:
        p = ix.params
        nprobe, k1, k2 = (int(v) for v in a.setting.split("/")) if a.setting else (p.nprobe, p.k1, p.k2)
        report = {"index": a.index, "count": ix.count, "setting": [nprobe, k1, k2], "queries": len(queries),
                  "batches": {b: measure(ix, queries, nprobe, k1, k2, int(b)) for b in a.batch.split(",")}}
    print(json.dumps(report, indent=1))
    if a.out:
        a.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
