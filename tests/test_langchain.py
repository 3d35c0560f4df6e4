"""The LangChain vector store: LangChain's own standard suite (`langchain-tests`), then what it does not cover:
filters, MMR, a retriever, an existing index, the index's own model."""
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from matryoshka.core.errors import InputError  # noqa: E402
from matryoshka.integrations.documents import filter_sql  # noqa: E402
from matryoshka.integrations.langchain import MatryoshkaVectorStore  # noqa: E402


class TestStandardSuite(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path):
        store = MatryoshkaVectorStore(tmp_path / "index", self.get_embeddings())
        yield store
        store.close()


DOCS = [Document(page_content=t, metadata=m) for t, m in [
    ("the cat sat on the mat", {"animal": "cat", "year": 2001, "tags": ["pet", "small"]}),
    ("a dog chased the ball", {"animal": "dog", "year": 2010, "nested": {"a": 1}}),
    ("the kitten slept", {"animal": "cat", "year": 2020}),
    ("wolves howl at night", {"animal": "wolf", "year": 1999, "wild": True}),
    ("an unrelated sentence", {}),
]]


@pytest.fixture()
def store(tmp_path):
    s = MatryoshkaVectorStore.from_documents(DOCS, DeterministicFakeEmbedding(size=16), path=tmp_path / "idx",
                                             ids=[f"d{i}" for i in range(len(DOCS))])
    yield s
    s.close()


def test_metadata_round_trips_exactly_and_filters_by_dict_and_sql(store):
    got = {d.id: d.metadata for d in store.get_by_ids([f"d{i}" for i in range(5)])}
    assert got == {f"d{i}": d.metadata for i, d in enumerate(DOCS)}
    cats = store.similarity_search("pets", k=5, filter={"animal": "cat"})
    assert {d.id for d in cats} == {"d0", "d2"}
    assert {d.id for d in store.similarity_search("x", k=5, filter={"year": {"$gte": 2010}})} == {"d1", "d2"}
    assert {d.id for d in store.similarity_search("x", k=5, filter={"$or": [{"animal": "wolf"}, {"year": 2001}]})} \
        == {"d0", "d3"}
    assert {d.id for d in store.similarity_search("x", k=5, filter={"animal": {"$in": ["dog", "wolf"]},
                                                                     "wild": True})} == {"d3"}
    assert {d.id for d in store.similarity_search("x", k=5, filter="list_contains(tags, 'pet')")} == {"d0"}
    assert {d.id for d in store.similarity_search("x", k=5, filter={"animal": {"$nin": ["cat"]}})} == {"d1", "d3"}


def test_filters_are_translated_safely_and_bad_ones_named():
    assert filter_sql({"name": "O'Brien"}) == "\"name\" = 'O''Brien'"
    assert filter_sql({"id": 3}) == "\"meta_id\" = 3"  # reserved names live under meta_
    with pytest.raises(InputError, match=r"unknown filter operator '\$like'"):
        filter_sql({"a": {"$like": "x"}})
    with pytest.raises(InputError, match="filter values are strings, numbers or booleans"):
        filter_sql({"a": {"b": 1}.items()})


def test_retriever_mmr_and_scores(store):
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"animal": "cat"}})
    assert {d.id for d in retriever.invoke("a cat")} == {"d0", "d2"}
    scored = store.similarity_search_with_score(DOCS[3].page_content, k=5)
    assert scored[0][0].id == "d3" and scored[0][1] == pytest.approx(1.0, abs=0.02)  # the same text's vector
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    relevance = store.similarity_search_with_relevance_scores(DOCS[3].page_content, k=2)
    assert all(0.0 <= r <= 1.0 for _, r in relevance)
    # MMR: the first pick is the best match, then diversity; lambda 1 is plain similarity order
    mmr = store.max_marginal_relevance_search(DOCS[3].page_content, k=3, fetch_k=5, lambda_mult=0.1)
    assert mmr[0].id == "d3" and len({d.id for d in mmr}) == 3
    plain = store.max_marginal_relevance_search(DOCS[3].page_content, k=3, fetch_k=5, lambda_mult=1.0)
    assert [d.id for d in plain] == [d.id for d, _ in scored[:3]]


async def test_async_search_and_delete_everything(store):
    assert (await store.asimilarity_search(DOCS[1].page_content, k=1))[0].id == "d1"
    await store.adelete([f"d{i}" for i in range(5)])
    assert await store.asimilarity_search("anything", k=3) == []
    assert store.add_texts(["back again"], ids=["z"]) == ["z"]  # an index emptied by deletes takes adds
    assert [d.id for d in store.similarity_search("back again", k=3)] == ["z"]


def test_an_index_built_from_texts_uses_its_own_model(tmp_path):
    from matryoshka import indexing
    from matryoshka.core.encoder import DEFAULT_MODEL
    texts = [d.page_content for d in DOCS]
    indexing.build(tmp_path / "idx", texts, ids=[f"d{i}" for i in range(5)], texts=texts, model=DEFAULT_MODEL,
                   attributes={"_metadata": ["{}"] * 5}, quiet=True)
    store = MatryoshkaVectorStore(tmp_path / "idx")  # no Embeddings: the index's model encodes
    assert store.similarity_search("a kitten", k=1)[0].id == "d2"
    store.add_texts(["a puppy plays"], metadatas=[{"animal": "dog"}], ids=["p"])
    assert store.similarity_search("young dog", k=1, filter={"animal": "dog"})[0].id == "p"
    assert store.max_marginal_relevance_search("a kitten", k=2, fetch_k=4)[0].id == "d2"
    # embeddings as LangChain gives them, a list of rows, build too; an index without a model needs Embeddings
    indexing.build(tmp_path / "vec", DeterministicFakeEmbedding(size=8).embed_documents(texts), quiet=True)
    with pytest.raises(InputError, match="stores no model"):
        MatryoshkaVectorStore(tmp_path / "vec")
