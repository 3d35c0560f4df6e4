"""The FastAPI app over one index, or over a folder of indexes (each under /indexes/{name}): `create_app(path,
...)`, or `app_from_env()` for uvicorn's worker processes.

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
from typing import Any, Callable

from fastapi import APIRouter, Depends, FastAPI

from . import errors
from .auth import bearer, knows_token
from .catalog import Catalog, is_index
from .limits import BodyLimit, Limits
from .schemas import (AddRequest, ChangeResponse, DeleteRequest, Error, ExplainResponse, GetRequest, GetResponse,
                      Health, IndexEntry, SearchRequest, SearchResponse, TuneRequest)
from .service import IndexService, hits

SETTINGS_ENV = "MATRYOSHKA_SERVE_SETTINGS"  # create_app's arguments as JSON, for app_from_env
ERRORS = {status: {"model": Error} for status in (400, 401, 404, 409, 413, 422, 503)}


def create_app(index_path: str | Path, *, token: str | None = None, max_batch: int = 1024, max_docs: int = 10_000,
               max_k: int = 1000, max_body_bytes: int = 64 << 20, reranker: str | None = None,
               model: str | None = None, device: str = "auto", threads: int | None = None,
               reload_interval: float = 0.5, preload_model: bool = True, sample_queries: int = 0) -> FastAPI:
    """An app serving the index at `index_path`, opened now (a bad path fails here, not at the first request);
    or, when `index_path` is a folder of indexes, each of them under /indexes/{name}/... (see `catalog`).

    `token`: every endpoint wants `Authorization: Bearer <token>` (None: open), but /health, which without it says
    only that the server is up. Limits per request:
    `max_batch` queries, `max_docs` documents or ids, `max_k` hits per query, `max_body_bytes`. `reranker`,
    `model`, `device` and `threads` go to `retrieval.open_index`; `preload_model` loads the index's query model now
    rather than in the first text query. The manifest is checked for changes by other processes at most every
    `reload_interval` seconds. `sample_queries`: live query vectors kept in memory for POST /tune (0: none)."""
    options = dict(reload_interval=reload_interval, preload_model=preload_model, reranker=reranker, model=model,
                   device=device, threads=threads, sample_queries=sample_queries)
    many = not is_index(index_path)
    served: IndexService | Catalog = Catalog(index_path, **options) if many else IndexService(index_path, **options)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        served.close()

    what = f"the indexes in {Path(index_path).name}" if many else f"the index {Path(index_path).name}"
    app = FastAPI(title="matryoshka", version=_version(), lifespan=lifespan,
                  description=f"Search and change {what}: the cascade first pass -> int8 -> full vectors -> "
                              "cross-encoder over HTTP.")
    app.state.service = served
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    errors.install(app)
    guard = [Depends(bearer(token))] if token else []
    limits = Limits(max_batch, max_docs, max_k)
    if not many:
        app.include_router(index_routes(lambda: served, lambda: served.add, limits, guard, token, open_health=True))
        return app

    def pick(name: str) -> IndexService:
        return served.get(name)

    def adder(name: str) -> Callable[..., dict]:
        return served.adder(name)

    @app.get("/health", response_model=Health, response_model_exclude_unset=True, tags=["status"])
    def health(detail: bool = Depends(knows_token(token))) -> dict:
        """Up. With the token (or on a server without one): the names of the indexes served."""
        return {"status": "ok", "indexes": served.names()} if detail else {"status": "ok"}

    @app.get("/indexes", response_model=list[IndexEntry], response_model_exclude_unset=True, dependencies=guard,
             responses=ERRORS, tags=["indexes"])
    def indexes() -> list[dict]:
        """Every index served: its name, generation and live documents (or why it could not be opened)."""
        return served.entries()

    @app.delete("/indexes/{name}", dependencies=guard, responses=ERRORS, tags=["indexes"])
    def drop(name: str) -> dict[str, str]:
        """Drop the index `name`: its files are removed. An add to the name creates a new one."""
        return served.drop(name)

    app.include_router(index_routes(pick, adder, limits, guard, token, open_health=False), prefix="/indexes/{name}")
    return app


def index_routes(pick: Callable[..., IndexService], adder: Callable[..., Callable[..., dict]], limits: Limits,
                 guard: list, token: str | None, open_health: bool) -> APIRouter:
    """The endpoints of one index, over the service `pick` gives (a FastAPI dependency); `adder` gives the call
    that adds documents (on a server of many indexes, one that creates the index). `open_health`: /health answers
    without the token, saying only that the server is up."""
    router = APIRouter()
    service_of, adding = Depends(pick), Depends(adder)

    @router.get("/health", response_model=Health, response_model_exclude_unset=True,
                dependencies=[] if open_health else guard, responses=ERRORS, tags=["status"])
    def health(service: IndexService = service_of, detail: bool = Depends(knows_token(token))) -> dict:
        """Up. With the token (or on a server without one): the generation served, its live documents and why a
        newer generation could not be opened; without it nothing more, as that names the index's files."""
        index = service.refresh()
        if not detail:
            return {"status": "ok"}
        return {"status": "ok", "generation": index.generation, "count": index.live,
                "reload_error": service.reload_error}

    @router.get("/info", dependencies=guard, responses=ERRORS, tags=["status"])
    def info(service: IndexService = service_of) -> dict[str, Any]:
        """`Index.info()`: counts, dims, shards, stores and their tiers, the operating point, recent changes."""
        return service.info()

    @router.get("/manifest", dependencies=guard, responses=ERRORS, tags=["status"])
    def manifest(service: IndexService = service_of) -> dict[str, Any]:
        """The manifest of the generation served (`Index.manifest`), as the Python client reads it."""
        return service.manifest()

    @router.post("/search", response_model=SearchResponse, dependencies=guard, responses=ERRORS, tags=["search"])
    def search(req: SearchRequest, service: IndexService = service_of) -> dict:
        """Search one query (`query` text or `vector`) or a batch (`queries` or `vectors`)."""
        batch = req.batch()
        limits.check_queries(len(batch), req.k)
        started = time.perf_counter()
        result, generation = service.search(batch, req.k, req.where, req.options(), req.query_texts)
        timings = {stage: s * 1000 for stage, s in result.timings.items()}
        timings["total"] = (time.perf_counter() - started) * 1000
        results = hits(result)
        answer = {"hits": results[0]} if req.single else {"results": results}
        return {**answer, "generation": generation, "timings_ms": timings, "partial": result.partial,
                "missing_shards": result.missing_shards, "stages": list(result.stage_scores)}

    @router.post("/explain", response_model=ExplainResponse, dependencies=guard, responses=ERRORS, tags=["search"])
    def explain(req: SearchRequest, service: IndexService = service_of) -> dict:
        """The plan the search would run, each choice with its reason; nothing is searched."""
        batch = req.batch()
        limits.check_queries(len(batch), req.k)
        plan, text, generation = service.explain(batch, req.k, req.where, req.options())
        return {"plan": plan, "text": text, "generation": generation}

    @router.post("/get", response_model=GetResponse, dependencies=guard, responses=ERRORS, tags=["search"])
    def get(req: GetRequest, service: IndexService = service_of) -> dict:
        """Stored documents by id, or those passing `where` in row order: `limit` at a time, the next page `after`
        the last record's row (stable within a generation)."""
        if req.ids is not None:
            limits.check_docs(len(req.ids), "ids")
        records, generation = service.get(req.ids, req.where, req.limit, req.after, req.vectors, limits.max_docs)
        return {"records": records, "generation": generation}

    @router.post("/add", response_model=ChangeResponse, dependencies=guard, responses=ERRORS, tags=["changes"])
    def add(req: AddRequest, adds: Callable[..., dict] = adding) -> dict:
        """Add documents as a new generation; ids already in the index are refused (see /upsert)."""
        limits.check_docs(len(req.documents))
        return adds(req.documents, upsert=False)

    @router.post("/upsert", response_model=ChangeResponse, dependencies=guard, responses=ERRORS, tags=["changes"])
    def upsert(req: AddRequest, adds: Callable[..., dict] = adding) -> dict:
        """Add documents, replacing those whose ids are already in the index."""
        limits.check_docs(len(req.documents))
        return adds(req.documents, upsert=True)

    @router.post("/delete", response_model=ChangeResponse, dependencies=guard, responses=ERRORS, tags=["changes"])
    def delete(req: DeleteRequest, service: IndexService = service_of) -> dict:
        """Delete documents by id, those passing `where`, or those of the ids passing it, as a new generation."""
        if req.ids is not None:
            limits.check_docs(len(req.ids), "ids")
        return service.delete(req.ids, req.where, missing_ok=req.missing_ok)

    @router.post("/tune", dependencies=guard, responses=ERRORS, tags=["changes"])
    def tune(req: TuneRequest, service: IndexService = service_of) -> dict[str, Any]:
        """Measure the operating point for `target_recall` again, on the live queries this server kept
        (`--sample-queries N`), or on a sample of the index's own vectors; store it as the index's default."""
        return service.tune(req.target_recall, req.from_traffic)

    return router


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
