"""Concurrent use: many threads on one index, and readers while another process replaces the index."""
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import numpy as np
from conftest import assert_each_is_one_of, search_while_swapping, two_indexes_one_path

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import IndexFormatError


@pytest.mark.slow
def test_sixteen_threads_get_exactly_the_serial_results(small_index, small_data, tiny_cross_encoder):
    _, queries = small_data
    index = retrieval.open_index(small_index, reranker=tiny_cross_encoder)
    settings = [dict(k=10, nprobe=n, k1=k1, query_texts=[f"q{i}" for i in range(50)] if rr else None)
                for n, k1, rr in [(1, 50, False), (4, 200, False), (32, 500, False), (8, 100, True)]]
    serial = [index.search_batch(queries, **s) for s in settings]
    jobs = [i % len(settings) for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda j: (j, index.search_batch(queries, **settings[j])), jobs))
    for j, r in results:
        np.testing.assert_array_equal(r.rows, serial[j].rows)
        np.testing.assert_array_equal(r.scores, serial[j].scores)
    assert any(not np.array_equal(serial[0].rows, s.rows) for s in serial[1:])  # settings really differ


REPLACER = """
import sys, indexing, numpy as np
x = np.load(sys.argv[2])
for i in range(int(sys.argv[3])):
    indexing.build(sys.argv[1], x, index_dim=16 if i % 2 == 0 else 32, pq_bytes=4, fast_scan=True,
                   shard_size=1000, overwrite=True, quiet=True, select=False, tune=False)
"""


def _open_while_replaced(script: str, target, vectors, builds: int, check, refusals: tuple[str, ...]) -> None:
    """Open `target` again and again while another process runs `script`, which replaces it `builds` times with
    --overwrite: every handle is passed to `check`, every refusal must name one of `refusals`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen([sys.executable, "-c", script, str(target), str(vectors), str(builds)], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        while writer.poll() is None:
            try:
                index = retrieval.open_index(target)
            except IndexFormatError as e:
                assert any(s in str(e) for s in refusals), e
                continue
            check(index)
    finally:
        _, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err


@pytest.mark.slow
def test_readers_never_see_a_half_written_index_while_it_is_replaced(tmp_path, small_data):
    docs, queries = small_data
    np.save(tmp_path / "v.npy", docs)
    refs = {}
    for dim in (16, 32):
        indexing.build(tmp_path / f"ref{dim}", docs, index_dim=dim, pq_bytes=4, fast_scan=True, shard_size=1000,
                       quiet=True, select=False, tune=False)
        refs[dim] = retrieval.open_index(tmp_path / f"ref{dim}").search_batch(queries, k=10, nprobe=16, k1=200,
                                                                              k2=50).rows
    target = tmp_path / "live" / "idx"
    indexing.build(target, docs, index_dim=32, pq_bytes=4, fast_scan=True, shard_size=1000, quiet=True,
                   select=False, tune=False)
    seen = {"ok16": 0, "ok32": 0}

    def check(index):
        rows = index.search_batch(queries, k=10, nprobe=16, k1=200, k2=50).rows
        dim = index.index_dim
        np.testing.assert_array_equal(rows, refs[dim])  # whichever index it opened, it is whole
        seen[f"ok{dim}"] += 1
        time.sleep(0.01)
    _open_while_replaced(REPLACER, target, tmp_path / "v.npy", 4, check,
                         ("no index at", "checksum", "missing", "not finished", "size is"))
    assert seen["ok16"] + seen["ok32"] > 5, seen
    assert retrieval.open_index(target).index_dim == 32


# Two inputs of the same shape whose indexes differ in every file's content but in no file's size: a handle
# that mixed them would pass every size check, so only pinning one generation keeps it whole.
def variant(docs, which):
    x = docs if which == "a" else np.ascontiguousarray(docs[::-1] * np.float32(-1))
    ids = np.arange(len(x)) + (0 if which == "a" else 1_000_000)
    return dict(docs=x, ids=ids, texts=[f"{which} text {i:05d}" for i in range(len(x))])


# searches here name their depths, so no build measures a default operating point
BUILD = dict(index_dim=32, pq_bytes=4, fast_scan=True, shard_size=1000, quiet=True, tune=False)


def _answer(index, queries):
    return [(h.id, round(h.score, 5), h.text) for hits in index.search_batch(queries, k=10, nprobe=16, k1=200, k2=50)
            for h in hits]



def _refs(tmp_path, docs, queries):
    refs = {}
    for which in "ab":
        v = variant(docs, which)
        indexing.build(tmp_path / f"ref-{which}", v["docs"], ids=v["ids"], texts=v["texts"], **BUILD)
        refs[which] = _answer(retrieval.open_index(tmp_path / f"ref-{which}"), queries)
    assert refs["a"] != refs["b"]
    return refs


OPENER = """
import json, sys, numpy as np, retrieval
from tests.test_concurrency import _answer
print(json.dumps(_answer(retrieval.open_index(sys.argv[1]), np.load(sys.argv[2]))))
"""


@pytest.mark.slow
def test_a_handle_opened_during_a_swap_is_one_generation_whole(tmp_path, small_data):
    """A reader stopped (SIGSTOP) in the middle of opening, with every shard read but the last one's stores,
    while an overwrite swaps in an index of the same shape: it answers as one of the two indexes, whole. A handle
    opened before a swap keeps answering as its index after the folder is gone."""
    docs, queries = small_data
    refs = _refs(tmp_path, docs, queries)
    target = tmp_path / "idx"
    np.save(tmp_path / "q.npy", queries)

    def replace_with(which):
        v = variant(docs, which)
        indexing.build(target, v["docs"], ids=v["ids"], texts=v["texts"], overwrite=True, **BUILD)

    replace_with("a")
    last_shard = len(docs) // BUILD["shard_size"] - 1
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), layout.STOP_ENV: f"open-stores:{last_shard}"}
    reader = subprocess.Popen([sys.executable, "-c", OPENER, str(target), str(tmp_path / "q.npy")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stops = 0
    while True:
        _, status = os.waitpid(reader.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            break
        stops += 1
        if stops == 1:
            replace_with("b")
        os.kill(reader.pid, signal.SIGCONT)
    reader.returncode = os.waitstatus_to_exitcode(status)
    out, err = reader.communicate()
    assert reader.returncode == 0, err
    assert stops >= 1
    got = [tuple(h) for h in json.loads(out)]
    assert got in (refs["a"], refs["b"]), "the handle mixed two indexes"

    held = retrieval.open_index(target)  # b, all files open
    replace_with("a")
    assert not (tmp_path / ".idx.old").exists()  # b's folder is gone from the disk
    assert _answer(held, queries) == refs["b"]
    assert _answer(retrieval.open_index(target), queries) == refs["a"]


SWAPPER = """
import sys, numpy as np, indexing
from tests.test_concurrency import BUILD, variant
docs = np.load(sys.argv[2])
for i in range(int(sys.argv[3])):
    v = variant(docs, "ab"[i % 2])
    indexing.build(sys.argv[1], v["docs"], ids=v["ids"], texts=v["texts"], overwrite=True, **BUILD)
