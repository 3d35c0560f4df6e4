"""The Python client of the server (`retrieval.open_index(URL)`), tested for congruence as qdrant-client is: the
same calls on the same index, in this process and through a real `matryoshka serve` on the loopback, give equal
results (ids, order, rows, scores to float32 rounding) and errors of the same class. Then a server of many
indexes (created by a first add, dropped by a call), and the LangChain and LlamaIndex stores over a URL.

The server serves a folder holding a copy of the local index: each change is made to both, one through the
server, the other in process, and they must stay equal."""
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from matryoshka import indexing, retrieval  # noqa: E402
from matryoshka.core.errors import BuildRefused, IndexFormatError, InputError, MatryoshkaError  # noqa: E402
from matryoshka.indexing.folder import BuildLock  # noqa: E402
from matryoshka.retrieval import SearchParams, SearchResult  # noqa: E402
from matryoshka.retrieval.remote import RemoteError, RemoteIndex  # noqa: E402
from conftest import Server  # noqa: E402

N, DIM, TOKEN = 400, 16, "t0ken"
LANGS = np.array(["en", "de", "fr"])


def attributes(rng, n: int) -> dict:
    return {"lang": LANGS[rng.integers(0, 3, n)], "year": rng.integers(2000, 2025, n)}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    queries = (x[:6] + 0.3 * rng.standard_normal((6, DIM))).astype(np.float32)
    return x, attributes(rng, N), queries


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data):
    """A folder of indexes holding `docs`; `local` beside it is the same index, changed in process."""
    x, attrs, _ = data
    root = tmp_path_factory.mktemp("remote")
    indexing.build(root / "local", x, ids=[f"d{i}" for i in range(N)],
                   texts=[f"text of document {i}" for i in range(N)], attributes=attrs, index_dim=8, pq_bytes=4,
                   lexical=True, quiet=True, tune=False, select=False)
    shutil.copytree(root / "local", root / "served" / "docs")
    return root


@pytest.fixture(scope="module")
def server(folder):
    s = Server(folder / "served", folder / "server.log", "--token", TOKEN, "--max-docs", "50")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def local(folder):
    with retrieval.open_index(folder / "local") as index:
        yield index


@pytest.fixture(scope="module")
def remote(server):
    with retrieval.open_index(f"{server.url}/indexes/docs", token=TOKEN) as index:
        yield index


def assert_same(a, b) -> None:
    """Equal results of the local and the remote handle: search results, hit lists, records or plans."""
    if isinstance(a, SearchResult):
        assert type(b) is SearchResult and a.ids == b.ids and a.texts == b.texts
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        assert list(a.stage_scores) == list(b.stage_scores)
        for stage in a.stage_scores:
            np.testing.assert_allclose(a.stage_scores[stage], b.stage_scores[stage], rtol=1e-6)
        assert (a.partial, a.missing_shards) == (b.partial, b.missing_shards)
    elif isinstance(a, list):
        assert len(a) == len(b) and [type(x) for x in a] == [type(y) for y in b]
        for x, y in zip(a, b):
            assert (x.id, x.row, x.text) == (y.id, y.row, y.text)
            if hasattr(x, "attributes"):  # a Record
                assert x.attributes == y.attributes
                assert (x.vector is None) == (y.vector is None)
                if x.vector is not None:
                    np.testing.assert_array_equal(x.vector, y.vector)
            else:  # a Hit
                np.testing.assert_allclose([x.score, *x.scores.values()], [y.score, *y.scores.values()], rtol=1e-6)
                assert list(x.scores) == list(y.scores)
    else:
        assert a == b


def raised(call, handle) -> MatryoshkaError:
    with pytest.raises(MatryoshkaError) as caught:
        call(handle)
    return caught.value


