"""Every shard's store in one array: the same rows as reading shard by shard, for mapped files and shared
memory, with empty shards, gaps in the row numbers and the -1 of a short candidate list."""
import mmap
import sys

import numpy as np
import pytest

from matryoshka.storage.row_store import RowStore
from matryoshka.storage.row_view import row_view

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the view needs Linux's mremap")
SIZES = [1000, 37, 0, 5000, 1, 129]


def _arrays(tmp_path, kind: str, width: int, dtype) -> list[np.ndarray]:
    rng = np.random.default_rng(len(kind) + width)
    out = []
    for i, n in enumerate(SIZES):
        a = (rng.standard_normal((n, width)) * 50).astype(dtype)
        if kind == "shared":  # anonymous shared memory: a map like a file's, with no file
            b = np.frombuffer(mmap.mmap(-1, max(1, a.nbytes)), dtype, a.size).reshape(a.shape)
            b[:] = a
        else:
            np.save(tmp_path / f"{i}.npy", a)
            b = np.load(tmp_path / f"{i}.npy", mmap_mode="r")
        out.append(b)
    return out


@pytest.mark.parametrize("kind", ["mapped", "shared"])
@pytest.mark.parametrize("width,dtype", [(32, np.int8), (384, np.float16), (7, np.float16)])
def test_the_view_holds_every_shards_rows_in_place(tmp_path, kind, width, dtype):
    arrays = _arrays(tmp_path, kind, width, dtype)
    view = row_view(arrays, width, dtype)
    assert view is not None
    for a, first in zip(arrays, view.first):
        np.testing.assert_array_equal(view.array[first:first + len(a)], a)


@pytest.mark.parametrize("kind", ["mapped", "shared"])
@pytest.mark.parametrize("in_order", [True, False])
def test_candidates_from_the_view_equal_the_rows_shard_by_shard(tmp_path, kind, in_order):
    arrays = _arrays(tmp_path, kind, 24, np.int8)
    starts = np.concatenate([[0], np.cumsum(SIZES)[:-1]]) + np.arange(len(SIZES)) * 10  # gaps between shards
    store = RowStore(starts, arrays, 24, np.int8)
    assert store.view is not None
    whole = {int(s) + r: a[r] for s, a in zip(starts, arrays) for r in range(len(a))}
    rows = np.array(sorted(whole))
    cand = np.random.default_rng(0).choice(rows, (50, 40))
    cand[3, 30:] = -1  # a short list
    got = store.candidates(cand, in_order=in_order)
    live = cand >= 0
    np.testing.assert_array_equal(got[live], np.stack([whole[int(r)] for r in cand[live]]))
    np.testing.assert_array_equal(store.take(rows[::7]), np.stack([whole[int(r)] for r in rows[::7]]))
    with pytest.raises(IndexError, match="none of this store's shards"):
        store.take(np.array([starts[1] + SIZES[1] + 3]))  # in the gap after shard 1


def test_arrays_that_are_not_shared_maps_are_gathered_shard_by_shard():
    arrays = [np.ones((5, 4), np.int8), np.zeros((3, 4), np.int8)]
    assert row_view(arrays, 4, np.int8) is None
    store = RowStore(np.array([0, 5]), arrays, 4, np.int8)
    assert store.view is None
    assert store.candidates(np.array([[6, 0, -1]]), in_order=False)[0, :, 0].tolist() == [0, 1, 1]


def test_the_view_keeps_its_pages_after_the_shards_maps_are_gone(tmp_path):
    arrays = _arrays(tmp_path, "shared", 16, np.int8)
    want = [np.array(a) for a in arrays]
    view = row_view(arrays, 16, np.int8)
    del arrays
    for a, first in zip(want, view.first):
        np.testing.assert_array_equal(view.array[first:first + len(a)], a)


def test_dropping_the_page_cache_reaches_the_pages_the_view_touched(tmp_path):
    """A page still mapped by the view would stay in the page cache: `drop_page_cache` makes every shard cold."""
    import os

    from matryoshka import indexing, retrieval
    from matryoshka.storage.row_reader import cached_fraction
    x = np.random.default_rng(3).standard_normal((1200, 32)).astype(np.float32)
    root = indexing.build(tmp_path / "idx", x, shard_size=300, index_dim=16, nlist=8, select=False, tune=False,
                          quiet=True)
    os.sync()  # dirty pages cannot be dropped
    files = sorted((root / "shards").glob("*/short.i8.npy"))
    with retrieval.open_index(root) as index:
        assert index.backend.stores.short.view is not None and len(files) == 4
        index.search_batch(x[::5], 10, nprobe=8, k1=200, k2=50)
        assert min(cached_fraction(f) for f in files) > 0.5
        index.drop_page_cache()
        assert max(cached_fraction(f) for f in files) == 0.0


def test_a_file_truncated_under_the_view_is_refused_by_name_and_the_other_shards_answer(tmp_path):
    import os

    from matryoshka.core.errors import StoreDamaged
    arrays = _arrays(tmp_path, "mapped", 24, np.int8)
    starts = np.concatenate([[0], np.cumsum(SIZES)[:-1]])
    store = RowStore(starts, arrays, 24, np.int8)
    low, high = np.array([[0, 5, 900]]), np.array([[starts[3] + 7]])  # shard 0 only; shard 3 only
    store.candidates(low)
    assert store.watch is not None and not store.watch.changed()  # nothing changed: no file is checked again
    os.truncate(tmp_path / "3.npy", 1000)
    assert store.watch.changed()
    with pytest.raises(StoreDamaged, match="3.npy"):
        store.candidates(high)
    np.testing.assert_array_equal(store.candidates(low)[0], arrays[0][[0, 5, 900]])
