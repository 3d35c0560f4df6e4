"""Which BM25 library the lexical stage uses: bm25s against tantivy on the full GCIDE corpus (or the stdlib
docstrings), measured in one process each: build seconds, index bytes on disk, resident memory after loading,
and single-query latency for the top 100.

    python -m matryoshka.benchmarks.lexical_libraries --out benchmarks/results/lexical-libraries.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .text_corpus import GCIDE, gcide_groups, stdlib_groups

LIBRARIES = ("bm25s", "tantivy")


def _texts(corpus: str) -> tuple[list[str], list[str]]:
    _, texts = gcide_groups() if corpus == "gcide" else stdlib_groups()
    rng = np.random.default_rng(0)
    queries = [texts[i].split(": ", 1)[-1] for i in rng.choice(len(texts), 500, replace=False)]
    return texts, queries


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(library: str, corpus: str, work: Path) -> dict:
    """Build, save, reload and query one library (run in a process of its own)."""
    texts, queries = _texts(corpus)
    t0 = time.perf_counter()
    if library == "bm25s":
        import bm25s
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        retriever.save(work)
        built = time.perf_counter() - t0
        del retriever
        before = _rss()
        retriever = bm25s.BM25.load(work, mmap=False)
        held = _rss() - before

        def search(q):
            return retriever.retrieve(bm25s.tokenize([q], stopwords="en", show_progress=False), k=100,
                                      show_progress=False)
    else:
        import tantivy
        schema = tantivy.SchemaBuilder().add_text_field("body", stored=False, tokenizer_name="en_stem") \
            .add_integer_field("row", stored=True, indexed=False, fast=True).build()
        index = tantivy.Index(schema, path=str(work))
        writer = index.writer()
        for i, t in enumerate(texts):
            writer.add_document(tantivy.Document(body=t, row=i))
        writer.commit()
        writer.wait_merging_threads()
        built = time.perf_counter() - t0
        before = _rss()
        index = tantivy.Index.open(str(work))
        index.reload()
        searcher = index.searcher()
        held = _rss() - before

        def search(q):
            return searcher.search(index.parse_query(re.sub(r"[^\w\s]", " ", q), ["body"]), 100).hits
    for q in queries[:20]:
        search(q)
    lat = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        lat.append(time.perf_counter() - t)
    return {"library": library, "corpus": corpus, "docs": len(texts), "build_s": round(built, 2),
            "disk_bytes": _bytes(work), "resident_after_load_bytes": held,
            "query_p50_ms": round(1e3 * float(np.median(lat)), 3), "query_mean_ms": round(1e3 * float(np.mean(lat)), 3),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--corpus", choices=("gcide", "stdlib"), default="gcide" if GCIDE.exists() else "stdlib")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(measure(a.one, a.corpus, Path(work))))
        return 0
    rows = []
    for lib in LIBRARIES:
        out = subprocess.run([sys.executable, "-m", "matryoshka.benchmarks.lexical_libraries", "--out", a.out,
                              "--corpus", a.corpus, "--one", lib], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows, "command": "python -m matryoshka.benchmarks.lexical_libraries "
                                       f"--corpus {a.corpus}"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
