"""Many indexes behind one server: the index folders inside one folder, each under /indexes/{name} with its own
`IndexService` (its own change lock, reload and warm-up). An index is created by its first add, as the LangChain
store creates one, and removed only by an explicit drop.

Worker processes (`serve --workers N`) each hold their own services: an index another worker created is opened at
its first request here, and one it dropped is forgotten when its folder is gone.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from matryoshka import indexing
from matryoshka.core import layout
from matryoshka.core.errors import IndexFormatError, InputError, MatryoshkaError
from matryoshka.indexing.folder import BuildLock

from .errors import ApiError
from .schemas import Document
from .service import IndexService, attribute_table, change_lock, document_inputs

log = logging.getLogger("matryoshka.server")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def is_index(path: str | os.PathLike) -> bool:
    """True for a folder holding an index, or the start or the remains of one (served alone, as before: one that
    cannot be read is refused at start); any other folder holds indexes."""
    return any((Path(path) / name).exists() for name in (layout.MANIFEST, layout.BUILD_DIR, layout.SHARDS))


class Catalog:
    """The indexes in `folder` (its subfolders holding a manifest), opened now; `service_options` go to each
    `IndexService`. One that cannot be opened is logged and tried again at its next request."""

    def __init__(self, folder: str | os.PathLike, **service_options):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise IndexFormatError(f"no index at {self.folder}: the folder does not exist; give an index folder, "
                                   "or a folder to hold indexes (created by their first add)")
        self._options = service_options
        self._services: dict[str, IndexService] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()  # guards _locks
        names = self.names()
        for name in names:
            try:
                self.get(name)
            except MatryoshkaError as e:
                log.warning("index %s could not be opened (%s); it is tried again at its next request", name, e)
        log.info("serving the %d indexes in %s under /indexes/NAME (%s); an add to a new name creates one",
                 len(names), self.folder, ", ".join(names) or "none yet")

    def names(self) -> list[str]:
        """The indexes in the folder, by name."""
        return sorted(p.name for p in self.folder.iterdir()
                      if NAME.fullmatch(p.name) and (p / layout.MANIFEST).is_file())

    def path(self, name: str) -> Path:
        """The folder of index `name`, or an InputError for a name that cannot be one."""
        if not NAME.fullmatch(name):
            raise InputError(f"index name {name!r}: a name is 1-100 letters, digits, '.', '_' or '-', starting with "
                             "a letter or a digit")
        return self.folder / name

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(name, threading.Lock())

    def _find(self, name: str) -> IndexService | None:
        """The service of index `name`, opened on first use; None when there is no such index."""
        path = self.path(name)
        service = self._services.get(name)
        if service is not None and path.is_dir():
            return service
        with self._name_lock(name):
            if not (path / layout.MANIFEST).is_file():
                self._forget(name)  # dropped, by another worker process
                return None
            if name not in self._services:
                self._services[name] = IndexService(path, **self._options)
            return self._services[name]

    def get(self, name: str) -> IndexService:
        """The service of index `name`; a 404 when there is none."""
        service = self._find(name)
        if service is None:
            raise _missing(name)
        return service

    def adder(self, name: str) -> Callable[..., dict]:
        """`add(documents, upsert)` for index `name`: to the index, or creating it when there is none yet."""
        service = self._find(name)
        return service.add if service is not None else partial(self._create, name)

    def _create(self, name: str, documents: Sequence[Document], upsert: bool = False) -> dict:
        """Build index `name` from its first documents (their vectors fix its dims and plan); the change record."""
        path = self.path(name)
        with self._name_lock(name), change_lock(path):
            if not (path / layout.MANIFEST).is_file():  # else created meanwhile, by another request or worker
                return self._build(name, path, documents)
        return self.get(name).add(documents, upsert)

    def _build(self, name: str, path: Path, documents: Sequence[Document]) -> dict:
        if documents[0].vector is None:
            raise InputError(f"index {name!r} does not exist yet and a new index has no model to encode texts: "
                             "give its first documents' vectors")
        data, ids, texts = document_inputs(documents, has_model=False)
        started, fresh = time.perf_counter(), not path.exists()
        try:
            indexing.build(path, data, ids=ids, texts=texts, attributes=attribute_table(documents, None), quiet=True)
        except BaseException:
            if fresh:  # nothing half-built is left for the next add to trip on
                shutil.rmtree(path, ignore_errors=True)
            raise
        log.info("created index %s with %d documents", name, len(documents))
        index = (service := IndexService(path, **self._options)).index
        self._services[name] = service
        return {"op": "build", "generation": index.generation, "added": index.live, "replaced": 0, "created": True,
                "seconds": time.perf_counter() - started}

    def drop(self, name: str) -> dict:
        """Remove index `name` and its files; a 409 while another process changes it."""
        path = self.path(name)
        with self._name_lock(name), change_lock(path):
            if not (path / layout.MANIFEST).is_file():
                raise _missing(name)
            lock = BuildLock(path)  # refuses while `matryoshka add`, `compact`... hold the index
            grave = self.folder / f".{name}.dropped-{uuid.uuid4().hex[:12]}"  # out of the listing at once
            try:
                os.rename(path, grave)
            finally:
                lock.release()
            self._forget(name)
        shutil.rmtree(grave, ignore_errors=True)
        log.info("dropped index %s", name)
        return {"dropped": name}

    def entries(self) -> list[dict]:
        """Each index: its name, generation and live count, or why it could not be opened."""
        out = []
        for name in self.names():
            try:
                index = self.get(name).refresh()
                out.append({"name": name, "generation": index.generation, "count": index.live})
            except MatryoshkaError as e:
                out.append({"name": name, "error": str(e)})
            except ApiError:  # dropped since the listing
                pass
        return out

    def _forget(self, name: str) -> None:
        service = self._services.pop(name, None)
        if service is not None:
            service.close()  # searches in flight on it finish first

    def close(self) -> None:
        for name in list(self._services):
            self._forget(name)


def _missing(name: str) -> ApiError:
    return ApiError(404, "IndexNotFound", f"no index named {name!r} on this server: its first add creates it "
                                          f"(POST /indexes/{name}/add); GET /indexes lists the indexes",
                    engine=IndexFormatError)
