"""Choosing nlist, code and rotation by measurement (indexing.selection), and what the build stores of it."""
import json
import subprocess
import sys

import numpy as np
import pytest

from matryoshka.indexing import build
from matryoshka.indexing.selection import (Candidate, _better, _fewest_lists_within_noise, code_candidates,
                                          nlist_candidates)
from matryoshka.indexing.transform import fit_pca, random_rotation
from matryoshka.retrieval import open_index


def _c(nlist, ms, code="PQ64x4fs", rotation="random", reached=True, coverage=0.97):
    return Candidate(nlist, code, rotation, reached=reached, coverage=coverage,
                     ms_per_query=ms if reached else float("inf"))


@pytest.mark.parametrize("times, winner", [
    ({2048: 1.00, 1024: 1.30, 4096: 1.25}, 2048),  # the rule of thumb, clearly fastest
    ({2048: 1.00, 1024: 1.05, 4096: 0.98}, 1024),  # all within noise: the fewest lists (least RAM)
    ({2048: 1.00, 1024: 1.40, 4096: 0.70}, 4096),  # more lists, clearly faster
])
def test_each_partition_wins_where_its_measurement_says(times, winner):
    tried = [_c(nl, ms) for nl, ms in times.items()]
    assert _fewest_lists_within_noise(tried).nlist == winner


def test_a_partition_that_reaches_the_target_beats_faster_ones_that_do_not():
    tried = [_c(2048, 1.0, reached=False, coverage=0.94), _c(1024, 3.0), _c(4096, 0.5, reached=False, coverage=0.95)]
    assert _fewest_lists_within_noise(tried).nlist == 1024
    none = [_c(2048, 0, reached=False, coverage=0.90), _c(1024, 0, reached=False, coverage=0.93)]
    assert _fewest_lists_within_noise(none).nlist == 1024  # nothing reaches: the best coverage


@pytest.mark.parametrize("new, old, wins", [
    (_c(1024, 0.50, code="PQ32"), _c(1024, 1.00), True),  # 8-bit PQ, clearly faster
    (_c(1024, 0.95, code="PQ32"), _c(1024, 1.00), False),  # within noise: the default code stays
    (_c(1024, 2.00, code="PQ32"), _c(1024, 1.00, reached=False), True),  # the only one reaching the target
    (_c(1024, 0.80, rotation="opq"), _c(1024, 1.00), True),  # a learned rotation, clearly faster
    (_c(1024, 1.20, rotation="opq"), _c(1024, 1.00), False),
])
def test_a_code_or_rotation_replaces_the_default_only_when_clearly_faster(new, old, wins):
    assert _better(new, old) is wins


def test_candidates_follow_the_device_and_what_the_user_fixed():
    assert code_candidates(32, 256, "cpu", None) == ["PQ64x4fs", "PQ32"]
    assert code_candidates(32, 256, "gpu", None) == ["PQ32"]  # faiss's GPU IVF-PQ has no fast-scan
    assert code_candidates(32, 256, "cpu", True) == ["PQ64x4fs"]
    assert code_candidates(32, 256, "cpu", False) == ["PQ32"]
    assert code_candidates(48, 256, "cpu", None) == []  # neither divides the dim: the rule's error stands
    assert nlist_candidates(1_000_000, 4096) == [4096, 2048, 8192]
    assert nlist_candidates(100_000, 2048) == [2048, 1024]  # 4096 lists need more than 100k rows to train


def test_a_learned_rotation_folds_into_the_transform_and_keeps_inner_products():
    x = np.random.default_rng(0).standard_normal((500, 48)).astype(np.float32)
    t = fit_pca(x, 16)
    r = random_rotation(16, seed=7)
    rotated = t.rotated(r)
    np.testing.assert_allclose(rotated.apply(x), t.apply(x) @ r, rtol=1e-4, atol=1e-4)
    a, b = rotated.apply(x[:5]), t.apply(x[:5])
    np.testing.assert_allclose(a @ a.T, b @ b.T, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_build_measures_its_plan_stores_why_and_info_shows_it(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((64, 64)).astype(np.float32)
    x = (centres[rng.integers(0, 64, 24_000)] + 0.6 * rng.standard_normal((24_000, 64))).astype(np.float32)
    out = tmp_path / "idx"
    build(out, x, index_dim=32, pq_bytes=8, quiet=True, shard_size=10_000, tune=False)
    m = json.loads((out / "manifest.json").read_text())
    sel = m["build"]["selection"]
    tried = {(c["nlist"], c["code"], c["rotation"]) for c in sel["candidates"]}
    auto = 512  # about 4 sqrt(24,000), a power of two
    assert {(auto, "PQ16x4fs", "random"), (auto // 2, "PQ16x4fs", "random")} <= tried
    assert not any(nl == auto * 2 for nl, _, _ in tried)  # 1,024 lists need 40k rows to train
    assert any(code == "PQ8" for _, code, _ in tried) and any(rot == "opq" for _, _, rot in tried)
    assert m["factory"] == f"IVF{sel['nlist']},{sel['code']}" and sel["reason"]
    chosen = next(c for c in sel["candidates"] if (c["nlist"], c["code"], c["rotation"]) ==
                  (sel["nlist"], sel["code"], sel["rotation_kind"]))
    assert chosen["reached"] and chosen["coverage"] >= sel["target_coverage"]
    with open_index(out) as index:  # the stored plan searches: a vector finds itself
        ids = index.search_batch(x[:20], k=1, rerank=False).ids
        assert np.mean([row[0] == i for i, row in enumerate(ids)]) >= 0.95
    info = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "info", str(out)], capture_output=True,
                          text=True)
    assert info.returncode == 0, info.stderr
    assert "partition and code measured on" in info.stdout and f"IVF{auto // 2},PQ16x4fs" in info.stdout


def test_a_build_without_selection_keeps_the_rule_of_thumb(tmp_path):
    x = np.random.default_rng(4).standard_normal((24_000, 64)).astype(np.float32)
    out = tmp_path / "idx"
    build(out, x, index_dim=32, pq_bytes=8, quiet=True, select=False, tune=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["build"]["selection"] is None and m["factory"] == "IVF512,PQ16x4fs"


def test_the_recall_target_is_a_checked_build_option():
    from matryoshka.indexing import BuildOptions, InputError
    for bad in (0, 1.5, "0.9", True):
        with pytest.raises(InputError, match="target_recall"):
            BuildOptions(target_recall=bad).check()
    assert BuildOptions(target_recall=0.99).check().target_recall == 0.99


def test_sample_queries_must_show_a_fifth_fewer_misses_than_the_target():
    from matryoshka.indexing.selection import sample_target
    assert sample_target(0.95) == pytest.approx(0.96)
    assert sample_target(0.99) == pytest.approx(0.992)  # not 1.0: a margin of 0.01 would ask perfection