SEARCHES = {
    "dense batch": lambda h, q: h.search_batch(q, k=10),
    "one query": lambda h, q: h.search(q[0], k=5),
    "stage options": lambda h, q: h.search_batch(q, k=4, nprobe=2, int8=False),
    "params": lambda h, q: h.search_batch(q, params=SearchParams(k=3, nprobe=4, k1=30, k2=10)),
    "sql filter": lambda h, q: h.search_batch(q, k=10, where="lang = 'de' AND year >= 2010"),
    "dict filter": lambda h, q: h.search_batch(q, k=10, where={"lang": {"$in": ["en", "fr"]}, "year": {"$lt": 2012}}),
    "filter per query": lambda h, q: h.search_batch(q[:3], k=5, where=[None, "lang = 'fr'", {"year": {"$gte": 2020}}]),
    "filter passing few": lambda h, q: h.search_batch(q, k=10, where={"$and": [{"lang": "en"}, {"year": 2003}]}),
    "filter passing none": lambda h, q: h.search_batch(q, k=10, where="year > 3000"),
    "hybrid": lambda h, q: h.search_batch(q[:2], k=5, mode="hybrid", query_texts=["document 3", "text of 120"]),
    "lexical texts": lambda h, q: h.search_batch(["document 7", "text of document 250"], k=5, mode="lexical"),
    "explain": lambda h, q: h.explain(q[:2], k=5, nprobe=3, where={"lang": "en"}),
    "explain texts": lambda h, q: h.explain(4, k=5),
    "get ids": lambda h, q: h.get(["d5", "d1", "never", "d399"]),
    "get vectors": lambda h, q: h.get(["d2", "d3"], vectors=True),
    "get where": lambda h, q: h.get(where={"lang": "fr", "year": {"$gte": 2015}}, limit=20),
    "get ids where": lambda h, q: h.get(["d1", "d2", "d3", "d4"], where="lang <> 'de'"),
}


@pytest.mark.parametrize("call", SEARCHES.values(), ids=SEARCHES.keys())
def test_searches_and_reads_equal_the_local_handles(local, remote, data, call):
    _, _, queries = data
    assert_same(call(local, queries), call(remote, queries))


def test_get_pages_through_a_condition_alike(local, remote):
    pages = {}
    for name, handle in (("local", local), ("remote", remote)):
        pages[name], after = [], None
        while page := handle.get(where="year >= 2018", limit=16, after=after):
            pages[name].append(page)
            after = page[-1].row
    for a, b in zip(pages["local"], pages["remote"], strict=True):
        assert_same(a, b)
    assert len(pages["local"]) > 2 and [r.id for p in pages["local"] for r in p] == \
        [r.id for r in local.get(where="year >= 2018")]


ERRORS = {
    "wrong dims": lambda h: h.search_batch(np.ones((2, DIM - 1), np.float32)),
    "zero vector": lambda h: h.search(np.zeros(DIM, np.float32)),
    "not a number": lambda h: h.search_batch([[0.5] * DIM, ["x"] * DIM]),
    "unknown option": lambda h: h.search(np.ones(DIM), kk=3),
    "k of 0": lambda h: h.search(np.ones(DIM), k=0),
    "k not an int": lambda h: h.search(np.ones(DIM), k=2.5),
    "unknown column": lambda h: h.search(np.ones(DIM), where="colour = 'red'"),
    "sql syntax": lambda h: h.search(np.ones(DIM), where="lang = = 'en'"),
    "dict operator": lambda h: h.search(np.ones(DIM), where={"year": {"$like": 3}}),
    "text without a model": lambda h: h.search("what is a vector"),
    "rerank without a cross-encoder": lambda h: h.search(np.ones(DIM), rerank=True),
    "hybrid without texts": lambda h: h.search(np.ones(DIM), mode="hybrid"),
    "per-query filters miscounted": lambda h: h.search_batch(np.ones((2, DIM)), where=["lang = 'en'"]),
    "get without ids or where": lambda h: h.get(),
    "get after with ids": lambda h: h.get(["d1"], after=3),
    "get negative limit": lambda h: h.get(where="true", limit=-1),
}


@pytest.mark.parametrize("call", ERRORS.values(), ids=ERRORS.keys())
def test_errors_are_the_same_class(local, remote, call):
    mine, theirs = raised(call, local), raised(call, remote)
    assert type(theirs) is type(mine), (mine, theirs)
    assert str(theirs)  # a message naming the problem


CHANGES = [  # (the change in process, the same through the handle)
    ("add", lambda path, x, ids, attrs: indexing.add(path, x, ids=ids, texts=[f"new {i}" for i in ids],
                                                    attributes=attrs, quiet=True),
     lambda h, x, ids, attrs: h.add(x, ids=ids, texts=[f"new {i}" for i in ids], attributes=attrs)),
    ("upsert", lambda path, x, ids, attrs: indexing.add(path, x, ids=["d7", *ids], texts=["up", *ids],
                                                       attributes={k: v[:len(ids) + 1] for k, v in attrs.items()},
                                                       upsert=True, quiet=True),
     lambda h, x, ids, attrs: h.upsert(x, ids=["d7", *ids], texts=["up", *ids],
                                      attributes={k: v[:len(ids) + 1] for k, v in attrs.items()})),
    ("delete ids", lambda path, *_: indexing.delete(path, ["d9", "d10", "never"], missing_ok=True, quiet=True),
     lambda h, *_: h.delete(["d9", "d10", "never"], missing_ok=True)),
    ("delete where", lambda path, *_: indexing.delete(path, where={"lang": "fr", "year": {"$lt": 2008}}, quiet=True),
     lambda h, *_: h.delete(where={"lang": "fr", "year": {"$lt": 2008}})),
    ("delete ids where", lambda path, *_: indexing.delete(path, ["d20", "d21", "d22"], where="lang = 'en'",
                                                          quiet=True),
     lambda h, *_: h.delete(["d20", "d21", "d22"], where="lang = 'en'")),
]


