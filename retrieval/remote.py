"""An index served by `matryoshka serve`, through the local handle's API: `retrieval.open_index(URL, token=...)`.

    index = retrieval.open_index("http://127.0.0.1:8000/indexes/docs", token="...")
    index.search(vector, k=5, where={"lang": "en"})      # [Hit, ...], as Index.search answers
    index.add(vectors, ids=["a", "b"], attributes={"lang": ["en", "de"]})

The URL is the server's root (a server of one index) or /indexes/NAME (a server of a folder of indexes, where
the first add creates an index). Searches, plans and reads come back as the local handle's types (`SearchResult`,
`Hit`, `Record`, `Plan`) with the same values, and the server's refusals as the engine's own exceptions
(`InputError`, `IndexFormatError`, `BuildRefused`, ...); an error of HTTP alone (no token, no server there) is a
`RemoteError`. `add`, `upsert` and `delete` are `indexing.add` and `indexing.delete`, run by the server. Needs
httpx (the `server` extra).
"""
from __future__ import annotations

import datetime
import math
from typing import Any, Sequence

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from matryoshka.core import checks, errors
from matryoshka.core.errors import InputError, MatryoshkaError
from matryoshka.core.params import SearchParams
from matryoshka.core.vectors import as_matrix, normalize
from matryoshka.indexing.ids import id_list
from matryoshka.storage.attribute_schema import manifest_schema
from matryoshka.storage.manifest import Manifest

from .plan import Plan, Step
from .results import Hit, Record, SearchResult


