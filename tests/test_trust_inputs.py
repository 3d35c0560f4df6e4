"""Trust, round 4: inputs that used to escape as another exception (or as a leak) are refused by name.

Filters that are not UTF-8 or that would grow values out of memory, memory budgets that are no size, search
weights that are not finite, --queries files that are not UTF-8, /health without the token, and a build that
stopped on a bad input file restarting once the file is repaired.
"""
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matryoshka import indexing, retrieval
from matryoshka.core import layout
from matryoshka.core.errors import BuildRefused, InputError
from matryoshka.retrieval.cli import main
from matryoshka.retrieval.filters import row_mask
from matryoshka.storage.tiers import MAX_BUDGET, parse_bytes

N, D = 400, 16
FAST = dict(index_dim=8, pq_bytes=4, quiet=True, tune=False, select=False)


def vectors(n=N, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def embeddings(x):
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """An index with string, text-like and list attributes, and a --queries file for it."""
    out = tmp_path_factory.mktemp("trust4") / "idx"
    attrs = {"lang": np.where(np.arange(N) % 2 == 0, "en", "de"), "title": [f"title {i}" for i in range(N)],
             "tags": [["a", "b"] if i % 3 else ["c"] for i in range(N)]}
    indexing.build(out, vectors(), ids=[f"d{i}" for i in range(N)], attributes=attrs, **FAST)
    pq.write_table(pa.table({"qid": ["a", "b"], "embedding": embeddings(vectors(2, 1))}), out.parent / "q.parquet")
    return out


def cli(capsys, *args) -> tuple[int, str]:
    """(exit code, stderr) of the `matryoshka` command run in this process; argparse's refusals included."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


# -- 3. a where that is not UTF-8 -------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["lang = '\ud800'", ["lang = 'en'", "lang = '\udcff'"]])
def test_a_where_that_utf8_cannot_encode_is_refused_by_name(index, where):
    with retrieval.open_index(index) as ix:
        with pytest.raises(InputError, match="where=.*not text that UTF-8 can encode"):
            ix.search_batch(vectors(2, 1), where=where)
    with pytest.raises(InputError, match="UTF-8"):
        row_mask(pa.table({"lang": ["en"]}), "lang = '\ud800'")


def test_cli_refuses_a_where_that_is_not_utf8_with_exit_2(index, capsys):
    # bytes that are not UTF-8 on a command line reach Python as lone surrogates
    code, err = cli(capsys, "search", index, "--queries", index.parent / "q.parquet", "--where", "lang = '\udcff'")
    assert code == 2 and "UTF-8" in err and "Traceback" not in err, err


@pytest.mark.parametrize("column", ["where", "qid", "text"])
def test_cli_refuses_a_queries_file_whose_text_is_not_utf8(index, tmp_path, capsys, column):
    bad = pa.array([b"lang = 'en'", b"caf\xff\xfe"], pa.binary()).view(pa.string())
    good = {"qid": pa.array(["a", "b"]), "where": pa.array(["lang = 'en'", None]), "text": pa.array(["x", "y"])}
    table = pa.table({**good, column: bad, "embedding": embeddings(vectors(2, 1))})
    pq.write_table(table, tmp_path / "bad.parquet")
    code, err = cli(capsys, "search", index, "--queries", tmp_path / "bad.parquet", "--no-rerank")
    assert code == 2 and "Traceback" not in err, err
    assert "bad.parquet, row 1" in err and repr(column) in err and "UTF-8" in err


# -- filters that grow values until memory runs out ---------------------------------------------------------------
TITLES = pa.table({"lang": ["en", "de", "en", "de"], "title": ["x" * 100] * 4, "tags": [["a", "b"]] * 4})


@pytest.mark.parametrize("where, named", [
    ("length(replace(replace(title, 'x', title), 'x', title)) > 0", "replace"),  # 100**3 bytes a row
    ("length(repeat(repeat(lang, 1000), 1000)) > 0", "repeat"),  # each length allowed, their product not
    ("length(" + "regexp_replace(" * 3 + "title" + ", '(.)', '\\1\\1\\1\\1\\1\\1\\1\\1', 'g')" * 3 + ") > 0",
     "regexp_replace"),
    ("len(list_transform(string_split(title, ''), lambda c: repeat(title, 100))) > 0", "list_transform"),
    ("length(" + "url_encode(" * 12 + "lang" + ")" * 12 + ") > 0", "url_encode"),
    ("list_reduce(tags, lambda a, b: a || a) = 'x'", "list_reduce"),  # doubles at every element
])
def test_filters_that_would_grow_values_out_of_memory_are_refused_by_name(where, named):
    with pytest.raises(InputError, match=rf"{named}\(\)"):
        row_mask(TITLES, where)


@pytest.mark.parametrize("where", [
    "lower(title) LIKE '%x%'", "repeat(lang, 3) = 'enenen'", "length(replace(title, 'x', 'yy')) = 200",
    "list_transform(tags, lambda t: upper(t))[1] = 'A'", "lang IN (" + ", ".join(f"'l{i}'" for i in range(5000)) + ")",
    "len(list_transform(string_split(lang, ''), lambda c: lang)) = 2",  # quadratic, but of 2 bytes
])
def test_filters_that_build_values_within_bounds_still_run(where):
    assert len(row_mask(TITLES, where)) == 4


def test_a_filter_nested_too_deeply_to_check_is_refused_by_name():
    with pytest.raises(InputError, match="nested too deeply"):  # was Python's RecursionError
        row_mask(TITLES, "lower(" * 400 + "lang" + ")" * 400 + " = 'en'")


def test_a_search_with_a_growing_filter_is_refused_before_it_runs(index):
    with retrieval.open_index(index) as ix, pytest.raises(InputError, match="repeat"):
        ix.search_batch(vectors(1, 1), where="length(repeat(repeat(repeat(title, 100), 100), 100)) > 0")


# -- 4. memory budgets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [float("inf"), float("-inf"), float("nan"), "9" * 400, 10**400, -1, 0, "-1G",
                                    "2X", "", True, [1], "1e9", 1e30, "0.1"])
def test_a_memory_budget_that_is_no_size_is_refused_by_name_everywhere(index, budget):
    with pytest.raises(InputError, match="memory_budget.*'2G'"):
        parse_bytes(budget)
    with pytest.raises(InputError, match="memory_budget"):
        retrieval.open_index(index, memory_budget=budget)
    with pytest.raises(InputError, match="memory_budget"):
        indexing.BuildOptions(memory_budget=budget).check()


@pytest.mark.parametrize("command", ["info", "tune", "search", "plan-size", "build"])
@pytest.mark.parametrize("budget", ["9" * 400, "inf", "nan", "-2G"])
def test_cli_refuses_a_memory_budget_that_is_no_size_with_exit_2(index, tmp_path, capsys, command, budget):
    args = {"info": ["info", index], "tune": ["tune", index], "search": ["search", index, "query"],
            "plan-size": ["plan-size", "--n", 1000, "--full-dim", D],
            "build": ["build", index.parent / "missing.npy", "--out", tmp_path / "new"]}[command]
    code, err = cli(capsys, *args, f"--memory-budget={budget}")
    assert code == 2 and "--memory-budget" in err and "'2G'" in err and "Traceback" not in err, err
    assert "9" * 100 not in err  # a 400-digit budget is not echoed whole


BUDGETS = st.one_of(
    st.integers(), st.integers(min_value=10**17, max_value=10**500), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=12),
    st.builds(lambda n, unit, junk: f"{n}{unit}{junk}", st.one_of(st.integers(-10, 10**30), st.floats()),
              st.sampled_from(["", "k", "M", "G", "T", "P", "GiB", "gb", " b", "x"]),
              st.sampled_from(["", " ", "!", "\ud800", "G", ".5"])))


@settings(max_examples=60)
@given(BUDGETS)
def test_a_memory_budget_is_a_size_or_an_input_error_never_another_exception(value):
    import argparse

    from matryoshka.retrieval.cli import memory_budget
    try:
        n = parse_bytes(value)
    except InputError as e:
        assert "memory_budget" in str(e)
        if value is not None:  # None: no budget
            with pytest.raises(InputError, match="memory_budget"):
                indexing.BuildOptions(memory_budget=value).check()
        if isinstance(value, str):
            with pytest.raises(argparse.ArgumentTypeError, match="'2G'"):
                memory_budget(value)
        return
    assert type(n) is int and 1 <= n <= MAX_BUDGET
    indexing.BuildOptions(memory_budget=value).check()


def test_memory_budgets_in_the_accepted_forms_are_read(index):
    assert parse_bytes("2G") == parse_bytes("2 GiB") == 2 << 30 and parse_bytes(2_000_000_000) == 2_000_000_000
    assert parse_bytes("1.5t") == 3 << 39 and parse_bytes("2_000_000_000") == 2_000_000_000
    with retrieval.open_index(index, memory_budget="1G") as ix:
        assert ix.memory_budget == 1 << 30


# -- 9. search weights that are not finite ----------------------------------------------------------------------
@pytest.mark.parametrize("options, named", [
    (dict(lexical_weight=float("inf")), "lexical_weight"), (dict(lexical_weight=float("nan")), "lexical_weight"),
    (dict(lexical_weight=10**400), "lexical_weight"), (dict(probe_margin=float("inf")), "probe_margin"),
])
def test_search_weights_that_are_not_finite_are_refused_by_name(index, options, named):
    with retrieval.open_index(index) as ix, pytest.raises(InputError, match=named):
        ix.search_batch(vectors(2, 1), **options)


def test_rules_that_are_not_finite_are_refused_by_name(index):
    with retrieval.open_index(index) as ix, pytest.raises(InputError, match="exact_filter_scan_ratio.*finite"):
        ix.search_batch(vectors(2, 1), rules={"exact_filter_scan_ratio": float("inf")}, where="lang = 'en'")


def test_cli_refuses_an_infinite_lexical_weight_with_exit_2(index, capsys):
    code, err = cli(capsys, "search", index, "--queries", index.parent / "q.parquet", "--lexical-weight", "inf")
    assert code == 2 and "lexical_weight" in err, err


# -- 11. /health without the token ------------------------------------------------------------------------------
def test_health_without_the_token_says_only_up_and_never_the_index_path(index, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from matryoshka.integrations.server.app import create_app
    copy = tmp_path / "private-folder-name" / "idx"
    shutil.copytree(index, copy)
    app = create_app(copy, token="t0ken", reload_interval=0.0, preload_model=False)
    with TestClient(app) as client:
        (copy / layout.MANIFEST).write_text("{ not json")  # a generation that cannot be opened: reload_error
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = client.get("/health", headers=headers)
            assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
            assert "private-folder-name" not in r.text
        body = client.get("/health", headers={"Authorization": "Bearer t0ken"}).json()
        assert body["count"] == N and "private-folder-name" in body["reload_error"]


def test_health_on_a_server_without_a_token_gives_the_detail(index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from matryoshka.integrations.server.app import create_app
    with TestClient(create_app(index, preload_model=False)) as client:
        body = client.get("/health").json()
    assert body == {"status": "ok", "generation": 1, "count": N, "reload_error": None}


# -- a build that stopped on a bad input file ---------------------------------------------------------------------
def _stopped_on_a_bad_row(tmp_path):
    """A build of v.npy into idx that stopped on a NaN in row 150, before any shard; the vectors."""
    x = vectors(300)
    x[150, 3] = np.nan
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(InputError, match="row 150"):
        indexing.build(tmp_path / "idx", tmp_path / "v.npy", **FAST)
    return x


def test_a_build_that_stopped_on_a_bad_file_before_any_shard_restarts_once_it_is_repaired(tmp_path):
    x = _stopped_on_a_bad_row(tmp_path)
    assert (tmp_path / "idx" / layout.BUILD_DIR).exists() and not (tmp_path / "idx" / layout.SHARDS).exists()
    x[150, 3] = 0.0
    np.save(tmp_path / "v.npy", x)  # repaired: other input
    out = indexing.build(tmp_path / "idx", tmp_path / "v.npy", **FAST)
    assert retrieval.open_index(out).count == 300


def test_a_build_that_wrote_shards_of_other_input_is_still_refused(tmp_path):
    x = vectors(3000)
    x[2500, 3] = np.nan  # in the last shard, after two were written; outside the training sample
    np.save(tmp_path / "v.npy", x)
    opts = dict(FAST, shard_size=1000, train_size=300)
    with pytest.raises(InputError, match="row 2500"):
        indexing.build(tmp_path / "idx", tmp_path / "v.npy", **opts)
    assert (tmp_path / "idx" / layout.SHARDS / "00000" / layout.SHARD_META).exists()
    x[2500, 3] = 0.0
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(BuildRefused, match="other settings or input.*--overwrite"):
        indexing.build(tmp_path / "idx", tmp_path / "v.npy", **opts)
    assert (tmp_path / "idx" / layout.SHARDS / "00000" / layout.SHARD_META).exists()  # nothing was cleared


def test_an_unfinished_build_with_other_settings_is_still_refused(tmp_path):
    _stopped_on_a_bad_row(tmp_path)
    with pytest.raises(BuildRefused, match="unfinished build"):  # the same input, another index_dim
        indexing.build(tmp_path / "idx", tmp_path / "v.npy", **dict(FAST, index_dim=4))


# -- the Ray build runs the local readers' checks before any work on the cluster ------------------------------------
@pytest.fixture()
def no_cluster(monkeypatch):
    """Fails the test if the build reaches for a Ray cluster."""
    from matryoshka.indexing import distributed_build

    def connect(address):
        raise AssertionError("the build connected to Ray before its input was checked")
    monkeypatch.setattr(distributed_build, "connect", connect)
    return distributed_build.build_distributed


def test_a_ray_text_build_refuses_text_that_is_not_utf8_before_any_work(tmp_path, no_cluster):
    (tmp_path / "texts").mkdir()
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(50)]}), tmp_path / "texts" / "a.parquet")
    raw = [f"doc {i}".encode() for i in range(50)]
    raw[7] = b"caf\xff"
    pq.write_table(pa.table({"text": pa.array(raw, pa.binary()).view(pa.string())}), tmp_path / "texts" / "b.parquet")
    with pytest.raises(InputError, match="b.parquet, row 7 .*'text'.*UTF-8"):
        no_cluster(tmp_path / "idx", tmp_path / "texts", model="any-model", address="auto")
    assert not (tmp_path / "idx").exists() and not (tmp_path / ".idx.encoded").exists()


def test_a_folder_whose_files_hold_embeddings_of_other_lengths_is_refused_before_any_work(tmp_path, no_cluster):
    (tmp_path / "pq").mkdir()
    for name, dim in (("a", D), ("b", 2 * D)):
        x = np.random.default_rng(dim).standard_normal((100, dim)).astype(np.float32)
        pq.write_table(pa.table({"id": np.arange(100) + (0 if name == "a" else 100), "embedding": embeddings(x)}),
                       tmp_path / "pq" / f"{name}.parquet")
    with pytest.raises(InputError, match="b.parquet: column 'embedding' holds 32 values a row but 16"):
        no_cluster(tmp_path / "ray-idx", tmp_path / "pq", address="auto", options=indexing.BuildOptions(**FAST))
    with pytest.raises(InputError, match="b.parquet: column 'embedding' holds 32 values a row but 16"):
        indexing.build(tmp_path / "idx", tmp_path / "pq", **FAST)
    assert not (tmp_path / "idx").exists() and not (tmp_path / "ray-idx").exists()  # nothing was written