def test_changes_through_the_server_equal_those_in_process(local, remote, folder, data):
    _, _, queries = data
    rng = np.random.default_rng(5)
    for n, (name, here, there) in enumerate(CHANGES):
        x = rng.standard_normal((4, DIM)).astype(np.float32)
        ids = [f"{name}-{n}-{i}" for i in range(len(x) - (name == "upsert"))]
        attrs = {**attributes(rng, len(x)), "shelf": np.array(["A1", None, "B2", None], dtype=object)}
        mine = here(folder / "local", x, ids, attrs)
        theirs = there(remote, x, ids, attrs)
        local.reload()
        keys = ("op", "generation", "added", "replaced", "deleted", "unknown", "not_passing")
        assert {k: mine.get(k) for k in keys} == {k: theirs.get(k) for k in keys}, name
        assert remote.generation == local.generation and len(remote) == len(local), name
        assert remote.manifest.attributes == local.manifest.attributes
        for query in ("dense batch", "sql filter", "dict filter", "hybrid"):
            assert_same(SEARCHES[query](local, queries), SEARCHES[query](remote, queries))
        assert_same(local.get(where="shelf IS NOT NULL"), remote.get(where="shelf IS NOT NULL"))


REFUSED_CHANGES = {  # (in process, through the handle), given a live id; nothing changes on either side
    "id already in the index": (lambda p, i: indexing.add(p, np.ones((1, DIM)), ids=[i], texts=["t"], quiet=True),
                                lambda h, i: h.add(np.ones((1, DIM)), ids=[i], texts=["t"])),
    "wrong dims": (lambda p, i: indexing.add(p, np.ones((1, 3)), ids=["z"], texts=["t"], quiet=True),
                   lambda h, i: h.add(np.ones((1, 3)), ids=["z"], texts=["t"])),
    "attribute of another type": (
        lambda p, i: indexing.add(p, np.ones((1, DIM)), ids=["z"], texts=["t"], attributes={"year": [2.5]},
                                  quiet=True),
        lambda h, i: h.add(np.ones((1, DIM)), ids=["z"], texts=["t"], attributes={"year": [2.5]})),
    "delete of unknown ids": (lambda p, i: indexing.delete(p, [i, "never"], quiet=True),
                              lambda h, i: h.delete([i, "never"])),
    "delete with a bad condition": (lambda p, i: indexing.delete(p, where="colour = 'red'", quiet=True),
                                    lambda h, i: h.delete(where="colour = 'red'")),
    "delete of nothing": (lambda p, i: indexing.delete(p, quiet=True), lambda h, i: h.delete()),
}


@pytest.mark.parametrize("calls", REFUSED_CHANGES.values(), ids=REFUSED_CHANGES.keys())
def test_refused_changes_are_the_same_class_and_change_nothing(local, remote, folder, calls):
    here, there = calls
    before, live = remote.generation, local.get(where="true", limit=1)[0].id
    mine = raised(lambda p: here(p, live), folder / "local")
    theirs = raised(lambda h: there(h, live), remote)
    assert type(theirs) is type(mine) and isinstance(mine, InputError), (mine, theirs)
    assert remote.reload() is False and remote.generation == before


def test_a_change_while_another_process_holds_the_index_is_refused_alike(local, remote, folder):
    for path, call in ((folder / "local", lambda: indexing.delete(folder / "local", ["d1"], quiet=True)),
                       (folder / "served" / "docs", lambda: remote.delete(["d1"]))):
        lock = BuildLock(path)
        try:
            with pytest.raises(BuildRefused, match="wait for it"):
                call()
        finally:
            lock.release()


