import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from matryoshka.benchmarks.synthetic import Synthetic
from matryoshka.indexing.transform import ShortTransform, fit_pca, fit_prefix, fit_transform
from matryoshka.core.codec import Int8Codec
from matryoshka.core.errors import InputError


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_prefix_keeps_leading_dims_and_renormalizes_for_cosine():
    x = unit(np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32))
    t = fit_prefix(64, 16, "cosine")
    y = t.apply(x)
    assert y.shape == (10, 16)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, rtol=1e-5)
    # a fixed rotation follows the prefix: the same vectors, turned, with every inner product kept
    np.testing.assert_allclose(y @ t.rotation.T, unit(x[:, :16]), atol=1e-5)
    np.testing.assert_allclose(y @ y.T, unit(x[:, :16]) @ unit(x[:, :16]).T, atol=1e-5)
    assert not fit_prefix(64, 16, "ip").renormalize


def test_pca_is_orthonormal_and_round_trips_through_arrays():
    x = Synthetic(dim=64, matryoshka=False, seed=3).documents(2000)
    t = fit_pca(x, 16)
    np.testing.assert_allclose(t.matrix.T @ t.matrix, np.eye(16), atol=1e-4)  # orthonormal columns, rotated
    t2 = ShortTransform.from_arrays(t.to_arrays())
    np.testing.assert_array_equal(t.apply(x[:5]), t2.apply(x[:5]))


def test_projection_wins_on_rotated_data_and_prefix_is_close_on_matryoshka_data():
    gap = {}
    for matryoshka in (True, False):
        x = unit(Synthetic(dim=128, matryoshka=matryoshka, decay=1.0, seed=4).documents(4000))
        t, info = fit_transform("auto", x, 16, "cosine")
        kept = info["recall_at_10_in_short_space"]
        gap[matryoshka] = kept["pca"] - kept["prefix"]
        if not matryoshka:
            assert info["chosen"] == "pca" and t.kind == "pca"
    # the same vectors: rotated, a prefix throws most of the information away; Matryoshka-like, it keeps most
    assert gap[False] > 0.3
    assert gap[True] < 0.1
    assert gap[False] > 4 * gap[True]


def test_bad_transform_options_are_refused():
    x = np.ones((10, 8), np.float32)
    with pytest.raises(InputError, match="unknown transform"):
        fit_transform("svd", x, 4, "cosine")
    with pytest.raises(InputError, match="between 1 and the full dim"):
        fit_transform("prefix", x, 9, "cosine")


@given(arrays(np.float32, st.tuples(st.integers(2, 50), st.integers(1, 12)),
              elements=st.floats(-100, 100, width=32)))
def test_int8_codec_error_is_within_half_a_step_inside_the_calibrated_range(x):
    codec = Int8Codec.fit(x)
    codes = codec.encode(x)
    assert codes.dtype == np.int8 and codes.min() >= -127
    lo = codec.offset - 127 * codec.scale
    hi = codec.offset + 127 * codec.scale
    inside = (x >= lo) & (x <= hi)
    err = np.abs(codec.decode(codes) - x)
    assert np.all(err[inside] <= (codec.scale * 0.5 + 1e-3 * np.maximum(1, np.abs(x)))[inside])


@given(st.floats(1.5, 1e6))
def test_int8_codec_clips_out_of_range_values_instead_of_wrapping(factor):
    rng = np.random.default_rng(0)
    codec = Int8Codec.fit(rng.standard_normal((500, 4)).astype(np.float32))
    big = np.array([[factor * 10] * 4, [-factor * 10] * 4], np.float32)
    codes = codec.encode(big)
    assert (codes[0] == 127).all() and (codes[1] == -127).all()


