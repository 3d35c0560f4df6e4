"""Large nlist: the build plans an HNSW coarse quantizer from HNSW_FROM_NLIST lists, the search assigns lists
through its graph at the operating point's depth, and explain says so."""
import numpy as np
import pytest

from matryoshka import indexing, retrieval
from matryoshka.core.errors import InputError
from matryoshka.core.params import coarse_ef
from matryoshka.indexing import ivf

N, DIM = 12000, 32


def test_the_plan_takes_a_graph_from_the_measured_nlist():
    assert ivf.plan_factory(10**9, 256, 32, True, ivf.HNSW_FROM_NLIST)[0] == \
        f"IVF{ivf.HNSW_FROM_NLIST}_HNSW{ivf.HNSW_M},PQ64x4fs"
    assert ivf.plan_factory(10**9, 256, 32, True, ivf.HNSW_FROM_NLIST // 2)[0] == \
        f"IVF{ivf.HNSW_FROM_NLIST // 2},PQ64x4fs"
    assert coarse_ef(16, None) == 64 and coarse_ef(100, None) == 200 and coarse_ef(100, 40) == 100


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((60, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 60, N)] + 0.3 * rng.standard_normal((N, DIM)).astype(np.float32)
    return x, x[:50] + 0.05 * rng.standard_normal((50, DIM)).astype(np.float32)


def test_an_index_with_a_graph_quantizer_answers_as_the_flat_one(tmp_path, data, monkeypatch):
    x, q = data
    opts = dict(index_dim=16, pq_bytes=4, nlist=256, select=False, tune=False, quiet=True, shard_size=5000)
    flat = retrieval.open_index(indexing.build(tmp_path / "flat", x, **opts))
    monkeypatch.setattr(ivf, "HNSW_FROM_NLIST", 256)
    path = indexing.build(tmp_path / "graph", x, **opts)
    graph = retrieval.open_index(path)
    assert graph.manifest.factory.startswith("IVF256_HNSW32,") and graph.assigner.graph
    setting = dict(k=10, nprobe=16, k1=200, k2=50)
    a, b = flat.search_batch(q, **setting), graph.search_batch(q, **setting)
    overlap = np.mean([len(set(r) & set(s)) / 10 for r, s in zip(a.rows, b.rows)])
    assert overlap >= 0.97  # two trainings and a graph: nearly the same lists, the same neighbours
    deep = graph.search_batch(q, **setting, coarse_ef=256)  # the whole graph: exactly the flat lists
    exact = graph.assigner.quantizer.storage.search(graph.codec.transform.apply(q), 16)[1]
    got = graph.assigner.assign(graph.codec.transform.apply(q), 16, 256)[1]
    assert (np.sort(got, 1) == np.sort(exact, 1)).mean() >= 0.99 and deep.rows.shape == (50, 10)
    assert "HNSW graph over the 256 centroids, efSearch 64" in graph.explain(1, k=10, nprobe=16).explain()
    with pytest.raises(InputError, match="coarse_ef"):
        graph.search_batch(q, k=10, coarse_ef=0)
    indexing.add(path, x[:100] * 0.5, quiet=True)  # a reload with a graph quantizer shares and extends it
    assert graph.reload() and graph.search_batch(q, **setting).rows.shape == (50, 10)
