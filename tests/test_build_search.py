import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FIXED, exact_topk, recall_at

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.benchmarks.synthetic import Synthetic
from matryoshka.core import layout
from matryoshka.core.errors import InputError


def test_layout_on_disk_is_self_describing(small_index):
    m = json.loads((small_index / layout.MANIFEST).read_text())
    assert m["format_version"] == layout.FORMAT_VERSION
    assert m["metric"] == "cosine" and m["full_dim"] == 96 and m["index_dim"] == 32
    assert [s["count"] for s in m["shards"]] == [1000, 1000, 1000]
    assert [s["id_start"] for s in m["shards"]] == [0, 1000, 2000]
    for s in m["shards"]:
        folder = small_index / layout.SHARDS / layout.shard_name(s["number"])
        for name in (layout.INDEX_FILE, layout.IDS_FILE, layout.SHORT_FILE, layout.FULL_FILE, layout.DOC_OFFSETS,
                     layout.DOC_BYTES):
            assert name in s["files"] and (folder / name).stat().st_size == s["files"][name]["bytes"]
        short = np.load(folder / layout.SHORT_FILE, mmap_mode="r")
        full = np.load(folder / layout.FULL_FILE, mmap_mode="r")
        assert short.dtype == np.int8 and short.shape == (1000, 32)
        assert full.dtype == np.float16 and full.shape == (1000, 96)
        assert pq.read_table(folder / layout.IDS_FILE).column("id").type == pa.string()
    assert not (small_index / layout.BUILD_DIR).exists()
    log = json.loads((small_index / layout.BUILD_LOG).read_text())  # timings: a log beside the index, not in it
    assert log["seconds"]["train"] > 0 and log["vectors_per_second"] > 0 and "seconds" not in m["build"]


def test_full_store_holds_the_normalized_vectors(small_index, small_data):
    docs, _ = small_data
    full = np.load(small_index / "shards/00001" / layout.FULL_FILE)
    expect = docs[1000:2000] / np.linalg.norm(docs[1000:2000], axis=1, keepdims=True)
    np.testing.assert_allclose(full.astype(np.float32), expect, atol=2e-3)


def test_search_batch_returns_ids_texts_and_every_stage_score(small_index, small_data):
    docs, queries = small_data
    index = retrieval.open_index(small_index)
    r = index.search_batch(queries, k=10)
    assert r.rows.shape == (50, 10) and set(r.stage_scores) == {"first_pass", "int8", "full"}
    assert recall_at(r.rows, exact_topk(docs, queries, 10)) >= 0.95
    hit = r.hits(0)[0]
    assert hit.id == f"doc-{hit.row}" and hit.text == f"text of document {hit.row}"
    assert hit.score == hit.scores["full"]
    # the final order is the full-dim order, and full-dim scores are exact cosines (up to float16)
    assert np.all(np.diff(r.scores, axis=1) <= 1e-6)
    qn = queries[0] / np.linalg.norm(queries[0])
    dn = docs[hit.row] / np.linalg.norm(docs[hit.row])
    assert abs(hit.score - float(qn @ dn)) < 2e-3


def test_single_query_and_stage_switches(small_index, small_data):
    _, queries = small_data
    index = retrieval.open_index(small_index)
    hits = index.search(queries[3], k=5)
    assert len(hits) == 5 and [h.row for h in hits] == list(index.search_batch(queries[3:4], k=5).rows[0])
    only_first = index.search_batch(queries, k=10, int8=False, full=False)
    assert set(only_first.stage_scores) == {"first_pass"}
    no_int8 = index.search_batch(queries, k=10, int8=False)
    assert set(no_int8.stage_scores) == {"first_pass", "full"}
    tier = index.search_batch(queries, k=10, full_dims=48)
    assert tier.rows.shape == (50, 10)


def test_k_larger_than_the_corpus_returns_every_document_once(tmp_path):
    docs = Synthetic(dim=16, clusters=4, seed=2).documents(30)
    indexing.build(tmp_path / "i", docs, index_dim=16, quiet=True)
    r = retrieval.open_index(tmp_path / "i").search_batch(docs[:2], k=100)
    for i in range(2):
        hits = r.hits(i)
        assert sorted(h.row for h in hits) == list(range(30))
    assert r.to_table().num_rows == 60


