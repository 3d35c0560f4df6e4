"""Reproducible builds: plans and operating points are priced by counted work, never timed, so the same input and
options give the same index byte for byte, however busy the machine is (matryoshka.core.cost_model)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import index_files

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.benchmarks.synthetic import Synthetic
from matryoshka.core import cost_model, layout
from matryoshka.core.errors import InputError

# selection measures plans only on samples of at least 20,000 rows (indexing.selection.MIN_ROWS)
OPTS = dict(index_dim=32, pq_bytes=8, shard_size=8000, quiet=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    s = Synthetic(dim=32, clusters=128, seed=7)
    path = tmp_path_factory.mktemp("repro") / "v.npy"
    np.save(path, s.documents(20_400).astype(np.float32))
    return path


def hog(cores: int = 2) -> list[subprocess.Popen]:
    """Processes that keep `cores` cores busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


@pytest.mark.slow
def test_a_build_under_a_cpu_hog_is_byte_identical_to_one_without_and_plan_from_repeats_the_plan(corpus, tmp_path):
    cost_model.calibration()  # measured once per machine (here: per test session), before the load starts
    indexing.build(tmp_path / "a", str(corpus), **OPTS)
    busy = hog(1)  # the second build runs at about half the speed of the first
    try:
        indexing.build(tmp_path / "b", str(corpus), **OPTS)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    m = json.loads((tmp_path / "a" / layout.MANIFEST).read_text())
    assert m["build"]["selection"]["candidates"], "the plan was measured, not taken from the rules of thumb"
    assert m["build"]["selection"]["cost_model"] == m["operating_point"]["cost_model"]  # calibration recorded
    assert index_files(tmp_path / "a") == index_files(tmp_path / "b")

    indexing.build(tmp_path / "copy", str(corpus), plan_from=tmp_path / "a", shard_size=8000, quiet=True, tune=False)
    copy = json.loads((tmp_path / "copy" / layout.MANIFEST).read_text())
    assert (copy["factory"], copy["index_dim"], copy["transform"]["kind"]) == \
        (m["factory"], m["index_dim"], m["transform"]["kind"])
    assert copy["build"]["selection"] is None  # nothing measured again
    with pytest.raises(InputError, match="plan-from"):
        indexing.build(tmp_path / "nothing", str(corpus), plan_from=tmp_path / "a" / "shards", quiet=True)


@pytest.mark.slow
def test_the_cost_model_prices_counted_work_and_stores_its_calibration(tmp_path, monkeypatch):
    monkeypatch.setenv(cost_model.CALIBRATION_ENV, str(tmp_path / "cal.json"))
    cal = cost_model.calibration()
    stored = json.loads((tmp_path / "cal.json").read_text())
    assert list(stored.values()) == [cal.to_dict()]
    assert cost_model.calibration() == cal  # read back, not measured again
    assert all(v >= 0 for v in (*cal.list_ns.values(), *cal.code_ns.values(), cal.int8_ns, cal.full_ns))
    one = dict(nlist=1024, dim=256, code="PQ64x4fs", lists=16, codes=10_000, int8=200, full=20, full_dim=384)
    base = cost_model.query_ms(cal, **one)
    assert cost_model.query_ms(cal, **{**one, "codes": 20_000}) > base  # more work costs more
    assert cost_model.query_ms(cal, **{**one, "int8": 400}) > base
    assert cost_model.code_bytes("PQ64x4fs", 256) == cost_model.code_bytes("PQ32", 256) == 32


def test_an_unreachable_latency_bound_is_refused_and_nothing_stored(small_index):
    index = retrieval.open_index(small_index)
    before = (small_index / layout.MANIFEST).read_bytes()
    with pytest.raises(InputError, match="no setting meets max_latency_ms"):
        index.tune(0.9, max_latency_ms=1e-9)
    assert (small_index / layout.MANIFEST).read_bytes() == before
