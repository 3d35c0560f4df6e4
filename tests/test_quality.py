"""The quality bar of the cascade with default settings, on structured synthetic data."""
import numpy as np
import pytest
from conftest import exact_topk, recall_at

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.benchmarks.synthetic import Synthetic
from matryoshka.core.device import resolve_device


@pytest.mark.slow
def test_cascade_recall_at_10_reaches_095_on_20k_vectors_with_defaults(tmp_path):
    s = Synthetic(dim=384, matryoshka=False, clusters=256, seed=7)
    docs, queries = s.documents(20_000), s.queries(300)
    indexing.build(tmp_path / "idx", docs, quiet=True)  # defaults: 256 dims, auto transform, 32-byte codes
    index = retrieval.open_index(tmp_path / "idx")
    # the build measured its plan on the sample and kept it; a GPU build only 8-bit codes (faiss's GPU IVF-PQ
    # has no fast-scan)
    sel = index.manifest.build["selection"]
    assert index.manifest.factory == f"IVF{sel['nlist']},{sel['code']}"
    assert sel["code"] in (("PQ32",) if resolve_device("auto") == "gpu" else ("PQ32", "PQ64x4fs"))
    assert index.manifest.transform["kind"] == "pca"  # rotated data: the projection must win
    truth = exact_topk(docs, queries, 10)
    cascade = index.search_batch(queries, k=10)
    first = index.search_batch(queries, k=10, int8=False, full=False)
    r_cascade, r_first = recall_at(cascade.rows, truth), recall_at(first.rows, truth)
    assert r_cascade >= 0.95, r_cascade
    assert r_cascade > r_first  # the re-scoring stages recover what PQ loses
    # stage 1 at its own depth holds what the later stages can recover
    deep = index.search_batch(queries, k=500, int8=False, full=False)
    assert np.mean([len(np.intersect1d(d, t)) / 10 for d, t in zip(deep.rows, truth)]) >= r_cascade
