"""Trust, round 4: attributes and metadata. An add cannot break the index's filters (a name differing only by
case) nor change values silently (a cast across kinds, texts an index cannot keep); the LangChain and
LlamaIndex stores keep every key filterable whatever kinds it takes across calls, give each key its own column,
read a lone string as one value, and answer every dict and metadata filter as a Python evaluation of it does."""
import hashlib
import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import index_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matryoshka import indexing, retrieval
from matryoshka.core.errors import InputError

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (FilterCondition, FilterOperator, MetadataFilter,  # noqa: E402
                                                  MetadataFilters, VectorStoreQuery)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict  # noqa: E402

from matryoshka.integrations.documents import column  # noqa: E402
from matryoshka.integrations.langchain import MatryoshkaVectorStore  # noqa: E402
from matryoshka.integrations.llama_index import MatryoshkaLlamaStore  # noqa: E402

N, DIM = 300, 16
FAST = dict(quiet=True, tune=False, select=False)


def vectors(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def tiny(tmp_path):
    """An index of 300 vectors (ids d0.., no texts) with a string, a boolean, a float and an integer attribute."""
    out = tmp_path / "tiny"
    indexing.build(out, vectors(), ids=[f"d{i}" for i in range(N)],
                   attributes={"lang": ["en", "de"] * (N // 2), "flag": [True, False, False] * (N // 3),
                               "score": np.linspace(0, 1, N), "year": np.arange(N) % 7}, **FAST)
    return out


def lang_store(path, dim: int = 8) -> MatryoshkaVectorStore:
    return MatryoshkaVectorStore(path, DeterministicFakeEmbedding(size=dim))


def embed(text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(8).tolist()


def node(i, **meta) -> TextNode:
    n = TextNode(id_=f"n{i}", text=f"node {i}", metadata=meta, embedding=embed(f"node {i}"))
    n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 2}")
    return n


def ids(docs) -> set:
    return {d.id for d in docs}


def node_ids(store, key, value, op=FilterOperator.EQ) -> set:
    f = MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])
    return {n.node_id for n in store.get_nodes(filters=f)}


# -- 2. an add cannot break every filter ------------------------------------------------------------------------
def test_an_add_whose_attribute_differs_only_by_case_is_refused_before_writing(tiny, tmp_path):
    before = index_files(tiny)
    with pytest.raises(InputError, match="'Lang' differs only by case from the index's attribute 'lang'.*use "
                                         "another name"):
        indexing.add(tiny, vectors(3, 1), ids=["a", "b", "c"], attributes={"Lang": ["x"] * 3}, quiet=True)
    assert index_files(tiny) == before
    index = retrieval.open_index(tiny)
    assert len(index.get(where="true")) == N and len(index.get(where="lang = 'en'")) == N // 2
    # the stores refuse it by name too, and keep answering filtered calls
    store = lang_store(tmp_path / "lc")
    store.add_texts(["a"], [{"lang": "en"}], ids=["a"])
    with pytest.raises(InputError, match="metadata keys 'lang' and 'Lang' differ only by case"):
        store.add_texts(["b"], [{"Lang": "fr"}], ids=["b"])
    assert ids(store.similarity_search("a", k=5, filter={"lang": "en"})) == {"a"}
    llama = MatryoshkaLlamaStore(tmp_path / "li")
    llama.add([node(0, lang="en")])
    with pytest.raises(InputError, match="differ only by case"):
        llama.add([node(1, LANG="fr")])
    assert node_ids(llama, "lang", "en") == {"n0"}


