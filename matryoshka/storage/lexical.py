"""A shard's lexical index: BM25 over its texts, in a tantivy index in the shard's `lexical/` folder.

tantivy was chosen by measurement on the full GCIDE corpus (245k senses, `benchmarks.lexical_libraries`):
it built in 1.1 s against bm25s's 5.5 s, takes 14 MB on disk against 25 MB, holds almost nothing resident (its
files are memory-mapped) and answers a top-100 query in 2.9 ms against 35 ms.

A query is words, never syntax: its text goes through the index's own analyzer and each word becomes a term
query, so no text can be a syntax error (`lexical_syntax=True` opts in to tantivy's query language). Each term
is weighted by its index-wide inverse document frequency over live rows (`idf`), not the shard's. Over several
shards, the best candidates of every shard are scored again from their texts with the index-wide average
length too (`bm25`), so the same documents rank the same however they are sharded.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from matryoshka.core.errors import InputError

from .manifest import LEXICAL_DIR

FOLDER = LEXICAL_DIR
_HEAP = 64 * 2**20  # the writer's memory
K1, B = 1.2, 0.75  # tantivy's BM25 constants
_FREQ_CACHE = 100_000  # terms whose live document frequency a shard remembers


def _tantivy():
    try:
        import tantivy
    except ImportError:
        raise InputError("lexical search needs tantivy: pip install tantivy (or, from a clone of the "
                         "repository, pip install -e \".[lexical]\")") from None
    return tantivy


ANALYZER = "matryoshka_en"  # words, lower-cased, English stop words dropped, stemmed


def _schema():
    tantivy = _tantivy()
    return (tantivy.SchemaBuilder().add_text_field("body", stored=False, tokenizer_name=ANALYZER)
            .add_integer_field("row", stored=False, indexed=True, fast=True).build())


@lru_cache(maxsize=1)
def _analyzer():
    tantivy = _tantivy()
    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.stopword("english"))
            .filter(tantivy.Filter.stemmer("english")).build())


def _registered(index):
    """`index` with the analyzer its text field names (a tantivy index stores the name, not the analyzer)."""
    index.register_tokenizer(ANALYZER, _analyzer())
    return index


def query_terms(text: str) -> Counter:
    """The terms of a query text as the index analyzes its documents, with their counts (stop words only or
    punctuation only: none)."""
    return Counter(_analyzer().analyze(text))


def idf(docs: int, freq: int) -> float:
    """BM25's inverse document frequency, as tantivy computes it."""
    return math.log(1.0 + (docs - freq + 0.5) / (freq + 0.5))


def tokens_of(text: str) -> int:
    """How many tokens the analyzer makes of a text (its length as BM25 counts it)."""
    return len(_analyzer().analyze(text))


def bm25(query: Counter, text: str, weights: dict[str, float], avgdl: float) -> float:
    """A text's BM25 score for a query's terms (`query_terms`), with index-wide idf `weights` and average length
    `avgdl`: tantivy's formula, the text's own length and term counts."""
    tokens = Counter(_analyzer().analyze(text))
    dl = sum(tokens.values())
    norm = K1 * (1 - B + B * dl / max(avgdl, 1e-9))
    return float(sum(n * weights.get(t, 0.0) * (K1 + 1) * tokens[t] / (tokens[t] + norm)
                     for t, n in query.items() if tokens.get(t)))


def _explained(node: dict, name: str) -> float:
    """The value of the first detail of a tantivy explanation whose description starts with `name`."""
    if node.get("description", "").startswith(name):
        return float(node["value"])
    for child in node.get("details", []):
        found = _explained(child, name)
        if found >= 0:
            return found
    return -1.0


class LexicalWriter:
    """Collects a shard's texts, row by row, into a new lexical index in `folder`."""

    def __init__(self, folder: Path):
        tantivy = _tantivy()
        folder.mkdir()
        self.index = _registered(tantivy.Index(_schema(), path=str(folder)))
        self.writer = self.index.writer(heap_size=_HEAP, num_threads=1)
        self.rows = 0
        self._doc = tantivy.Document

    def add(self, texts: list[str]) -> None:
        for t in texts:
            self.writer.add_document(self._doc(body=t, row=self.rows))
            self.rows += 1

    def finish(self) -> None:
        self.writer.commit()
        self.writer.wait_merging_threads()
        self.writer = None


