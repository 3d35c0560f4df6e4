"""Fuzzing a build's inputs as a whole (vectors, ids, texts, options): the engine either builds an index that
answers correctly or raises its own error. Never a raw exception, never a silent no-op."""
import uuid

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core.errors import MatryoshkaError

VALUES = st.one_of(st.floats(-3, 3, width=32), st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e30, -1e6, 1e-40]))
ID_VALUES = st.one_of(st.integers(-2**64, 2**64), st.text(max_size=4), st.none(), st.binary(max_size=3))


@st.composite
def inputs(draw):
    n, dim = draw(st.integers(1, 40)), draw(st.integers(1, 10))
    plain = draw(st.booleans())  # half the examples are clean vectors, so that builds do succeed
    x = np.asarray(draw(st.lists(st.floats(-3, 3, width=32) if plain else VALUES, min_size=n * dim,
                                 max_size=n * dim)), dtype=np.float32).reshape(n, dim)
    good_ids = st.one_of(st.none(), st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n, unique=True),
                         st.lists(st.text(max_size=6), min_size=n, max_size=n, unique=True))
    ids = draw(good_ids if plain else st.one_of(good_ids, st.lists(ID_VALUES, min_size=n, max_size=n),
                                                 st.lists(st.integers(0, 3), min_size=0, max_size=n + 1)))
    texts = draw(st.one_of(st.none(), st.lists(st.text(max_size=8) if plain else st.one_of(
        st.text(max_size=8), st.none(), st.integers()), min_size=n, max_size=n)))
    good = {"metric": st.sampled_from(["cosine", "ip", "l2"]), "index_dim": st.integers(1, 12),
            "pq_bytes": st.integers(1, 4), "nlist": st.one_of(st.none(), st.integers(1, 8)),
            "shard_size": st.integers(1, 30), "fast_scan": st.booleans(),
            "transform": st.sampled_from(["auto", "prefix", "pca"]), "train_size": st.integers(1, 50)}
    bad = {**good, "metric": st.sampled_from(["cosine", "dot"]), "index_dim": st.integers(-1, 12),
           "pq_bytes": st.integers(0, 4), "nlist": st.one_of(st.none(), st.integers(-1, 8)),
           "shard_size": st.integers(0, 30), "transform": st.sampled_from(["auto", "none"]),
           "train_size": st.integers(-1, 50)}
    opts = draw(st.fixed_dictionaries({}, optional=good if plain else bad))
    return x, ids, texts, opts


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=inputs())
def test_a_build_answers_correctly_or_raises_the_engines_error(tmp_path, case):
    x, ids, texts, opts = case
    out = tmp_path / uuid.uuid4().hex
    try:
        indexing.build(out, x, ids=ids, texts=texts, quiet=True, **opts)
    except MatryoshkaError:
        return
    index = retrieval.open_index(out)
    n = len(x)
    assert index.count == n
    want = list(range(n)) if ids is None else list(ids)
    q = x[:1]
    result = index.search_batch(q, k=n)
    assert sorted(map(repr, result.ids[0])) == sorted(map(repr, want))  # every document, once
    metric = opts.get("metric", "cosine")
    v = x.astype(np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True) if metric == "cosine" else v
    qv = v[:1]
    exact = -((v - qv) ** 2).sum(1) if metric == "l2" else v @ qv[0]
    assert abs(result.scores[0, 0] - exact.max()) <= 1e-2 * max(1.0, abs(exact.max()))
