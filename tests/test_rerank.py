"""The cross-encoder stage: real loading and scoring code, with a tiny model built locally."""
import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from matryoshka import retrieval
from matryoshka.core.errors import RerankerUnavailable


def test_final_order_follows_the_cross_encoder_scores(small_index, small_data, tiny_cross_encoder):
    _, queries = small_data
    index = retrieval.open_index(small_index, reranker=tiny_cross_encoder)
    qtexts = [f"query about document {i}" for i in range(4)]
    r = index.search_batch(queries[:4], k=5, k3=20, query_texts=qtexts)
    assert set(r.stage_scores) == {"first_pass", "int8", "full", "rerank"}
    without = index.search_batch(queries[:4], k=20, rerank=False)
    ce = CrossEncoder(tiny_cross_encoder)
    for i in range(4):
        pool = without.hits(i)  # the 20 candidates the cross-encoder saw, in full-dim order
        scores = ce.predict([(qtexts[i], h.text) for h in pool])
        expect = [pool[j].row for j in np.argsort(-scores, kind="stable")[:5]]
        assert [h.row for h in r.hits(i)] == expect
        np.testing.assert_allclose([h.score for h in r.hits(i)], np.sort(scores)[::-1][:5], rtol=1e-4)
    # the reranker really reorders: the final order differs from the full-dim order somewhere
    assert any([h.row for h in r.hits(i)] != [h.row for h in without.hits(i)[:5]] for i in range(4))


def test_rerank_is_off_without_query_texts_and_refused_when_asked_for(small_index, small_data, tiny_cross_encoder):
    _, queries = small_data
    index = retrieval.open_index(small_index, reranker=tiny_cross_encoder)
    assert "rerank" not in index.search_batch(queries[:2], k=5).stage_scores
    with pytest.raises(Exception, match="query_texts"):
        index.search_batch(queries[:2], k=5, rerank=True)


def test_a_reranker_that_cannot_be_loaded_names_the_flags(small_index):
    with pytest.raises(RerankerUnavailable, match="--reranker.*--no-rerank"):
        retrieval.open_index(small_index, reranker="/nonexistent/cross-encoder")
