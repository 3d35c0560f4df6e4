"""One surface of operations: len, delete by condition, paging, dict filters, CSV and JSON Lines inputs, and the
friction fixes of the CLI."""
import json
import logging
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import index_files
from hypothesis import given, settings
from hypothesis import strategies as st

from matryoshka import indexing, retrieval
from matryoshka.core.errors import InputError
from matryoshka.indexing.sources import open_parquet
from matryoshka.retrieval.cli import _loading_note, main

ROOT = Path(__file__).resolve().parents[1]
CODE = ("retrieval", "indexing", "integrations", "rerank", "benchmarks", "matryoshka/core", "matryoshka/storage")
N, DIM = 400, 16
SECTIONS = ["a", "b", "c", None]
TAGS = ["p", "q", "r"]


def attributes(n: int) -> dict:
    i = np.arange(n)
    return {"section": pa.array([SECTIONS[k % 4] for k in i], pa.string()),
            "year": pa.array([None if k % 11 == 0 else 2000 + k % 10 for k in i], pa.int64()),
            "score": pa.array([None if k % 13 == 0 else (k % 8) / 4 for k in i], pa.float64()),
            "flag": pa.array([None if k % 7 == 0 else k % 2 == 0 for k in i], pa.bool_()),
            "tags": pa.array([None if k % 9 == 0 else TAGS[k % 3:] for k in i], pa.list_(pa.string()))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """400 vectors with five attribute columns (nulls in each) in 3 shards: (path, vectors, rows of attributes)."""
    x = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
    attrs = attributes(N)
    out = tmp_path_factory.mktemp("ops") / "idx"
    indexing.build(out, x, ids=[f"d{i}" for i in range(N)], texts=[f"text {i}" for i in range(N)],
                   attributes=attrs, index_dim=8, pq_bytes=4, shard_size=150, select=False, tune=False, quiet=True)
    return out, x, pa.table(attrs).to_pylist()


@pytest.fixture
def copy(built, tmp_path):
    shutil.copytree(built[0], tmp_path / "idx")
    return tmp_path / "idx"


# -- a dict filter, evaluated in Python: SQL's three values (None: unknown) ----------------------------------
def _and(values):
    return False if False in values else None if None in values else True


def _or(values):
    return True if True in values else None if None in values else False


def holds(f: dict, row: dict):
    return _and([_key(k, v, row) for k, v in f.items()])


def _key(k, v, row):
    if k == "$and":
        return _and([holds(c, row) for c in v])
    if k == "$or":
        return _or([holds(c, row) for c in v])
    if k == "$not":
        r = holds(v, row)
        return None if r is None else not r
    return _and([_op(op, row[k], x) for op, x in (v.items() if isinstance(v, dict) else [("$eq", v)])])


def _op(op, value, x):
    if x is None:
        return (value is None) == (op == "$eq")
    if op in ("$in", "$nin") and not x:
        return op == "$nin" and value is not None
    if value is None:
        return None
    if op == "$contains":
        return x in value
    if op in ("$in", "$nin"):
        return (value in x) == (op == "$in")
    return {"$eq": value == x, "$ne": value != x, "$gt": value > x, "$gte": value >= x, "$lt": value < x,
            "$lte": value <= x}[op]


VALUES = {"section": st.sampled_from(["a", "b", "c", "z"]), "year": st.integers(1999, 2010),
          "score": st.sampled_from([0.0, 0.25, 0.5, 1.75, 0.3]) | st.integers(0, 2), "flag": st.booleans()}
OPS = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]


@st.composite
def leaf(draw) -> dict:
    col = draw(st.sampled_from(sorted(VALUES) + ["tags"]))
    if col == "tags":
        return {"tags": draw(st.sampled_from([{"$contains": t} for t in TAGS + ["z"]] + [None, {"$ne": None}]))}
    value = VALUES[col]
    kind = draw(st.sampled_from(["eq", "ops", "in", "null"]))
    if kind == "eq":
        return {col: draw(value)}
    if kind == "null":
        return {col: draw(st.sampled_from([None, {"$ne": None}]))}
    if kind == "in":
        return {col: {draw(st.sampled_from(["$in", "$nin"])): draw(st.lists(value, max_size=3))}}
    ops = draw(st.lists(st.sampled_from(OPS if col != "flag" else ["$eq", "$ne"]), min_size=1, max_size=2,
                        unique=True))
    return {col: {op: draw(value) for op in ops}}