@given(st.integers(0, 10_000))
def test_folding_scales_into_the_query_equals_dequantizing(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, 8)).astype(np.float32) * rng.uniform(0.1, 5, 8).astype(np.float32)
    codec = Int8Codec.fit(x)
    codes = codec.encode(x)
    q = rng.standard_normal(8).astype(np.float32)
    qs, const = codec.fold_query(q[None])
    np.testing.assert_allclose(codes.astype(np.float32) @ qs[0] + const[0], codec.decode(codes) @ q,
                               rtol=1e-4, atol=1e-3)
    batched = codec.inner_products(codes[None], q[None])[0]  # what the cascade's int8 stage computes
    np.testing.assert_allclose(batched, codec.decode(codes) @ q, rtol=1e-4, atol=1e-3)


@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4), nq=st.integers(1, 5), k=st.integers(1, 12),
       seed=st.integers(0, 10_000))
def test_reading_candidates_in_row_order_or_directly_gives_the_same_rows(tmp_path_factory, sizes, nq, k, seed):
    from matryoshka.storage.row_store import RowStore
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("rows")
    arrays, starts, total = [], [], 0
    for s, n in enumerate(sizes):  # shards as the index stores them: .npy files opened as memory maps
        np.save(folder / f"{s}.npy", rng.integers(-127, 128, (n, 3), dtype=np.int8))
        arrays.append(np.load(folder / f"{s}.npy", mmap_mode="r"))
        starts.append(total)
        total += n
    store = RowStore(np.array(starts), arrays, 3, np.int8)
    cand = rng.integers(-1, total, (nq, k))  # -1: no candidate
    whole = np.concatenate([np.asarray(a) for a in arrays])
    for in_order in (True, False):
        got = store.candidates(cand, in_order)
        assert got.shape == (nq, k, 3)
        np.testing.assert_array_equal(got[cand >= 0], whole[cand[cand >= 0]])


@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 12), st.integers(0, 10_000))
def test_merging_shard_results_equals_the_top_k_of_their_union(shards, nq, k, seed):
    from matryoshka.retrieval.first_pass import merge_topk
    rng = np.random.default_rng(seed)
    ds, is_ = [], []
    for s in range(shards):
        d = np.sort(rng.standard_normal((nq, k)).astype(np.float32), axis=1)[:, ::-1]
        i = (rng.permutation(1000)[:k] + 1000 * s)[None, :].repeat(nq, 0)
        missing = rng.random((nq, k)) < 0.2  # shards with fewer than k hits pad with -1 / -inf
        d[missing], i[missing] = -np.inf, -1
        order = np.argsort(-d, axis=1, kind="stable")
        ds.append(np.take_along_axis(d, order, 1))
        is_.append(np.take_along_axis(i, order, 1))
    md, mi = merge_topk(ds, is_, k)
    alld, alli = np.hstack(ds), np.hstack(is_)
    for q in range(nq):
        expect = np.sort(alld[q])[::-1][:k]
        np.testing.assert_array_equal(md[q], expect)
        assert np.all(md[q][:-1] >= md[q][1:])
        for score, row in zip(md[q], mi[q]):  # every merged hit is one of the shards' hits with that score
            if np.isfinite(score):
                assert score in alld[q][alli[q] == row]


@given(st.integers(2, 40), st.integers(1, 16), st.sampled_from(["prefix", "pca"]), st.integers(0, 10_000))
def test_transform_is_row_independent_and_a_projection_never_lengthens(n, dim, kind, seed):
    rng = np.random.default_rng(seed)
    full = max(dim, 16)
    x = rng.standard_normal((max(n, dim), full)).astype(np.float32)
    t = fit_prefix(full, dim, "ip") if kind == "prefix" else fit_pca(x, dim)
    y = t.apply(x)
    np.testing.assert_allclose(y[3 % len(x)], t.apply(x[3 % len(x):3 % len(x) + 1])[0], rtol=1e-5, atol=1e-5)
    assert np.all(np.linalg.norm(y, axis=1) <= np.linalg.norm(x, axis=1) * (1 + 1e-4))
