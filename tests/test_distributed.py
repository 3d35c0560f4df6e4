"""Build and search on a local Ray cluster: the same index and the same results as a single machine, and faults."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXED, assert_each_is_one_of, search_while_swapping, two_indexes_one_path

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import InputError

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a local Ray cluster starts, and each test waits on its actors

OPTS = dict(index_dim=32, pq_bytes=8, fast_scan=True, shard_size=1000, batch_rows=250, quiet=True)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, small_data):
    docs, queries = small_data
    tmp = tmp_path_factory.mktemp("dist")
    np.save(tmp / "v.npy", docs)
    ids = [f"doc-{i}" for i in range(len(docs))]
    emb = pa.FixedSizeListArray.from_arrays(pa.array(docs.astype(np.float32).ravel()), docs.shape[1])
    table = pa.table({"id": ids, "embedding": emb, "text": [f"text of document {i}" for i in range(len(docs))]})
    (tmp / "pq").mkdir()
    pq.write_table(table.slice(0, 1700), tmp / "pq" / "a.parquet", row_group_size=300)
    pq.write_table(table.slice(1700), tmp / "pq" / "b.parquet", row_group_size=300)
    indexing.build(tmp / "local-npy", tmp / "v.npy", **OPTS)
    indexing.build(tmp / "local-pq", tmp / "pq", **OPTS)
    return tmp, queries


def assert_same(a, b):
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.scores, b.scores)
    for s in a.stage_scores:
        np.testing.assert_array_equal(a.stage_scores[s], b.stage_scores[s])
    assert a.ids == b.ids and a.texts == b.texts


@pytest.mark.parametrize("kind", ["npy", "pq"])
def test_distributed_build_equals_a_single_machine_build(cluster, inputs, kind):
    tmp, queries = inputs
    src = tmp / ("v.npy" if kind == "npy" else "pq")
    out = indexing.build(tmp / f"ray-{kind}", src, ray="auto", **OPTS)
    m = json.loads((out / layout.MANIFEST).read_text())
    assert m["build"]["engine"] == "ray" and [s["count"] for s in m["shards"]] == [1000, 1000, 1000]
    ref = json.loads((tmp / f"local-{kind}" / layout.MANIFEST).read_text())
    for a, b in zip(m["shards"], ref["shards"]):
        assert a["files"] == b["files"]  # byte-identical shards
    got = retrieval.open_index(out).search_batch(queries, k=10, **FIXED)
    assert_same(got, retrieval.open_index(tmp / f"local-{kind}").search_batch(queries, k=10, **FIXED))


def test_distributed_build_refuses_duplicate_ids_across_shards(cluster, inputs):
    tmp, _ = inputs
    ids = np.arange(3000)
    ids[2500] = 17  # shard 2 repeats an id of shard 0: no single task can see it
    np.save(tmp / "dup-ids.npy", ids)
    with pytest.raises(InputError, match="duplicate id 17 at rows 17 and 2500"):
        indexing.build(tmp / "ray-dup", tmp / "v.npy", ids=str(tmp / "dup-ids.npy"), ray="auto", **OPTS)
    assert not (tmp / "ray-dup" / layout.MANIFEST).exists()


@pytest.fixture(scope="module")
def ray_index(cluster, inputs):
    tmp, _ = inputs
    index = retrieval.open_index(tmp / "local-pq", ray="auto", workers=2, worker_cpus=0.25, timeout_s=60)
    yield index
    index.close()


@pytest.mark.parametrize("settings", [dict(k=10), dict(k=5, nprobe=4, k1=50, k2=20),
                                      dict(k=10, int8=False), dict(k=10, full=False), dict(k=10, full_dims=48)])
def test_distributed_search_equals_single_process_search(ray_index, inputs, settings):
    tmp, queries = inputs
    assert [len(s) for s in ray_index.backend.worker_shards] == [2, 1]
    local = retrieval.open_index(tmp / "local-pq")
    assert_same(ray_index.search_batch(queries, **settings), local.search_batch(queries, **settings))


def test_a_killed_worker_is_restarted_and_answers_correctly(ray_index, inputs):
    tmp, queries = inputs
    expect = retrieval.open_index(tmp / "local-pq").search_batch(queries, k=10)
    before = list(ray_index.backend.pids)
    ray.kill(ray_index.backend.workers[0], no_restart=False)
    got = ray_index.search_batch(queries, k=10)  # retried on the restarted actor
    assert_same(got, expect)
    assert not got.partial
    assert ray.get(ray_index.backend.workers[0].ready.remote()) != before[0]  # a new process reloaded its shards


def test_a_lost_worker_fails_the_search_or_gives_results_marked_partial(cluster, inputs):
    from matryoshka.retrieval import ShardsUnavailable
    tmp, queries = inputs
    index = retrieval.open_index(tmp / "local-pq", ray="auto", workers=3, worker_cpus=0.1, max_restarts=0,
                                   timeout_s=30)
    try:
        ray.kill(index.backend.workers[1], no_restart=True)
        with pytest.raises(ShardsUnavailable, match=r"shard\(s\) \[1\] died.*allow_partial=True"):
            index.search_batch(queries, k=10)
        index.backend.allow_partial = True
        r = index.search_batch(queries, k=10)
        assert r.partial and r.missing_shards == [1]
        valid = r.rows[r.rows >= 0]
        assert len(valid) and not ((valid >= 1000) & (valid < 2000)).any()
    finally:
        index.close()


def test_an_error_in_a_shard_task_is_raised_as_itself(cluster, inputs):
    tmp, _ = inputs
    bad = np.load(tmp / "v.npy")
    bad[1500, 3] = np.nan
    np.save(tmp / "bad.npy", bad)
    with pytest.raises(InputError, match="row 1500"):
        indexing.build(tmp / "ray-bad", tmp / "bad.npy", ray="auto", **OPTS)


def test_cli_builds_and_searches_with_ray(cluster, inputs, capsys):
    from matryoshka.retrieval.cli import main
    tmp, queries = inputs
    emb = pa.FixedSizeListArray.from_arrays(pa.array(queries[:3].astype(np.float32).ravel()), queries.shape[1])
    pq.write_table(pa.table({"qid": ["a", "b", "c"], "embedding": emb}), tmp / "q.parquet")
    assert main(["build", str(tmp / "v.npy"), "--out", str(tmp / "cli-ray"), "--index-dim", "32", "--pq-bytes", "8",
                 "--fast-scan", "--shard-size", "1000", "--quiet", "--ray", "auto"]) == 0
    assert main(["search", str(tmp / "cli-ray"), "--queries", str(tmp / "q.parquet"), "--output",
                 str(tmp / "hits.parquet"), "--ray", "auto", "--ray-workers", "1", "--nprobe", "16", "--k1", "200",
                 "--k2", "50"]) == 0
    hits = pq.read_table(tmp / "hits.parquet")
    local = retrieval.open_index(tmp / "local-npy").search_batch(queries[:3], k=10, **FIXED)
    assert hits.column("id").to_pylist() == [i for row in local.ids for i in row]


def test_texts_are_encoded_by_ray_data_into_the_index_a_single_machine_builds(cluster, tmp_path):
    """A Parquet folder of texts without ids or embeddings: Ray Data encodes it on an actor pool (the packaged
    MiniLM in every actor); the index holds the same rows, ids and vectors as a single-machine build."""
    from matryoshka.indexing.stdlib_docs import stdlib_passages
    from matryoshka.core.encoder import DEFAULT_MODEL
    _, texts = stdlib_passages(limit=300)
    (tmp_path / "texts").mkdir()
    pq.write_table(pa.table({"text": texts[:170]}), tmp_path / "texts" / "a.parquet")
    pq.write_table(pa.table({"text": texts[170:]}), tmp_path / "texts" / "b.parquet")
    opts = dict(index_dim=64, pq_bytes=8, shard_size=120, quiet=True, select=False, tune=False)
    local = retrieval.open_index(indexing.build(tmp_path / "local", tmp_path / "texts", model=DEFAULT_MODEL, **opts))
    dist = retrieval.open_index(indexing.build(tmp_path / "ray", tmp_path / "texts", model=DEFAULT_MODEL,
                                               ray="auto", **opts))
    assert dist.manifest.build["engine"] == "ray" and dist.count == local.count == 300
    assert not (tmp_path / ".ray.encoded").exists()  # the encoding spool is removed once the index is complete
    for a, b in zip(dist.backend.shards, local.backend.shards):
        np.testing.assert_array_equal(a.ids, b.ids)  # row numbers, in input order
        # batches are padded differently in the actors, so vectors agree to float16 precision, not bitwise
        np.testing.assert_allclose(np.asarray(a.full, np.float32), np.asarray(b.full, np.float32), atol=2e-3)
        assert a.texts(np.arange(3)) == b.texts(np.arange(3))
    queries = ["read a file line by line", "parse command line arguments", "compress data with zlib"]
    got, want = dist.search_batch(queries, k=5, **FIXED), local.search_batch(queries, k=5, **FIXED)
    assert got.ids == want.ids


def test_an_add_on_ray_equals_a_local_add_and_workers_reload_it(cluster, inputs, tmp_path, small_data):
    import shutil
    tmp, queries = inputs
    docs, _ = small_data
    np.save(tmp_path / "more.npy", docs[:1500] + 0.05 * np.random.default_rng(3).standard_normal((1500, 96)))
    for name in ("local", "ray"):
        shutil.copytree(tmp / "local-npy", tmp_path / name)
    indexing.add(tmp_path / "local", tmp_path / "more.npy", quiet=True)
    index = retrieval.open_index(tmp_path / "ray", ray="auto", workers=2, worker_cpus=0.1)  # a CPU left for the add
    before = index.search_batch(queries, k=10, **FIXED)
    rec = indexing.add(tmp_path / "ray", tmp_path / "more.npy", ray="auto", quiet=True)
    assert rec["engine"] == "ray" and rec["added"] == 1500
    local = json.loads((tmp_path / "local" / layout.MANIFEST).read_text())
    remote = json.loads((tmp_path / "ray" / layout.MANIFEST).read_text())
    assert local["shards"] == remote["shards"]  # the same files, byte for byte
    assert_same(index.search_batch(queries, k=10, **FIXED), before)  # until told, workers keep generation 1
    assert index.reload()
    assert index.live == 4500
    assert_same(index.search_batch(queries, k=10, **FIXED),
                retrieval.open_index(tmp_path / "local").search_batch(queries, k=10, **FIXED))
    index.close()


def test_filtered_search_on_ray_equals_a_single_process(cluster, inputs, tmp_path):
    from matryoshka.retrieval.plan import Rules
    tmp, queries = inputs
    n = 3000
    attrs = {"bucket": np.arange(n) % 100, "lang": np.where(np.arange(n) % 2 == 0, "en", "de")}
    out = indexing.build(tmp_path / "attrs", tmp / "v.npy", attributes=attrs, **OPTS)
    wheres = ["bucket < 50", "bucket < 5 AND lang = 'en'", "bucket = 7", None] * (len(queries) // 4)
    q = queries[:len(wheres)]
    for rules in (Rules(exact_filter_work=0, exact_filter_scan_ratio=0), Rules()):  # first pass, exhaustive path
        local = retrieval.open_index(out, rules=rules).search_batch(q, k=10, where=wheres, **FIXED)
        with retrieval.open_index(out, ray="auto", workers=2, worker_cpus=0.1) as index:
            got = index.search_batch(q, k=10, where=wheres, rules=rules, **FIXED)
            assert_same(got, local)
    with retrieval.open_index(out, ray="auto", workers=2, worker_cpus=0.1) as index:  # documents read back by id
        got, want = index.get([2999, 5, 123456, 1500], vectors=True), retrieval.open_index(out).get([2999, 5, 1500],
                                                                                                   vectors=True)
        assert [(r.id, r.row, r.attributes) for r in got] == [(2999, 2999, {"bucket": 99, "lang": "de"}),
                                                               (5, 5, {"bucket": 5, "lang": "de"}),
                                                               (1500, 1500, {"bucket": 0, "lang": "en"})]
        np.testing.assert_array_equal(np.stack([r.vector for r in got]), np.stack([r.vector for r in want]))


def test_searches_on_ray_during_reloads_each_see_one_generation_whole(cluster, tmp_path, small_data):
    """As the local test in test_concurrency: Ray workers open the next index beside the one they answer from,
    and switch only between searches, so no search answers partly from one and partly from the other."""
    x, queries = small_data
    live, spare = two_indexes_one_path(tmp_path, x, **OPTS)
    setting = dict(k=10, **FIXED)
    expected = [retrieval.open_index(d).search_batch(queries, **setting) for d in (live, spare)]
    assert expected[0].ids != expected[1].ids
    index = retrieval.open_index(live, ray="auto", workers=2, worker_cpus=0.1)
    try:
        results = search_while_swapping(index, live, spare, queries, setting, swaps=8, threads=2)
    finally:
        index.close()
    assert len(results) > 8
    assert_each_is_one_of(results, expected)


def test_lexical_and_hybrid_search_on_ray_equal_a_single_process(cluster, inputs, tmp_path, small_data):
    """The shard workers carry the lexical indexes: BM25 and fused results as in one process, filters applied."""
    docs, queries = small_data
    words = ["apple", "river", "stone", "cloud", "violin", "harbor"]
    texts = [f"{words[i % 6]} {words[(i // 6) % 6]} document {i}" for i in range(len(docs))]
    out = indexing.build(tmp_path / "lex", docs, ids=[f"d{i}" for i in range(len(docs))], texts=texts, lexical=True,
                         attributes={"bucket": np.arange(len(docs)) % 10}, **OPTS)
    q, qt = queries[:6], ["violin harbor", "apple", "stone cloud", "river", "document 7", "harbor apple"]
    local = retrieval.open_index(out)
    with retrieval.open_index(out, ray="auto", workers=2, worker_cpus=0.1) as index:
        for opts in (dict(mode="lexical"), dict(mode="hybrid"), dict(mode="hybrid", where="bucket < 3")):
            assert_same(index.search_batch(q, k=10, query_texts=qt, **FIXED, **opts),
                        local.search_batch(q, k=10, query_texts=qt, **FIXED, **opts))
