"""The server's JSON bodies as pydantic models: what each endpoint takes and answers (and /openapi.json shows).

Requests are strict: an unknown field, a string for a number or a number for a flag is a 422 naming the field,
never a silent conversion. Depths and switches left out take the index's defaults (its measured operating point).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Id = int | str
# JSON values an attribute column takes: numbers, strings, booleans, lists of strings; null is missing
AttributeValue = bool | int | float | str | list[str] | None
QUERY_FIELDS = ("query", "vector", "queries", "vectors")
WHERE = ("SQL condition over the attributes, e.g. \"lang = 'en' AND year >= 2020\", or a dict filter, e.g. "
         "{\"lang\": \"en\", \"year\": {\"$gte\": 2020}}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchOptions(Strict):
    """Depth and switch of each stage (`SearchParams`), and the filter; None: the index's default."""

    k: int = Field(10, ge=1, description="hits per query")
    where: str | dict | list[str | dict | None] | None = Field(
        None, description=f"{WHERE}; or one per query (null: none)")
    nprobe: int | None = Field(None, ge=1, description="IVF lists scanned per query")
    k1: int | None = Field(None, ge=1, description="first-pass depth")
    k2: int | None = Field(None, ge=1, description="kept after int8 re-scoring")
    k3: int | None = Field(None, ge=1, description="kept after full re-scoring, for the cross-encoder")
    int8: bool | None = Field(None, description="run the int8 re-scoring stage")
    full: bool | None = Field(None, description="run the full-vector re-scoring stage")
    rerank: bool | None = Field(None, description="run the cross-encoder (the server's --reranker; texts only)")
    full_dims: int | None = Field(None, ge=1, description="re-score with only the first dims")
    probe_margin: float | None = Field(None, ge=0, description="skip lists trailing the nearest by more")
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    k_lexical: int | None = Field(None, ge=1, description="hybrid: BM25 candidates joined to the first pass")
    fusion: Literal["rrf", "weighted"] | None = None
    lexical_weight: float | None = Field(None, ge=0)
    lexical_syntax: bool | None = Field(None, description="read query texts in tantivy's query language")
    coarse_ef: int | None = Field(None, ge=1, description="search depth of an HNSW coarse quantizer")

    def options(self) -> dict[str, Any]:
        """The stage options given (those left out keep the index's defaults), without k and where."""
        given = {name: getattr(self, name) for name in SearchOptions.model_fields if name not in ("k", "where")}
        return {name: v for name, v in given.items() if v is not None}


class SearchRequest(SearchOptions):
    """One query (`query` text or `vector`) or a batch (`queries` texts or `vectors`): exactly one of the four."""

    query: str | None = Field(None, description="one query text (an index built with a model)")
    vector: list[float] | None = Field(None, description="one full-dim query vector")
    queries: list[str] | None = Field(None, min_length=1, description="query texts")
    vectors: list[list[float]] | None = Field(None, min_length=1, description="full-dim query vectors")
    query_texts: list[str] | None = Field(None, description="texts of vector queries, for the cross-encoder")

    @model_validator(mode="after")
    def _one_input(self) -> "SearchRequest":
        given = [f for f in QUERY_FIELDS if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(QUERY_FIELDS)}; got "
                             f"{', '.join(given) if given else 'none'}")
        return self

    @property
    def single(self) -> bool:
        return self.query is not None or self.vector is not None

    def batch(self) -> list[str] | list[list[float]]:
        """The queries as a list (one query becomes a batch of one)."""
        if self.single:
            return [self.query] if self.query is not None else [self.vector]
        return self.queries if self.queries is not None else self.vectors


class Hit(BaseModel):
    id: Id
    score: float | None = Field(description="the score of the last stage that ran")
    row: int = Field(description="global row in the index (changes with compaction)")
    text: str | None = None
    scores: dict[str, float | None] = Field(description="stage name -> score, for each stage that ran")


