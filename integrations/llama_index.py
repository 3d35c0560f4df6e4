"""A LlamaIndex vector store over a matryoshka index (the `llama-index` extra).

    from llama_index.core import StorageContext, VectorStoreIndex
    from matryoshka.integrations.llama_index import MatryoshkaLlamaStore
    store = MatryoshkaLlamaStore("my-index")
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store))
    MatryoshkaLlamaStore("http://127.0.0.1:8000/indexes/docs", open_options={"token": "..."})  # a served index

Nodes keep their text, metadata and relationships (stored whole as JSON); their metadata and `ref_doc_id` are
filterable, by the rules of `integrations.documents`. Queries run the engine's cascade.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (BasePydanticVectorStore, FilterCondition, FilterOperator,
                                                  MetadataFilter, MetadataFilters, VectorStoreQuery,
                                                  VectorStoreQueryMode, VectorStoreQueryResult)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from matryoshka.core.checks import integer
from matryoshka.core.errors import InputError

from .documents import Columns, Doc, DocumentStore, compare, empty_test, list_test, member, text_test

if TYPE_CHECKING:
    from matryoshka.retrieval.remote import RemoteIndex

_OPS = {FilterOperator.EQ: "=", FilterOperator.NE: "<>", FilterOperator.GT: ">", FilterOperator.GTE: ">=",
        FilterOperator.LT: "<", FilterOperator.LTE: "<="}


class MatryoshkaLlamaStore(BasePydanticVectorStore):
    """LlamaIndex nodes in the index folder `path` (created by the first add), or in an index a server serves:
    its URL, or a handle from `retrieval.open_index(URL)`. The keyword options are `DocumentStore`'s
    (build_options, open_options, search_options)."""

    stores_text: bool = True
    flat_metadata: bool = False
    _docs: DocumentStore = PrivateAttr()

    def __init__(self, path: str | os.PathLike | RemoteIndex, **options: Any):
        super().__init__()
        self._docs = DocumentStore(path, **options)

    @property
    def client(self) -> Any:
        """The open `retrieval.Index`, or the remote handle (None while the store is empty)."""
        return self._docs.index

    def close(self) -> None:
        self._docs.close()

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        """Add nodes with their embeddings (a node id already stored is replaced)."""
        if not nodes:
            return []
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise InputError(f"nodes {missing[:3]} have no embedding; embed them first (an index's embed_model)")
        return self._docs.upsert([n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes],
                                 [n.get_embedding() for n in nodes],
                                 [node_to_metadata_dict(n, remove_text=True, flat_metadata=False) for n in nodes],
                                 [n.node_id for n in nodes])

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        self.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="ref_doc_id", value=ref_doc_id)]))

    def delete_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None,
                     **delete_kwargs: Any) -> None:
        self._docs.delete([n.node_id for n in self.get_nodes(node_ids, filters)])

    def clear(self) -> None:
        self._docs.delete([d.id for d in self._docs.select(None)])

    def get_nodes(self, node_ids: Optional[List[str]] = None, filters: Optional[MetadataFilters] = None
                  ) -> List[BaseNode]:
        """Nodes by id and / or filter (all of them when neither is given)."""
        where = filters_sql(filters, self._docs.columns)
        if node_ids is not None:
            docs = self._docs.get(node_ids)
            if where is not None:
                keep = {d.id for d in self._docs.select(where)}
                docs = [d for d in docs if d.id in keep]
        else:
            docs = self._docs.select(where)
        return [_node(d) for d in docs]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The top `similarity_top_k` nodes for the query embedding (or, with none, the query text encoded by the
        index's own model), among those passing `filters` and, when not empty, of `doc_ids` and `node_ids`."""
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise InputError(f"query mode {query.mode.value!r} is not supported; use the default (dense) mode")
        q = query.query_embedding if query.query_embedding is not None else query.query_str
        if q is None:
            raise InputError("the query has neither an embedding nor a text")
        top_k = integer("similarity_top_k", query.similarity_top_k)
        columns = self._docs.columns
        conds = [filters_sql(query.filters, columns)]
        if query.doc_ids:  # empty or None: no restriction, as LlamaIndex's own stores read it
            conds.append(member(columns, "ref_doc_id", list(query.doc_ids)))
        where = " AND ".join(f"({c})" for c in conds if c) or None
        if query.node_ids:  # a given set of nodes: scored exactly, without the index
            found = self._docs.rank(q, query.node_ids, top_k, where)
        else:
            found = self._docs.search(q, top_k, where, **kwargs)
        return VectorStoreQueryResult(nodes=[_node(d) for d in found], similarities=[d.score for d in found],
                                      ids=[d.id for d in found])


def _node(d: Doc) -> BaseNode:
    """The node a document was added as; a document added otherwise (a build, LangChain) as a TextNode."""
    if "_node_content" not in d.metadata:
        return TextNode(id_=d.id, text=d.text, metadata=d.metadata)
    node = metadata_dict_to_node(d.metadata, text=d.text)
    node.node_id = d.id
    return node


def filters_sql(filters: MetadataFilters | None, columns: Columns | None = None) -> str | None:
    """LlamaIndex metadata filters as the engine's SQL `where` (None: no filter), over the store's `columns`
    (None: each key's own column alone, of whatever kind). The rules are `integrations.documents`'."""
    if filters is None or not filters.filters:
        return None
    columns = columns if columns is not None else Columns(None)
    parts = [filters_sql(f, columns) if isinstance(f, MetadataFilters) else _one(f, columns)
             for f in filters.filters]
    parts = [f"({p})" for p in parts if p]
    if not parts:
        return None
    if filters.condition == FilterCondition.NOT:
        return f"NOT ({' AND '.join(parts)})"
    return f" {(filters.condition or FilterCondition.AND).value.upper()} ".join(parts)


def _one(f: MetadataFilter, columns: Columns) -> str:
    """One filter: a scalar value is compared with the key's values of its kind; `in`/`nin` take a list (a lone
    value is a list of one), `contains` one string, `any`/`all` strings (a lone string is a list of one)."""
    key, op, v = f.key, f.operator, f.value
    if op in _OPS:
        return compare(columns, key, _OPS[op], v)
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = v if isinstance(v, list) else [v]
        if not values:
            raise InputError(f"{op.value} on {key!r} takes a non-empty list of values; got {v!r}")
        return member(columns, key, values, negate=op == FilterOperator.NIN)
    if op == FilterOperator.CONTAINS:
        if not isinstance(v, str):
            raise InputError(f"contains on {key!r} takes one string (lists of strings hold it); got {v!r}: use "
                             "any or all for several")
        return list_test(columns, key, v, every=False)
    if op in (FilterOperator.ANY, FilterOperator.ALL):
        return list_test(columns, key, v, every=op == FilterOperator.ALL)
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        return text_test(columns, key, v, insensitive=op == FilterOperator.TEXT_MATCH_INSENSITIVE)
    if op == FilterOperator.IS_EMPTY:
        return empty_test(columns, key)
    raise InputError(f"filter operator {op.value!r} is not supported")
