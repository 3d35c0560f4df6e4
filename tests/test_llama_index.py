"""The LlamaIndex vector store, through LlamaIndex's own VectorStoreIndex and on the base class's contract: add,
query with metadata filters and top-k, get, delete by document and by node, clear."""
import hashlib

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import BaseEmbedding  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator, MetadataFilter,  # noqa: E402
                                                  MetadataFilters, VectorStoreQuery, VectorStoreQueryMode)

from matryoshka.core.errors import InputError  # noqa: E402
from matryoshka.integrations.llama_index import MatryoshkaLlamaStore  # noqa: E402

DIM = 12


def embed(text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM).tolist()


class HashEmbedding(BaseEmbedding):
    """A deterministic embedding per text (no model download)."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return embed(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return embed(query)


def node(i: int, text: str, doc: str, **meta) -> TextNode:
    n = TextNode(id_=f"n{i}", text=text, metadata=meta, embedding=embed(text))
    n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    return n


NODES = [node(0, "cats purr", "docA", animal="cat", year=2001), node(1, "dogs bark", "docA", animal="dog", year=2010),
         node(2, "kittens nap", "docB", animal="cat", year=2020), node(3, "wolves howl", "docC", animal="wolf")]


@pytest.fixture()
def store(tmp_path):
    s = MatryoshkaLlamaStore(tmp_path / "idx")
    assert s.query(VectorStoreQuery(query_embedding=embed("x"), similarity_top_k=3)).nodes == []  # empty store
    assert s.add(NODES) == ["n0", "n1", "n2", "n3"]
    yield s
    s.close()


def test_query_top_k_and_filters(store):
    r = store.query(VectorStoreQuery(query_embedding=embed("kittens nap"), similarity_top_k=2))
    assert r.ids[0] == "n2" and len(r.nodes) == 2 and r.similarities[0] == pytest.approx(1.0, abs=0.01)
    assert r.nodes[0].get_content() == "kittens nap" and r.nodes[0].metadata == {"animal": "cat", "year": 2020}
    assert r.nodes[0].ref_doc_id == "docB"  # relationships survive
    cats = MetadataFilters(filters=[MetadataFilter(key="animal", value="cat")])
    assert set(store.query(VectorStoreQuery(query_embedding=embed("x"), similarity_top_k=4, filters=cats)).ids) == \
        {"n0", "n2"}
    either = MetadataFilters(filters=[MetadataFilter(key="year", value=2015, operator=FilterOperator.GT),
                                      MetadataFilter(key="animal", value=["wolf"], operator=FilterOperator.IN)],
                             condition=FilterCondition.OR)
    assert set(store.query(VectorStoreQuery(query_embedding=embed("x"), similarity_top_k=4, filters=either)).ids) \
        == {"n2", "n3"}
    no_year = MetadataFilters(filters=[MetadataFilter(key="year", value=None, operator=FilterOperator.IS_EMPTY)])
    assert [n.node_id for n in store.get_nodes(filters=no_year)] == ["n3"]
    within = store.query(VectorStoreQuery(query_embedding=embed("dogs bark"), similarity_top_k=2,
                                          node_ids=["n3", "n1", "n0"]))
    assert within.ids[0] == "n1" and set(within.ids) <= {"n0", "n1", "n3"}
    assert set(store.query(VectorStoreQuery(query_embedding=embed("x"), similarity_top_k=4, doc_ids=["docA"])).ids) \
        == {"n0", "n1"}
    with pytest.raises(InputError, match="query mode 'svm' is not supported"):
        store.query(VectorStoreQuery(query_embedding=embed("x"), mode=VectorStoreQueryMode.SVM))


def test_get_delete_by_document_and_node_and_clear(store):
    assert [n.node_id for n in store.get_nodes(["n3", "n0", "zz"])] == ["n3", "n0"]
    store.delete("docA")
    assert [n.node_id for n in store.get_nodes()] == ["n2", "n3"]
    store.delete_nodes(["n3"])
    assert [n.node_id for n in store.get_nodes()] == ["n2"]
    store.add([node(2, "kittens nap again", "docB", animal="cat", year=2021)])  # the same id replaces it
    assert [(n.node_id, n.get_content()) for n in store.get_nodes()] == [("n2", "kittens nap again")]
    store.clear()
    assert store.get_nodes() == []
    assert store.query(VectorStoreQuery(query_embedding=embed("x"), similarity_top_k=2)).ids == []


def test_documents_of_an_index_built_otherwise_come_back_as_text_nodes(tmp_path):
    from matryoshka import indexing
    texts = ["cats purr", "dogs bark"]
    indexing.build(tmp_path / "idx", [embed(t) for t in texts], ids=["a", "b"], texts=texts,
                   attributes={"kind": ["cat", "dog"]}, quiet=True)
    store = MatryoshkaLlamaStore(tmp_path / "idx")
    r = store.query(VectorStoreQuery(query_embedding=embed("dogs bark"), similarity_top_k=1))
    assert isinstance(r.nodes[0], TextNode) and (r.nodes[0].node_id, r.nodes[0].text) == ("b", "dogs bark")
    assert r.nodes[0].metadata == {"kind": "dog"}


def test_a_vector_store_index_builds_queries_and_deletes_through_it(tmp_path):
    store = MatryoshkaLlamaStore(tmp_path / "idx")
    docs = [Document(text="The cat sat on the mat.", doc_id="d1", metadata={"lang": "en"}),
            Document(text="Le chat dort.", doc_id="d2", metadata={"lang": "fr"})]
    index = VectorStoreIndex.from_documents(docs, storage_context=StorageContext.from_defaults(vector_store=store),
                                            embed_model=HashEmbedding())
    hits = index.as_retriever(similarity_top_k=1).retrieve("Le chat dort.")
    assert hits[0].node.get_content() == "Le chat dort." and hits[0].node.ref_doc_id == "d2"
    en = MetadataFilters(filters=[MetadataFilter(key="lang", value="en")])
    assert index.as_retriever(similarity_top_k=2, filters=en).retrieve("chat")[0].node.ref_doc_id == "d1"
    index.delete_ref_doc("d1")
    assert [h.node.ref_doc_id for h in index.as_retriever(similarity_top_k=2).retrieve("cat")] == ["d2"]
