"""Every bad parameter or file refused by name: booleans are not numbers, strings are not flags, broken ids
files are errors that name the file (exit 2 in the CLI, no traceback), and nothing already written changes."""
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import InputError

ODD = st.one_of(st.booleans(), st.text(max_size=3), st.floats(allow_nan=True), st.integers(-3, 3),
                st.integers(10**12, 10**13), st.none(), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
SEARCH_OPTIONS = ("k", "nprobe", "k1", "k2", "k3", "int8", "full", "rerank", "full_dims", "probe_margin")


@pytest.mark.parametrize("options, named", [
    (dict(full_dims=True), "full_dims"), (dict(full_dims=1.5), "full_dims"), (dict(int8="no"), "int8"),
    (dict(full="yes"), "full"), (dict(rerank="no"), "rerank"), (dict(k=True), "k"), (dict(nprobe=2.0), "nprobe"),
    (dict(probe_margin=float("nan")), "probe_margin"), (dict(params=[1]), "params="),
])
def test_search_options_of_the_wrong_type_are_refused_by_name(small_index, small_data, options, named):
    with pytest.raises(InputError, match=named):
        retrieval.open_index(small_index).search_batch(small_data[1][:2], **options)


def test_params_may_be_a_dict_of_search_options(small_index, small_data):
    index = retrieval.open_index(small_index)
    q = small_data[1][:3]
    assert np.array_equal(index.search_batch(q, params={"nprobe": 8, "k1": 100}).rows,
                          index.search_batch(q, params=retrieval.SearchParams(nprobe=8, k1=100)).rows)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(SEARCH_OPTIONS), ODD, max_size=3))
def test_search_batch_succeeds_or_refuses_by_name_whatever_the_option_types(small_index, small_data, options):
    index = retrieval.open_index(small_index)
    try:
        r = index.search_batch(small_data[1][:2], rerank=False, **options) if "rerank" not in options else \
            index.search_batch(small_data[1][:2], **options)
    except InputError:
        return
    assert r.rows.shape[0] == 2


@pytest.mark.parametrize("args, kwargs, named", [
    (("0.9",), {}, "target_recall"), ((True,), {}, "target_recall"), ((0.9,), dict(n_queries=-1), "n_queries"),
    ((0.9,), dict(n_queries=2.5), "n_queries"), ((0.9,), dict(save="no"), "save"),
    ((0.9,), dict(max_latency_ms="1"), "max_latency_ms"), ((0.9,), dict(max_latency_ms=0), "max_latency_ms"),
])
def test_tune_arguments_of_the_wrong_type_are_refused_before_any_work(small_index, args, kwargs, named):
    with pytest.raises(InputError, match=named):
        retrieval.open_index(small_index).tune(*args, **kwargs)


@settings(max_examples=12)
@given(st.sampled_from(("index_dim", "pq_bytes", "nlist", "shard_size", "batch_rows", "train_size", "threads",
                        "target_recall", "fast_scan", "tune", "select", "quiet", "overwrite", "transform",
                        "metric", "device", "rotation")), ODD)
def test_build_options_succeed_or_are_refused_before_anything_is_written(tmp_path_factory, name, value):
    out = tmp_path_factory.mktemp("opt") / "idx"
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    try:
        indexing.build(out, x, **{"tune": False, "select": False, "quiet": True, name: value})
    except InputError:
        assert not (out / layout.MANIFEST).exists() and not (out / layout.SHARDS).exists()
        return
    assert retrieval.open_index(out).count == 300


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(("upsert", "quiet", "threads")), ODD)
def test_add_options_succeed_or_are_refused_before_anything_is_written(small_index, small_data, name, value):
    before = (small_index / layout.MANIFEST).read_bytes()
    try:
        indexing.add(small_index, small_data[0][:5], ids=["x"] * 5, **{"quiet": True, name: value})
    except InputError:
        assert (small_index / layout.MANIFEST).read_bytes() == before  # refused, or a duplicate id: unchanged
        return
    raise AssertionError("five rows with one id were added")