class LexicalIndex:
    """A shard's lexical index, opened for search (its files are memory-mapped by tantivy)."""

    def __init__(self, folder: Path, deleted: np.ndarray | None = None):
        """`deleted`: the shard's deleted rows, never returned (their filter is built once, here)."""
        tantivy = _tantivy()
        self.index = _registered(tantivy.Index.open(str(folder)))
        self.searcher = self.index.searcher()
        self._query, self._occur, self._schema = tantivy.Query, tantivy.Occur, self.index.schema
        self._deleted = self._rows(deleted) if deleted is not None and len(deleted) else None
        self.docs = self.searcher.num_docs  # what tantivy's own idf counts, deleted rows included
        self.live = self.docs - (0 if deleted is None else len(deleted))
        self._freq: dict[str, int] = {}
        self._tokens: float | None = None

    def only(self, rows: np.ndarray):
        """A filter to `search` within `rows` (live ones), adding nothing to the score: built once per filter."""
        if not len(rows):
            return self._query.empty_query()
        return self._query.const_score_query(self._rows(rows), 0.0)

    def stats(self, terms) -> tuple[int, dict[str, int]]:
        """(live rows, live rows holding each term): this shard's part of the index-wide statistics."""
        return self.live, {t: self._live_freq(t) for t in terms}

    @property
    def tokens(self) -> float:
        """The tokens of the shard's texts, every row's (tantivy's average length times its rows): with the other
        shards', the index-wide average length."""
        if self._tokens is None:
            self._tokens = self._average_length() * self.docs
        return self._tokens

    def _average_length(self) -> float:
        """tantivy's average text length, read from the explanation of one match of its commonest term (it keeps
        the count, but its Python binding gives it no other way)."""
        for term, _ in self.searcher.terms_with_prefix("body", "", limit=1):
            q = self._query.term_query(self._schema, "body", term)
            hits = self.searcher.search(q, 1).hits
            if hits:
                return _explained(json.loads(q.explain(self.searcher, hits[0][1]).to_json()), "avgdl")
        return 0.0

    def _live_freq(self, term: str) -> int:
        freq = self._freq.get(term)
        if freq is None:
            freq = self.searcher.doc_freq("body", term)
            if freq and self._deleted is not None:  # tantivy counts deleted rows too: count the live ones
                q = self._query.term_query(self._schema, "body", term).and_must_not_match(self._deleted)
                freq = self.searcher.search(q, 1, count=True).count
            if len(self._freq) > _FREQ_CACHE:
                self._freq.clear()
            self._freq[term] = freq
        return freq

    def search(self, terms: Counter, k: int, only=None, weights: dict[str, float] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(BM25 scores, local rows) of the k best live rows for a query's `terms` (`query_terms`), best first;
        within the rows of `only` (a filter from `only()`) when given. `weights`: each term's index-wide idf;
        without them the shard's own statistics score."""
        should = []
        for term, count in terms.items():
            local = self.searcher.doc_freq("body", term)
            if not local or (weights is not None and not weights.get(term)):
                continue
            boost = count * (weights[term] / idf(self.docs, local) if weights is not None else 1.0)
            q = self._query.term_query(self._schema, "body", term)
            should.append((self._occur.Should, q if boost == 1.0 else self._query.boost_query(q, boost)))
        if not should or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return self._top(self._query.boolean_query(should), k, only)

    def search_syntax(self, text: str, k: int, only=None) -> tuple[np.ndarray, np.ndarray]:
        """As `search`, for a query in tantivy's query language (`lexical_syntax=True`), scored with the
        shard's own statistics; a query that does not parse is an InputError."""
        try:
            q = self.index.parse_query(text, ["body"])
        except ValueError as e:
            raise InputError(f"lexical query {text!r} is not valid query syntax ({e}); search it as plain words "
                             "(lexical_syntax=False, the default) or fix the syntax") from None
        return self._top(q, k, only) if k > 0 else (np.zeros(0, np.float32), np.zeros(0, np.int64))

    def _top(self, q, k: int, only) -> tuple[np.ndarray, np.ndarray]:
        if only is not None:
            q = q.and_must_match(only)
        elif self._deleted is not None:
            q = q.and_must_not_match(self._deleted)
        hits = self.searcher.search(q, k, count=False).hits
        if not hits:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        rows = self.searcher.fast_field_values("row", [a for _, a in hits])
        return np.array([s for s, _ in hits], np.float32), np.array(rows, np.int64)

    def _rows(self, rows: np.ndarray):
        return self._query.term_set_query(self._schema, "row", rows.tolist())
