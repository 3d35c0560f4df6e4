"""Operating points measured per index: chosen by measurement, stored, used by default, re-tunable."""
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import exact_topk, recall_at

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.retrieval import tuning

BUILD = dict(index_dim=32, pq_bytes=8, shard_size=2000, quiet=True)


def _clustered(n, seed, spread):
    """Vectors around 64 centres; `spread` sets how far they wander from them (larger: harder to partition)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, 64)).astype(np.float32)
    x = centres[rng.integers(0, 64, n)] + spread * rng.standard_normal((n, 64)).astype(np.float32)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory):
    """One index whose neighbours sit in their own list, one whose neighbours spread over many lists."""
    root = tmp_path_factory.mktemp("tuning")
    out = {}
    for name, spread in (("easy", 0.3), ("hard", 1.5)):
        x = _clustered(6200, 1, spread)
        docs, queries = x[:6000], x[6000:]
        indexing.build(root / name, docs, **BUILD)
        out[name] = (root / name, docs, queries)
    return out


@pytest.mark.slow
def test_the_build_stores_a_measured_point_and_search_uses_it_by_default(two_indexes):
    for name, (path, docs, queries) in two_indexes.items():
        index = retrieval.open_index(path)
        point = index.info()["operating_point"]
        assert point["source"] == "index sample" and point["queries"] == 300 and point["reached"]
        assert (index.params.nprobe, index.params.k1, index.params.k2) == (point["nprobe"], point["k1"], point["k2"])
        chosen = [t for t in point["tried"] if (t["nprobe"], t["k1"], t["k2"], t.get("probe_margin")) ==
                  (point["nprobe"], point["k1"], point["k2"], point["probe_margin"])]
        passing = [t for t in point["tried"] if t["recall_at_10"] >= point["required_recall"]]
        assert point["required_recall"] == point["target_recall"]  # query-like rows must show the target itself
        fastest_fixed = min(t["ms_per_query"] for t in passing if t.get("probe_margin") is None)
        if point["probe_margin"] is None:  # a margin is kept only when clearly faster than every fixed nprobe
            # the fastest fixed setting, or one as fast within TIME_NOISE that is more accurate
            tied = [t for t in passing if t.get("probe_margin") is None and
                    t["ms_per_query"] <= fastest_fixed * (1 + tuning.TIME_NOISE)]
            assert chosen and chosen[0] in tied
            assert chosen[0]["recall_at_10"] == max(t["recall_at_10"] for t in tied)
        else:
            assert chosen and chosen[0]["ms_per_query"] < fastest_fixed * (1 - tuning.ADAPTIVE_NOISE)
        default = index.search_batch(queries, k=10)
        explicit = index.search_batch(queries, k=10, nprobe=point["nprobe"], k1=point["k1"], k2=point["k2"],
                                      probe_margin=point["probe_margin"])
        np.testing.assert_array_equal(default.rows, explicit.rows)
        # the measured recall holds for queries the tuning never saw, within sampling noise
        assert recall_at(default.rows, exact_topk(docs, queries, 10)) >= point["target_recall"] - 0.03, name


def test_coverage_decides_nprobe_where_neighbours_spread_over_lists(two_indexes):
    easy = retrieval.open_index(two_indexes["easy"][0]).info()["operating_point"]
    hard = retrieval.open_index(two_indexes["hard"][0]).info()["operating_point"]
    assert hard["nprobe"] > easy["nprobe"], (easy, hard)
    # on the hard index a shallow nprobe was tried at the deepest depth and still did not cover the target:
    # depth cannot buy what coverage does not hold
    assert any(t["nprobe"] < hard["nprobe"] and t["k1"] == max(tuning.DEPTHS) and t["coverage"] < 0.95
               for t in hard["tried"])


def test_the_choice_takes_the_fastest_passing_else_the_most_accurate_within_the_latency():
    def row(name, recall, ms):
        return {"nprobe": name, "k1": 100, "k2": 50, "recall_at_10": recall, "ms_per_query": ms}
    fast_poor, slow_good, fast_good, slowest_best = row(1, 0.80, 0.1), row(2, 0.96, 0.9), row(3, 0.95, 0.5), \
        row(4, 0.99, 2.0)
    tried = [fast_poor, slow_good, fast_good, slowest_best]
    assert tuning.choose(tried, 0.95) == (fast_good, True)  # the fastest that reaches the target
    assert tuning.choose(tried, 0.97) == (slowest_best, True)  # only one reaches it
    assert tuning.choose(tried, 0.995) == (slowest_best, False)  # none does: the most accurate
    assert tuning.choose(tried, 0.97, max_latency_ms=1.0) == (slow_good, False)  # the most accurate within 1 ms
    assert tuning.choose(tried, 0.95, max_latency_ms=0.01) == (fast_poor, False)  # none that fast: the fastest
    as_fast_better = row(5, 0.97, 0.5 * (1 + tuning.TIME_NOISE) * 0.99)
    assert tuning.choose(tried + [as_fast_better], 0.95) == (as_fast_better, True)  # equal within noise: more accurate
    slower_better = row(6, 0.97, 0.5 * (1 + tuning.TIME_NOISE) * 1.01)
    assert tuning.choose(tried + [slower_better], 0.95) == (fast_good, True)


def test_tune_refuses_a_target_outside_0_1_and_save_false_changes_nothing(two_indexes):
    index = retrieval.open_index(two_indexes["hard"][0])
    before = index.params
    with pytest.raises(InputError, match="target recall"):
        index.tune(target_recall=1.5)
    point = index.tune(target_recall=0.5, queries=two_indexes["hard"][2][:50], save=False)
    assert point.reached and point.recall_at_10 >= 0.5
    assert index.params == before and retrieval.open_index(two_indexes["hard"][0]).params == before


@pytest.mark.slow
def test_tune_with_own_queries_stores_the_new_point_for_every_later_open(two_indexes, tmp_path):
    path, docs, queries = two_indexes["easy"]
    target = tmp_path / "idx"
    indexing.build(target, docs, **BUILD, tune=False)
    assert retrieval.open_index(target).info()["operating_point"] is None
    pq.write_table(pa.table({"qid": list(range(len(queries))), "embedding": list(queries)}), tmp_path / "q.parquet")
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "tune", str(target), "--target-recall", "0.9",
                        "--queries", str(tmp_path / "q.parquet")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "default operating point now nprobe" in p.stdout and "tried nprobe" in p.stdout
    point = retrieval.open_index(target).info()["operating_point"]
    assert point["target_recall"] == 0.9 and point["source"] == "given" and point["queries"] == len(queries)
    info = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "info", str(target)], capture_output=True,
                          text=True, timeout=600)
    assert f"default operating point: nprobe {point['nprobe']}, k1 {point['k1']}, k2 {point['k2']}" in info.stdout


@pytest.mark.slow
def test_cli_search_uses_the_stored_point_unless_told_otherwise(two_indexes, tmp_path):
    path, _, queries = two_indexes["hard"]
    point = retrieval.open_index(path).info()["operating_point"]
    pq.write_table(pa.table({"qid": [0, 1, 2], "embedding": list(queries[:3])}), tmp_path / "q.parquet")

    def search(*flags):
        out = tmp_path / f"hits{len(flags)}.parquet"
        p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "search", str(path), "--queries",
                            str(tmp_path / "q.parquet"), "--output", str(out), *flags], capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        return pq.read_table(out).column("id").to_pylist()
    assert search() == search("--nprobe", str(point["nprobe"]), "--k1", str(point["k1"]), "--k2", str(point["k2"]))
    assert search() != search("--nprobe", "1", "--k1", "10", "--k2", "10")


def test_a_damaged_operating_point_is_refused(two_indexes, tmp_path):
    import shutil
    path = tmp_path / "copy"
    shutil.copytree(two_indexes["easy"][0], path)
    m = json.loads((path / "manifest.json").read_text())
    m["operating_point"]["k1"] = 0
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="operating_point.k1"):
        retrieval.open_index(path)


def test_exact_truth_matches_brute_force(two_indexes):
    path, docs, queries = two_indexes["hard"]
    index = retrieval.open_index(path)
    x, _ = index.query_vectors(queries[:20])
    got = tuning.exact_truth(index.tunable(), x, 10)
    assert recall_at(got, exact_topk(docs, queries[:20], 10)) >= 0.99  # float16 store: ties may swap


def test_a_probe_margin_skips_far_lists_and_the_tuner_sizes_it_by_lists_probed():
    from matryoshka.retrieval.first_pass import lists_probed, prune_lists
    cd = np.array([[0.9, 0.85, 0.5, 0.2], [0.6, 0.59, 0.58, 0.57]], np.float32)
    ci = np.array([[3, 1, 0, 2], [0, 1, 2, 3]])
    _, kept = prune_lists((cd, ci), 0.1, "cosine")
    np.testing.assert_array_equal(kept, [[3, 1, -1, -1], [0, 1, 2, 3]])  # the close query keeps every list
    _, kept = prune_lists((np.array([[0.1, 0.15, 0.9]], np.float32), np.array([[5, 6, 7]])), 0.1, "l2")
    np.testing.assert_array_equal(kept, [[5, 6, -1]])  # l2: distances, smaller is nearer
    assert lists_probed((cd, kept)) == 2.0
    margin = tuning.margin_for((cd, ci), 3.0, "cosine")
    assert lists_probed(prune_lists((cd, ci), margin, "cosine")) == pytest.approx(3.0)


def test_an_nprobe_asked_for_is_probed_in_full_not_as_the_stored_cap():
    stored = retrieval.SearchParams(nprobe=512, probe_margin=0.3)
    assert stored.updated(k1=50).probe_margin == 0.3
    assert stored.updated(nprobe=64).probe_margin is None
    assert stored.updated(nprobe=64, probe_margin=0.1).probe_margin == 0.1
    with pytest.raises(retrieval.InputError, match="probe_margin"):
        retrieval.SearchParams(probe_margin=-1.0).checked(8)


def test_a_margin_never_narrows_a_search_deep_enough_to_be_exhaustive(two_indexes):
    path, docs, queries = two_indexes["hard"]
    index = retrieval.open_index(path)
    narrow = index.search_batch(queries, k=10, nprobe=64, probe_margin=0.0, k1=100)  # about one list each
    everything = index.search_batch(queries, k=10, nprobe=64, probe_margin=0.0, k1=len(docs), k2=len(docs))
    truth = exact_topk(docs, queries, 10)
    assert recall_at(narrow.rows, truth) < 0.95  # the margin does prune here
    assert recall_at(everything.rows, truth) == 1.0  # k1 = k2 = N scores every row exactly, margin or not


def test_the_share_of_lists_is_bisected_towards_the_least_that_reaches_the_target(two_indexes):
    """Past the best fixed nprobe, the tuner halves the bracket of lists probed (by probe margin) between a share
    falling short and one reaching the target, so a point is not a power of two past what the target needs."""
    path, _, queries = two_indexes["hard"]
    with retrieval.open_index(path) as index:
        point = tuning.tune(index.tunable(), 0.9, queries=queries, save=False)
    shares = [t for t in point.tried if "share" in t]
    if not shares:
        pytest.skip("the best fixed nprobe already probes every list: nothing to bisect")
    assert len(shares) == len(tuning.ADAPTIVE_LISTS) + tuning.ADAPTIVE_STEPS
    bisected = shares[len(tuning.ADAPTIVE_LISTS):]
    short = [t["share"] for t in shares if t["recall_at_10"] < point.required_recall]
    reach = [t["share"] for t in shares if t["recall_at_10"] >= point.required_recall]
    first = sorted(tuning.ADAPTIVE_LISTS)
    bracket = (max([0.0] + [s for s in first if s in short]), 1.0)
    if reach and short and max(short) < min(reach):  # monotone here: the bracket shrank by half each step
        assert min(reach) - max(short) <= (bracket[1] - bracket[0]) / 2 ** (tuning.ADAPTIVE_STEPS - 1)
    assert all(0.0 < t["share"] < 1.0 for t in bisected)
