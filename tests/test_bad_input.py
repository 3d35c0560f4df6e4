"""Bad vectors, ids, texts and queries: a clear error naming the row (or the documented fallback)."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import InputError

OPTS = dict(index_dim=16, pq_bytes=4, fast_scan=True, quiet=True)


def vectors(n=600, d=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("bad, match", [(np.nan, "row 345 .*NaN or infinite"), (np.inf, "row 345 .*NaN or infinite")])
def test_non_finite_values_name_the_row(tmp_path, bad, match):
    x = vectors()
    x[345, 3] = bad
    with pytest.raises(InputError, match=match):
        indexing.build(tmp_path / "i", x, **OPTS)


def test_zero_vector_under_cosine_names_the_row_and_the_way_out(tmp_path):
    x = vectors()
    x[500] = 0
    with pytest.raises(InputError, match="row 500 .*zero vector.*metric='ip'"):
        indexing.build(tmp_path / "i", x, **OPTS)
    indexing.build(tmp_path / "ip", x, metric="ip", **OPTS)  # fine where zero has a meaning


def test_zero_vector_in_a_later_batch_leaves_earlier_shards_intact(tmp_path):
    x = vectors(3000)
    x[2500] = 0
    batches = ((np.arange(lo, lo + 250), x[lo:lo + 250]) for lo in range(0, 3000, 250))
    with pytest.raises(InputError, match="row 2500"):  # trained on the first 500 rows; row 2500 comes later
        indexing.build(tmp_path / "i", batches, shard_size=1000, train_size=500, **OPTS)
    shards = sorted(p.name for p in (tmp_path / "i" / layout.SHARDS).iterdir())
    assert shards == ["00000", "00001"]  # complete shards kept, the broken one dropped, no manifest
    assert not (tmp_path / "i" / layout.MANIFEST).exists()


def test_wrong_dtype_shape_and_mixed_dimensions(tmp_path):
    with pytest.raises(InputError, match="must be numbers"):
        indexing.build(tmp_path / "a", np.array([["a", "b"]] * 10), **OPTS)
    with pytest.raises(InputError, match="2-D"):
        indexing.build(tmp_path / "b", np.ones(10, np.float32), **OPTS)
    ragged = pa.array([[1.0, 2.0, 3.0]] * 5 + [[1.0, 2.0]] + [[1.0, 2.0, 3.0]] * 5, pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": list(range(11)), "embedding": ragged}), tmp_path / "r.parquet")
    with pytest.raises(InputError, match="row 5 has a 2-dim embedding"):
        indexing.build(tmp_path / "c", str(tmp_path / "r.parquet"), **OPTS)
    batches = [(np.arange(5), vectors(5, 32)), (np.arange(5, 10), vectors(5, 31))]
    with pytest.raises(InputError, match="31 dims but the index expects 32"):
        indexing.build(tmp_path / "d", iter(batches), **OPTS)


def test_empty_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="nothing to index"):
        indexing.build(tmp_path / "a", np.zeros((0, 8), np.float32), **OPTS)
    with pytest.raises(InputError, match="nothing to index"):
        indexing.build(tmp_path / "b", iter([]), **OPTS)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_tiny_corpora_fall_back_to_an_exact_first_pass_and_say_so(tmp_path, n):
    x = vectors(n, 32)
    indexing.build(tmp_path / "i", x, index_dim=32, quiet=True)
    m = json.loads((tmp_path / "i" / layout.MANIFEST).read_text())
    assert m["factory"].endswith(",Flat") and "too few to train" in m["build"]["notes"][0]
    r = retrieval.open_index(tmp_path / "i").search_batch(x[:1], k=5)
    assert r.rows[0, 0] == 0 and (r.rows[0] >= 0).sum() == min(5, n)


def test_duplicate_ids_within_a_batch_across_batches_and_across_shards(tmp_path):
    x = vectors(3000)
    for dup_at, first in ((10, 3), (800, 100), (2500, 100)):  # same batch / next batch / a later shard
        ids = [f"id-{i}" for i in range(3000)]
        ids[dup_at] = ids[first]
        with pytest.raises(InputError, match=f"duplicate id 'id-{first}'.*row.*{dup_at}"):
            indexing.build(tmp_path / f"d{dup_at}", x, ids=ids, shard_size=1000, batch_rows=256, **OPTS)
    int_ids = np.arange(3000)
    int_ids[2999] = 5
    with pytest.raises(InputError, match="duplicate id 5"):
        indexing.build(tmp_path / "ints", x, ids=int_ids, shard_size=1000, **OPTS)


def test_null_mixed_and_overlong_ids(tmp_path):
    x = vectors(10)
    with pytest.raises(InputError, match="row 4 has a null id"):
        indexing.build(tmp_path / "a", x, ids=[0, 1, 2, 3, None, 5, 6, 7, 8, 9], **OPTS)
    with pytest.raises(InputError, match="all integers or all strings"):
        indexing.build(tmp_path / "b", x, ids=[0, 1, "two", 3, 4, 5, 6, 7, 8, 9], **OPTS)
    with pytest.raises(InputError, match="row 2 has an id of 5000 bytes"):
        indexing.build(tmp_path / "c", x, ids=["a", "b", "x" * 5000] + list("defghij"), **OPTS)
    batches = [(np.arange(5), vectors(5)), ([f"s{i}" for i in range(5)], vectors(5))]
    with pytest.raises(InputError, match=r"ids are strings but the index.s \(or earlier rows.\) are ints"):
        indexing.build(tmp_path / "d", iter(batches), **OPTS)
    with pytest.raises(InputError, match="got 9 ids for 10 vectors"):
        indexing.build(tmp_path / "e", x, ids=list(range(9)), **OPTS)


def test_bad_texts_are_kept_readable(tmp_path, tiny_cross_encoder):
    x = vectors(50)
    texts = [b"caf\xe9 latin-1 bytes", "", "huge " * 20000] + [f"doc {i}" for i in range(47)]
    indexing.build(tmp_path / "i", x, texts=texts, **OPTS)
    index = retrieval.open_index(tmp_path / "i", reranker=tiny_cross_encoder)
    r = index.search_batch(x[:3], k=1, rerank=False)
    assert r.texts[0][0] == "caf\ufffd latin-1 bytes"  # undecodable bytes become U+FFFD, the rest is kept
    assert r.texts[1][0] == "" and len(r.texts[2][0]) == 100000  # stored whole; the cross-encoder truncates
    reranked = index.search_batch(x[:3], k=5, query_texts=["q0", "q1", "q2"])
    assert np.isfinite(reranked.stage_scores["rerank"]).all()


def test_bad_queries(small_index, small_data):
    index = retrieval.open_index(small_index)
    q = small_data[1]
    for opt in ("k", "nprobe", "k1"):
        with pytest.raises(InputError, match=f"{opt} must be a positive integer"):
            index.search_batch(q, **{opt: 0})
    with pytest.raises(TypeError, match="unexpected keyword"):
        index.search_batch(q, nprobes=3)
    with pytest.raises(InputError, match="NaN"):
        index.search_batch(np.full((1, 96), np.nan, np.float32))
    with pytest.raises(InputError, match="full_dims"):
        index.search_batch(q, full_dims=1000)
    r = index.search_batch(q[:2], k=10, nprobe=10**6, k1=10**5)  # beyond nlist and the corpus: clamped
    assert (r.rows >= 0).all()


def test_a_large_query_batch_is_split_and_gives_the_same_results(small_index, small_data):
    from matryoshka.retrieval.plan import Rules
    index = retrieval.open_index(small_index)
    q = np.concatenate([small_data[1]] * 30)  # 1,500 queries > one internal batch
    whole = index.search_batch(q, k=10)
    assert len(q) > Rules().max_batch
    np.testing.assert_array_equal(whole.rows[:50], index.search_batch(q[:50], k=10).rows)
    np.testing.assert_array_equal(whole.rows[-50:], whole.rows[:50])
    assert len(whole.ids) == 1500
