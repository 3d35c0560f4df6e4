"""Handles release what they hold at once: on close(), at the end of a `with` block, and when the last
reference goes, with the garbage collector switched off (no reference cycle may keep a store mapped)."""
import gc
import shutil

import numpy as np
import pytest

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core.errors import InputError


def mapped(root) -> list[str]:
    """This process's memory maps of files under `root` (deleted ones included)."""
    with open("/proc/self/maps") as f:
        return [line.split(None, 5)[-1].strip() for line in f if str(root) in line]


@pytest.fixture
def copy(small_index, tmp_path):
    dst = tmp_path / "idx"
    shutil.copytree(small_index, dst)
    return dst


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_close_del_and_with_release_every_store_without_the_garbage_collector(copy, small_data, no_gc):
    queries = small_data[1][:5]
    index = retrieval.open_index(copy)
    index.search_batch(queries)
    assert mapped(copy)  # the stores are memory-mapped while open
    index.close()
    assert mapped(copy) == []
    with pytest.raises(InputError, match="was closed"):
        index.search_batch(queries)
    index = retrieval.open_index(copy)
    index.search_batch(queries)
    del index
    assert mapped(copy) == []
    with retrieval.open_index(copy) as index:
        index.search_batch(queries)
    assert mapped(copy) == []


def test_a_reload_releases_the_files_of_the_generation_it_replaced(copy, small_data, no_gc):
    docs = small_data[0]
    index = retrieval.open_index(copy)
    index.search_batch(docs[:3])
    indexing.delete(copy, [f"doc-{i}" for i in range(1000)], quiet=True)  # all of shard 0
    indexing.compact(copy, quiet=True)  # drops the emptied shard (its files stay one more generation)
    indexing.delete(copy, ["doc-2999"], quiet=True)  # the next change deletes them from disk
    assert any(m.endswith("(deleted)") for m in mapped(copy))  # still held by the old generation
    assert index.reload()
    index.search_batch(docs[:3])
    assert not [m for m in mapped(copy) if m.endswith("(deleted)")]
    index.close()
    assert mapped(copy) == []
    assert np.all(retrieval.open_index(copy).search_batch(docs[1000:1003], k=1).rows[:, 0] == [1000, 1001, 1002])
