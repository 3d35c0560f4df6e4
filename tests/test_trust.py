"""Trust: a rebuild never serves stale data, resumes are byte-identical, k has no limit but the corpus, numbers
outside float16 are refused or stored safely, and bad ids, files and options get the engine's own errors."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import BuildRefused, IndexFormatError, InputError

OPTS = dict(index_dim=32, pq_bytes=8, fast_scan=True, shard_size=1000, quiet=True, tune=False)  # no stored point read here


def top1(out, queries):
    return retrieval.open_index(out).search_batch(queries, k=1).rows[:, 0]


def test_a_rebuild_from_other_vectors_ids_or_texts_of_the_same_shape_is_never_stale(tmp_path, small_data):
    docs, _ = small_data
    other = np.ascontiguousarray(docs[::-1])
    out = tmp_path / "idx"
    indexing.build(out, docs, **OPTS)
    probe = other[:5]
    for changed in (dict(data=other), dict(data=docs, ids=[f"d{i}" for i in range(len(docs))]),
                    dict(data=docs, texts=["x"] * len(docs))):
        data = changed.pop("data")
        with pytest.raises(BuildRefused, match="other settings or input.*--overwrite"):
            indexing.build(out, data, **changed, **OPTS)
    indexing.build(out, other, overwrite=True, **OPTS)
    np.testing.assert_array_equal(top1(out, probe), np.arange(5))  # the new vectors, not the old ones
    one_changed = other.copy()
    one_changed[1234] = docs[0]  # one row only, away from any sample: an in-memory array is hashed whole
    with pytest.raises(BuildRefused, match="--overwrite"):
        indexing.build(out, one_changed, **OPTS)


def test_an_iterator_never_counts_as_the_index_already_there(tmp_path, small_data):
    docs, _ = small_data
    out = tmp_path / "it"
    indexing.build(out, iter([(np.arange(3000), docs)]), **OPTS)
    with pytest.raises(BuildRefused, match="--overwrite"):
        indexing.build(out, iter([(np.arange(3000), docs[::-1].copy())]), **OPTS)
    indexing.build(out, iter([(np.arange(3000), docs[::-1].copy())]), overwrite=True, **OPTS)
    assert top1(out, docs[-1:])[0] == 0


def test_overwrite_rebuilds_even_an_identical_index(tmp_path, small_data):
    docs, _ = small_data
    out = tmp_path / "same"
    indexing.build(out, docs, **OPTS)
    before = json.loads((out / layout.BUILD_LOG).read_text())["seconds"]
    indexing.build(out, docs, overwrite=True, **OPTS)
    assert json.loads((out / layout.BUILD_LOG).read_text())["seconds"] != before


def test_a_failed_build_is_not_resumed_from_another_input(tmp_path, small_data):
    docs, _ = small_data
    ids = np.arange(len(docs))
    ids[2500] = 5  # fails in the third shard, after two are written
    out = tmp_path / "failed"
    with pytest.raises(InputError, match="duplicate id 5"):
        indexing.build(out, docs, ids=ids, **OPTS)
    assert len(list((out / layout.SHARDS).iterdir())) == 2
    with pytest.raises(BuildRefused, match="unfinished build made with other settings or input"):
        indexing.build(out, docs[::-1].copy(), **OPTS)
    indexing.build(out, docs[::-1].copy(), overwrite=True, **OPTS)
    assert top1(out, docs[-1:])[0] == 0


BUILD = """
import sys, numpy as np, indexing
indexing.build(sys.argv[2], sys.argv[1], index_dim=32, pq_bytes=8, shard_size=1000, batch_rows=384, quiet=True)
"""


@pytest.mark.slow
def test_a_resumed_build_is_byte_identical_when_shards_and_batches_do_not_align(tmp_path, small_data):
    """shard_size 1000 is not a multiple of batch_rows 384 (nor are the defaults 1,000,000 and 16,384)."""
    docs, _ = small_data
    np.save(tmp_path / "v.npy", docs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(out, crash=None):
        e = {**env, layout.CRASH_ENV: crash} if crash else env
        return subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / "v.npy"), str(out)], env=e,
                              capture_output=True, text=True, timeout=300).returncode
    assert run(tmp_path / "whole") == 0
    assert run(tmp_path / "resumed", "between_shards:0") == -signal.SIGKILL
    assert run(tmp_path / "resumed") == 0
    a, b = (json.loads((tmp_path / d / layout.MANIFEST).read_text())["shards"] for d in ("whole", "resumed"))
    assert [s["files"] for s in a] == [s["files"] for s in b]  # every file, by SHA-256


def test_k_beyond_the_corpus_returns_every_document_once_in_bounded_memory(small_index):
    index = retrieval.open_index(small_index)
    q = np.asarray(index.backend.shards[0].full[:3], np.float32)
    for k in (3000, 100_000, 10**9):
        r = index.search_batch(q, k=k, k1=10**12)
        assert r.rows.shape == (3, 3000)
        assert all(len(set(row)) == 3000 and row.min() >= 0 for row in r.rows)


def test_values_beyond_float16_are_refused_under_ip_and_l2_and_stored_safely_under_cosine(tmp_path, small_data):
    docs, queries = small_data
    for metric in ("ip", "l2"):
        big = docs.copy()
        big[7] *= 1e6
        with pytest.raises(InputError, match=r"row 7 has values beyond \+-65504"):
            indexing.build(tmp_path / metric, big, metric=metric, **OPTS)
    indexing.build(tmp_path / "l2ok", docs, metric="l2", **OPTS)
    with pytest.raises(InputError, match="beyond"):
        retrieval.open_index(tmp_path / "l2ok").search_batch(queries[:1] * 1e19)  # faiss would abort here
    huge = docs.copy()
    huge[7] *= 1e20  # finite, but its float32 norm overflows
    indexing.build(tmp_path / "cos", huge, **OPTS)
    index = retrieval.open_index(tmp_path / "cos")
    np.testing.assert_allclose(np.asarray(index.backend.shards[0].full[7], np.float32),
                               docs[7] / np.linalg.norm(docs[7]), atol=1e-3)
    assert index.search_batch(huge[7:8], k=1).rows[0, 0] == 7


@pytest.mark.parametrize("ids, message", [
    (np.array([1, 2**63], dtype=np.uint64), "row 1 has the id 9223372036854775808"),
    ([1, 2**63], "ids must be all integers or all strings"),
    (pa.array([1, 2**64 - 1], pa.uint64()), "beyond the largest signed 64-bit integer"),
    (["a", "b\ud800"], "row 1 has an id that is not valid Unicode"),
])
def test_ids_that_cannot_be_stored_are_refused_with_the_row(tmp_path, ids, message):
    with pytest.raises(InputError, match=message):
        indexing.build(tmp_path / "i", np.random.default_rng(0).standard_normal((2, 8)), ids=ids, quiet=True)


def test_parquet_uint64_ids_and_a_misnamed_id_column_are_refused(tmp_path):
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(16, np.float32)), 8)
    pq.write_table(pa.table({"id": pa.array([1, 2**63 + 1], pa.uint64()), "embedding": emb}), tmp_path / "u.parquet")
    with pytest.raises(InputError, match="row 1 has the id 9223372036854775809"):
        indexing.build(tmp_path / "u", tmp_path / "u.parquet", quiet=True)
    pq.write_table(pa.table({"doc_id": ["a", "b"], "text": ["x", "y"]}), tmp_path / "t.parquet")
    with pytest.raises(InputError, match=r"columns \['doc_id'\] besides `text` and no `id`"):
        indexing.build(tmp_path / "t", tmp_path / "t.parquet", model="all-MiniLM-L6-v2", quiet=True)


def test_bad_files_and_options_get_the_engines_errors(tmp_path, small_data):
    docs, _ = small_data
    folder = tmp_path / "pq"
    folder.mkdir()
    emb = pa.FixedSizeListArray.from_arrays(pa.array(docs[:100].ravel()), docs.shape[1])
    pq.write_table(pa.table({"id": np.arange(100), "embedding": emb}), folder / "a.parquet")
    (folder / "notes.txt").write_text("not parquet")
    with pytest.raises(InputError, match="notes.txt"):
        indexing.build(tmp_path / "o1", folder, quiet=True)
    (folder / "notes.txt").unlink()
    (folder / "b.parquet").write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(InputError, match="b.parquet"):
        indexing.build(tmp_path / "o2", folder, quiet=True)
    (tmp_path / "zero.npy").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read .*zero.npy"):
        indexing.build(tmp_path / "o3", tmp_path / "zero.npy", quiet=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BuildRefused, match="is a file, not a folder"):
        indexing.build(tmp_path / "afile", docs, quiet=True)
    for bad in (dict(nlist=0), dict(nlist=-4), dict(train_size=-1), dict(threads=-1), dict(shard_size=0),
                dict(index_dim=0), dict(seed=-1), dict(fast_scan="yes")):
        with pytest.raises(InputError, match=list(bad)[0]):
            indexing.build(tmp_path / "o4", docs, quiet=True, **bad)
    assert not (tmp_path / "o4").exists() or not any((tmp_path / "o4").iterdir())


@pytest.mark.parametrize("name", [layout.DOC_OFFSETS, layout.SHORT_FILE])
def test_a_damaged_npy_header_in_an_index_is_refused(tmp_path, small_data, name):
    docs, _ = small_data
    out = tmp_path / "h"
    indexing.build(out, docs[:1000], texts=["t"] * 1000, **OPTS)
    path = out / layout.SHARDS / "00000" / name
    data = bytearray(path.read_bytes())
    data[20:30] = b"\x00garbage\x00"[:10]  # inside the header dict; size unchanged
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=name):
        retrieval.open_index(out)


def test_building_into_a_read_only_index_is_refused(tmp_path, small_data):
    docs, _ = small_data
    src, ro = tmp_path / "src", tmp_path / "ro"
    indexing.build(src, docs[:500], **OPTS)
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        with pytest.raises(BuildRefused, match="read-only"):
            indexing.build(ro, docs[:500], **OPTS)
        assert retrieval.open_index(ro).count == 500  # still opens and answers
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
