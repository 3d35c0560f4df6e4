"""The `matryoshka` command, run as a user runs it: a real subprocess."""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import exact_topk, recall_at

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", *map(str, args)], capture_output=True,
                       text=True, env=ENV, timeout=600)
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


@pytest.fixture(scope="module")
def bare_index(tmp_path_factory, small_data):
    """An index of 300 vectors without texts: too few to train PQ, so the build falls back to IVF-Flat."""
    tmp = tmp_path_factory.mktemp("bare")
    np.save(tmp / "v.npy", small_data[0][:300])
    run("build", tmp / "v.npy", "--out", tmp / "idx", "--index-dim", 32, "--quiet")
    return tmp / "idx"


def write_queries(path, vectors, texts=None):
    columns = {"qid": [f"q{i}" for i in range(len(vectors))],
               "embedding": pa.array(list(vectors), pa.list_(pa.float32()))}
    pq.write_table(pa.table({**columns, **({"text": texts} if texts else {})}), path)
    return path


@pytest.mark.slow
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


@pytest.mark.slow
def test_info_verify_and_plan_size(built):
    out = run("info", built / "idx").stdout
    assert "3,000 vectors" in out and "bytes per vector" in out and "shard 00001" in out
    info = json.loads(run("info", built / "idx", "--json").stdout)
    assert info["count"] == 3000 and len(info["shards"]) == 2
    assert "OK" in run("verify", built / "idx").stdout
    plan = json.loads(run("plan-size", "--n", 10**9, "--full-dim", 1024, "--shard-size", 10**8, "--json").stdout)
    assert plan["shards"] == 10 and plan["mmap_full_f16"] == 2048 * 10**9
    assert 40 <= plan["ram_bytes_per_vector"] < 41  # PQ32 code + 8-byte id + one copy of the centroids


@pytest.mark.slow
def test_free_text_search_on_a_text_index(tmp_path):
    from matryoshka.indexing.stdlib_docs import stdlib_passages
    ids, texts = stdlib_passages(limit=120)
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "t.parquet")
    run("build", tmp_path / "t.parquet", "--out", tmp_path / "idx", "--model", "all-MiniLM-L6-v2", "--quiet")
    out = run("search", tmp_path / "idx", texts[7], "--k", 3).stdout
    assert ids[7] in out.splitlines()[0] and "first_pass=" in out and "full=" in out


@pytest.mark.slow
def test_errors_are_one_clear_line_and_exit_2(built, tmp_path, small_data):
    p = run("search", tmp_path / "nowhere", "x", check=False)
    assert p.returncode == 2 and "no index at" in p.stderr and "Traceback" not in p.stderr
    p = run("build", built / "docs.parquet", "--out", built / "idx", "--index-dim", 16, "--quiet", check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    queries = write_queries(tmp_path / "q.parquet", small_data[1][:2])
    p = run("search", built / "idx", "--queries", queries, "--reranker", "/no/such/model", check=False)
    assert p.returncode == 2 and "--no-rerank" in p.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_slice_of_the_stdlib_docs(tmp_path):
    out = run("demo", "--out", tmp_path / "demo", "--limit", 400, "--no-rerank", "--quiet").stdout
    assert "corpus: 400 docstring passages" in out
    assert out.count("query: ") == 5 and "first_pass=" in out and "full=" in out
    recall = float(out.strip().rsplit(":", 1)[1])
    assert recall >= 0.8
    again = run("demo", "--out", tmp_path / "demo", "--limit", 400, "--no-rerank").stderr
    assert "already holds this index" in again  # a second run reuses the index


def test_search_refuses_a_queries_file_that_is_missing_or_not_parquet(built):
    (built / "q.csv").write_text("qid,text\nq1,hello\n")
    for path, says in ((built / "missing.parquet", "does not exist"),
                       (built / "q.csv", "is not a readable Parquet file")):
        p = run("search", built / "idx", "--queries", path, check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"--queries {path} {says}" in p.stderr and "`qid` column" in p.stderr


@pytest.mark.slow
def test_output_into_a_closed_pipe_ends_quietly(built, small_data):
    read, write = os.pipe()
    os.close(read)  # no reader left, as after `| head` has read its fill and exited
    try:
        p = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "info", "--json", str(built / "idx")],
                           stdout=write, stderr=subprocess.PIPE, text=True, env=ENV, timeout=600)
    finally:
        os.close(write)
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr
    # More output than a pipe holds, so the writer is still writing when `head` exits.
    queries = write_queries(built / "many.parquet", small_data[1])
    command = (f"{shlex.quote(sys.executable)} -m matryoshka.retrieval.cli search {shlex.quote(str(built / 'idx'))} "
               f"--queries {shlex.quote(str(queries))} --k 50 | head -c 10")
    p = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=ENV, timeout=600)
    assert len(p.stdout) == 10 and "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr, p.stderr


@pytest.mark.slow
def test_search_says_why_the_cross_encoder_stage_did_not_run(built, bare_index, small_data, tiny_cross_encoder):
    queries = small_data[1][:2]
    vectors = write_queries(built / "vectors.parquet", queries)
    with_texts = write_queries(built / "with-texts.parquet", queries, texts=["first query", "second query"])

    def note(index, *args):
        p = run("search", index, "--k", 3, *args)
        return [line for line in p.stderr.splitlines() if line.startswith("note: cross-encoder stage off")], p.stdout

    off = "note: cross-encoder stage off: "
    assert note(built / "idx", "--queries", with_texts)[0] == [off + "no --reranker given"]
    assert note(built / "idx", "--queries", with_texts, "--reranker", tiny_cross_encoder, "--no-rerank")[0] == [
        off + "--no-rerank"]
    assert note(built / "idx", "--queries", vectors, "--reranker", tiny_cross_encoder)[0] == [
        off + "the queries are vectors without texts"]
    assert note(bare_index, "--queries", with_texts, "--reranker", tiny_cross_encoder)[0] == [
        off + "the index stores no texts"]
    notes, out = note(built / "idx", "--queries", with_texts, "--reranker", tiny_cross_encoder)
    assert notes == [] and "rerank=" in out


@pytest.mark.slow
def test_plan_size_refuses_an_empty_corpus_and_predicts_the_build(bare_index):
    for args in (("--n", 0, "--full-dim", 96), ("--n", 10, "--full-dim", 0),
                 ("--n", 10, "--full-dim", 96, "--index-dim", -8)):
        p = run("plan-size", *args, check=False)
        assert p.returncode == 2 and "at least 1" in p.stderr and "Traceback" not in p.stderr, p.stderr
    plan = json.loads(run("plan-size", "--n", 300, "--full-dim", 96, "--index-dim", 32, "--json").stdout)
    built = json.loads(run("info", bare_index, "--json").stdout)
    assert plan["factory"] == built["factory"] and plan["factory"].endswith(",Flat")
    assert plan["train_size"] == built["build"]["train_rows"]  # the sample the build took, in the peak RAM
    small = json.loads(run("plan-size", "--n", 300, "--full-dim", 96, "--index-dim", 32, "--train-size", 50,
                           "--json").stdout)
    assert small["train_size"] == 50 and small["build_peak_ram"] < plan["build_peak_ram"]
    assert "too few to train" in plan["notes"][0]
    out = run("plan-size", "--n", 300, "--full-dim", 96, "--index-dim", 32).stdout
    assert "note: 300 vectors are too few" in out