# -- 9. values are never changed silently across adds -----------------------------------------------------------
@pytest.mark.parametrize("name, values, given", [
    ("lang", [7, 8, 9], "int64"), ("flag", [1, 0, 1], "int64"), ("year", ["1", "2", "3"], "string"),
    ("year", [1.5, 2.0, 3.0], "double"), ("flag", ["true"] * 3, "string"), ("year", [True] * 3, "bool"),
    ("score", [["a"]] * 3, "list<item: string>"),
])
def test_an_add_refuses_values_that_a_cast_would_change_by_name_before_writing(tiny, name, values, given):
    before = index_files(tiny)
    with pytest.raises(InputError, match=rf"attribute '{name}' is {given}, the index stores \w+.*convert the "
                                         "values, or use another attribute name"):
        indexing.add(tiny, vectors(3, 1), ids=["a", "b", "c"], attributes={name: values}, quiet=True)
    assert index_files(tiny) == before


def test_an_add_takes_its_columns_type_lossless_widening_and_nulls(tiny):
    indexing.add(tiny, vectors(4, 1), ids=["a", "b", "c", "e"], quiet=True,
                 attributes={"score": [2, 3, 4, 5], "year": np.array([1, 2, 3, 4], np.int32),
                             "lang": [None] * 4, "flag": pa.array([None] * 4, pa.int64())})
    index = retrieval.open_index(tiny)
    assert {r.id for r in index.get(where="score = 3")} == {"b"}  # an integer into a float column, exact
    assert {r.id for r in index.get(where="lang IS NULL AND flag IS NULL")} == {"a", "b", "c", "e"}
    with pytest.raises(InputError, match="attribute 'score' is int64, the index stores double.*not in range"):
        indexing.add(tiny, vectors(1, 2), ids=["f"], attributes={"score": [2**53 + 1]}, quiet=True)  # not exact
    assert {r.id for r in index.get(where="lang = '7'")} == set()


def test_texts_given_to_an_index_without_texts_are_refused_by_name(tiny, tmp_path):
    before = index_files(tiny)
    with pytest.raises(InputError, match="built without texts, so it cannot store the texts given.*rebuild"):
        indexing.add(tiny, vectors(2, 1), ids=["a", "b"], texts=["x", "y"], quiet=True,
                     attributes={"lang": ["en", "en"]})
    x = vectors(2, 1)
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()),
                                                                                             DIM),
                             "text": ["x", "y"], "lang": ["en", "en"]}), tmp_path / "more.parquet")
    with pytest.raises(InputError, match=r"built without texts.*the input's `text` column"):
        indexing.add(tiny, tmp_path / "more.parquet", quiet=True)
    assert index_files(tiny) == before
    # the LangChain store over such an index refuses its documents' texts too, rather than losing them
    store = lang_store(tiny, DIM)
    with pytest.raises(InputError, match="built without texts"):
        store.add_texts(["some text"], [{"lang": "en"}], ids=["t"])


def test_texts_encoded_into_an_index_without_texts_are_added_with_a_warning(tmp_path):
    from matryoshka.core.encoder import DEFAULT_MODEL  # the usage docs promise an add of texts to encode
    out = tmp_path / "vec"
    indexing.build(out, np.random.default_rng(0).standard_normal((N, 384)).astype(np.float32),
                   ids=[f"d{i}" for i in range(N)], model=DEFAULT_MODEL, **FAST)
    with pytest.warns(UserWarning, match="built without texts: the texts given are encoded .* not stored"):
        indexing.add(out, ["a new document"], ids=["new"], quiet=True)
    assert [r.id for r in retrieval.open_index(out).get(["new"])] == ["new"]