class RemoteError(MatryoshkaError):
    """No server answered at the URL, or it refused for a reason of HTTP alone (no token, no such route);
    `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RemoteIndex:
    """The index served at `url` (its server's root, or /indexes/NAME), with `token` if the server wants one.
    `must_exist=False` makes a handle on an index that its first `add` creates (a server of many indexes).

    `manifest` (and `generation`, `live`, `metric`, `full_dim`) describe the generation the server answered
    last: they follow the server's answers, and `reload()` fetches them again."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 60.0, must_exist: bool = True):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError(f"a remote index is an http:// or https:// URL; got {url!r}")
        self.root = url.rstrip("/")
        self._http: httpx.Client | None = httpx.Client(
            headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=timeout)
        self._manifest: Manifest | None = None
        if must_exist:
            self.reload()

    # -- the generation answered last ----------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self.reload()
        return self._manifest

    @property
    def exists(self) -> bool:
        """True once the server holds the index (False for a name a first add has yet to create)."""
        try:
            return self.manifest is not None
        except errors.IndexFormatError:
            return False

    metric = property(lambda self: self.manifest.metric)
    full_dim = property(lambda self: self.manifest.full_dim)
    index_dim = property(lambda self: self.manifest.index_dim)
    count = property(lambda self: self.manifest.count)
    live = property(lambda self: self.manifest.live)
    generation = property(lambda self: self.manifest.generation)

    def reload(self) -> bool:
        """Fetch the manifest of the generation the server serves; True when it is another than the one held."""
        before = None if self._manifest is None else self._manifest.generation
        self._manifest = Manifest.from_dict(self._call("GET", "/manifest"))
        return self._manifest.generation != before

    def _seen(self, answered: int) -> None:
        if self._manifest is None or answered != self._manifest.generation:
            self.reload()

    def __len__(self) -> int:
        """The live documents the server serves now."""
        health = self._call("GET", "/health")
        if "count" not in health:
            raise RemoteError(f"{self.root} did not say its count: give the server's token")
        self._seen(health["generation"])
        return health["count"]

    def __bool__(self) -> bool:  # an open handle is true even when it holds no documents
        return True

    def info(self) -> dict:
        """`Index.info()` of the served index, as JSON holds it."""
        return self._call("GET", "/info")

    # -- searches ------------------------------------------------------------------------------------------
    def search(self, query, k: int | None = None, **options) -> list[Hit]:
        """Search one query (text or full-dim vector); see `search_batch` for the options."""
        query_texts = options.pop("query_texts", None)
        if not isinstance(query, str):
            query = np.asarray(query, dtype=np.float32)
            if query.ndim != 1:
                raise InputError(f"search takes one query vector (1-D); got shape {query.shape}: use search_batch")
        return self.search_batch([query], k, query_texts=None if query_texts is None else [query_texts],
                                 **options).hits(0)

    def search_batch(self, queries, k: int | None = None, *, params: SearchParams | dict | None = None,
                     query_texts: Sequence[str] | None = None, where=None, rules=None, **options) -> SearchResult:
        """Search a batch (texts, or an (n, full_dim) matrix), as `Index.search_batch` does: `params` and the
        stage `options` (nprobe, k1, k2, ...), `where` (SQL or a dict filter, or one per query), `query_texts`
        for the cross-encoder or hybrid search of vector queries."""
        body = _search_body(queries, k, params, where, rules, options)
        if query_texts is not None:
            body["query_texts"] = list(query_texts)
        answer = self._call("POST", "/search", body)
        self._seen(answer["generation"])
        width = min(body.get("k", SearchParams.k), max(self.live, 1))  # the local result's: k, within the index
        return _result(answer, width, self.manifest.has_text)

    def explain(self, queries=1, k: int | None = None, *, params: SearchParams | dict | None = None, where=None,
                rules=None, **options) -> Plan:
        """The plan the server would run for `queries` (the queries, or a count of text queries); nothing is
        searched."""
        if isinstance(queries, (int, np.integer)) and not isinstance(queries, bool):
            queries = ["?"] * checks.integer("queries", int(queries))  # text queries: not encoded for a plan
        answer = self._call("POST", "/explain", _search_body(queries, k, params, where, rules, options))
        plan = answer["plan"]
        return Plan(**{**plan, "params": SearchParams.from_dict(plan["params"]), "notes": tuple(plan["notes"]),
                       "steps": tuple(Step(**s) for s in plan["steps"])})

    def query_vectors(self, queries) -> tuple[np.ndarray, None]:
        """Query vectors as the index scores them (normalized for its metric); texts are encoded by the server
        only inside a search."""
        if isinstance(queries, str) or (isinstance(queries, (list, tuple)) and queries and
                                        all(isinstance(q, str) for q in queries)):
            raise InputError(f"the index at {self.root} encodes query texts only inside its searches: give query "
                             "vectors here (an embeddings model)")
        return normalize(as_matrix(queries, self.full_dim, "query vectors"), self.metric), None

    # -- documents -----------------------------------------------------------------------------------------
    def get(self, ids=None, *, where=None, limit: int | None = None, after: int | None = None,
            vectors: bool = False) -> list[Record]:
        """Live documents by id (in the order given), or those passing `where` in row order, at most `limit`,
        after the row `after` (paging); as `Index.get`. A server returns at most its --max-docs per call."""
        answer = self._call("POST", "/get", _body(ids=None if ids is None else list(id_list(ids)), where=_where(where),
                                                  limit=limit, after=after, vectors=vectors))
        self._seen(answer["generation"])
        schema = manifest_schema(self.manifest.attributes)
        return [Record(r["id"], r["row"], r["text"], _typed(r["attributes"], schema),
                       None if r["vector"] is None else np.asarray(r["vector"], np.float32))
                for r in answer["records"]]

    def add(self, data, *, ids=None, texts=None, attributes=None) -> dict:
        """`indexing.add` on the server: vectors (or texts its model encodes), with their ids, texts and
        attributes (a pyarrow Table or a dict of columns); ids already in the index are refused. On a server of
        many indexes, the first add creates the index. Returns the change record."""
        return self._change("/add", {"documents": _documents(data, ids, texts, attributes)})

    def upsert(self, data, *, ids=None, texts=None, attributes=None) -> dict:
        """`add`, replacing the documents whose ids are already in the index."""
        return self._change("/upsert", {"documents": _documents(data, ids, texts, attributes)})

    def delete(self, ids=None, *, where=None, missing_ok: bool = False) -> dict:
        """`indexing.delete` on the server: documents by id, those passing `where`, or those of the ids passing
        it; ids not in the index are refused unless `missing_ok`. Returns the change record."""
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]  # one id, not the characters of a string
        return self._change("/delete", _body(ids=None if ids is None else list(id_list(ids)), where=_where(where),
                                             missing_ok=missing_ok))

    def drop(self) -> dict:
        """Remove the whole index from a server of many indexes (DELETE /indexes/NAME); the handle is closed."""
        try:
            answer = self._call("DELETE", "")
        except RemoteError as e:
            if e.status not in (404, 405):
                raise
            raise RemoteError(f"{self.root} is not an index of a server of many (its URL ends /indexes/NAME): only "
                              "those can be dropped; stop a server of one index instead", e.status) from None
        self.close()
        return answer

    def _change(self, path: str, body: dict) -> dict:
        record = self._call("POST", path, body)
        self._seen(record["generation"])
        return record

    # -- the connection ------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        if self._http is None:
            raise InputError(f"the index {self.root} was closed; open it again with retrieval.open_index")
        try:
            r = self._http.request(method, self.root + path, json=body)
        except httpx.TransportError as e:
            raise RemoteError(f"no answer from {self.root} ({type(e).__name__}: {e}): is `matryoshka serve` running "
                              "there?") from None
        if r.status_code >= 400:
            raise _error(r, self.root)
        return r.json()

    def close(self) -> None:
        """Close the connection; using the handle afterwards is an error, as for a local handle."""
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def closed(self) -> bool:
        return self._http is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"RemoteIndex({self.root!r})"