def test_shard_size_does_not_change_results(tmp_path, small_data):
    docs, queries = small_data
    indexing.build(tmp_path / "one", docs, index_dim=32, pq_bytes=8, fast_scan=True, shard_size=10_000, quiet=True)
    a = retrieval.open_index(tmp_path / "one").search_batch(queries, k=10, **FIXED)
    indexing.build(tmp_path / "many", docs, index_dim=32, pq_bytes=8, fast_scan=True, shard_size=700, quiet=True)
    b = retrieval.open_index(tmp_path / "many").search_batch(queries, k=10, **FIXED)
    assert len(json.loads((tmp_path / "many" / layout.MANIFEST).read_text())["shards"]) == 5
    np.testing.assert_array_equal(a.rows, b.rows)


def test_twelve_shards_give_the_results_of_one(tmp_path, small_data):
    """The first pass scans one IVF holding every shard's codes: 12 shards answer exactly as one."""
    docs, queries = small_data
    opts = dict(index_dim=32, pq_bytes=8, fast_scan=True, quiet=True, select=False, tune=False)
    one = retrieval.open_index(indexing.build(tmp_path / "one", docs, shard_size=10_000, **opts))
    many = retrieval.open_index(indexing.build(tmp_path / "many", docs, shard_size=250, **opts))
    assert len(many.backend.shards) == 12
    for setting in (FIXED, dict(nprobe=64, k1=1000, k2=200)):
        a, b = one.search_batch(queries, k=10, **setting), many.search_batch(queries, k=10, **setting)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.stage_scores["first_pass"], b.stage_scores["first_pass"])


@pytest.mark.parametrize("fixed", [False, True])
def test_build_from_parquet_files_with_list_or_fixed_size_list(tmp_path, small_data, fixed):
    docs, queries = small_data
    folder = tmp_path / "in"
    folder.mkdir()
    for part, lo in enumerate(range(0, 3000, 1200)):
        chunk = docs[lo:lo + 1200]
        emb = pa.FixedSizeListArray.from_arrays(pa.array(chunk.ravel()), 96) if fixed else \
            pa.array(list(chunk), pa.list_(pa.float32()))
        pq.write_table(pa.table({"id": np.arange(lo, lo + len(chunk)) * 7, "embedding": emb,
                                 "text": [f"t{i}" for i in range(lo, lo + len(chunk))]}), folder / f"p{part}.parquet")
    indexing.build(tmp_path / "idx", folder, index_dim=32, pq_bytes=8, fast_scan=True, batch_rows=500, quiet=True)
    index = retrieval.open_index(tmp_path / "idx")
    r = index.search_batch(queries, k=10)
    truth = exact_topk(docs, queries, 10)
    assert recall_at(r.rows, truth) >= 0.95
    assert r.ids[0][0] == int(r.rows[0, 0]) * 7 and r.texts[0][0] == f"t{r.rows[0, 0]}"


def test_build_from_npy_with_ids_file_and_from_an_iterator(tmp_path, small_data):
    docs, queries = small_data
    np.save(tmp_path / "v.npy", docs)
    np.save(tmp_path / "ids.npy", np.arange(3000) + 10**12)
    indexing.build(tmp_path / "a", str(tmp_path / "v.npy"), ids=str(tmp_path / "ids.npy"), index_dim=32,
                   pq_bytes=8, fast_scan=True, quiet=True)
    batches = ((np.arange(lo, lo + 600) + 10**12, docs[lo:lo + 600]) for lo in range(0, 3000, 600))
    indexing.build(tmp_path / "b", batches, index_dim=32, pq_bytes=8, fast_scan=True, quiet=True)
    ra = retrieval.open_index(tmp_path / "a").search_batch(queries, k=5)
    rb = retrieval.open_index(tmp_path / "b").search_batch(queries, k=5)
    assert ra.ids[0][0] >= 10**12
    assert recall_at(ra.rows, exact_topk(docs, queries, 5)) >= 0.9
    assert recall_at(rb.rows, exact_topk(docs, queries, 5)) >= 0.9


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_other_metrics_match_exact_search(tmp_path, small_data, metric):
    docs, queries = small_data
    indexing.build(tmp_path / metric, docs, metric=metric, index_dim=32, pq_bytes=8, fast_scan=True, quiet=True)
    r = retrieval.open_index(tmp_path / metric).search_batch(queries, k=10)
    assert recall_at(r.rows, exact_topk(docs, queries, 10, metric)) >= 0.9
    if metric == "l2":
        d = docs[r.rows[0, 0]] - queries[0]
        assert abs(r.scores[0, 0] + float(d @ d)) < 0.05 * float(d @ d) + 1e-3


