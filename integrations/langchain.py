"""A LangChain `VectorStore` over a matryoshka index (the `langchain` extra).

    from matryoshka.integrations.langchain import MatryoshkaVectorStore
    store = MatryoshkaVectorStore("my-index", embedding)      # an existing index, or a new empty one
    store.add_texts(["..."], metadatas=[{"lang": "en"}])
    store.as_retriever(search_kwargs={"k": 5, "filter": {"lang": "en"}}).invoke("question")
    MatryoshkaVectorStore("http://127.0.0.1:8000/indexes/docs", embedding, open_options={"token": "..."})  # served

Searches run the engine's cascade (first pass, int8 and full-vector re-scoring, the cross-encoder when the
index is opened with one). Metadata round-trips as JSON holds it and its values are filterable, whatever kinds
a key takes from one add to the next (see `integrations.documents`); `filter` takes a dict of conditions or an
SQL `where` string.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from matryoshka.core.checks import integer
from matryoshka.core.errors import InputError

from .documents import Doc, DocumentStore

if TYPE_CHECKING:
    from matryoshka.retrieval.remote import RemoteIndex


class MatryoshkaVectorStore(VectorStore):
    """A LangChain vector store on the index folder `path` (created by the first add when it does not exist), or
    on an index a server serves: its URL, or a handle from `retrieval.open_index(URL)`.

    `embedding` encodes documents and queries; None uses the model the index stores (an index built from
    texts). The keyword options are `DocumentStore`'s: build_options, open_options (e.g. reranker=NAME),
    search_options (k1, k2, nprobe, ...)."""

    def __init__(self, path: str | os.PathLike | RemoteIndex, embedding: Embeddings | None = None, **options: Any):
        self.store = DocumentStore(path, **options)
        self.embedding = embedding
        if embedding is None and self.store.exists and not self.store.has_model:
            raise InputError(f"the index {path} stores no model: give an Embeddings object for its queries")

    @property
    def embeddings(self) -> Embeddings | None:
        return self.embedding

    def close(self) -> None:
        """Release the index's memory maps and files now."""
        self.store.close()

    # -- changes -------------------------------------------------------------------------------------------
    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                  **kwargs: Any) -> list[str]:
        """Add texts (an id already stored is replaced); returns their ids (new UUIDs where none was given)."""
        texts = list(texts)
        vectors = self.embedding.embed_documents(texts) if self.embedding is not None and texts else None
        return self.store.upsert(texts, vectors, metadatas, ids)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id (ids not stored are ignored)."""
        if ids is None:
            raise InputError("delete takes the ids of the documents to delete")
        self.store.delete(ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return [_document(d) for d in self.store.get(list(ids))]

    # -- searches ------------------------------------------------------------------------------------------
    def _query(self, query: str):
        return self.embedding.embed_query(query) if self.embedding is not None else query

    def similarity_search_with_score(self, query: str, k: int = 4, filter=None, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        """Documents and their scores (cosine similarity for a cosine index: higher is better)."""
        return self._scored(self._query(query), k, filter, kwargs)

    def similarity_search(self, query: str, k: int = 4, filter=None, **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, filter=None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self._scored(embedding, k, filter, kwargs)]

    def _scored(self, query, k: int, filter, options: dict) -> list[tuple[Document, float]]:
        return [(_document(d), d.score) for d in self.store.search(query, k, self.store.where(filter), **options)]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter=None, **kwargs: Any) -> list[Document]:
        """Diverse results: `fetch_k` candidates from the cascade, then k picked by maximal marginal relevance on
        their full vectors."""
        vector = self.embedding.embed_query(query) if self.embedding is not None else \
            self.store.index.query_vectors([query])[0][0]
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter, **kwargs)

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter=None, **kwargs: Any
                                                ) -> list[Document]:
        k, fetch_k = integer("k", k), integer("fetch_k", fetch_k)
        found = self.store.search(embedding, max(fetch_k, k), self.store.where(filter), vectors=True, **kwargs)
        if not found:
            return []
        picked = maximal_marginal_relevance(np.asarray(embedding, np.float32), [d.vector for d in found],
                                            lambda_mult=lambda_mult, k=k)
        return [_document(found[i]) for i in picked]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Relevance in [0, 1] from the index's score: cosine and inner product map [-1, 1]; L2 scores are
        negative squared distances."""
        index = self.store.index
        metric = index.metric if index is not None else "cosine"
        if metric == "l2":
            return lambda s: 1.0 / (1.0 + max(-s, 0.0))
        return lambda s: min(max((1.0 + s) / 2.0, 0.0), 1.0)  # float16 vectors: a cosine can pass 1 a little

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings | None, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, path: str | os.PathLike | None = None, **kwargs: Any
                   ) -> "MatryoshkaVectorStore":
        """A store at `path` (required) holding `texts`: the first add builds the index, so its plan fits them."""
        if path is None:
            raise InputError("from_texts needs path=: the folder the index is built in")
        store = cls(path, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _document(d: Doc) -> Document:
    return Document(page_content=d.text, metadata=d.metadata, id=d.id)