def _error(r: httpx.Response, url: str) -> MatryoshkaError:
    """The server's error as the engine's exception class it names, else a RemoteError."""
    try:
        body = r.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    detail = str(body.get("detail") or r.text[:300] or r.reason_phrase)
    for name in body.get("classes") or ():
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, MatryoshkaError):
            return kind(detail)
    hint = (": check the URL (a server of one index serves at its root, a server of many at /indexes/NAME)"
            if r.status_code in (404, 405) else "")
    return RemoteError(f"{url}: HTTP {r.status_code} {body.get('error', r.reason_phrase)}: {detail}{hint}",
                       r.status_code)


def _search_body(queries, k, params, where, rules, options: dict) -> dict:
    """The JSON body of a search or explain: the queries, `where`, and the options given (None: the server's
    defaults, which are the index's)."""
    if rules is not None:
        raise InputError("rules= (the planner's thresholds) are the server's own; leave them out of a remote search")
    if isinstance(params, SearchParams):
        params = params.to_dict()
    elif params is not None and not isinstance(params, dict):
        raise InputError(f"params= takes a retrieval.SearchParams or a dict of its fields; got {type(params).__name__}")
    return _body(**{**(params or {}), **options, **({} if k is None else {"k": k})}, **_queries(queries),
                 where=_where(where))


def _queries(queries) -> dict:
    """Texts as `queries`; anything else as `vectors` (the server refuses what is not a matrix of numbers)."""
    if isinstance(queries, str):
        return {"queries": [queries]}
    if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
        return {"queries": list(queries)}
    try:
        x = np.asarray(queries, dtype=np.float32)
    except (ValueError, TypeError):  # ragged, or not numbers: sent as given, for the server to name the row
        return {"vectors": queries}
    return {"vectors": (x[None, :] if x.ndim == 1 else x).tolist()}


def _where(where):
    """`where` as JSON holds it: SQL or dict filters; a pyarrow expression has no JSON form."""
    if isinstance(where, pc.Expression) or (isinstance(where, (list, tuple)) and
                                            any(isinstance(w, pc.Expression) for w in where)):
        raise InputError("a pyarrow expression cannot be sent to a server: give the filter as SQL or a dict filter")
    return list(where) if isinstance(where, tuple) else where