FILTERS = st.recursive(leaf(), lambda children: st.one_of(
    st.lists(children, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
    st.lists(children, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
    children.map(lambda f: {"$not": f}),
    st.tuples(children, leaf()).map(lambda p: {**p[1], **p[0]})), max_leaves=6)


@settings(max_examples=30)
@given(f=FILTERS)
def test_a_dict_filter_selects_exactly_the_rows_python_selects(built, f):
    out, _, rows = built
    want = [i for i, row in enumerate(rows) if holds(f, row)]
    assert [r.row for r in _index(out).get(where=f)] == want


_OPEN: dict = {}


def _index(path):
    if path not in _OPEN:
        _OPEN[path] = retrieval.open_index(path)
    return _OPEN[path]


def test_dict_filters_go_wherever_a_condition_goes(built):
    out, x, rows = built
    ix = _index(out)
    sql = "section = 'a' AND year >= 2004"
    d = {"section": "a", "year": {"$gte": 2004}}
    want = {f"d{i}" for i, r in enumerate(rows) if r["section"] == "a" and (r["year"] or 0) >= 2004}
    by_sql, by_dict = ix.search_batch(x[:3], k=5, where=sql), ix.search_batch(x[:3], k=5, where=d)
    assert by_sql.ids == by_dict.ids and all(i in want for row in by_dict.ids for i in row if i is not None)
    mixed = ix.search_batch(x[:3], k=5, where=[d, None, sql])
    assert mixed.ids[0] == by_sql.ids[0] and mixed.ids[2] == by_sql.ids[2]
    assert ix.search(x[0], k=5, where=d)[0].id == by_dict.ids[0][0]
    assert ix.explain(1, where=d).passing == len(want)
    assert len(ix) == N and bool(ix)


@pytest.mark.parametrize("where, says", [
    ({"nope": 1}, r"no attribute 'nope'.*attributes: flag, score, section, tags, year"),
    ({"Year": 2001}, "did you mean 'year'"),
    ({"year": "2001"}, "'year' is a column of int64; '2001' \\(str\\) is not a number"),
    ({"flag": 1}, "not a bool"),
    ({"section": 3}, "not a string"),
    ({"score": math.nan}, "not a finite number"),
    ({"score": 2 ** 60}, "exactly a float"),
    ({"tags": "p"}, r"list column .*'\$contains'"),
    ({"year": {"$contains": 1}}, r"\$contains tests a list column"),
    ({"year": {"$in": 2001}}, r"\$in on 'year' takes a list"),
    ({"year": {"$in": [None]}}, "holds None"),
    ({"year": {"$gt": None}}, "takes a value, not None"),
    ({"year": {"$like": 1}}, "unknown operator '\\$like'"),
    ({"$nor": []}, "unknown operator '\\$nor'"),
    ({"$or": []}, r"\$or takes a non-empty list"),
    ({"$not": [{"year": 1}]}, r"\$not takes a filter"),
    ({"year": {}}, "the condition on 'year' is empty"),
    ({"section": "x'; DROP TABLE attrs; --"}, None),  # quoted as a value: matches nothing, runs nothing
])
def test_bad_dict_filters_are_refused_by_name(built, where, says):
    ix = _index(built[0])
    if says is None:
        assert ix.get(where=where) == []
        return
    with pytest.raises(InputError, match=says):
        ix.get(where=where)


def test_mixed_per_query_filters_show_only_the_stages_that_scored_each_hit(built, tmp_path):
    out, x, _ = built
    ix = _index(out)
    where = [None, "section = 'a' AND year = 2004"]  # the second passes few rows: scored exactly (full only)
    result = ix.search_batch(x[:2], k=3, where=where)
    open_, filtered = result.hits(0), result.hits(1)
    assert set(open_[0].scores) == {"first_pass", "int8", "full"} and set(filtered[0].scores) == {"full"}
    assert all(math.isfinite(v) for h in open_ + filtered for v in h.scores.values())
    table = result.to_table()
    assert table.filter(pc.equal(table["qid"], 1))["score_int8"].null_count == len(filtered)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x[:2].ravel()), DIM)
    pq.write_table(pa.table({"qid": [0, 1], "embedding": emb, "where": where}), tmp_path / "q.parquet")
    assert main(["search", str(out), "--queries", str(tmp_path / "q.parquet"), "--output",
                 str(tmp_path / "r.parquet"), "--no-rerank", "--k", "3"]) == 0
    r = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert all(h["score_first_pass"] is None for h in r if h["qid"] == 1)
    assert all(math.isfinite(h["score_first_pass"]) for h in r if h["qid"] == 0)


def test_get_pages_through_a_condition_in_row_order(built):
    out, _, rows = built
    ix = _index(out)
    want = [i for i, r in enumerate(rows) if r["flag"]]
    got, page = [], ix.get(where={"flag": True}, limit=7)
    while page:
        got += [r.row for r in page]
        page = ix.get(where={"flag": True}, limit=7, after=page[-1].row)
    assert got == want
    assert [r.id for r in ix.get(where="true", after=N - 3)] == [f"d{N - 2}", f"d{N - 1}"]
    with pytest.raises(InputError, match="after= pages through a where condition"):
        ix.get(["d1"], where="true", after=0)
    with pytest.raises(InputError, match="after must be an integer >= 0"):
        ix.get(where="true", after=-1)


