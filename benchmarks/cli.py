"""run the benchmark suite: synthetic data, a real-text corpus or your own embeddings, against the peers.

`matryoshka bench ...`, or `python -m matryoshka.benchmarks ...`. Each writes report.json, report.md and PNG
plots to --out; built indexes and data go to --work (default OUT/work) and are reused by a later run with the
same data.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .engine_runner import DEFAULT_POINTS, default_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for report.json, report.md and the plots")
    p.add_argument("--work", help="folder for generated data and built indexes (default OUT/work)")
    p.add_argument("--queries", dest="n_queries", type=int, default=1000, help="number of queries (default 1000)")
    p.add_argument("--threads", type=int, default=2, help="threads for every library and peer (default 2)")
    p.add_argument("--peers", default="flat,ivfpq,binary,faiss,autofaiss",
                   help="comma-separated subset of flat,ivfpq,binary,faiss (faiss's own IVF-PQ / IVF-RaBitQ cascades "
                        "and HNSW over float32 and int8 vectors),autofaiss,scann,usearch (HNSW over int8), or 'none'")
    p.add_argument("--autofaiss-python", help="a Python that has autofaiss (it pins numpy<2), e.g. /tmp/af/bin/python")
    p.add_argument("--frontier", action=argparse.BooleanOptionalAction, default=True,
                   help="sweep index dims x prefix/projection x float32/int8/PQ (default on)")
    p.add_argument("--frontier-n", type=int, default=200_000, help="documents the frontier uses (default 200k)")
    p.add_argument("--frontier-queries", type=int, default=500)
    p.add_argument("--frontier-dims", help="comma-separated index dims to sweep (default 32, 64, ... full)")
    p.add_argument("--latency-queries", type=int, default=100, help="single queries timed for p50/p99")
    p.add_argument("--index-dim", type=int, help="engine index dim (default min(256, dim/2))")
    p.add_argument("--pq-bytes", help="engine PQ code bytes, or several comma-separated: one pair of builds "
                                      "(8-bit PQ, 4-bit fast-scan) each (default min(32, index_dim/8))")
    p.add_argument("--codes", default="auto,pq,fs",
                   help="engine builds per code size: auto (the build measures nlist, code and rotation), pq (8-bit "
                        "PQ), fs (4-bit fast-scan); comma-separated (default all three)")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help="recall@10 the engine builds measure their plan and default operating point for")
    p.add_argument("--points", default=",".join(f"{a}/{b}/{c}" for a, b, c in DEFAULT_POINTS),
                   help="engine operating points nprobe/k1/k2, comma-separated")


def parser(prog: str = "matryoshka bench") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synthetic", help="clustered vectors with a decaying spectrum")
    s.add_argument("--n", type=int, default=100_000)
    s.add_argument("--dim", type=int, default=1024)
    s.add_argument("--flavour", choices=("matryoshka", "rotated", "both"), default="both")
    s.add_argument("--clusters", type=int, default=1024)
    s.add_argument("--seed", type=int, default=0)
    _common(s)
    t = sub.add_parser("text", help="a real corpus encoded with all-MiniLM-L6-v2, labels from its structure")
    t.add_argument("--corpus", choices=("auto", "gcide", "stdlib"), default="auto",
                   help="gcide (apt-get install dict-gcide) or the Python stdlib docstrings; auto: gcide if present")
    t.add_argument("--limit", type=int, default=20_000, help="documents to encode (default 20k)")
    t.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    _common(t)
    e = sub.add_parser("embeddings", help="your own embeddings (.npy or Parquet) and optional qrels")
    e.add_argument("path", help=".npy matrix or Parquet file/folder with `id` and `embedding`")
    e.add_argument("--query-file", help="query embeddings (.npy or Parquet); default: hold out the last rows")
    e.add_argument("--qrels", help="relevance labels: `query_id doc_id gain` per line (or TREC format)")
    _common(e)
    return ap


def _points(text: str) -> tuple:
    return tuple(tuple(int(v) for v in p.split("/")) for p in text.split(",") if p)


def main(argv: list[str] | None = None, prog: str = "matryoshka bench") -> int:
    """The suite as `matryoshka bench` (the entry point) or, with `prog`, as `python -m matryoshka.benchmarks`."""
    args = parser(prog).parse_args(argv)
    from . import report
    from .runner import PEERS, Config, run_dataset
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    peers = () if args.peers == "none" else tuple(p.strip() for p in args.peers.split(",") if p.strip())
    unknown = set(peers) - set(PEERS)
    if unknown:
        print(f"unknown peer(s) {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}", file=sys.stderr)
        return 2
    cfg = Config(work, threads=args.threads, peers=peers, frontier=args.frontier, frontier_n=args.frontier_n,
                 frontier_queries=args.frontier_queries, latency_queries=args.latency_queries,
                 frontier_dims=[int(d) for d in args.frontier_dims.split(",")] if args.frontier_dims else None,
                 points=_points(args.points), autofaiss_python=args.autofaiss_python,
                 log=lambda m: print(m, file=sys.stderr, flush=True))
    datasets = []
    if args.command == "synthetic":
        from .data import synthetic
        flavours = ("matryoshka", "rotated") if args.flavour == "both" else (args.flavour,)
        datasets = [lambda f=f: synthetic(args.n, args.dim, f, args.n_queries, work, args.clusters, args.seed)
                    for f in flavours]
    elif args.command == "text":
        from .text_corpus import text_dataset
        datasets = [lambda: text_dataset(work, args.corpus, args.limit, args.n_queries, args.model)]
    else:
        from .embeddings import embeddings_dataset
        datasets = [lambda: embeddings_dataset(args.path, work, args.query_file, args.qrels, args.n_queries)]
    runs = []
    for make in datasets:
        work.mkdir(parents=True, exist_ok=True)
        ds = make()
        sizes = [int(b) for b in args.pq_bytes.split(",")] if args.pq_bytes else [None]
        codes = tuple(c for c in args.codes.split(",") if c)
        cfg.settings = [s for b in sizes for s in default_settings(ds.dim, args.index_dim, b, codes,
                                                                   args.target_recall)]
        runs.append(run_dataset(ds, cfg))
    command = " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    doc = report.write(out, runs, "python -m matryoshka.benchmarks " + command)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'} ({len(doc['rows'])} rows)")
    for run in runs:
        for t in run["targets"]:
            if t.get("met") is not None:
                print(f"  [{run['dataset']}] {t['target']}: {'met' if t['met'] else 'NOT met'} "
                      f"(measured {t.get('measured', float('nan')):.3f}, goal {t.get('goal', float('nan')):.3f})")
    return 0
