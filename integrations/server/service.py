"""The index behind the server: opened once, searched by many threads at once, changed one change at a time,
and reloaded when another process changes it on disk.

Searches run in FastAPI's thread pool on one `retrieval.Index` (thread-safe: a reload opens the new generation
beside the old, and searches in flight finish on the one they began). Changes hold a lock in this process and
one in the system's temp folder, so that the workers of `serve --workers N` take turns instead of refusing each
other (the engine's own lock refuses, it does not wait).
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from matryoshka import indexing, retrieval
from matryoshka.core import layout
from matryoshka.core.errors import InputError, MatryoshkaError
from matryoshka.core.vectors import as_matrix
from matryoshka.indexing.attributes import check_type
from matryoshka.retrieval import SearchResult
from matryoshka.storage.attribute_schema import manifest_schema
from matryoshka.storage.manifest import Manifest

from .errors import ApiError
from .schemas import Document
from .watch import ManifestWatch, stamp

log = logging.getLogger("matryoshka.server")


class IndexService:
    """The index at `path`, opened for search (`open_options` go to `retrieval.open_index`). Before each call
    the manifest is checked (at most every `reload_interval` seconds) and the index reloaded when another process
    made a new generation."""

    def __init__(self, path: str | Path, *, reload_interval: float = 0.5, preload_model: bool = True,
                 **open_options):
        self.path = Path(path)
        self.index = retrieval.open_index(self.path, **open_options)
        self.reload_error: str | None = None  # why the newest generation on disk could not be opened
        self._watch = ManifestWatch(self.path / layout.MANIFEST, reload_interval)
        self._reloading = threading.Lock()  # one reload at a time: two could install generations out of order
        self._changing = threading.Lock()
        self._warm_up()
        if preload_model and self.index.manifest.model is not None:
            self._load_model()

    def _warm_up(self) -> None:
        """One search now, so that the first request does not pay for the imports and page faults of the first
        search (a second on a small index: the re-scoring stages load torch)."""
        traffic, self.index.traffic = self.index.traffic, None  # not a live query: kept out of the sample
        try:
            self.index.search_batch(np.ones((1, self.index.full_dim), np.float32), k=1)
        except MatryoshkaError as e:
            log.warning("the warm-up search failed (%s)", e)
        finally:
            self.index.traffic = traffic

    def _load_model(self) -> None:
        """Load the query model now rather than in the first text query (seconds); vector queries work without."""
        try:
            self.index.encode(["warm-up"])
        except (MatryoshkaError, OSError) as e:
            log.warning("the index's model could not be loaded (%s); text queries will fail until it can", e)

    def close(self) -> None:
        self.index.close()

    # -- generations ---------------------------------------------------------------------------------------
    def refresh(self) -> retrieval.Index:
        """The index, reloaded first if another process changed it since the last look. While one thread
        reloads, the others go on with the generation they hold: no request waits for a reload it did not start."""
        if self._reloading.acquire(blocking=False):
            try:
                if self._watch.changed():
                    self._reload_if_changed()
            finally:
                self._reloading.release()
        return self.index

    def _reload_if_changed(self) -> None:
        seen = self._watch.latest  # taken before reading: a change after it is seen at the next look
        try:
            on_disk = layout.read_json(self._watch.path, "manifest")
            if _another(on_disk, self.index.manifest):  # a stat change alone (a touch, a copy) costs no reload
                before = self.index.generation
                self.index.reload()
                log.info("reloaded %s: generation %d -> %d", self.path, before, self.index.generation)
            self._watch.seen, self.reload_error = seen, None
        except (MatryoshkaError, OSError) as e:  # keep serving the generation held; try again at the next look
            self.reload_error = str(e)
            log.warning("could not reload %s (%s); still serving generation %d", self.path, e, self.index.generation)

    def _reload_now(self) -> None:
        with self._reloading:
            seen = stamp(self._watch.path)
            self.index.reload()
            self._watch.seen, self.reload_error = seen, None

    # -- reads ---------------------------------------------------------------------------------------------
    def search(self, queries: Sequence, k: int, where, options: dict[str, Any],
               query_texts: list[str] | None = None) -> tuple[SearchResult, int]:
        """(the result, the generation searched) for query texts or vectors (lists of floats)."""
        index = self.refresh()
        generation = index.generation
        if query_texts is not None:
            options = {**options, "query_texts": query_texts}
        return index.search_batch(_queries(queries), k, where=where, **options), generation

    def explain(self, queries: Sequence, k: int, where, options: dict[str, Any]) -> tuple[dict, str, int]:
        """(the plan as a dict, as text, the generation) of the search these arguments would run."""
        index = self.refresh()
        generation = index.generation
        plan = index.explain(_queries(queries), k, where=where, **options)
        return jsonable(plan.to_dict()), plan.explain(), generation

    def info(self) -> dict:
        return jsonable(self.refresh().info())

    def manifest(self) -> dict:
        """The manifest of the generation served (what `retrieval.Index.manifest` holds), as on disk."""
        return self.refresh().manifest.to_dict()

    def get(self, ids: list | None, where, limit: int | None, after: int | None, vectors: bool,
            most: int) -> tuple[list[dict], int]:
        """(the records as JSON objects, the generation read) of `Index.get`; more than `most` is a 413."""
        index = self.refresh()
        generation = index.generation
        records = index.get(ids, where=where, limit=most + 1 if limit is None else min(limit, most + 1),
                            after=after, vectors=vectors)
        if len(records) > most:
            raise ApiError(413, "TooManyDocuments", f"more than {most} records match; this server returns at most "
                                                    f"{most} per request (--max-docs): page with limit and after")
        return [jsonable({"id": r.id, "row": r.row, "text": r.text, "attributes": r.attributes,
                          "vector": r.vector}) for r in records], generation

    def tune(self, target_recall: float, from_traffic: bool) -> dict:
        """Measure and store the operating point (one change at a time, as an add); the point as a dict."""
        with self.change():
            return jsonable(self.index.tune(target_recall, from_traffic=from_traffic).to_dict())

    # -- changes -------------------------------------------------------------------------------------------
    @contextmanager
    def change(self) -> Iterator[None]:
        """One change at a time (across this server's worker processes too), then the new generation served."""
        with self._changing, change_lock(self.path):
            yield
            self._reload_now()

    def add(self, documents: Sequence[Document], upsert: bool = False) -> dict:
        """Add (or upsert) documents: vectors, or texts the index's model encodes; returns the change record."""
        data, ids, texts = document_inputs(documents, self.index.manifest.model is not None)
        with self.change():
            # the columns of the newest generation: another process may have added some since the last reload
            stored = manifest_schema(layout.read_json(self._watch.path, "manifest").get("attributes") or {})
            attributes = attribute_table(documents, stored)
            record = indexing.add(self.path, data, ids=ids, texts=texts, attributes=attributes, upsert=upsert,
                                  quiet=True)
        return change_record(record)

    def delete(self, ids: list | None, where=None, missing_ok: bool = True) -> dict:
        """Delete documents by id, by condition, or those of the ids passing it; returns the change record."""
        with self.change():
            record = indexing.delete(self.path, ids, where=where, missing_ok=missing_ok, quiet=True)
        return change_record(record)


@contextmanager
def change_lock(path: Path) -> Iterator[None]:
    """One change of the index at `path` at a time across this server's threads and worker processes: an flock
    on a file in the system's temp folder, named after the path (released when it closes, or the process dies)."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"matryoshka-serve-{digest}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def document_inputs(documents: Sequence[Document], has_model: bool) -> tuple[Any, list | None, list | None]:
    """(data, ids, texts) as `indexing.add` and `build` take them: the documents' vectors, or their texts for
    the index's model to encode (then stored as the input itself)."""
    first = documents[0]
    texts = [d.text for d in documents] if first.text is not None else None
    ids = [d.id for d in documents] if first.id is not None else None
    if first.vector is not None:
        return _matrix([d.vector for d in documents], "document vectors"), ids, texts
    if not has_model:  # the engine would ask for model=, which a client cannot give
        raise InputError("this index was built from vectors without a model, so it cannot encode texts: give "
                         "each document's vector")
    return texts, ids, None


def _queries(queries: Sequence):
    """Texts as given; vectors as a float32 matrix (the engine checks their dims against the index's)."""
    if queries and isinstance(queries[0], str):
        return list(queries)
    return _matrix(queries, "query vectors")


def _matrix(rows: Sequence[Sequence[float]], what: str) -> np.ndarray:
    """Rows of numbers as a float32 matrix; rows of another length than the first are refused by position."""
    bad = next((i for i, r in enumerate(rows) if len(r) != len(rows[0])), None)
    if bad is not None:
        raise InputError(f"{what}: vector {bad} has {len(rows[bad])} numbers but vector 0 has {len(rows[0])}; "
                         "every vector must have the index's dims")
    return as_matrix(rows, None, what)


def attribute_table(documents: Sequence[Document], stored: pa.Schema | None) -> pa.Table | None:
    """The documents' attributes as columns, of the type the index stores (`stored`) where it has the column;
    null where a document leaves one out. None when neither the documents nor the index have any."""
    columns = {}
    for name in sorted({name for d in documents for name in d.attributes}):
        values = [d.attributes.get(name) for d in documents]
        known = stored.field(name).type if stored is not None and name in stored.names else None
        if known is None and all(v is None for v in values):
            continue  # a new column of nulls has no type: left out, the engine stores null for these rows
        try:  # inferred, then cast safely: pa.array(type=) would truncate 2020.5 to an int64 2020 silently
            column = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError) as e:
            want = f"values of the index's type {known}" if known is not None else "one kind of value per attribute"
            raise InputError(f"attribute {name!r}: {e}; give {want}") from None
        if known is not None and column.type != known and not _json_temporal(column.type, known):
            check_type(name, known, column.type)  # the engine's rule: widen losslessly, or refuse by name
        try:
            columns[name] = column if known is None or column.type == known else column.cast(known)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise InputError(f"attribute {name!r}: {e}; give values of the index's type {known}") from None
    if not columns and stored is not None:  # the engine wants the index's attributes given: null for these rows
        columns[stored[0].name] = pa.nulls(len(documents), stored[0].type)
    return pa.table(columns) if columns else None