# -- 5. the stores: a key's kind may change between calls --------------------------------------------------------
def test_a_key_may_change_kind_between_adds_and_every_value_stays_filterable(tmp_path):
    store = lang_store(tmp_path / "lc")
    metas = [{"n": 1, "f": 1.5}, {"n": "x"}, {"n": 2.5, "f": 2}, {"n": ["a", "b"]}, {"n": True}, {"n": {"a": 1}},
             {"n": 3, "f": 2**53 + 1}, {}]
    for i, m in enumerate(metas):  # one add each: every kind after the first is new to the key's column
        store.add_texts([f"t{i}"], [m], ids=[f"d{i}"])
    assert {d.id: d.metadata for d in store.get_by_ids([f"d{i}" for i in range(8)])} == \
        {f"d{i}": m for i, m in enumerate(metas)}

    def search(f):
        return ids(store.similarity_search("q", k=20, filter=f))
    assert search({"n": 1}) == {"d0"} and search({"n": "x"}) == {"d1"} and search({"n": True}) == {"d4"}
    assert search({"n": {"$gt": 2}}) == {"d2", "d6"}  # numbers of both columns, nothing of another kind
    assert search({"n": {"$ne": 1}}) == {"d2", "d6"}  # another kind is unknown: neither = nor <> matches it
    assert search({"$not": {"n": 1}}) == {"d2", "d6"}
    assert search({"n": {"$in": [2.5, "x", False]}}) == {"d1", "d2"}
    assert search({"f": 2}) == {"d2"} and search({"f": 2**53 + 1}) == {"d6"}  # int after float: exact
    assert search({"f": {"$gt": 2**53}}) == {"d6"}
    assert search("n >= 1") == {"d0", "d6"}  # SQL names columns: the key's own holds its first kind
    assert search("list_contains(\"_strings:n\", 'a')") == {"d3"}
    attrs = json.loads((tmp_path / "lc" / "manifest.json").read_text())["attributes"]
    assert {k: attrs[k] for k in ("n", "_string:n", "_float:n", "f", "_int:f")} == \
        {"n": "int64", "_string:n": "string", "_float:n": "double", "f": "double", "_int:f": "int64"}


def test_an_integer_beyond_int64_and_a_bad_k_are_refused_by_name(tmp_path):
    store = lang_store(tmp_path / "lc")
    store.add_texts(["a"], [{"n": 1}], ids=["a"])
    before = index_files(tmp_path / "lc")
    with pytest.raises(InputError, match=r"metadata 'big' of document 0 is 18446744073709551616, an integer beyond "
                                         r"int64.*store it as a string or a float"):
        store.add_texts(["b"], [{"big": 2**64}], ids=["b"])
    assert index_files(tmp_path / "lc") == before
    for k in ["5", 0, -1, 2.0, True]:
        with pytest.raises(InputError, match=rf"k must be a positive integer; got {k!r}"):
            store.similarity_search("a", k=k)
    with pytest.raises(InputError, match="fetch_k must be a positive integer"):
        store.max_marginal_relevance_search("a", k=2, fetch_k="9")
    with pytest.raises(InputError, match="metadata key '_private' cannot be filtered"):
        store.similarity_search("a", k=2, filter={"_private": 1})
    with pytest.raises(InputError, match="metadata keys are strings"):
        store.add_texts(["c"], [{1: "x"}], ids=["c"])
    llama = MatryoshkaLlamaStore(tmp_path / "li")
    llama.add([node(0, n=1)])
    with pytest.raises(InputError, match="similarity_top_k must be a positive integer; got '5'"):
        llama.query(VectorStoreQuery(query_embedding=embed("x"), similarity_top_k="5"))
    assert store.similarity_search("a", k=3, filter={"never_seen": 1}) == []  # no document holds it


# -- 6. one key, one column --------------------------------------------------------------------------------------
def test_reserved_and_escaped_keys_never_share_a_column(tmp_path):
    keys = ["id", "meta_id", "meta_meta_id", "text", "meta_text", "embedding", "meta_x", "x", "Id", "metaid"]
    assert len({column(k) for k in keys}) == len(keys)
    assert (column("id"), column("meta_id"), column("meta_x")) == ("meta_id", "meta_meta_id", "meta_x")
    store = lang_store(tmp_path / "lc")
    store.add_texts(["a", "b"], [{"id": "AAA"}, {"meta_id": "AAA", "id": "BBB"}], ids=["1", "2"])
    assert ids(store.similarity_search("a", k=5, filter={"id": "AAA"})) == {"1"}
    assert ids(store.similarity_search("a", k=5, filter={"meta_id": "AAA"})) == {"2"}
    assert ids(store.similarity_search("a", k=5, filter={"id": "BBB"})) == {"2"}
    llama = MatryoshkaLlamaStore(tmp_path / "li")
    llama.add([node(0, id="AAA"), node(1, meta_id="AAA", id="BBB")])
    assert node_ids(llama, "id", "AAA") == {"n0"} and node_ids(llama, "meta_id", "AAA") == {"n1"}


