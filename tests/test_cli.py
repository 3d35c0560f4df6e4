"""The `matryoshka` command, run as a user runs it: a real subprocess."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import exact_topk, recall_at


def run(*args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "retrieval.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_data):
    docs, queries = small_data
    tmp = tmp_path_factory.mktemp("cli")
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(len(docs))],
                             "embedding": pa.array(list(docs), pa.list_(pa.float32())),
                             "text": [f"passage {i}" for i in range(len(docs))]}), tmp / "docs.parquet")
    run("build", tmp / "docs.parquet", "--out", tmp / "idx", "--index-dim", 32, "--pq-bytes", 8, "--fast-scan",
        "--shard-size", 1500, "--quiet")
    return tmp


def test_search_with_a_queries_file_writes_ranked_results(built, small_data):
    docs, queries = small_data
    pq.write_table(pa.table({"qid": [f"q{i}" for i in range(len(queries))],
                             "embedding": pa.array(list(queries), pa.list_(pa.float32()))}), built / "q.parquet")
    run("search", built / "idx", "--queries", built / "q.parquet", "--k", 10, "--output", built / "r.parquet")
    r = pq.read_table(built / "r.parquet")
    assert {"qid", "rank", "id", "score", "score_first_pass", "score_int8", "score_full"} <= set(r.column_names)
    assert r.num_rows == 10 * len(queries)
    rows = np.array([int(i[1:]) for i in r.column("id").to_pylist()]).reshape(len(queries), 10)
    assert r.column("rank").to_pylist()[:10] == list(range(1, 11))
    assert recall_at(rows, exact_topk(docs, queries, 10)) >= 0.95


def test_info_verify_and_plan_size(built):
    out = run("info", built / "idx").stdout
    assert "3,000 vectors" in out and "bytes per vector" in out and "shard 00001" in out
    info = json.loads(run("info", built / "idx", "--json").stdout)
    assert info["count"] == 3000 and len(info["shards"]) == 2
    assert "OK" in run("verify", built / "idx").stdout
    plan = json.loads(run("plan-size", "--n", 10**9, "--full-dim", 1024, "--shard-size", 10**8, "--json").stdout)
    assert plan["shards"] == 10 and plan["mmap_full_f16"] == 2048 * 10**9
    assert 40 <= plan["ram_bytes_per_vector"] < 41  # PQ32 code + 8-byte id + one copy of the centroids


def test_free_text_search_on_a_text_index(tmp_path):
    from indexing.stdlib_docs import stdlib_passages
    ids, texts = stdlib_passages(limit=120)
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "t.parquet")
    run("build", tmp_path / "t.parquet", "--out", tmp_path / "idx", "--model", "all-MiniLM-L6-v2", "--quiet")
    out = run("search", tmp_path / "idx", texts[7], "--k", 3).stdout
    assert ids[7] in out.splitlines()[0] and "first_pass=" in out and "full=" in out


def test_errors_are_one_clear_line_and_exit_2(built, tmp_path):
    p = run("search", tmp_path / "nowhere", "x", check=False)
    assert p.returncode == 2 and "no index at" in p.stderr and "Traceback" not in p.stderr
    p = run("build", built / "docs.parquet", "--out", built / "idx", "--index-dim", 16, "--quiet", check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    p = run("search", built / "idx", "--queries", built / "docs.parquet", "--reranker", "/no/such/model",
            check=False)
    assert p.returncode == 2 and "--no-rerank" in p.stderr


def test_demo_runs_end_to_end_on_a_slice_of_the_stdlib_docs(tmp_path):
    out = run("demo", "--out", tmp_path / "demo", "--limit", 700, "--no-rerank", "--quiet").stdout
    assert "corpus: 700 docstring passages" in out
    assert out.count("query: ") == 5 and "first_pass=" in out and "full=" in out
    recall = float(out.strip().rsplit(":", 1)[1])
    assert recall >= 0.8
    again = run("demo", "--out", tmp_path / "demo", "--limit", 700, "--no-rerank").stderr
    assert "already holds this index" in again  # a second run reuses the index