def test_info_reports_bytes_per_vector(small_index):
    info = retrieval.open_index(small_index).info()
    assert info["count"] == 3000
    assert info["mmap_bytes_per_vector"] == 32 + 96 * 2
    assert 8 + 8 <= info["ram_bytes_per_vector"] < 100
    assert info["disk_bytes_per_vector"] > info["mmap_bytes_per_vector"]


def test_unknown_build_option_is_refused(tmp_path, small_data):
    with pytest.raises(InputError, match="unknown build option"):
        indexing.build(tmp_path / "x", small_data[0], pq_byte=8)


def test_shards_share_one_quantizer_and_hold_no_l2_precomputed_tables(tmp_path):
    """Every shard file carries the centroids, and faiss would give every L2 IVF-PQ shard its own
    nlist x M x 256 precomputed table: opened, the shards' codes sit in one IVF that points at the one
    quantizer and holds no table, and the shards keep no codes of their own."""
    import faiss

    from matryoshka.benchmarks.synthetic import Synthetic
    syn = Synthetic(dim=64, clusters=64, seed=3)
    docs, queries = syn.documents(12000), syn.queries(30)
    indexing.build(tmp_path / "l2", docs, metric="l2", index_dim=32, pq_bytes=8, shard_size=4000, quiet=True)
    index = retrieval.open_index(tmp_path / "l2")
    shared = index.backend.first.quantizer
    ivf = faiss.downcast_index(index.backend.first.index)
    assert int(ivf.quantizer.this) == int(shared.this) and not ivf.own_fields
    assert ivf.precomputed_table.size() == 0 and ivf.ntotal == 12000
    assert all(shard.index is None for shard in index.backend.shards)
    assert len(index.backend.shards) == 3
    r = index.search_batch(queries, k=10)
    assert recall_at(r.rows, exact_topk(docs, queries, 10, "l2")) >= 0.9


def test_row_number_ids_hold_no_id_map_in_ram(tmp_path, small_data):
    docs, queries = small_data
    index = retrieval.open_index(indexing.build(tmp_path / "rows", docs, index_dim=32, pq_bytes=8, shard_size=1000,
                                                quiet=True))
    assert all(s.ids is None for s in index.backend.shards)
    r = index.search_batch(queries, k=5)
    assert r.ids == r.rows.tolist()
    shifted = retrieval.open_index(indexing.build(tmp_path / "shifted", docs, ids=np.arange(len(docs)) + 1,
                                                  index_dim=32, pq_bytes=8, shard_size=1000, quiet=True))
    assert all(s.ids is not None for s in shifted.backend.shards)
    # the same setting on both (each build measured its own default, a timing that may differ)
    assert shifted.search_batch(queries, k=5, params=index.params).ids == (r.rows + 1).tolist()
    assert shifted.info()["ram_bytes_per_vector"] == pytest.approx(index.info()["ram_bytes_per_vector"] + 8)


def test_an_iterator_of_unknown_size_is_planned_for_the_size_it_is_given(tmp_path):
    """Planned from its first rows, an iterator of 30,000 gets the partition of 4,000 (and a note saying so);
    with expected_count= it gets the plan an array of 30,000 gets."""
    import json
    from matryoshka.benchmarks.synthetic import Synthetic
    docs = Synthetic(dim=96, clusters=64, seed=1).documents(30000)

    def stream():
        return ((None, docs[lo:lo + 5000]) for lo in range(0, 30000, 5000))
    plans = {}
    opts = dict(index_dim=32, pq_bytes=8, fast_scan=True, quiet=True, tune=False, select=False)
    for name, data, extra in (("array", docs, {}), ("unknown", stream(), dict(train_size=4000)),
                              ("hinted", stream(), dict(expected_count=30000))):
        m = json.loads((indexing.build(tmp_path / name, data, **opts, **extra) / "manifest.json").read_text())
        plans[name] = (m["factory"], m["build"]["notes"])
    assert plans["hinted"] == plans["array"] and plans["array"][0].startswith("IVF512,")
    assert plans["unknown"][0].startswith("IVF64,") and "give expected_count=" in plans["unknown"][1][-1]
