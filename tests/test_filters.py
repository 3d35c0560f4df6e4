"""Filtered search: attributes stored beside the ids, predicates honoured by every stage."""
import datetime as dt
import json
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import exact_topk

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.retrieval.plan import Rules, exhaustive_cheaper
from matryoshka.benchmarks.synthetic import Synthetic
from matryoshka.core.errors import InputError
from matryoshka.retrieval.cli import main

N = 20000
# (predicate, rows passing): about 50%, 5%, 0.5% and one row
SELECTIVE = [("bucket < 500", lambda a: a["bucket"] < 500), ("bucket < 50 AND lang = 'en'",
                                                             lambda a: (a["bucket"] < 50) & (a["lang"] == "en")),
             ("list_contains(tags, 'rare')", lambda a: a["rare"]), ("serial = 777", lambda a: a["serial"] == 777)]


def attributes(n: int, start: int = 0) -> dict:
    i = np.arange(start, start + n)
    rng = np.random.default_rng(start)
    rare = rng.random(n) < 0.005
    return {"bucket": (i * 7919) % 1000, "lang": np.where(i % 2 == 0, "en", "de"), "serial": i,
            "tags": [["rare", "x"] if r else ["x"] for r in rare], "score": rng.random(n),
            "archived": i % 3 == 0,
            "published": pa.array([dt.datetime(2020, 1, 1) + dt.timedelta(days=int(d)) for d in i % 1000],
                                  pa.timestamp("us")), "rare": rare}


@pytest.fixture(scope="module")
def filtered(tmp_path_factory):
    s = Synthetic(dim=96, clusters=64, seed=4)
    docs, queries = s.documents(N), s.queries(40)
    attrs = attributes(N)
    table = pa.table({k: v for k, v in attrs.items() if k != "rare"})
    out = tmp_path_factory.mktemp("filtered") / "idx"
    indexing.build(out, docs, attributes=table, index_dim=32, pq_bytes=8, shard_size=7000, quiet=True, select=False)
    return out, docs, queries, {k: np.asarray(v) for k, v in attrs.items() if k != "tags"}


