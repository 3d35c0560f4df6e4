"""The tuner's sample queries (retrieval.samples): rows outside the training sample, the share of a draw that lies
farthest from its list centre, and a default point that holds for queries farther out than the documents."""
import numpy as np
import pytest
from conftest import exact_topk, recall_at

from matryoshka import indexing, retrieval
from matryoshka.core.params import SearchParams
from matryoshka.indexing.training import sample_rows
from matryoshka.retrieval import samples, tuning


def _around_centres(n, spread, rng, centres):
    """Vectors around `centres`, each at its own distance from its centre (spread x a log-normal factor)."""
    scale = spread * np.exp(0.5 * rng.standard_normal((n, 1)))
    return (centres[rng.integers(0, len(centres), n)] + scale * rng.standard_normal((n, centres.shape[1]))) \
        .astype(np.float32)


@pytest.fixture(scope="module")
def farther_queries(tmp_path_factory):
    """An index of 6,000 vectors around 64 centres, and 300 queries lying 1.5 times farther from them."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((64, 64)).astype(np.float32)
    docs, queries = _around_centres(6000, 1.0, rng, centres), _around_centres(300, 1.5, rng, centres)
    path = tmp_path_factory.mktemp("samples") / "idx"
    indexing.build(path, docs, index_dim=32, pq_bytes=8, shard_size=2000, train_size=3000, quiet=True, tune=False)
    return path, docs, queries


def test_own_rows_avoid_the_training_sample_whose_codes_flatter_them(farther_queries):
    path, docs, _ = farther_queries
    with retrieval.open_index(path) as index:
        view = index.tunable()
        trained = sample_rows(index.count, index.manifest.build["train_rows"], 0)
        rows, x = samples.own_rows(view, 300)
    assert len(rows) == 300 and not np.isin(rows, trained).any()
    np.testing.assert_allclose(x, docs[rows] / np.linalg.norm(docs[rows], axis=1, keepdims=True), atol=2e-3)


def test_after_adds_to_an_index_trained_on_every_row_own_rows_are_drawn_from_all_of_them(tmp_path):
    """A build that trained on every row leaves only later adds outside its training sample; a sample of those
    alone stands for wherever the adds came from, not for the index (GCIDE after drifting adds: 0.869 against
    0.938 on real queries), so the draw covers every live row."""
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((64, 64)).astype(np.float32)
    docs, more = _around_centres(3000, 1.0, rng, centres), _around_centres(1500, 1.0, rng, centres + 3)
    path = tmp_path / "idx"
    indexing.build(path, docs, index_dim=32, pq_bytes=8, shard_size=2000, quiet=True, tune=False)
    with pytest.warns(UserWarning, match="differ from those the index was trained on"):
        indexing.add(path, more, quiet=True)
    with retrieval.open_index(path) as index:
        assert index.manifest.build["train_rows"] == 3000  # every row of the build
        _, x = samples.own_rows(index.tunable(), 1200)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    built = (x @ unit(docs).T).max(1) > (x @ unit(more).T).max(1)  # each drawn row is one of the build's?
    assert 0.5 < built.mean() < 0.85  # about two thirds from the build's rows, the rest from the adds


def test_query_like_keeps_the_rows_farthest_from_their_list_centre_for_a_seed(farther_queries):
    with retrieval.open_index(farther_queries[0]) as index:
        view = index.tunable()
        drawn, drawn_x = samples.own_rows(view, 400, seed=3)
        rows, x = samples.query_like(view, 100, seed=3)
        far = samples.centre_distance(view, drawn_x)
        again, _ = samples.query_like(view, 100, seed=3)
        other, _ = samples.query_like(view, 100, seed=4)
    kept = np.isin(drawn, rows)
    assert kept.sum() == 100 and np.all(np.diff(rows) > 0)
    assert far[kept].min() >= far[~kept].max()  # every row kept lies farther out than every row dropped
    np.testing.assert_array_equal(x, drawn_x[kept])
    np.testing.assert_array_equal(rows, again)
    assert not np.array_equal(rows, other)


class _Centres:
    """What centre_distance reads of an index: the nearest list's score and the metric."""

    def __init__(self, metric):
        self.metric = metric

    def assign(self, x, nprobe):
        return x[:, :1], np.zeros((len(x), 1), np.int64)  # the first column stands for the nearest list's score


def test_centre_distance_reads_similarities_and_l2_distances_the_right_way_round():
    scores = np.array([[0.9], [0.2], [0.5]], np.float32)
    assert list(np.argsort(samples.centre_distance(_Centres("cosine"), scores))) == [0, 2, 1]  # high similarity: near
    assert list(np.argsort(samples.centre_distance(_Centres("l2"), scores))) == [1, 2, 0]  # small distance: near


def test_the_default_point_holds_for_queries_farther_out_than_the_documents(farther_queries):
    """Fails on uniform rows (the tuner before query-like samples): the documents around their centres are easier
    queries than the real ones, and a point measured on them falls short."""
    path, docs, queries = farther_queries
    truth = exact_topk(docs, queries, 10)
    with retrieval.open_index(path) as index:
        view = index.tunable()
        default = tuning.tune(view, 0.9, save=False)
        own, x = samples.own_rows(view, tuning.SAMPLE_QUERIES)
        uniform = tuning.measure(view, x, own, 0.9)

        def real(p):
            return recall_at(index.search_batch(queries, params=SearchParams(
                k=10, nprobe=p.nprobe, k1=p.k1, k2=p.k2, probe_margin=p.probe_margin, rerank=False)).rows, truth)
        assert default.required_recall == 0.9 and default.reached
        assert real(default) >= 0.9 > real(uniform), (default, uniform)