def _json_temporal(given: pa.DataType, stored: pa.DataType) -> bool:
    """JSON has no dates: ISO strings for a date or timestamp column are parsed (a bad one is refused)."""
    return pa.types.is_string(given) and pa.types.is_temporal(stored)


def change_record(record: dict) -> dict:
    """The engine's change record without its input fingerprint (hashes of no use to a client), JSON-safe."""
    return jsonable({k: v for k, v in record.items() if k != "fingerprint"})


def hits(result: SearchResult) -> list[list[dict]]:
    """Each query's hits as JSON objects; scores that are not finite (a stage that did not score a row) are None."""
    return [[{"id": plain(h.id), "score": finite(h.score), "row": h.row, "text": h.text,
              "scores": {s: finite(v) for s, v in h.scores.items()}} for h in result.hits(i)]
            for i in range(len(result))]


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def plain(v):
    """A numpy scalar as the Python value JSON takes."""
    return v.item() if isinstance(v, np.generic) else v


def jsonable(obj):
    """`obj` with numpy values, paths and tuples made JSON values, and NaN / infinity as None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    obj = plain(obj)
    if isinstance(obj, float):
        return finite(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)  # paths, dates, dtypes: their text


def _another(on_disk, held: Manifest) -> bool:
    """Whether the manifest read from disk describes another generation than the one held (compared as typed
    manifests: a file written by an older engine may spell an empty field out); something unreadable is."""
    try:
        return Manifest.from_dict(on_disk) != held
    except (KeyError, TypeError, ValueError, AttributeError):
        return True