def check(result, mask, docs, queries, k=10):
    """Every hit passes; recall@10 against exact search over the passing rows (of the stored float16 vectors)."""
    passing = np.flatnonzero(mask)
    docs = (docs / np.linalg.norm(docs, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    found = 0
    for row, q in zip(result.ids, queries):
        hits = [i for i in row if i is not None]
        assert all(mask[i] for i in hits), "a hit fails the predicate"
        want = min(k, len(passing))
        assert len(hits) == want  # k hits whenever k rows pass
        truth = passing[exact_topk(docs[passing], q[None, :], want, metric="ip")[0]]
        found += len(set(hits) & set(truth.tolist()))
    return found / (len(queries) * min(k, len(passing)))


@pytest.mark.slow
@pytest.mark.parametrize("exact_work", [0, None])  # 0: the first pass with the selector wherever rows > k1
def test_every_hit_passes_and_recall_holds_at_every_selectivity(filtered, exact_work):
    out, docs, queries, attrs = filtered
    rules = None if exact_work is None else Rules(exact_filter_work=exact_work, exact_filter_scan_ratio=exact_work)
    index = retrieval.open_index(out, rules=rules)
    for where, rows in SELECTIVE:
        mask = rows(attrs)
        result = index.search_batch(queries, k=10, where=where)
        recall = check(result, mask, docs, queries)
        assert ("first_pass" in result.stage_scores) == (exact_work == 0 and mask.sum() > index.params.k1)
        assert recall >= 0.95 if mask.sum() > index.params.k1 else recall == 1.0, (where, mask.mean(), recall)


def test_pyarrow_expressions_and_every_attribute_type(filtered):
    out, docs, queries, attrs = filtered
    index = retrieval.open_index(out)
    expr = (pc.field("score") < 0.5) & ~pc.field("archived")
    mask = (attrs["score"] < 0.5) & ~attrs["archived"]
    assert check(index.search_batch(queries, k=10, where=expr), mask, docs, queries) >= 0.95
    days = np.arange(N) % 1000
    sql = "published >= TIMESTAMP '2021-06-01' AND NOT archived AND lang IN ('de')"
    mask = (days >= (dt.date(2021, 6, 1) - dt.date(2020, 1, 1)).days) & ~attrs["archived"] & (attrs["lang"] == "de")
    assert check(index.search_batch(queries, k=10, where=sql), mask, docs, queries) >= 0.95
    assert index.manifest.attributes["published"] == "timestamp[us]"
    assert index.manifest.attributes["tags"].startswith("list<")
    assert index.info()["attributes"]["bucket"] == "int64"


def test_per_query_predicates_and_the_cli(filtered, tmp_path):
    out, docs, queries, attrs = filtered
    index = retrieval.open_index(out)
    wheres = ["bucket < 50", None, "serial = 3", "lang = 'de'"] * 10
    mixed = index.search_batch(queries, k=10, where=wheres)
    for i, w in enumerate(wheres):
        alone = index.search_batch(queries[i:i + 1], k=10, where=w)
        assert mixed.ids[i] == alone.ids[0]
        np.testing.assert_allclose(mixed.scores[i], alone.scores[0], rtol=1e-5)  # BLAS sums by batch shape
    assert mixed.ids[2][0] == 3 and mixed.ids[2][1] is None
    emb = pa.FixedSizeListArray.from_arrays(pa.array(queries.ravel()), queries.shape[1])
    pq.write_table(pa.table({"qid": list(range(40)), "embedding": emb, "where": wheres}), tmp_path / "q.parquet")
    assert main(["search", str(out), "--queries", str(tmp_path / "q.parquet"), "--output", str(tmp_path / "r.parquet"),
                 "--no-rerank"]) == 0
    r = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert [h["id"] for h in r if h["qid"] == 2] == [3]
    assert all(attrs["bucket"][h["id"]] < 50 for h in r if h["qid"] == 0)
    pq.write_table(pa.table({"qid": [0], "embedding": emb.slice(0, 1)}), tmp_path / "one.parquet")
    assert main(["search", str(out), "--queries", str(tmp_path / "one.parquet"), "--where", "serial = 5",
                 "--output", str(tmp_path / "r1.parquet"), "--no-rerank"]) == 0
    assert pq.read_table(tmp_path / "r1.parquet").column("id").to_pylist() == [5]


def test_bad_predicates_name_the_problem_and_no_match_is_empty(filtered):
    out, docs, queries, _ = filtered
    index = retrieval.open_index(out)
    for where, msg in [("nope = 1", r'column "nope" not found'), ("bucket = ", "syntax error"),
                       ("bucket", "not true or false"), ("lang = 5 AND bucket = 'x'", "Conversion Error|Could not"),
                       (pc.field("nope") == 1, "No match for FieldRef"), (42, "takes a SQL condition")]:
        with pytest.raises(InputError, match=msg):
            index.search_batch(queries[:2], where=where)
    with pytest.raises(InputError, match="no aggregates"):
        index.search_batch(queries[:2], where="max(bucket) > 5")
    only = index.search_batch(queries[:1], k=10, where="serial = 9 -- a comment")
    assert only.ids[0][0] == 9 and only.ids[0][1] is None
    # two long value sets that print alike (arrow shortens them) are two predicates, not one cached
    a, b = list(range(0, 40)) + [100], list(range(0, 40)) + [101]
    ra = index.search_batch(queries[:1], k=50, where=pc.field("serial").isin(a)).ids[0]
    rb = index.search_batch(queries[:1], k=50, where=pc.field("serial").isin(b)).ids[0]
    assert 100 in ra and 101 not in ra and 101 in rb and 100 not in rb
    r = index.search_batch(queries[:3], k=10, where="lang = 'zz'")
    assert (r.rows == -1).all() and r.hits(0) == []
    with pytest.raises(InputError, match="predicates for 3 queries"):
        index.search_batch(queries[:3], where=["lang = 'en'"] * 2)


def test_filters_on_an_index_without_attributes_and_bad_attributes_are_refused(small_index, small_data, tmp_path):
    docs, queries = small_data
    with pytest.raises(InputError, match="stores no attributes"):
        retrieval.open_index(small_index).search_batch(queries[:1], where="x = 1")
    with pytest.raises(InputError, match="attribute 'blob' has type binary"):
        indexing.build(tmp_path / "a", docs, attributes={"blob": pa.array([b"x"] * len(docs))}, quiet=True)
    with pytest.raises(InputError, match="attributes have 2 rows for 3000 vectors"):
        indexing.build(tmp_path / "b", docs, attributes={"a": [1, 2]}, quiet=True)
    with pytest.raises(InputError, match="reserved"):
        indexing.build(tmp_path / "c", docs, attributes={"id": np.arange(len(docs))}, quiet=True)


def test_parquet_columns_are_attributes_and_changes_keep_them(tmp_path, filtered):
    _, docs, queries, _ = filtered
    n = 3000
    a = attributes(n)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(docs[:n].ravel()), docs.shape[1])
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(n)], "embedding": emb,
                             "lang": pa.array(a["lang"]).dictionary_encode(), "bucket": a["bucket"],
                             "__index_level_0__": np.arange(n), "blob": pa.array([b"x"] * n)}),
                   tmp_path / "in.parquet")  # pandas' index and a binary column are left out, not refused
    out = indexing.build(tmp_path / "idx", tmp_path / "in.parquet", index_dim=32, pq_bytes=8, quiet=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["attributes"] == {"lang": "string", "bucket": "int64"}
    x = docs[n:n + 10]
    # an add that gives no attributes (or {}) leaves every column null for its rows, as a column it leaves out
    indexing.add(out, x[:2], ids=["z0", "z1"], quiet=True)
    indexing.add(out, x[2:3], ids=["z2"], attributes={}, quiet=True)
    assert [r.attributes for r in retrieval.open_index(out).get(["z0", "z2"])] == [{}, {}]
    indexing.delete(out, ["z0", "z1", "z2"], quiet=True)
    with pytest.raises(InputError, match=r"attribute 'bucket' is double, the index stores int64"):
        indexing.add(out, x, ids=[f"n{i}" for i in range(10)], attributes={"bucket": [0.5] * 10}, quiet=True)
    indexing.add(out, x, ids=[f"n{i}" for i in range(10)], attributes={"lang": ["xx"] * 10, "bucket": [1] * 10},
                 quiet=True)
    # a subset of the columns (the others null for these rows) and a new column (null for every earlier row)
    indexing.add(out, docs[n + 10:n + 12], ids=["s0", "s1"], attributes={"lang": ["yy"] * 2, "tag": ["t", None]},
                 quiet=True)
    assert json.loads((out / "manifest.json").read_text())["attributes"] == {"lang": "string", "bucket": "int64",
                                                                           "tag": "string"}
    index = retrieval.open_index(out)
    assert index.search_batch(x[:3], k=10, where="lang = 'xx'").ids[0][0] == "n0"
    assert [h.id for h in index.search(docs[n + 10], k=5, where="tag = 't'")] == ["s0"]
    assert {h.id for h in index.search(docs[n + 10], k=5, where="bucket IS NULL")} == {"s0", "s1"}
    first = index.search_batch(queries[:5], k=10, where="bucket < 100")
    gone = [i for i in first.ids[0][:3]]
    indexing.delete(out, gone, quiet=True)
    indexing.compact(out, min_dead=0.0001, quiet=True)
    index = retrieval.open_index(out)
    after = index.search_batch(queries[:5], k=10, where="bucket < 100")
    assert not set(gone) & set(after.ids[0]) and len([i for i in after.ids[0] if i is not None]) == 10
    assert index.search_batch(x[:3], k=10, where="lang = 'xx'").ids[0][0] == "n0"  # attributes kept by compaction
    assert [h.id for h in index.search(docs[n + 10], k=5, where="tag = 't'")] == ["s0"]


def test_the_exhaustive_switch_weighs_the_scan_the_first_pass_would_make(filtered):
    """With the row-count floor off, a filter so selective that nprobe / f lists would be scanned goes
    exhaustive; a broad one keeps the first pass."""
    out, docs, queries, attrs = filtered
    index = retrieval.open_index(out, rules=Rules(exact_filter_work=0))
    broad = index.search_batch(queries[:5], k=10, where="bucket < 500")
    narrow = index.search_batch(queries[:5], k=10, where="bucket < 50 AND lang = 'en'")
    assert "first_pass" in broad.stage_scores and "first_pass" not in narrow.stage_scores
    cheaper = partial(exhaustive_cheaper, index.shape(), index.params, rules=index.rules)
    assert cheaper(250) and not cheaper(10000)


@pytest.mark.parametrize("where, refused", [
    ("current_setting('home_directory') LIKE '/root%'", "current_setting"),
    ("(SELECT count(*) FROM duckdb_settings()) > 0", "subqueries"),
    ("serial > (SELECT avg(serial) FROM attrs)", "subqueries"),
    ("row_number() OVER () < 10", "window functions"),
    ("serial > 1) FROM attrs; SELECT (true", "several statements|syntax error"),
    ("random() < 0.5", "random"), ("version() = 'x'", "version"),
    ("(SELECT count(*) FROM range(10000000000)) > 0", "subqueries"),
    ("SERIAL = 9", "did you mean 'serial'"),
])
def test_a_filter_is_a_row_predicate_and_everything_else_is_refused_by_name(filtered, where, refused):
    out, docs, queries, _ = filtered
    with pytest.raises(InputError, match=refused):
        retrieval.open_index(out).search_batch(queries[:2], where=where)


def test_nan_attributes_mean_the_same_in_sql_and_pyarrow():
    from matryoshka.retrieval.filters import row_mask
    t = pa.table({"score": pa.array([0.1, float("nan"), 0.9, None], pa.float64())})
    for sql, expr in [("score > 0.5", pc.field("score") > 0.5), ("score <= 0.5", pc.field("score") <= 0.5),
                      ("score != 0.9", pc.field("score") != 0.9), ("score IS NULL", pc.field("score").is_null())]:
        assert row_mask(t, sql).tolist() == row_mask(t, expr).tolist(), sql
    assert row_mask(t, "score > 0.5").tolist() == [False, False, True, False]


def test_a_filter_that_runs_too_long_is_stopped():
    from matryoshka.retrieval.filters import row_mask
    t = pa.table({"s": pa.array(["x" * 200] * 200_000)})
    with pytest.raises(InputError, match="longer than"):
        row_mask(t, "regexp_matches(repeat(s, 50), '(x+x+)+y')", seconds=0.01)


def test_attribute_names_that_differ_only_by_case_are_refused_at_build(tmp_path, small_data):
    docs = small_data[0][:300]
    attrs = {"year": np.arange(300), "Year": np.arange(300)}
    with pytest.raises(InputError, match="differ only by case"):
        indexing.build(tmp_path / "case", docs, attributes=attrs, quiet=True, tune=False, select=False)


ROWS = pa.table({"serial": pa.array(range(6)), "lang": ["en", "de"] * 3, "tags": [["a", "x"], ["b"]] * 3})


@pytest.mark.parametrize("where, name", [
    ("json_serialize_plan('SELECT 1') LIKE '%'", "json_serialize_plan"),  # binds queries against the catalogue
    ("stats(serial) <> ''", "stats"),  # the shard's min and max: per shard, not per row
    ("sleep_ms(1) IS NULL", "sleep_ms"), ("write_log('x') IS NULL", "write_log"),
    ("in_search_path('main', 'main')", "in_search_path"), ("len(range(3)) = 3", "range"),
    ("length(repeat(lang, 1000000000)) > 0", "repeat"),  # one value of gigabytes: refused, not run out of memory
    ("serial > 1), false) AS m FROM attrs UNION ALL SELECT coalesce((true", "statements, clauses"),
])
def test_functions_outside_the_allow_list_are_refused_by_name(where, name):
    from matryoshka.retrieval.filters import row_mask
    with pytest.raises(InputError, match=rf"{name}"):
        row_mask(ROWS, where)


def test_row_functions_macros_and_lambdas_are_allowed():
    from matryoshka.retrieval.filters import row_mask
    T, F = True, False
    for where, want in [
        ("nullif(serial, 1) > 2", [F, F, F, T, T, T]), ("if(serial > 2, lang = 'en', false)", [F, F, F, F, T, F]),
        ("list_sum([serial, 1]) > 3", [F, F, F, T, T, T]), ("split_part(lang, 'n', 1) = 'e'", [T, F, T, F, T, F]),
        ("len(list_filter(tags, lambda t: t = 'x')) = 1", [T, F, T, F, T, F]),
        ("list_transform(tags, lambda t, i: upper(t) || i)[1] = 'A1'", [T, F, T, F, T, F]),
        ("lang COLLATE nocase = 'EN'", [T, F, T, F, T, F]), ("repeat(lang, 3) = 'dedede'", [F, T, F, T, F, T]),
        ("lang LIKE 'd!%' ESCAPE '!' OR serial::VARCHAR IN ('0', '5')", [T, F, F, F, F, T]),
    ]:
        assert row_mask(ROWS, where).tolist() == want, where


def test_sql_refuses_attributes_that_differ_only_by_case():
    from matryoshka.retrieval.filters import row_mask
    legacy = pa.table({"year": [2000, 2001], "Year": [1, 2]})  # an index built before such names were refused
    for where in ['"Year" = 1', "year = 2000"]:  # DuckDB would bind "Year" to year: no row, where one passes
        with pytest.raises(InputError, match="'year' and 'Year' differ only by case"):
            row_mask(legacy, where)
    assert row_mask(legacy, pc.field("Year") == 1).tolist() == [True, False]  # pyarrow tells them apart


def test_case_clashes_are_among_attributes_only(tmp_path, small_data):
    docs = small_data[0][:300]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(docs.ravel()), docs.shape[1])
    ids = [f"d{i}" for i in range(300)]
    pq.write_table(pa.table({"id": ids, "embedding": emb, "year": np.arange(300), "Year": np.arange(300)}),
                   tmp_path / "clash.parquet")
    with pytest.raises(InputError, match="'year' and 'Year' differ only by case.*rename one"):
        indexing.build(tmp_path / "a", tmp_path / "clash.parquet", quiet=True, tune=False, select=False)
    # neither the id column nor a left-out binary column is an attribute, so neither clashes with one
    pq.write_table(pa.table({"id": ids, "embedding": emb, "ID": np.arange(300), "Blob": pa.array([b"x"] * 300),
                             "blob": np.arange(300)}), tmp_path / "ok.parquet")
    out = indexing.build(tmp_path / "b", tmp_path / "ok.parquet", quiet=True, tune=False, select=False)
    assert json.loads((out / "manifest.json").read_text())["attributes"] == {"ID": "int64", "blob": "int64"}


def test_nan_is_made_null_once_per_table_and_duplicate_attributes_are_refused():
    from matryoshka.retrieval.filters import nan_as_null
    t = pa.table({"score": [0.5, float("nan")], "n": [1, 2]})
    assert nan_as_null(t) is nan_as_null(t) and nan_as_null(t).column("score").null_count == 1
    clean = pa.table({"score": [0.5, 1.0]})
    assert nan_as_null(clean) is clean
    from matryoshka.indexing.attributes import schema_of
    with pytest.raises(InputError, match="'a' appears twice"):
        schema_of(pa.schema([("a", pa.int64()), ("a", pa.int64())]))
