"""The query plan as a value: what `explain` says is what a search runs, with each choice's reason; the rules
steer the path without touching module state."""
import math
import subprocess
import sys

import numpy as np
import pytest

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core.errors import InputError
from matryoshka.retrieval.plan import Rules

from conftest import FIXED


@pytest.fixture(scope="module")
def with_attrs(tmp_path_factory, small_data):
    docs, _ = small_data
    out = tmp_path_factory.mktemp("plan") / "idx"
    indexing.build(out, docs, attributes={"bucket": np.arange(len(docs)) % 100}, index_dim=32, pq_bytes=8,
                   shard_size=1000, quiet=True, select=False, tune=False)
    return out


def test_the_plan_is_what_the_search_runs(small_index, small_data):
    _, queries = small_data
    with retrieval.open_index(small_index) as ix:
        plan = ix.explain(len(queries), k=10, **FIXED)
        result = ix.search_batch(queries, k=10, **FIXED)
    assert plan.path == "cascade" and [s.name for s in plan.steps] == ["first_pass", "int8", "full"]
    assert list(result.stage_scores) == [s.name for s in plan.steps]
    assert [s.keep for s in plan.steps] == [200, 50, 10]
    assert plan.step("first_pass").nprobe == 16 and plan.params.k1 == 200
    assert plan.chunk == min(Rules().max_batch, Rules().max_candidates // 200)
    text = plan.explain()
    assert "nprobe 16: as asked" in text and "int8 (page cache)" in text and "full (page cache)" in text


def test_the_plan_says_where_its_depths_come_from(small_index, tmp_path, small_data):
    with retrieval.open_index(small_index) as ix:
        assert "the index's measured operating point" in ix.explain(1).explain()
        assert "nprobe 16: as asked" in ix.explain(1, nprobe=16).explain()
    untuned = indexing.build(tmp_path / "u", small_data[0], index_dim=32, pq_bytes=8, quiet=True, select=False,
                             tune=False)
    with retrieval.open_index(untuned) as ix:
        assert "the built-in default" in ix.explain(1).explain()


def test_stages_switched_off_leave_the_plan(small_index):
    with retrieval.open_index(small_index) as ix:
        assert [s.name for s in ix.explain(1, int8=False).steps] == ["first_pass", "full"]
        assert [s.name for s in ix.explain(1, full=False).steps] == ["first_pass", "int8"]
        assert ix.explain(1, full=False).step("int8").keep == 10


def test_a_depth_reaching_every_row_probes_every_list_and_says_so(small_index):
    with retrieval.open_index(small_index) as ix:
        plan = ix.explain(1, k1=10**6)
        nlist = ix.shape().nlist
    first = plan.step("first_pass")
    assert first.nprobe == nlist and plan.params.k1 == 3000 and "reaches every live row" in first.why


def test_a_filter_widens_the_probe_or_goes_exhaustive_as_the_rules_say(with_attrs, small_data):
    _, queries = small_data
    probe = Rules(exact_filter_work=0, exact_filter_scan_ratio=0)  # only the row-count floor sends it exhaustive
    with retrieval.open_index(with_attrs) as ix:
        cheap = ix.explain(5, where="bucket < 50", **FIXED)  # half the rows: 1,500 x 96 dims is little work
        broad = ix.explain(5, where="bucket < 50", rules=probe, **FIXED)
        narrow = ix.explain(5, where="bucket = 7", rules=probe, **FIXED)  # 30 rows <= k1
        got = {r: ix.search_batch(queries[:5], k=10, where="bucket < 50", rules=r, **FIXED) for r in (None, probe)}
        live = ix.shape().live
    assert cheap.path == "exhaustive" and "cost less than the widened first pass" in cheap.explain()
    assert broad.path == "cascade" and broad.passing == 1500
    assert broad.step("first_pass").nprobe == math.ceil(16 * live / 1500) and "widened" in broad.explain()
    assert narrow.path == "exhaustive" and "30 passing rows <= k1" in narrow.explain()
    assert list(got[None].stage_scores) == ["full"] and list(got[probe].stage_scores) == ["first_pass", "int8", "full"]


def test_rules_given_to_the_handle_are_its_default(with_attrs, small_data):
    _, queries = small_data
    with retrieval.open_index(with_attrs, rules={"exact_filter_work": 0, "exact_filter_scan_ratio": 0}) as ix:
        assert ix.explain(1, where="bucket < 50").path == "cascade"
        assert "first_pass" in ix.search_batch(queries[:3], where="bucket < 50").stage_scores


def test_big_batches_are_chunked_as_planned(small_index):
    with retrieval.open_index(small_index, rules=Rules(max_batch=7)) as ix:
        plan = ix.explain(50)
    assert plan.chunk == 7 and "8 chunk(s) of up to 7" in plan.explain()


def test_stores_on_ssd_show_in_the_plan(small_index):
    with retrieval.open_index(small_index) as ix:
        codes = ix.info()["stores"]["codes"]["bytes"]
    with retrieval.open_index(small_index, memory_budget=codes) as ix:
        text = ix.explain(1).explain()
    assert "int8 (ssd)" in text and "full (ssd)" in text and "codes (ram)" in text


@pytest.mark.parametrize("bad,match", [({"max_batch": 0}, "max_batch"), ({"colour": 1}, "no field"),
                                       ("fast", "takes a retrieval.Rules"), ({"exact_filter_work": -1}, "exact")])
def test_bad_rules_are_refused_by_name(small_index, bad, match):
    with pytest.raises(InputError, match=match):
        retrieval.open_index(small_index, rules=bad)


def test_explain_refuses_vectors_of_the_wrong_width(small_index):
    with retrieval.open_index(small_index) as ix, pytest.raises(InputError, match="query vectors"):
        ix.explain(np.zeros((2, 5), np.float32))


def test_cli_explain_prints_the_plan_and_searches_nothing(small_index, small_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    _, queries = small_data
    pq.write_table(pa.table({"qid": list(range(3)), "embedding": [list(map(float, q)) for q in queries[:3]]}),
                   tmp_path / "q.parquet")
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "search", str(small_index), "--queries",
                        str(tmp_path / "q.parquet"), "--explain", "--k1", "300"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("plan: 3 queries in 1 chunk(s)") and "1. first_pass keep 300" in p.stdout
    assert "doc-" not in p.stdout  # no hits
