"""A shard's lexical index: BM25 over its texts, in a tantivy index in the shard's `lexical/` folder.

tantivy was chosen by measurement on the full GCIDE corpus (245k senses, `benchmarks.lexical_libraries`):
it built in 1.1 s against bm25s's 5.5 s, takes 14 MB on disk against 25 MB, holds almost nothing resident (its
files are memory-mapped) and answers a top-100 query in 2.9 ms against 35 ms. Each shard scores with its own
statistics (document frequencies, lengths), as every sharded BM25 engine does.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from matryoshka.core.errors import InputError

from .manifest import LEXICAL_DIR

FOLDER = LEXICAL_DIR
_PUNCT = re.compile(r"[^\w\s]+")
_HEAP = 64 * 2**20  # the writer's memory


def _tantivy():
    try:
        import tantivy
    except ImportError:
        raise InputError("lexical search needs tantivy: pip install 'matryoshka-retrieval[lexical]' "
                         "(or pip install tantivy)") from None
    return tantivy


ANALYZER = "matryoshka_en"  # words, lower-cased, English stop words dropped, stemmed


def _schema():
    tantivy = _tantivy()
    return (tantivy.SchemaBuilder().add_text_field("body", stored=False, tokenizer_name=ANALYZER)
            .add_integer_field("row", stored=False, indexed=True, fast=True).build())


def _registered(index):
    """`index` with the analyzer its text field names (a tantivy index stores the name, not the analyzer)."""
    tantivy = _tantivy()
    analyzer = (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40))
                .filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.stopword("english"))
                .filter(tantivy.Filter.stemmer("english")).build())
    index.register_tokenizer(ANALYZER, analyzer)
    return index


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
        self._query, self._schema = tantivy.Query, self.index.schema
        self._deleted = self._rows(deleted) if deleted is not None and len(deleted) else None

    def only(self, rows: np.ndarray):
        """A filter to `search` within `rows` (live ones), adding nothing to the score: built once per filter."""
        if not len(rows):
            return self._query.empty_query()
        return self._query.const_score_query(self._rows(rows), 0.0)

    def search(self, text: str, k: int, only=None) -> tuple[np.ndarray, np.ndarray]:
        """(BM25 scores, local rows) of the k best live rows for `text`, best first; within the rows of `only`
        (a filter from `only()`) when given."""
        words = _PUNCT.sub(" ", text).strip()
        if not words or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        q = self.index.parse_query(words, ["body"])
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