"""


@pytest.mark.slow
def test_readers_opening_during_swaps_of_same_shape_indexes_see_one_whole(tmp_path, small_data):
    docs, queries = small_data
    refs = _refs(tmp_path, docs, queries)
    np.save(tmp_path / "v.npy", docs)
    target = tmp_path / "live" / "idx"
    v = variant(docs, "a")
    indexing.build(target, v["docs"], ids=v["ids"], texts=v["texts"], **BUILD)
    seen = {"a": 0, "b": 0}

    def check(index):
        got = _answer(index, queries)
        assert got in (refs["a"], refs["b"]), "a handle mixed two indexes"
        seen["a" if got == refs["a"] else "b"] += 1
    _open_while_replaced(SWAPPER, target, tmp_path / "v.npy", 6, check, ("open it again", "no index at"))
    assert seen["a"] and seen["b"], seen


def test_searches_during_reloads_each_see_one_generation_whole(tmp_path, small_data):
    """Threads search one handle while the index at its path is swapped for another and the handle reloads: a
    search that began on one index and went on to the next (first pass on one, re-scoring and ids on the other)
    would match neither index's own answer."""
    x, queries = small_data
    live, spare = two_indexes_one_path(tmp_path, x, index_dim=32, pq_bytes=8, fast_scan=True, shard_size=1000)
    setting = dict(k=10, nprobe=8, k1=200, k2=50)
    expected = [retrieval.open_index(d).search_batch(queries, **setting) for d in (live, spare)]
    assert expected[0].ids != expected[1].ids
    results = search_while_swapping(retrieval.open_index(live), live, spare, queries, setting, swaps=60, threads=3)
    assert len(results) > 20
    assert_each_is_one_of(results, expected)