# -- 7. LlamaIndex: a lone string is one value --------------------------------------------------------------------
def test_llama_list_operators_read_a_lone_string_as_one_value_and_refuse_other_shapes(tmp_path):
    store = MatryoshkaLlamaStore(tmp_path / "li")
    store.add([node(0, tags=["a", "b"], lang="ab"), node(1, tags=["ab"], lang="a"), node(2, tags=["a"], lang="b")])
    assert node_ids(store, "tags", "ab", FilterOperator.ANY) == {"n1"}
    assert node_ids(store, "tags", "ab", FilterOperator.ALL) == {"n1"}
    assert node_ids(store, "tags", ["a", "b"], FilterOperator.ALL) == {"n0"}
    assert node_ids(store, "tags", ["b", "ab"], FilterOperator.ANY) == {"n0", "n1"}
    assert node_ids(store, "tags", "a", FilterOperator.CONTAINS) == {"n0", "n2"}
    assert node_ids(store, "lang", "ab", FilterOperator.IN) == {"n0"}
    assert node_ids(store, "lang", "ab", FilterOperator.NIN) == {"n1", "n2"}
    assert node_ids(store, "lang", "A", FilterOperator.TEXT_MATCH_INSENSITIVE) == {"n0", "n1"}
    for value, op, message in [(["a"], FilterOperator.CONTAINS, "contains on 'tags' takes one string"),
                               ([1, 2], FilterOperator.ANY, "list conditions on 'tags' match lists of strings"),
                               ([], FilterOperator.ALL, "non-empty list of strings"),
                               ([], FilterOperator.IN, "in on 'tags' takes a non-empty list"),
                               (3, FilterOperator.TEXT_MATCH, "text matches on 'tags' take a string")]:
        with pytest.raises(InputError, match=message):
            node_ids(store, "tags", value, op)


# -- property tests: the stores' filters against a Python evaluation of them ---------------------------------------
KEYS = ["a", "b", "id", "meta_id", "text"]
ALPHABET = "aAbÉé'\" %"
BIG = [2**53 + 1, -2**63, 2**63 - 1]
FLOATS = [-0.0, 0.5, 1.0, 2.5, -3.25, 1e300, 2.0**62, 9007199254740992.0]
texts = st.text(ALPHABET, max_size=3)
numbers = st.one_of(st.integers(-3, 3), st.sampled_from(BIG), st.sampled_from(FLOATS))
scalars = st.one_of(st.booleans(), numbers, texts)
values = st.one_of(st.none(), scalars, st.sampled_from([math.nan, math.inf]), st.lists(texts, max_size=3),
                   st.sampled_from([{"x": 1}, [1, 2], ["a", None], []]))
metadata = st.dictionaries(st.sampled_from(KEYS + ["_p"]), values, max_size=3)
batches = st.lists(st.lists(metadata, min_size=1, max_size=4), min_size=1, max_size=3)


def kind(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list) and all(x is None or isinstance(x, str) for x in v):
        return "strings"
    return "other"