def test_delete_by_condition_validates_before_writing(copy, built):
    _, _, rows = built
    before = index_files(copy)
    for where, says in [("year = ", "ends before it is complete"), ("nope = 1", 'column "nope" not found'),
                        ({"year": "x"}, "not a number"), ("max(year) > 1", "no aggregates"), ({}, "passes every"),
                        ("year", "not true or false")]:
        with pytest.raises(InputError, match=says):
            indexing.delete(copy, where=where, quiet=True)
        assert index_files(copy) == before  # nothing written, nothing left behind
    f = {"section": "b", "year": {"$lt": 2005}}
    gone = {f"d{i}" for i, r in enumerate(rows) if holds(f, r)}
    rec = indexing.delete(copy, where=f, quiet=True)
    assert rec["deleted"] == len(gone) and rec["generation"] == 2
    ix = retrieval.open_index(copy)
    assert len(ix) == N - len(gone) and not ix.get(list(gone))
    assert indexing.delete(copy, where=f, quiet=True)["generation"] == 2  # a re-run: already done
    assert indexing.delete(copy, where="year = 1900", quiet=True) == {"op": "delete", "generation": 2,
                                                                       "deleted": 0, "unknown": 0}
    rec = indexing.delete(copy, ["d2", "d3"], where="section = 'c'", quiet=True)  # d2 is section c, d3 is not
    assert (rec["deleted"], rec["not_passing"], rec["generation"]) == (1, 1, 3)
    assert [r.id for r in retrieval.open_index(copy).get(["d2", "d3"])] == ["d3"]


def test_delete_by_condition_from_the_shell(copy, built, caplog):
    _, _, rows = built
    assert main(["delete", str(copy)]) == 2
    assert main(["delete", str(copy), "--where", "year = = 3"]) == 2
    assert main(["delete", str(copy), "--where", '{"year": 2001']) == 2
    assert retrieval.open_index(copy).generation == 1
    with caplog.at_level(logging.INFO):
        assert main(["delete", str(copy), "--where", '{"section": "b", "flag": false}']) == 0
    gone = sum(1 for r in rows if r["section"] == "b" and r["flag"] is False)
    assert gone and f"deleted {gone} documents passing the condition" in caplog.text
    assert main(["delete", str(copy), "--ids", "d2", "d6", "--where", "section = 'c'", "--quiet"]) == 0
    assert len(retrieval.open_index(copy)) == N - gone - 2


def test_syntax_errors_point_into_the_condition_as_written(built):
    ix = _index(built[0])
    for where, says in [("year = ", r"ends before it is complete, after 'year ='"),
                        ("year = = 3", "at character 8, near '= 3'"), ("year > 1)", "character 9: this '\\)'"),
                        ("(year > 1", "ends before it is complete")]:
        with pytest.raises(InputError, match=says) as e:
            ix.get(where=where)
        assert 'near ")"' not in str(e.value) and '"AS"' not in str(e.value)


def _csv(path: Path, x: np.ndarray, start: int = 0) -> None:
    with open(path, "w") as f:
        f.write("id,text,embedding,year\n")
        for i, v in enumerate(x, start):
            f.write(f'd{i},{1000 + i},"[{", ".join(map(repr, v.tolist()))}]",{2000 + i % 3}\n')


def _jsonl(path: Path, x: np.ndarray, start: int = 0) -> None:
    with open(path, "w") as f:
        for i, v in enumerate(x, start):
            f.write(json.dumps({"id": f"d{i}", "text": f"jsonl {i}", "embedding": v.tolist(), "year": 2000 + i % 3})
                    + "\n")


def test_csv_and_json_lines_inputs_build_and_add(tmp_path):
    x = np.random.default_rng(5).standard_normal((160, DIM)).astype(np.float32)
    _csv(tmp_path / "a.csv", x[:120])
    _jsonl(tmp_path / "b.jsonl", x[120:], start=120)
    indexing.build(tmp_path / "idx", tmp_path / "a.csv", index_dim=8, pq_bytes=4, select=False, tune=False,
                   quiet=True)
    assert indexing.add(tmp_path / "idx", tmp_path / "b.jsonl", quiet=True)["added"] == 40
    ix = retrieval.open_index(tmp_path / "idx")
    assert len(ix) == 160 and ix.manifest.attributes == {"year": "int64"}
    hit = ix.search(x[7], k=1)[0]
    assert (hit.id, hit.text) == ("d7", "1007")  # a CSV text of digits stays text
    assert ix.search(x[130], k=1)[0].text == "jsonl 130"
    assert [r.id for r in ix.get(where={"year": 2001}, limit=2)] == ["d1", "d4"]