class SearchResponse(BaseModel):
    results: list[list[Hit]] | None = Field(None, description="a batch (`queries` or `vectors`): hits per query, "
                                                               "best first")
    hits: list[Hit] | None = Field(None, description="a single query (`query` or `vector`): its hits, best first")
    generation: int = Field(description="the index generation that answered")
    timings_ms: dict[str, float] = Field(description="milliseconds per stage")
    partial: bool = False
    missing_shards: list[int] = Field(default_factory=list, description="shards that could not answer (partial)")
    stages: list[str] = Field(default_factory=list, description="the stages that ran, in order (a hit's `scores` "
                                                                "has those that scored it)")


class ExplainResponse(BaseModel):
    plan: dict[str, Any] = Field(description="retrieval.plan.Plan as a dict: params, path, steps, notes")
    text: str = Field(description="the plan as `matryoshka search --explain` prints it")
    generation: int


class Document(Strict):
    id: Id | None = Field(None, description="external id (left out: the next integers, on an int-id index)")
    vector: list[float] | None = Field(None, description="full-dim vector (left out: the index's model "
                                                            "encodes `text`)")
    text: str | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)


class AddRequest(Strict):
    documents: list[Document] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "AddRequest":
        for name in ("id", "vector", "text"):
            given = [getattr(d, name) is not None for d in self.documents]
            if any(given) and not all(given):
                raise ValueError(f"documents[{given.index(False)}] has no {name} but documents[{given.index(True)}] "
                                 f"has one: give {name} for every document or for none")
        if all(d.vector is None for d in self.documents) and all(d.text is None for d in self.documents):
            raise ValueError("documents need a vector, or a text for the index's model to encode")
        return self


class DeleteRequest(Strict):
    """Documents by id, those passing `where`, or those of the ids that pass it."""

    ids: list[Id] | None = None
    where: str | dict | None = Field(None, description=f"{WHERE}; 'true' deletes every document")
    missing_ok: bool = Field(True, description="ignore ids not in the index (false: refuse the whole delete)")


class GetRequest(Strict):
    """Stored documents by id (in the order given), or those passing `where` in row order, a page at a time."""

    ids: list[Id] | None = None
    where: str | dict | None = Field(None, description=f"{WHERE}; 'true' reads every document")
    limit: int | None = Field(None, ge=0, description="at most this many records (and at most --max-docs)")
    after: int | None = Field(None, ge=0, description="paging: the `row` of the last record of the previous page")
    vectors: bool = Field(False, description="add each document's full vector")


class Record(BaseModel):
    id: Id
    row: int = Field(description="global row in the index (stable within a generation)")
    text: str | None = None
    attributes: dict[str, Any] = Field(description="the document's attributes; nulls left out")
    vector: list[float] | None = None


class GetResponse(BaseModel):
    records: list[Record]
    generation: int = Field(description="the index generation that answered")


class IndexEntry(BaseModel):
    name: str
    generation: int | None = None
    count: int | None = Field(None, description="live documents")
    error: str | None = Field(None, description="why the index could not be opened")


class TuneRequest(Strict):
    target_recall: float = Field(0.95, gt=0, le=1, description="recall@10 the operating point must reach")
    from_traffic: bool = Field(True, description="measure on the live queries kept (serve --sample-queries N); "
                                                 "false: on a sample of the index's own vectors")


class ChangeResponse(BaseModel):
    """The engine's change record (`indexing.add` / `delete`): op, generation, counts, seconds."""

    model_config = ConfigDict(extra="allow")
    op: str
    generation: int


class Health(BaseModel):
    """Up; the other fields only with the token (or on a server without one)."""

    status: Literal["ok"] = "ok"
    generation: int | None = Field(None, description="the generation served")
    count: int | None = Field(None, description="live documents")
    reload_error: str | None = Field(None, description="why the newest generation on disk could not be "
                                                          "opened (the one named is served meanwhile)")
    indexes: list[str] | None = Field(None, description="a server of many indexes: their names")


class Error(BaseModel):
    error: str = Field(description="the kind of error")
    detail: str = Field(description="what is wrong and how to fix it")
    classes: list[str] = Field(description="the engine's exception class and its bases, most specific first, "
                                           "for a client to raise the same (empty: an error of HTTP alone)")
    errors: list[dict[str, Any]] | None = Field(None, description="422: each invalid field")
