"""Does sharding change BM25 rankings? The standard library's docstrings in one shard and in many.

    python -m matryoshka.benchmarks.bm25_sharding --shards 10,40 --queries 500 \
        --work ~/bm25-sharding --out benchmarks/results/bm25-sharding-stdlib.json

Document frequencies are index-wide (every shard's live counts summed); the length normalisation (average
document length) is each shard's own. This measures what the latter changes: each query (the first words of a
passage) is searched in a one-shard index and in indexes of the same passages cut into more shards, and the top
10 compared: how often the lists are identical, and their mean overlap. BM25 needs no vectors: the indexes hold
random ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from matryoshka import indexing, retrieval
from matryoshka.indexing.stdlib_docs import stdlib_passages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="10,40")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--words", type=int, default=6, help="words of a passage that make its query")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    ids, texts = stdlib_passages()
    n = len(texts)
    x = np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)
    rng = np.random.default_rng(1)
    queries = [" ".join(texts[i].split(":", 1)[-1].split()[:a.words]) for i in rng.choice(n, a.queries, False)]
    work = Path(a.work).expanduser()

    def ranked(shards: int) -> list[list[str]]:
        path = work / f"stdlib-{shards}"
        if not (path / "manifest.json").exists():
            indexing.build(path, x, ids=ids, texts=texts, lexical=True, shard_size=-(-n // shards), index_dim=16,
                           pq_bytes=4, select=False, tune=False, quiet=True, overwrite=True)
        with retrieval.open_index(path) as index:
            r = index.search_batch(queries, k=10, mode="lexical")
            return [[i for i in row if i is not None] for row in r.ids]

    one = ranked(1)
    rows = []
    for shards in (int(v) for v in a.shards.split(",")):
        many = ranked(shards)
        same = float(np.mean([p == q for p, q in zip(one, many)]))
        overlap = float(np.mean([len(set(p) & set(q)) / max(len(p), 1) for p, q in zip(one, many) if p]))
        top1 = float(np.mean([p[:1] == q[:1] for p, q in zip(one, many) if p]))
        rows.append({"shards": shards, "identical_top10": same, "top10_overlap": overlap, "same_top1": top1})
        print(f"{shards} shards against 1: top 10 identical for {same:.3f} of queries, overlap {overlap:.4f}, "
              f"same first hit {top1:.4f}", flush=True)
    report = {"command": "python -m matryoshka.benchmarks.bm25_sharding " +
              " ".join(sys.argv[1:] if argv is None else argv), "passages": n, "queries": len(queries),
              "query": f"the first {a.words} words of a passage", "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