def test_csv_and_json_lines_rows_are_refused_by_file_and_row(tmp_path):
    x = np.random.default_rng(6).standard_normal((20, DIM)).astype(np.float32)
    _csv(tmp_path / "good.csv", x)
    lines = (tmp_path / "good.csv").read_text().splitlines()
    bad = {"word": lines[:4] + [lines[4].replace('"[', '"[abc, ')] + lines[5:],
           "empty": lines[:6] + ['d5,t,"",2000'] + lines[7:],
           "short": lines[:3] + ['d2,t,"[1.0, 2.0]",2000'] + lines[4:]}
    says = {"word": "row 3 has the embedding '\\[abc", "empty": "row 5 has no embedding",
            "short": "row 2 has a 2-dim embedding"}
    for name, rows in bad.items():
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(rows) + "\n")
        with pytest.raises(InputError, match=f"{path}: {says[name]}"):
            indexing.build(tmp_path / name, path, index_dim=8, pq_bytes=4, select=False, tune=False, quiet=True)
    _jsonl(tmp_path / "good.jsonl", x)
    lines = (tmp_path / "good.jsonl").read_text().splitlines()
    lines[9] = lines[9].replace('"embedding": [', '"embedding": [1.0, ')
    (tmp_path / "ragged.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"{tmp_path / 'ragged.jsonl'}: row 9 has a 17-dim embedding"):
        indexing.build(tmp_path / "j", tmp_path / "ragged.jsonl", index_dim=8, pq_bytes=4, select=False,
                       tune=False, quiet=True)
    (tmp_path / "plain.json").write_text("[]")
    with pytest.raises(InputError, match="JSON Lines: one object per line, named .jsonl"):
        indexing.build(tmp_path / "k", tmp_path / "plain.json", quiet=True)
    with pytest.raises(InputError, match="takes .npy or Parquet inputs"):
        open_parquet(tmp_path / "good.csv")


def test_the_shell_prints_zero_hits_precise_shares_and_plugin_names(built, copy, tmp_path, capsys, caplog):
    out, x, _ = built
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x[:1].ravel()), DIM)
    pq.write_table(pa.table({"qid": [0], "embedding": emb}), tmp_path / "q.parquet")
    assert main(["search", str(out), "--queries", str(tmp_path / "q.parquet"), "--where", "year = 1900",
                 "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == "0 hits" and printed.err == ""  # --quiet: no note on stderr
    _loading_note(SimpleNamespace(manifest=SimpleNamespace(model={"name": "some/model"})), None)
    assert "note: loading the query model some/model" in capsys.readouterr().err
    indexing.delete(copy, ["d1"], quiet=True)  # 1 of 150 rows: 0.667% of its shard
    with caplog.at_level(logging.INFO):
        indexing.compact(copy, min_dead=0.009)
    assert "no shard has 0.9% of its rows deleted (the most: 0.667%)" in caplog.text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(from " not in (text := capsys.readouterr().out) and "run the benchmark suite" in text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert capsys.readouterr().out.startswith("usage: matryoshka bench")


def test_install_lines_work_from_a_clone_and_the_license_is_mit():
    files = [*ROOT.glob("docs/*.md"), ROOT / "README.md"] + [p for d in CODE for p in (ROOT / d).rglob("*.py")]
    texts = [p.read_text() for p in files]
    assert not [t for t in texts if "matryoshka-retrieval[" in t]
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 the matryoshka-retrieval authors" in \
        license_text


def test_the_server_takes_dict_filters_as_the_engine_does(built):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from matryoshka.integrations.server.app import create_app
    path, x, _ = built
    with TestClient(create_app(path, reload_interval=0.0, preload_model=False)) as client:
        def ids(where):
            r = client.post("/search", json={"vectors": x[:3].tolist(), "k": 5, "where": where})
            assert r.status_code == 200, r.text
            return [[h["id"] for h in hits] for hits in r.json()["results"]]
        assert ids({"section": "a", "year": {"$gte": 2004}}) == ids("section = 'a' AND year >= 2004")
        assert ids([{"tags": {"$contains": "r"}}, None, "flag"]) == \
            [ids("list_contains(tags, 'r')")[0], ids(None)[1], ids("flag")[2]]
        r = client.post("/search", json={"vectors": x[:1].tolist(), "where": {"nope": 1}})
        assert r.status_code == 400 and "nope" in r.json()["detail"]


def test_one_id_is_one_document_not_its_characters(built):
    with retrieval.open_index(built[0]) as ix:
        assert [r.id for r in ix.get("d12")] == ["d12"] and [r.id for r in ix.get(["d12", "d3"])] == ["d12", "d3"]