def compare(v, op, x):
    """SQL's three values: None where the document's value is missing or of another kind."""
    if kind(v) is None or kind(v) != kind(x):
        return None
    return {"=": v == x, "<>": v != x, ">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[op]


def member(v, xs):
    same = [x for x in xs if kind(x) == kind(v)]
    return None if kind(v) is None or not same else v in same


def both(parts):
    return False if False in parts else None if None in parts else True


def either(parts):
    return True if True in parts else None if None in parts else False


def negate(p):
    return None if p is None else not p


DICT_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def dict_eval(f: dict, m: dict):
    parts = []
    for key, cond in f.items():
        if key in ("$and", "$or"):
            parts.append((both if key == "$and" else either)([dict_eval(c, m) for c in cond]))
        elif key == "$not":
            parts.append(negate(dict_eval(cond, m)))
        elif not isinstance(cond, dict):
            parts.append(compare(m.get(key), "=", cond))
        else:
            for op, x in cond.items():
                parts.append(compare(m.get(key), DICT_OPS[op], x) if op in DICT_OPS else
                             member(m.get(key), x) if op == "$in" else negate(member(m.get(key), x)))
    return both(parts)


leaf = st.one_of(
    st.builds(lambda k, v: {k: v}, st.sampled_from(KEYS), scalars),
    st.builds(lambda k, op, v: {k: {op: v}}, st.sampled_from(KEYS), st.sampled_from(list(DICT_OPS)), scalars),
    st.builds(lambda k, op, v: {k: {op: v}}, st.sampled_from(KEYS), st.sampled_from(["$in", "$nin"]),
              st.lists(scalars, min_size=1, max_size=3)))
dict_filters = st.recursive(leaf, lambda sub: st.one_of(
    st.builds(lambda op, fs: {op: fs}, st.sampled_from(["$and", "$or"]), st.lists(sub, min_size=1, max_size=3)),
    st.builds(lambda f: {"$not": f}, sub), st.builds(lambda a, b: {**a, **b}, sub, sub)), max_leaves=4)

# each example builds a store and adds to it (~0.1 s an add) and runs its filters (~0.05 s each)
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(batches, st.lists(dict_filters, min_size=1, max_size=4))
def test_langchain_dict_filters_answer_as_a_python_evaluation(batches, filters):
    folder = Path(tempfile.mkdtemp(prefix="trust-lc-"))
    store = lang_store(folder / "idx")
    try:
        stored = {}
        for b, metas in enumerate(batches):
            ids_ = [f"d{(3 * b + i) % 7}" for i in range(len(metas))]  # later batches replace some documents
            store.add_texts([f"text {i}" for i in ids_], metas, ids=ids_)
            stored.update(zip(ids_, metas))
        back = {d.id: d.metadata for d in store.get_by_ids(list(stored))}
        assert json.dumps(back, sort_keys=True) == json.dumps(stored, sort_keys=True)  # NaN compares as text
        for f in filters:
            want = {i for i, m in stored.items() if dict_eval(f, m) is True}
            assert ids(store.similarity_search("q", k=50, filter=f)) == want, f
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def llama_eval(f, m: dict):
    if isinstance(f, MetadataFilters):
        parts = [llama_eval(g, m) for g in f.filters]
        if f.condition == FilterCondition.NOT:
            return negate(both(parts))
        return either(parts) if f.condition == FilterCondition.OR else both(parts)
    v, x, op = m.get(f.key), f.value, f.operator
    ops = {FilterOperator.EQ: "=", FilterOperator.NE: "<>", FilterOperator.GT: ">", FilterOperator.GTE: ">=",
           FilterOperator.LT: "<", FilterOperator.LTE: "<="}
    if op in ops:
        return compare(v, ops[op], x)
    if op in (FilterOperator.IN, FilterOperator.NIN):
        found = member(v, x if isinstance(x, list) else [x])
        return found if op == FilterOperator.IN else negate(found)
    if op == FilterOperator.IS_EMPTY:
        return kind(v) is None or v == "" or v == []
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if kind(v) != "string":
            return None
        return x in v if op == FilterOperator.TEXT_MATCH else x.lower() in v.lower()
    if kind(v) != "strings":
        return None
    xs = [x] if isinstance(x, str) else x
    return all(s in v for s in xs) if op == FilterOperator.ALL else any(s in v for s in xs)


llama_scalars = st.one_of(st.integers(-3, 3), st.sampled_from(BIG), st.sampled_from(FLOATS), texts)
llama_leaf = st.one_of(
    st.builds(lambda k, op, v: MetadataFilter(key=k, value=v, operator=op), st.sampled_from(KEYS),
              st.sampled_from([FilterOperator.EQ, FilterOperator.NE, FilterOperator.GT, FilterOperator.GTE,
                               FilterOperator.LT, FilterOperator.LTE]), llama_scalars),
    st.builds(lambda k, op, v: MetadataFilter(key=k, value=v, operator=op), st.sampled_from(KEYS),
              st.sampled_from([FilterOperator.IN, FilterOperator.NIN]),
              st.one_of(texts, st.lists(texts, min_size=1, max_size=3), st.lists(st.integers(-3, 3), min_size=1,
                                                                                  max_size=3))),
    st.builds(lambda k, op, v: MetadataFilter(key=k, value=v, operator=op), st.sampled_from(KEYS),
              st.sampled_from([FilterOperator.ANY, FilterOperator.ALL]),
              st.one_of(texts, st.lists(texts, min_size=1, max_size=3))),
    st.builds(lambda k, op, v: MetadataFilter(key=k, value=v, operator=op), st.sampled_from(KEYS),
              st.sampled_from([FilterOperator.CONTAINS, FilterOperator.TEXT_MATCH,
                               FilterOperator.TEXT_MATCH_INSENSITIVE]), texts),
    st.builds(lambda k: MetadataFilter(key=k, value=None, operator=FilterOperator.IS_EMPTY), st.sampled_from(KEYS)))
llama_filters = st.recursive(
    st.builds(lambda fs: MetadataFilters(filters=fs), st.lists(llama_leaf, min_size=1, max_size=2)),
    lambda sub: st.builds(lambda fs, c: MetadataFilters(filters=fs, condition=c),
                          st.lists(st.one_of(sub, llama_leaf), min_size=1, max_size=3),
                          st.sampled_from([FilterCondition.AND, FilterCondition.OR, FilterCondition.NOT])),
    max_leaves=4)


@PROPERTY
@given(batches, st.lists(llama_filters, min_size=1, max_size=4))
def test_llama_index_metadata_filters_answer_as_a_python_evaluation(batches, filters):
    folder = Path(tempfile.mkdtemp(prefix="trust-li-"))
    store = MatryoshkaLlamaStore(folder / "idx")
    try:
        stored = {}
        for b, metas in enumerate(batches):
            nodes = [TextNode(id_=f"n{(3 * b + i) % 7}", text=f"text {b}-{i}", metadata=m, embedding=embed(f"{b}-{i}"))
                     for i, m in enumerate(metas)]  # later batches replace some nodes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                store.add(nodes)
            # what LlamaIndex itself keeps of a node's metadata (its JSON makes inf and NaN null)
            stored.update((n.node_id, metadata_dict_to_node(node_to_metadata_dict(n, flat_metadata=False)).metadata)
                          for n in nodes)
        back = {n.node_id: n.metadata for n in store.get_nodes(list(stored))}
        assert json.dumps(back, sort_keys=True) == json.dumps(stored, sort_keys=True)
        for f in filters:
            want = {i for i, m in stored.items() if llama_eval(f, m) is True}
            assert {n.node_id for n in store.get_nodes(filters=f)} == want, f
            found = store.query(VectorStoreQuery(query_embedding=embed("q"), similarity_top_k=50, filters=f))
            assert set(found.ids) == want, f
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_server_takes_the_engines_type_rule(tmp_path):
    """The server's own conversion of JSON attributes must not cast 7 into a string column."""
    import pyarrow as pa

    from matryoshka.integrations.server.schemas import Document
    from matryoshka.integrations.server.service import attribute_table
    stored = pa.schema([("lang", pa.string()), ("year", pa.float64()), ("day", pa.date32())])
    docs = [Document(vector=[1.0, 0.0], attributes={"lang": 7})]
    with pytest.raises(InputError, match="attribute 'lang' is int64, the index stores string"):
        attribute_table(docs, stored)
    ok = attribute_table([Document(vector=[1.0, 0.0], attributes={"year": 2020, "day": "2024-02-29"})], stored)
    assert ok.column("year").type == pa.float64() and ok.column("day").type == pa.date32()