def test_an_empty_matrix_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="0 dims"):
        indexing.build(tmp_path / "e", np.zeros((10, 0), np.float32), quiet=True)


def test_automatic_ids_that_would_pass_2_63_are_refused_and_nothing_is_written(tmp_path, small_data):
    x = small_data[0][:300]
    indexing.build(tmp_path / "ov", x, ids=np.arange(300, dtype=np.int64) + (2**63 - 305), index_dim=32,
                   pq_bytes=8, quiet=True, tune=False, select=False)
    before = (tmp_path / "ov" / layout.MANIFEST).read_bytes()
    with pytest.raises(InputError, match="2\\^63-1.*give ids explicitly"):
        indexing.add(tmp_path / "ov", x[:10], quiet=True)
    assert (tmp_path / "ov" / layout.MANIFEST).read_bytes() == before
    assert indexing.add(tmp_path / "ov", x[:4], quiet=True)["added"] == 4  # the last four ids still fit


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    np.save(d / "v.npy", np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32))
    np.save(d / "pickled.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    pq.write_table(pa.table({"x": list(range(300))}), d / "noid.parquet")
    (d / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    return d


@pytest.mark.parametrize("name, says", [("missing.npy", "does not exist"), ("pickled.npy", "pickled"),
                                        ("noid.parquet", "no `id` column"), ("corrupt.parquet", "cannot read")])
@pytest.mark.slow
@pytest.mark.parametrize("command", ["build", "add", "delete"])
def test_cli_refuses_a_bad_ids_file_by_name_in_every_command(small_index, bad_files, tmp_path, name, says, command):
    index = tmp_path / "idx"
    shutil.copytree(small_index, index)
    before = (index / layout.MANIFEST).read_bytes()
    ids = str(bad_files / name)
    args = {"build": ["build", str(bad_files / "v.npy"), "--out", str(tmp_path / "new"), "--ids", ids],
            "add": ["add", str(index), str(bad_files / "v.npy"), "--ids", ids],
            "delete": ["delete", str(index), "--ids", ids]}[command]
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", *args, "--quiet"], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert name in p.stderr and says in p.stderr
    assert (index / layout.MANIFEST).read_bytes() == before


@pytest.mark.parametrize("value", ["-2", "0"])
def test_cli_refuses_a_thread_count_below_one(small_index, value):
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "search", str(small_index), "query",
                        "--threads", value], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--threads" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def bad_parquet(tmp_path_factory):
    d = tmp_path_factory.mktemp("badpq")
    rng = np.random.default_rng(0)

    def emb(n):
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.standard_normal(n * 16).astype(np.float32)), 16)
    texts = pa.array([b"fine", b"\xff\xfe not utf-8"] * 100, pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": list(range(200)), "embedding": emb(200), "text": texts}), d / "utf8.parquet")
    for name, ids in (("mixed", [list(range(200)), [f"s{i}" for i in range(200)]]),
                      ("damaged", [list(range(i * 200, i * 200 + 200)) for i in range(3)])):
        (d / name).mkdir()
        for i, part in enumerate(ids):
            pq.write_table(pa.table({"id": part, "embedding": emb(200)}), d / name / f"p{i}.parquet")
    middle = d / "damaged" / "p1.parquet"
    data = bytearray(middle.read_bytes())
    data[100:2000] = bytes(b ^ 0x5A for b in data[100:2000])  # its data pages, not its footer
    middle.write_bytes(bytes(data))
    return d


@pytest.mark.parametrize("name, says", [("utf8.parquet", "not valid UTF-8"),
                                        ("mixed", "p1.parquet: column 'id' is string"), ("damaged", "cannot read")])
@pytest.mark.slow
def test_cli_refuses_an_unreadable_parquet_input_by_name(bad_parquet, tmp_path, name, says):
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "build", str(bad_parquet / name), "--out",
                        str(tmp_path / "idx"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert name in p.stderr and says in p.stderr
    assert not (tmp_path / "idx" / layout.MANIFEST).exists()
