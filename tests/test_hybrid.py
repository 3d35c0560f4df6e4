"""Hybrid retrieval: a BM25 index per shard (tantivy), mode lexical / hybrid, fused with the dense cascade; kept
by add, delete and compaction, under filters, checksummed like every shard file."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from matryoshka import indexing, retrieval
from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.rerank.fusion import fuse, union

pytest.importorskip("tantivy")

WORDS = ["apple", "river", "stone", "cloud", "forest", "engine", "violin", "harbor", "desert", "lantern"]
N, DIM = 1200, 32


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, 4)) for _ in range(N)]
    texts[777] = "the zymurgy handbook"  # one document holds a rare word
    return rng.standard_normal((N, DIM)).astype(np.float32), texts


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus):
    x, texts = corpus
    return indexing.build(tmp_path_factory.mktemp("hybrid") / "idx", x, ids=[f"d{i}" for i in range(N)], texts=texts,
                          lexical=True, attributes={"even": np.arange(N) % 2 == 0}, shard_size=500, quiet=True)


@pytest.fixture()
def index(tmp_path, built):
    """A copy of the three-shard index to change."""
    return Path(shutil.copytree(built, tmp_path / "idx"))


def test_lexical_finds_the_rare_word_that_dense_misses_and_hybrid_keeps_it(index, corpus):
    x, _ = corpus
    handle = retrieval.open_index(index)
    q = x[5:6]  # a query vector nowhere near d777, with the rare word in its text
    dense = handle.search_batch(q, k=10, query_texts=["zymurgy"]).ids[0]
    lexical = handle.search_batch(["zymurgy"], k=10, mode="lexical")
    hybrid = handle.search_batch(q, k=10, query_texts=["zymurgy"], mode="hybrid", fusion="rrf", lexical_weight=1)
    assert "d777" not in dense and [i for i in lexical.ids[0] if i] == ["d777"]
    assert set(hybrid.ids[0][:2]) == {"d5", "d777"}  # the dense best and the lexical one lead the fused list
    assert set(hybrid.stage_scores) == {"first_pass", "lexical", "int8", "full", "hybrid"}
    assert np.array_equal(hybrid.scores, hybrid.stage_scores["hybrid"])
    weighted = handle.search_batch(q, k=10, query_texts=["zymurgy"], mode="hybrid")  # the default fusion
    assert weighted.ids[0][0] == "d5" and "d777" not in weighted.ids[0]  # weight 0.5: a near-zero dense score loses
    assert "d777" in handle.search_batch(q, k=10, query_texts=["zymurgy"], mode="hybrid", lexical_weight=2).ids[0]
    # the text of a query that matches many documents: every BM25 hit holds one of its words
    many = handle.search_batch(["violin harbor"], k=20, mode="lexical").hits(0)
    assert len(many) == 20 and all({"violin", "harbor"} & set(h.text.split()) for h in many)
    assert [h.score for h in many] == sorted((h.score for h in many), reverse=True)


def test_filters_deletes_adds_and_compaction_apply_to_the_lexical_pass(index, corpus):
    x, texts = corpus
    handle = retrieval.open_index(index)
    got = handle.search_batch(["violin"], k=50, mode="lexical", where="even").hits(0)
    assert got and all(int(h.id[1:]) % 2 == 0 for h in got)
    hyb = handle.search_batch(x[:3], k=10, query_texts=["violin"] * 3, mode="hybrid", where="NOT even")
    assert all(int(i[1:]) % 2 == 1 for row in hyb.ids for i in row if i)
    indexing.delete(index, ["d777"], quiet=True)
    handle.reload()
    assert handle.search_batch(["zymurgy"], k=5, mode="lexical").hits(0) == []
    indexing.add(index, x[:2], ids=["n1", "n2"], texts=["zymurgy again", "nothing"], attributes={"even": [True, False]},
                 quiet=True)
    handle.reload()
    assert [h.id for h in handle.search_batch(["zymurgy"], k=5, mode="lexical").hits(0)] == ["n1"]
    indexing.delete(index, [f"d{i}" for i in range(0, 400)], quiet=True)
    indexing.compact(index, min_dead=0.1, quiet=True)
    handle.reload()
    assert [h.id for h in handle.search_batch(["zymurgy"], k=5, mode="lexical").hits(0)] == ["n1"]
    assert all(int(h.id[1:]) >= 400 for h in handle.search_batch(["violin"], k=50, mode="lexical").hits(0)
               if h.id.startswith("d"))


def test_the_plan_shows_both_passes_and_bad_uses_are_refused_by_name(index, corpus, tmp_path):
    x, texts = corpus
    handle = retrieval.open_index(index)
    text = handle.explain(["q"], mode="hybrid").explain()
    assert "lexical    keep 100" in text and "kept by weighted fusion" in text and "weight 0.5" in text
    assert "fuse" in handle.explain(["q"], mode="hybrid", int8=False, full=False).explain()
    first_only = handle.search_batch(x[5:6], k=10, query_texts=["zymurgy"], mode="hybrid", int8=False, full=False,
                                     fusion="rrf", lexical_weight=1.0)
    assert set(first_only.ids[0][:2]) == {"d5", "d777"} and list(first_only.stage_scores)[-1] == "hybrid"
    with pytest.raises(InputError, match="mode='hybrid' searches the texts"):
        handle.search_batch(x[:2], k=5, mode="hybrid")
    with pytest.raises(InputError, match="mode must be one of dense, lexical, hybrid"):
        handle.search_batch(["q"], k=5, mode="sparse")
    plain = indexing.build(tmp_path / "plain", x[:300], texts=texts[:300], quiet=True)
    with pytest.raises(InputError, match="no lexical index; build it with lexical=True"):
        retrieval.open_index(plain).search_batch(["apple"], k=5, mode="lexical")
    with pytest.raises(InputError, match="lexical=True indexes the documents' texts"):
        indexing.build(tmp_path / "notexts", x[:300], lexical=True, quiet=True)


def test_lexical_files_are_listed_and_checksummed(index):
    m = json.loads((index / "manifest.json").read_text())
    assert m["lexical"] and all("lexical/meta.json" in s["files"] for s in m["shards"])
    assert retrieval.open_index(index, verify=True).count == N
    shard = index / "shards" / "00000" / "lexical"
    victim = max((p for p in shard.iterdir() if p.suffix == ".idx"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="lexical/"):
        retrieval.open_index(index, verify=True)


def test_fusion():
    dense = np.array([[0.9, 0.5, -np.inf, 0.1]], np.float32)
    lexical = np.array([[-np.inf, 2.0, 9.0, -np.inf]], np.float32)
    rrf = fuse(dense, lexical)
    np.testing.assert_allclose(rrf[0], [1 / 61, 1 / 62 + 1 / 62, 1 / 61, 1 / 63], rtol=1e-6)
    assert fuse(dense, lexical, "rrf", weight=0.0)[0].argmax() == 0  # weight 0: dense order
    w = fuse(dense, lexical, "weighted", 1.0)[0]
    np.testing.assert_allclose(w, [1.0, 0.5, 1.0, 0.0], atol=1e-6)
    one_hit = np.array([[-np.inf, -np.inf, 4.0, -np.inf]], np.float32)
    np.testing.assert_allclose(fuse(dense, one_hit, "weighted", 0.5)[0],
                               [1.0, 0.5, 0.5, 0.0], atol=1e-6)  # one BM25 hit is that list's best
    none = fuse(np.full((1, 2), -np.inf, np.float32), np.full((1, 2), -np.inf, np.float32))
    assert np.isneginf(none).all()
    cand, stages = union(np.array([[4, 7, -1]]), {"first_pass": np.array([[0.9, 0.8, -np.inf]], np.float32)},
                         np.array([[7, 9]]), np.array([[3.0, 1.0]], np.float32))
    assert cand.tolist() == [[4, 7, -1, -1, 9]]
    assert stages["lexical"].tolist() == [[-np.inf, 3.0, -np.inf, -np.inf, 1.0]]
    assert stages["first_pass"].shape == (1, 5)


def test_the_fusion_measured_on_labelled_queries_becomes_the_index_default(index, corpus):
    x, texts = corpus
    handle = retrieval.open_index(index)
    queries = ["zymurgy", "violin harbor", "apple river", "cloud lantern"]
    relevant = [{"d777"}] + [{f"d{i}" for i, t in enumerate(texts) if set(q.split()) <= set(t.split())}
                             for q in queries[1:]]
    trial = handle.tune_fusion(queries, relevant, vectors=x[:4], save=False)
    assert len(trial["measured"]) == 5 and "hybrid" not in json.loads((index / "manifest.json").read_text())
    best = max(trial["measured"], key=lambda r: r["ndcg_at_10"])
    assert (trial["fusion"], trial["lexical_weight"]) == (best["fusion"], best["lexical_weight"])
    record = handle.tune_fusion(queries, relevant, vectors=x[:4])
    assert json.loads((index / "manifest.json").read_text())["hybrid"] == json.loads(json.dumps(record))
    again = retrieval.open_index(index)
    assert (again.params.fusion, again.params.lexical_weight) == (record["fusion"], record["lexical_weight"])
    indexing.delete(index, ["d1"], quiet=True)  # a change keeps the measured fusion
    again.reload()
    assert again.params.fusion == record["fusion"]
    with pytest.raises(InputError, match="one set per query"):
        handle.tune_fusion(queries, relevant[:2], vectors=x[:4])
