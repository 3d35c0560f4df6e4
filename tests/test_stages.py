"""The cascade's stages as objects: one registry in cascade order, plans made from a hand-made `Shape` with no
index built, and a new stage added as one class that the planner and the runner pick up."""
import numpy as np
import pytest

from matryoshka import retrieval
from matryoshka.core.params import SearchParams
from matryoshka.core.timing import StageTimer
from matryoshka.retrieval import stages
from matryoshka.retrieval.plan import Rules, Shape, plan
from matryoshka.retrieval.runner import run
from matryoshka.retrieval.stages import STAGES, Running, Stage

from conftest import FIXED

BILLION = Shape(live=10**9, nlist=1 << 20, code_size=32, full_dim=1024, device="cpu",
                tiers={"codes": "ram", "int8": "ram", "full": "ssd"}, coarse="hnsw")


def names(pl) -> list[str]:
    return [s.name for s in pl.steps]


def test_every_stage_is_registered_once_in_cascade_order():
    assert [s.name for s in STAGES] == ["exhaustive", "first_pass", "lexical", "int8", "full", "fuse", "rerank"]
    assert all(isinstance(s, Stage) and s.store for s in STAGES)
    assert {s.store for s in STAGES} <= {"codes", "int8", "full", "lexical", "texts", "nothing"}


def test_a_hand_made_shape_plans_with_no_index_built():
    p = SearchParams(nprobe=64, k1=1000, k2=100).checked(1024)
    pl = plan(BILLION, p, 5000, Rules())
    assert pl.path == "cascade" and names(pl) == ["first_pass", "int8", "full"]
    assert [s.keep for s in pl.steps] == [1000, 100, 10] and pl.step("first_pass").nprobe == 64
    assert pl.chunk == 1024 and plan(BILLION, p.updated(k1=4000), 1, Rules()).chunk == (1 << 21) // 4000
    assert "HNSW graph over the 1,048,576 centroids" in pl.step("first_pass").why
    assert pl.step("full").reads == "full (ssd)" and any("stores on SSD" in n for n in pl.notes)
    # a filter passing 500 rows: every one scored exactly, no first pass
    assert names(plan(BILLION, p, 1, Rules(), passing=500)) == ["exhaustive"]
    # one passing 1% of a billion: the first pass widened 100x
    wide = plan(BILLION, p, 1, Rules(), passing=10**7)
    assert wide.step("first_pass").nprobe == 6400 and any("searched again" in n for n in wide.notes)


def test_the_modes_and_switches_choose_the_stages():
    p = SearchParams(nprobe=8, k1=100, k2=40, k3=30).checked(1024)
    assert names(plan(BILLION, p.updated(mode="hybrid"), 1, Rules())) == ["first_pass", "lexical", "int8", "full"]
    assert names(plan(BILLION, p.updated(mode="hybrid", int8=False, full=False), 1, Rules())) == \
        ["first_pass", "lexical", "fuse"]
    assert names(plan(BILLION, p.updated(mode="hybrid"), 1, Rules(), passing=50)) == ["exhaustive", "lexical", "full"]
    lexical = plan(BILLION, p.updated(mode="lexical"), 1, Rules(), rerank=True)
    assert lexical.path == "lexical" and names(lexical) == ["lexical", "rerank"]
    assert lexical.step("lexical").keep == 30 and lexical.step("rerank").keep == 10
    assert names(plan(BILLION, p.updated(int8=False), 1, Rules())) == ["first_pass", "full"]


class Negated(Stage):
    """A stage for the test: scores the candidates kept so far by minus their first-pass score, so that the
    order reverses (something no registered stage does)."""

    name, store = "negated", "nothing"

    def plan(self, ctx):
        return self.step(ctx, ctx.last, "the test's stage") if ctx.planned("first_pass") else None

    def run(self, step, ctx):
        ctx.stages[self.name] = np.where(ctx.cand >= 0, -ctx.stages["first_pass"], -np.inf).astype(np.float32)
        ctx.cut(self.name, step.keep)


def test_a_new_stage_is_one_class_and_one_entry(small_index, small_data):
    _, queries = small_data
    registry = (*STAGES[:4], Negated())  # exhaustive, first pass, lexical, int8, then the new one
    with retrieval.open_index(small_index) as ix:
        p = SearchParams(**FIXED, full=False).checked(ix.full_dim)
        pl = plan(ix.shape(), p, len(queries), Rules(), stages=registry)
        assert names(pl) == ["first_pass", "int8", "negated"]
        x = queries[:5]
        ctx = Running(ix.backend, p, x, ix.codec.transform.apply(x), None, None, set(), ix.metric, ix.codec,
                      ix.assigner, ix.device, None)
        timer = StageTimer()
        timer.mark()
        run(pl, ctx, timer, stages=registry)
        assert ctx.last == "negated" and "negated" in dict(timer)
        first = ctx.stages["first_pass"]
        assert (np.diff(first, axis=1) >= 0).all()  # reversed: the worst first-pass candidates come first
        with pytest.raises(KeyError):  # the registry's runner does not know the new stage
            run(pl, Running(ix.backend, p, x, ix.codec.transform.apply(x), None, None, set(), ix.metric, ix.codec,
                            ix.assigner, ix.device, None), timer)
    assert stages.STAGES == STAGES


def test_the_tuner_reads_only_its_protocol(small_index):
    """`retrieval.tuning` is a client of `Tunable`: a view that refuses every other member still tunes."""
    from matryoshka.retrieval import tuning
    allowed = set(tuning.Tunable.__annotations__) | {n for n in vars(tuning.Tunable) if not n.startswith("_")}

    class Only:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            assert name in allowed, f"the tuner read {name!r}, outside its protocol"
            return getattr(self._inner, name)

    with retrieval.open_index(small_index) as ix:
        point = tuning.tune(Only(ix.tunable()), 0.9, n_queries=50, save=False)
    assert point.queries == 50 and point.recall_at_10 > 0


def test_stores_on_ssd_search_two_chunks_at_once_but_not_on_a_gpu_or_with_a_cross_encoder():
    from dataclasses import replace
    p = SearchParams(nprobe=64, k1=1000, k2=100).checked(1024)
    pl = plan(BILLION, p, 100, Rules())
    assert (pl.chunk, pl.in_flight) == (25, 2) and "2 chunks at once" in pl.explain()
    assert plan(BILLION, p, 20, Rules()).in_flight == 1  # too few queries to split
    assert plan(replace(BILLION, device="gpu"), p, 100, Rules()).in_flight == 1
    assert plan(BILLION, p, 100, Rules(), rerank=True).in_flight == 1
    assert plan(replace(BILLION, tiers={"codes": "ram", "int8": "ram", "full": "ram"}), p, 100, Rules()).in_flight == 1
    assert plan(BILLION, p, 100, Rules(ssd_in_flight=1)).in_flight == 1