def test_http_errors_and_a_missing_index(server, folder):
    with pytest.raises(IndexFormatError, match="no index"):
        retrieval.open_index(folder / "nothing")
    with pytest.raises(IndexFormatError, match="no index named 'nothing'"):
        retrieval.open_index(f"{server.url}/indexes/nothing", token=TOKEN)
    with pytest.raises(RemoteError, match="bearer token is wrong") as wrong:
        retrieval.open_index(f"{server.url}/indexes/docs", token="guess")
    assert wrong.value.status == 401
    with pytest.raises(RemoteError, match="check the URL"):
        retrieval.open_index(f"{server.url}/elsewhere", token=TOKEN)
    with pytest.raises(RemoteError, match="no answer from"):
        retrieval.open_index("http://127.0.0.1:9/indexes/docs", timeout=2)
    with pytest.raises(InputError, match="reranker: options of a local index"):
        retrieval.open_index(f"{server.url}/indexes/docs", reranker="x")
    with pytest.raises(InputError, match="a pyarrow expression cannot be sent"):
        import pyarrow.compute as pc
        retrieval.open_index(f"{server.url}/indexes/docs", token=TOKEN).search(np.ones(DIM), where=pc.field("a") > 1)
    closed = retrieval.open_index(f"{server.url}/indexes/docs", token=TOKEN)
    closed.close()
    with pytest.raises(InputError, match="was closed"):
        closed.search(np.ones(DIM))


def test_a_get_beyond_the_servers_limit_says_how_to_page(remote):
    with pytest.raises(InputError, match="page with limit and after"):
        remote.get(where="true")  # the server returns at most --max-docs 50


# -- a server of many indexes -------------------------------------------------------------------------------
def test_indexes_are_created_by_a_first_add_served_apart_and_dropped(server, remote, folder):
    url, auth = server.url, {"Authorization": f"Bearer {TOKEN}"}
    rng = np.random.default_rng(9)
    fresh = retrieval.open_index(f"{url}/indexes/fresh", token=TOKEN, must_exist=False)
    assert not fresh.exists
    x = rng.standard_normal((60, 8)).astype(np.float32)  # another dim than docs: indexes are independent
    created = fresh.add(x[:40], ids=list(range(40)), attributes={"group": [i % 4 for i in range(40)]})
    assert created["op"] == "build" and created["added"] == 40 and fresh.exists and len(fresh) == 40
    assert fresh.add(x[40:], attributes={"group": [9] * 20})["generation"] == 2  # ints numbered after the last
    assert [r.id for r in fresh.get(where={"group": 9}, limit=3)] == [40, 41, 42]
    assert fresh.search(x[45], k=1)[0].id == 45 and fresh.full_dim == 8 and remote.full_dim == DIM
    listed = httpx.get(f"{url}/indexes", headers=auth).json()
    assert {e["name"]: e["count"] for e in listed} == {"docs": len(remote), "fresh": 60}
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/health", headers=auth).json()["indexes"] == ["docs", "fresh"]

    lock = BuildLock(folder / "served" / "fresh")  # one index held by another process: the others go on
    try:
        with pytest.raises(BuildRefused):
            fresh.delete([1])
        with pytest.raises(BuildRefused):
            fresh.drop()
        assert remote.search(np.ones(DIM), k=1) and len(fresh) == 60
    finally:
        lock.release()

    assert httpx.delete(f"{url}/indexes/fresh").status_code == 401  # the token, to drop one
    assert fresh.drop() == {"dropped": "fresh"} and fresh.closed
    assert not (folder / "served" / "fresh").exists() and [e["name"] for e in
                                                          httpx.get(f"{url}/indexes", headers=auth).json()] == ["docs"]
    with pytest.raises(IndexFormatError, match="its first add creates it"):
        retrieval.open_index(f"{url}/indexes/fresh", token=TOKEN)
    with pytest.raises(InputError, match="index name '-bad'"):
        RemoteIndex(f"{url}/indexes/-bad", token=TOKEN, must_exist=False).add(x[:2])
    with pytest.raises(InputError, match="first documents' vectors"):
        RemoteIndex(f"{url}/indexes/texts", token=TOKEN, must_exist=False).add(["a text"], ids=["a"])
    assert not (folder / "served" / "texts").exists()


