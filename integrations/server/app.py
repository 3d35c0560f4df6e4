"""The FastAPI app over one index: `create_app(path, ...)`, or `app_from_env()` for uvicorn's worker processes.

The routes are plain functions (`def`), so FastAPI runs them in its thread pool: searches are CPU work in faiss
and numpy, which release the GIL, and the index serves many threads at once.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI

from . import errors
from .auth import bearer, knows_token
from .limits import BodyLimit, Limits
from .schemas import (AddRequest, ChangeResponse, DeleteRequest, Error, ExplainResponse, Health, SearchRequest,
                      SearchResponse, TuneRequest)
from .service import IndexService, hits

SETTINGS_ENV = "MATRYOSHKA_SERVE_SETTINGS"  # create_app's arguments as JSON, for app_from_env
ERRORS = {status: {"model": Error} for status in (400, 401, 409, 413, 422, 503)}


def create_app(index_path: str | Path, *, token: str | None = None, max_batch: int = 1024, max_docs: int = 10_000,
               max_k: int = 1000, max_body_bytes: int = 64 << 20, reranker: str | None = None,
               model: str | None = None, device: str = "auto", threads: int | None = None,
               reload_interval: float = 0.5, preload_model: bool = True, sample_queries: int = 0) -> FastAPI:
    """An app serving the index at `index_path`, opened now (a bad path fails here, not at the first request).

    `token`: every endpoint wants `Authorization: Bearer <token>` (None: open), but /health, which without it says
    only that the server is up. Limits per request:
    `max_batch` queries, `max_docs` documents or ids, `max_k` hits per query, `max_body_bytes`. `reranker`,
    `model`, `device` and `threads` go to `retrieval.open_index`; `preload_model` loads the index's query model now
    rather than in the first text query. The manifest is checked for changes by other processes at most every
    `reload_interval` seconds. `sample_queries`: live query vectors kept in memory for POST /tune (0: none)."""
    service = IndexService(index_path, reload_interval=reload_interval, preload_model=preload_model,
                           reranker=reranker, model=model, device=device, threads=threads,
                           sample_queries=sample_queries)
    limits = Limits(max_batch, max_docs, max_k)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="matryoshka", version=_version(), lifespan=lifespan,
                  description=f"Search and change the index {Path(index_path).name}: the cascade first pass -> "
                              "int8 -> full vectors -> cross-encoder over HTTP.")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    errors.install(app)
    guard = [Depends(bearer(token))] if token else []

    @app.get("/health", response_model=Health, response_model_exclude_unset=True, tags=["status"])
    def health(detail: bool = Depends(knows_token(token))) -> dict:
        """Up. With the token (or on a server without one): the generation served, its live documents and why a
        newer generation could not be opened; without it nothing more, as that names the index's files."""
        index = service.refresh()
        if not detail:
            return {"status": "ok"}
        return {"status": "ok", "generation": index.generation, "count": index.live,
                "reload_error": service.reload_error}

    @app.get("/info", dependencies=guard, responses=ERRORS, tags=["status"])
    def info() -> dict[str, Any]:
        """`Index.info()`: counts, dims, shards, stores and their tiers, the operating point, recent changes."""
        return service.info()

    @app.post("/search", response_model=SearchResponse, dependencies=guard, responses=ERRORS, tags=["search"])
    def search(req: SearchRequest) -> dict:
        """Search one query (`query` text or `vector`) or a batch (`queries` or `vectors`)."""
        batch = req.batch()
        limits.check_queries(len(batch), req.k)
        started = time.perf_counter()
        result, generation = service.search(batch, req.k, req.where, req.options(), req.query_texts)
        timings = {stage: s * 1000 for stage, s in result.timings.items()}
        timings["total"] = (time.perf_counter() - started) * 1000
        results = hits(result)
        answer = {"hits": results[0]} if req.single else {"results": results}
        return {**answer, "generation": generation, "timings_ms": timings, "partial": result.partial}

    @app.post("/explain", response_model=ExplainResponse, dependencies=guard, responses=ERRORS, tags=["search"])
    def explain(req: SearchRequest) -> dict:
        """The plan the search would run, each choice with its reason; nothing is searched."""
        batch = req.batch()
        limits.check_queries(len(batch), req.k)
        plan, text, generation = service.explain(batch, req.k, req.where, req.options())
        return {"plan": plan, "text": text, "generation": generation}

    @app.post("/add", response_model=ChangeResponse, dependencies=guard, responses=ERRORS, tags=["changes"])
    def add(req: AddRequest) -> dict:
        """Add documents as a new generation; ids already in the index are refused (see /upsert)."""
        limits.check_docs(len(req.documents))
        return service.add(req.documents)

    @app.post("/upsert", response_model=ChangeResponse, dependencies=guard, responses=ERRORS, tags=["changes"])
    def upsert(req: AddRequest) -> dict:
        """Add documents, replacing those whose ids are already in the index."""
        limits.check_docs(len(req.documents))
        return service.add(req.documents, upsert=True)

    @app.post("/delete", response_model=ChangeResponse, dependencies=guard, responses=ERRORS, tags=["changes"])
    def delete(req: DeleteRequest) -> dict:
        """Delete documents by id as a new generation."""
        limits.check_docs(len(req.ids), "ids")
        return service.delete(req.ids, missing_ok=req.missing_ok)

    @app.post("/tune", dependencies=guard, responses=ERRORS, tags=["changes"])
    def tune(req: TuneRequest) -> dict[str, Any]:
        """Measure the operating point for `target_recall` again, on the live queries this server kept
        (`--sample-queries N`), or on a sample of the index's own vectors; store it as the index's default."""
        return service.tune(req.target_recall, req.from_traffic)

    return app


def app_from_env() -> FastAPI:
    """`create_app` with the arguments in $MATRYOSHKA_SERVE_SETTINGS (JSON): the factory each uvicorn worker
    process calls (`serve --workers N`)."""
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    try:
        settings = json.loads(os.environ[SETTINGS_ENV])
    except KeyError:
        raise RuntimeError(f"${SETTINGS_ENV} is not set: start the server with `matryoshka serve INDEX`") from None
    return create_app(settings.pop("index_path"), **settings)


def _version() -> str:
    try:
        return version("matryoshka-retrieval")
    except PackageNotFoundError:
        return "unknown"