def _result(answer: dict, width: int, has_text: bool) -> SearchResult:
    """The server's hits per query as the arrays of a SearchResult: rows -1 and scores -inf past the hits, a
    stage's score NaN where it did not run for a query (left out of the JSON) and -inf where it scored no row
    (null in the JSON)."""
    results = answer["results"] if answer.get("results") is not None else [answer["hits"]]
    k = max([width, *map(len, results)])
    names = answer["stages"]
    rows = np.full((len(results), k), -1, np.int64)
    scores = np.full((len(results), k), -np.inf, np.float32)
    stages = {s: np.full((len(results), k), -np.inf, np.float32) for s in names}
    ids = [[None] * k for _ in results]
    for i, hits in enumerate(results):
        for j, h in enumerate(hits):
            rows[i, j], scores[i, j], ids[i][j] = h["row"], _score(h["score"]), h["id"]
            for s in names:
                stages[s][i, j] = _score(h["scores"][s]) if s in h["scores"] else np.nan
    texts = [[h["text"] for h in hits] for hits in results] if has_text else None
    timings = {s: ms / 1000 for s, ms in answer["timings_ms"].items() if s != "total"}
    return SearchResult(rows, scores, stages, ids, texts, timings, answer["partial"], answer["missing_shards"])


def _score(v: float | None) -> float:
    return -np.inf if v is None else v


def _typed(attributes: dict, schema: pa.Schema | None) -> dict:
    """A record's attributes with the values of date and time columns, which JSON holds as text, as the local
    handle gives them (datetime.date, datetime.datetime)."""
    if schema is None:
        return attributes
    for name, v in attributes.items():
        if name in schema.names and pa.types.is_temporal(schema.field(name).type) and isinstance(v, str):
            attributes[name] = pa.array([v]).cast(schema.field(name).type)[0].as_py()
    return attributes


def _documents(data, ids, texts, attributes) -> list[dict]:
    """The documents of an add as JSON objects: a vector (or a text for the index's model), id, text and the
    attributes that are not null."""
    if isinstance(data, str):
        data = [data]
    encode = isinstance(data, (list, tuple)) and bool(data) and all(isinstance(d, str) for d in data)
    given = list(data) if encode else as_matrix(data, None, "vectors")
    texts = given if encode else texts  # texts as the input: encoded by the index's model, and stored
    n = len(given)
    columns = _attribute_rows(attributes, n)
    for name, values in (("ids", ids), ("texts", texts)):
        if values is not None and len(values) != n:
            raise InputError(f"{len(values)} {name} for {n} documents; give one per document")
    docs = []
    for i in range(n):
        doc = {} if encode else {"vector": given[i].tolist()}
        if ids is not None:
            doc["id"] = ids[i]
        if texts is not None:
            doc["text"] = texts[i]
        if columns is not None:
            doc["attributes"] = columns[i]
        docs.append(doc)
    return _plain(docs)


def _attribute_rows(attributes, n: int) -> list[dict] | None:
    """Attribute columns (a pyarrow Table or a dict of columns) as one dict per document, nulls left out."""
    if attributes is None:
        return None
    try:
        table = attributes if isinstance(attributes, pa.Table) else pa.table(attributes)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise InputError(f"attributes: {e}; give a pyarrow Table or a dict of equal-length columns") from None
    if table.num_columns == 0:
        return None
    if table.num_rows != n:
        raise InputError(f"attributes have {table.num_rows} rows for {n} documents; give one row per document")
    return [{name: v for name, v in _plain(row).items() if v is not None} for row in table.to_pylist()]


def _body(**fields) -> dict:
    """A request body of the fields given (None: left out, for the server's default), as JSON holds them."""
    return _plain({name: v for name, v in fields.items() if v is not None})


def _plain(v):
    """`v` as JSON holds it: numpy values as Python's, dates as ISO text, NaN as null, tuples as lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v
