"""Lexical queries under hostile text: a query is words, never syntax unless asked; BM25 statistics are
index-wide, so sharding, deletes and compaction do not change a ranking."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from matryoshka import indexing, retrieval
from matryoshka.core.errors import InputError

pytest.importorskip("tantivy")

WORDS = ["apple", "river", "stone", "cloud", "forest", "engine", "violin", "harbor", "desert", "lantern",
         "copper", "meadow", "signal", "timber", "orbit", "walnut"]
N, DIM = 800, 16


def _corpus():
    rng = np.random.default_rng(11)
    # skewed word frequencies, so that each shard's document frequencies differ from the index's
    p = np.linspace(3, 1, len(WORDS))
    texts = [" ".join(rng.choice(WORDS, 5, p=p / p.sum())) for _ in range(N)]
    return rng.standard_normal((N, DIM)).astype(np.float32), texts


def _build(path, shard_size):
    x, texts = _corpus()
    return indexing.build(path, x, ids=[f"d{i}" for i in range(N)], texts=texts, lexical=True,
                          shard_size=shard_size, quiet=True)


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("lex1") / "idx", N)


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("lex4") / "idx", N // 4)


QUERIES = ["river stone", "violin harbor orbit", "walnut", "apple apple meadow", "signal timber copper desert"]


def _ranked(handle, queries, k=30):
    r = handle.search_batch(queries, k=k, mode="lexical")
    return [[(h.id, round(float(h.score), 4)) for h in r.hits(i)] for i in range(len(queries))]


def test_bm25_ranking_is_the_same_in_one_shard_and_four(one_shard, four_shards):
    a, b = retrieval.open_index(one_shard), retrieval.open_index(four_shards)
    assert _ranked(a, QUERIES) == _ranked(b, QUERIES)  # same ids, order and scores


def test_bm25_ranking_survives_deletes_and_compaction(tmp_path, four_shards):
    import shutil
    path = Path(shutil.copytree(four_shards, tmp_path / "idx"))
    indexing.delete(path, [f"d{i}" for i in range(0, 300, 2)], quiet=True)  # shard 0 loses most, others none
    handle = retrieval.open_index(path)
    before = _ranked(handle, QUERIES)
    indexing.compact(path, min_dead=0.1, quiet=True)
    handle.reload()
    assert len(retrieval.open_index(path).manifest.shards) == 4
    after = _ranked(handle, QUERIES)
    # the same scores, and the same documents above the cut: compaction renumbers shard 0's rows, so only the
    # order within equal scores (broken by the lower row) may change
    assert _canonical(before) == _canonical(after)


def _canonical(ranked):
    return [([s for _, s in q], {i for i, s in q if s > q[-1][1]}) for q in ranked]


HOSTILE = ["AND", "NOT river", "river AND", "a IN b", "the of and", "river OR", "(stone", 'river "harbor',
           "title:river", "river^", "*", "-", "+stone -", "river~2", "[a TO b", "\\", "{}", "''", "'river'",
           "ágúst ñandú", "日本語 river"]


@pytest.mark.parametrize("text", HOSTILE)
def test_query_text_is_words_never_syntax(one_shard, text):
    handle = retrieval.open_index(one_shard)
    hits = handle.search_batch([text], k=5, mode="lexical").hits(0)
    words = set(re.findall(r"\w+", text.lower()))
    assert all(words & set(h.text.split()) for h in hits)  # any hit holds a word of the query
    if "river" in text:
        assert hits  # the word is found whatever operators surround it


def test_stop_words_only_and_punctuation_only_find_nothing(one_shard):
    handle = retrieval.open_index(one_shard)
    r = handle.search_batch(["the of and", "?!", "NOT"], k=5, mode="lexical")
    assert [r.hits(i) for i in range(3)] == [[], [], []]


def test_syntax_is_an_explicit_opt_in_with_the_engines_own_error(one_shard):
    handle = retrieval.open_index(one_shard)
    both = handle.search_batch(["river AND stone"], k=50, mode="lexical", lexical_syntax=True).hits(0)
    assert both and all({"river", "stone"} <= set(h.text.split()) for h in both)
    with pytest.raises(InputError, match="not valid query syntax.*lexical_syntax=False"):
        handle.search_batch(["river AND"], k=5, mode="lexical", lexical_syntax=True)
    with pytest.raises(InputError, match="lexical_syntax"):
        handle.search_batch(["river"], k=5, mode="lexical", lexical_syntax="yes")


def test_non_string_and_invalid_query_texts_are_refused_by_name(one_shard):
    handle = retrieval.open_index(one_shard)
    x = np.ones((2, DIM), np.float32)
    with pytest.raises(InputError, match="query text 0 is int"):
        handle.search_batch(x, k=5, query_texts=[1, None], mode="hybrid")
    with pytest.raises(InputError, match="query text 1 .*lone surrogate"):
        handle.search_batch(x, k=5, query_texts=["river", "\ud800"], mode="hybrid")


def test_cli_searches_an_operator_as_a_word(one_shard):
    out = subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", "search", str(one_shard), "river AND",
                          "--mode", "lexical", "--k", "3"], capture_output=True, text=True,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "river" in out.stdout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40)
       | st.lists(st.sampled_from(WORDS + ["AND", "OR", "NOT", "(", ")", '"', ":", "^", "~", "-", "+", "*", "the"]),
                  max_size=8).map(" ".join))
def test_property_any_text_searches_without_error(one_shard, text):
    handle = retrieval.open_index(one_shard)
    r = handle.search_batch([text if text else " "], k=5, mode="lexical")
    scores = [h.score for h in r.hits(0)]
    assert scores == sorted(scores, reverse=True)
