"""A query costs the lists it probes, not the shards: one IVF holds every shard's codes, results do not depend on
the shard count (deletes and filters included), and a reload reads only the shards that changed."""
import shutil

import numpy as np
import pytest

from matryoshka import indexing, retrieval

N, DIM = 4000, 48
OPTS = dict(index_dim=32, pq_bytes=8, nlist=64, select=False, tune=False, quiet=True,
            attributes={"half": np.arange(N) % 2 == 0})
SETTINGS = [dict(nprobe=8, k1=100, k2=40), dict(nprobe=64, k1=600, k2=100)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(9)
    centers = rng.standard_normal((40, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 40, N)] + 0.4 * rng.standard_normal((N, DIM)).astype(np.float32)
    return x, x[rng.choice(N, 60, replace=False)] + 0.1 * rng.standard_normal((60, DIM)).astype(np.float32)


@pytest.fixture(scope="module", params=[True, False], ids=["fast-scan", "pq8"])
def pair(request, tmp_path_factory, data):
    x, _ = data
    root = tmp_path_factory.mktemp("inv")
    opts = dict(OPTS, fast_scan=request.param)
    one = indexing.build(root / "one", x, ids=[f"d{i}" for i in range(N)], shard_size=N, **opts)
    many = indexing.build(root / "many", x, ids=[f"d{i}" for i in range(N)], shard_size=N // 13, **opts)
    return one, many


def _same(a, b, queries, **kw):
    for s in SETTINGS:
        ra, rb = a.search_batch(queries, k=10, **s, **kw), b.search_batch(queries, k=10, **s, **kw)
        assert ra.ids == rb.ids and set(ra.stage_scores) == set(rb.stage_scores)
        # the same rows; scores to float32 rounding (two builds encode 8-bit PQ residuals in other batches)
        for stage in ra.stage_scores:
            np.testing.assert_allclose(ra.stage_scores[stage], rb.stage_scores[stage], rtol=1e-6, err_msg=stage)


def test_one_shard_and_fourteen_give_the_same_results_with_deletes_and_filters(pair, data, tmp_path):
    _, q = data
    one, many = (shutil.copytree(p, tmp_path / p.name) for p in pair)
    a, b = retrieval.open_index(one), retrieval.open_index(many)
    assert len(a.manifest.shards) == 1 and len(b.manifest.shards) == 14
    _same(a, b, q)
    gone = [f"d{i}" for i in range(0, N, 7)]
    for path in (one, many):
        indexing.delete(path, gone, quiet=True)
    a.reload(), b.reload()
    _same(a, b, q)
    _same(a, b, q, where="half")
    assert not set(gone) & {i for row in b.search_batch(q, k=10).ids for i in row}


def test_mapped_stores_are_one_gather_over_every_shard_and_answer_as_stores_in_ram(pair, data):
    _, q = data
    mapped, ram = retrieval.open_index(pair[1]), retrieval.open_index(pair[1], memory_budget=1 << 30)
    assert mapped.backend.stores.short.view is not None and mapped.backend.stores.full.view is not None
    # read into RAM: private memory (huge pages), gathered shard by shard
    assert ram.info()["stores"]["int8"]["tier"] == "ram" and ram.backend.stores.short.view is None
    _same(mapped, ram, q)
    _same(retrieval.open_index(pair[0]), ram, q)


def test_the_first_pass_of_many_shards_returns_its_top_k_with_ties_by_row(pair, data):
    _, q = data
    index = retrieval.open_index(pair[1])
    r = index.search_batch(q, k=50, k1=50, k2=50, int8=False, full=False)
    s = r.stage_scores["first_pass"]
    assert (np.diff(s, axis=1) <= 0).all()  # best first
    tie = s[:, 1:] == s[:, :-1]
    assert (r.rows[:, 1:][tie] > r.rows[:, :-1][tie]).all()  # equal scores: the lower row first


def test_a_reload_reads_only_the_shards_that_changed(pair, data, tmp_path):
    x, q = data
    path = shutil.copytree(pair[1], tmp_path / "idx")
    index = retrieval.open_index(path)
    before = {s.number: s for s in index.backend.shards}
    codes = index.backend.first.index
    indexing.delete(path, ["d5"], quiet=True)  # a tombstone in shard 0: no codes change
    assert index.reload()
    now = {s.number: s for s in index.backend.shards}
    assert [n for n in now if now[n] is not before[n]] == [0]  # only the changed shard was opened again
    assert index.backend.first.index is codes  # the codes are shared, not read or copied
    assert before[3].readers is now[3].readers and before[3].ids is now[3].ids
    _same(index, retrieval.open_index(path), q)

    indexing.add(path, x[:500] * 0.9, ids=[f"n{i}" for i in range(500)], attributes={"half": [True] * 500},
                 quiet=True)
    assert index.reload()
    again = {s.number: s for s in index.backend.shards}
    kept = [n for n in now if n in again and again[n] is now[n]]
    assert len(kept) >= len(now) - 1  # every old shard kept but perhaps the small last one an add merges into
    assert index.backend.first.index.ntotal == sum(s.count for s in index.backend.shards)
    _same(index, retrieval.open_index(path), q)

    indexing.delete(path, [f"d{i}" for i in range(300, 900)], quiet=True)
    indexing.compact(path, min_dead=0.3, quiet=True)  # rewrites early shards: codes after them are read again
    assert index.reload()
    _same(index, retrieval.open_index(path), q)
    _same(index, retrieval.open_index(path), q, where="half")


def test_appending_fast_scan_lists_at_a_block_boundary_moves_every_code():
    """faiss 1.15 copies past a fast-scan list's end when its size is a non-zero multiple of the block size in
    bytes (128 entries here, one list); `append_lists` moves such lists itself: the merge equals one index."""
    import faiss

    from matryoshka.retrieval.first_pass import append_lists
    rng = np.random.default_rng(2)
    x = rng.standard_normal((128 * 20, 16)).astype(np.float32)
    trained = faiss.index_factory(16, "IVF1,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    trained.train(x)
    whole, merged = faiss.clone_index(trained), faiss.clone_index(trained)
    whole.add_with_ids(x, np.arange(len(x)))
    for lo in range(0, len(x), 128):  # from the second on, every append starts at a boundary
        part = faiss.clone_index(trained)
        part.add_with_ids(x[lo:lo + 128], np.arange(lo, lo + 128))
        append_lists(merged, part)
    assert merged.ntotal == whole.ntotal == merged.invlists.list_size(0)
    np.testing.assert_array_equal(whole.search(x[:100], 30)[1], merged.search(x[:100], 30)[1])
