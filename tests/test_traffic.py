"""Operating points that say what they were measured on: live queries kept only when asked (a bounded sample),
a re-tune from them, a point marked stale after a change, and a target called met only by its interval."""
import numpy as np
import pytest

from matryoshka import indexing, retrieval
from matryoshka.core.errors import InputError
from matryoshka.retrieval.traffic import Reservoir, wilson
from matryoshka.retrieval.tuning import describe

N, DIM = 3000, 32


def test_the_reservoir_is_bounded_and_samples_every_part_of_the_stream():
    r = Reservoir(200, 2, seed=3)
    for lo in range(0, 20_000, 700):
        n = min(700, 20_000 - lo)
        r.add(np.stack([np.arange(lo, lo + n), np.zeros(n)], 1).astype(np.float32))
    kept = r.sample()[:, 0]
    assert len(r) == 200 == len(kept) and r.seen == 20_000 and len(set(kept)) == 200
    assert 7_000 < kept.mean() < 13_000 and kept.max() > 15_000  # uniform over the stream, not its start
    with pytest.raises(InputError, match="sample_queries"):
        Reservoir(0, 2)


def test_wilson_interval():
    lo, hi = wilson(1.0, 50)
    assert 0.92 < lo < 0.94 and hi == 1.0
    lo, hi = wilson(0.95, 3000)
    assert 0.94 < lo < 0.95 < hi < 0.96


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    return indexing.build(tmp_path_factory.mktemp("traffic") / "idx", x, index_dim=16, pq_bytes=4, select=False,
                          tune=False, quiet=True), x


def test_nothing_is_kept_unless_asked(built):
    path, x = built
    index = retrieval.open_index(path)
    index.search_batch(x[:100], k=5)
    assert index.traffic is None
    with pytest.raises(InputError, match="sample_queries=N"):
        index.tune(0.9, from_traffic=True, save=False)


def test_a_point_from_traffic_is_stored_marked_stale_by_an_add_and_retuned(built, tmp_path):
    import shutil
    path = shutil.copytree(built[0], tmp_path / "idx")
    x = built[1]
    index = retrieval.open_index(path, sample_queries=150)
    rng = np.random.default_rng(1)
    for lo in range(0, 400, 100):  # live queries: near documents, not documents
        index.search_batch(x[lo:lo + 100] + 0.3 * rng.standard_normal((100, DIM)).astype(np.float32), k=5)
    assert len(index.traffic) == 150 and index.traffic.seen == 400
    point = index.tune(0.9, from_traffic=True)
    assert point.source == "traffic" and point.queries == 150 and point.generation == index.generation
    assert point.interval[0] <= point.recall_at_10 <= point.interval[1]
    info = index.info()
    assert info["operating_point"]["source"] == "traffic" and not info["operating_point_stale"]

    indexing.add(path, x[:50] * 0.7, quiet=True)
    assert index.reload()
    info = index.info()
    assert info["operating_point_stale"]
    assert "re-tune" in describe(info["operating_point"], info["generation"])
    assert "measured on generation" in index.explain(1, k=5).explain()
    assert len(index.traffic) == 150  # the sample outlives the reload
    index.tune(0.9, from_traffic=True)
    assert not index.info()["operating_point_stale"]
    assert "measured on generation" not in index.explain(1, k=5).explain()


def test_a_target_is_called_met_only_when_the_interval_reaches_it(built):
    path, x = built
    index = retrieval.open_index(path)
    point = index.tune(0.95, x[:5] + 0.01, save=False)  # five queries: recall 1.0 at best, a wide interval
    assert point.reached and not point.met and point.interval[0] < 0.95
    text = describe(point.to_dict())
    assert "short of the target with 5 queries" in text and "tune on more queries" in text


def test_the_server_keeps_live_queries_only_when_asked_and_tunes_on_them(built, tmp_path):
    pytest.importorskip("fastapi")
    import shutil

    from fastapi.testclient import TestClient

    from matryoshka.integrations.server.app import create_app
    path = shutil.copytree(built[0], tmp_path / "idx")
    x = built[1]
    with TestClient(create_app(path, reload_interval=0.0, preload_model=False)) as client:
        client.post("/search", json={"vectors": (x[:60] * 0.9).tolist(), "k": 5})
        r = client.post("/tune", json={"target_recall": 0.9})
        assert r.status_code == 400 and "--sample-queries" in r.json()["detail"]
    with TestClient(create_app(path, reload_interval=0.0, preload_model=False, sample_queries=100)) as client:
        assert client.app.state.service.index.traffic is not None and len(client.app.state.service.index.traffic) == 0
        client.post("/search", json={"vectors": (x[:60] * 0.9).tolist(), "k": 5})
        r = client.post("/tune", json={"target_recall": 0.9})
        assert r.status_code == 200 and r.json()["source"] == "traffic" and r.json()["queries"] == 60, r.text
        assert client.get("/info").json()["operating_point"]["source"] == "traffic"