def test_the_single_index_form_serves_the_client_at_its_root(folder, local, data):
    _, _, queries = data
    copy = shutil.copytree(folder / "local", folder / "single")
    served = Server(copy, folder / "single.log")
    try:
        with retrieval.open_index(served.url) as remote, retrieval.open_index(copy) as here:
            assert_same(here.search_batch(queries, k=5, where={"lang": "en"}),
                        remote.search_batch(queries, k=5, where={"lang": "en"}))
            assert_same(here.get(where="year < 2004", limit=10), remote.get(where="year < 2004", limit=10))
            assert len(remote) == len(here)
            with pytest.raises(RemoteError, match="only those can be dropped"):
                remote.drop()  # a server of one index drops nothing
    finally:
        served.stop()


# -- the LangChain and LlamaIndex stores over a URL -------------------------------------------------------------
def test_the_langchain_store_over_a_url_equals_one_over_a_folder(server, tmp_path):
    pytest.importorskip("langchain_core")
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from matryoshka.integrations.langchain import MatryoshkaVectorStore
    texts = [f"passage {i} about {['cats', 'dogs', 'owls'][i % 3]}" for i in range(30)]
    metas = [{"animal": ["cat", "dog", "owl"][i % 3], "year": 2000 + i, "tags": ["a", "b"][: i % 3]}
             for i in range(30)]
    ids = [f"p{i}" for i in range(30)]
    stores = [MatryoshkaVectorStore(target, DeterministicFakeEmbedding(size=16), open_options=options)
              for target, options in ((tmp_path / "lc", {}), (f"{server.url}/indexes/lc", {"token": TOKEN}))]
    try:
        for store in stores:
            store.add_texts(texts[:20], metas[:20], ids=ids[:20])  # the first add creates the index
            store.add_texts(texts[20:], metas[20:], ids=ids[20:])
            store.delete(["p3"])
        for query, f in (("cats", {"animal": "cat"}), ("owls", {"year": {"$gte": 2010}, "animal": {"$ne": "dog"}}),
                         ("x", "list_contains(tags, 'b')")):
            here, there = (s.similarity_search_with_score(query, k=6, filter=f) for s in stores)
            assert [(d.id, d.metadata, d.page_content) for d, _ in here] == \
                [(d.id, d.metadata, d.page_content) for d, _ in there] and len(here) > 0
            np.testing.assert_allclose([s for _, s in here], [s for _, s in there], rtol=1e-6)
        assert [d.id for d in stores[1].max_marginal_relevance_search("dogs", k=3, fetch_k=10)] == \
            [d.id for d in stores[0].max_marginal_relevance_search("dogs", k=3, fetch_k=10)]
    finally:
        for store in stores:
            store.close()


def test_the_llama_index_store_over_a_remote_handle_equals_one_over_a_folder(server, tmp_path):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores.types import (FilterOperator, MetadataFilter, MetadataFilters,
                                                      VectorStoreQuery)

    from matryoshka.integrations.llama_index import MatryoshkaLlamaStore
    rng = np.random.default_rng(4)
    nodes = [TextNode(id_=f"n{i}", text=f"node {i}", metadata={"kind": ["a", "b"][i % 2], "n": i},
                      embedding=rng.standard_normal(12).tolist()) for i in range(24)]
    handle = retrieval.open_index(f"{server.url}/indexes/llama", token=TOKEN, must_exist=False)
    stores = [MatryoshkaLlamaStore(tmp_path / "li"), MatryoshkaLlamaStore(handle)]
    try:
        for store in stores:
            assert store.add(nodes) == [n.node_id for n in nodes]
        filters = MetadataFilters(filters=[MetadataFilter(key="kind", value="b"),
                                           MetadataFilter(key="n", value=5, operator=FilterOperator.GT)])
        query = VectorStoreQuery(query_embedding=nodes[7].embedding, similarity_top_k=4, filters=filters)
        here, there = (s.query(query) for s in stores)
        assert here.ids == there.ids and here.ids[0] == "n7" and len(here.ids) == 4
        np.testing.assert_allclose(here.similarities, there.similarities, rtol=1e-6)
        assert [n.get_content() for n in here.nodes] == [n.get_content() for n in there.nodes]
        assert [n.node_id for n in stores[1].get_nodes(filters=filters)] == \
            [n.node_id for n in stores[0].get_nodes(filters=filters)]
        among = VectorStoreQuery(query_embedding=nodes[2].embedding, similarity_top_k=3, node_ids=["n1", "n2", "n9"])
        here, there = (s.query(among) for s in stores)  # those nodes scored exactly, without the index
        assert here.ids == there.ids and here.ids[0] == "n2" and set(here.ids) == {"n1", "n2", "n9"}
        np.testing.assert_allclose(here.similarities, there.similarities, rtol=1e-6)
    finally:
        for store in stores:
            store.close()
