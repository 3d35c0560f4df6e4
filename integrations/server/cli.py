"""serve an index, or a folder of indexes, over HTTP (FastAPI on uvicorn; needs the `server` extra).

`matryoshka serve INDEX` (or `serve FOLDER`: each index in it under /indexes/NAME), registered under the
`matryoshka.commands` entry point group. Install the extra from a clone of the repository:
pip install -e ".[server]"."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from matryoshka.core.cli_help import HelpFormatter, positive_int
from matryoshka.core.errors import InputError

TOKEN_ENV = "MATRYOSHKA_TOKEN"
FACTORY = "matryoshka.integrations.server.app:app_from_env"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matryoshka serve", description="serve an index over HTTP: search, explain, "
                                "get, info, add, upsert and delete as JSON endpoints (docs at /docs, schema at "
                                "/openapi.json); or every index in a folder, each under /indexes/NAME/",
                                formatter_class=HelpFormatter)
    p.add_argument("index", help="index folder, or a folder of indexes (an index in it is created by its first "
                                 "add)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes, each with the index open (its memory-mapped stores are shared)")
    p.add_argument("--token",
                   help=f"require 'Authorization: Bearer TOKEN' on every endpoint; /health without it says only "
                        f"'ok' (default: ${TOKEN_ENV}; the variable keeps it out of the process list)")
    p.add_argument("--max-batch", type=positive_int, default=1024, help="queries per search request")
    p.add_argument("--max-docs", type=positive_int, default=10_000,
                   help="documents per add / upsert, ids per delete / get, records per get")
    p.add_argument("--max-k", type=positive_int, default=1000, help="hits per query")
    p.add_argument("--max-body-bytes", type=_size, default="64M", help="request body size, e.g. 64M or 1000000")
    p.add_argument("--reload-interval", type=_seconds, default=0.5,
                   help="seconds between checks for a new generation written by another process")
    p.add_argument("--reranker", help="cross-encoder name or path for the last stage (text queries)")
    p.add_argument("--model", help="query model (default: the model recorded in the index)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="where the first pass runs")
    p.add_argument("--threads", type=positive_int, help="CPU threads for faiss, torch and BLAS per process "
                                                     "(default: every core)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.add_argument("--sample-queries", type=int, default=0,
                   help="keep a uniform sample of up to N live query vectors in memory (never written) for POST /tune "
                        "with from_traffic (default 0: none)")
    return p


def _size(text: str) -> int:
    from matryoshka.storage.tiers import parse_bytes
    try:
        return parse_bytes(text)
    except InputError:
        raise argparse.ArgumentTypeError(f"must be a byte count or a size such as 64M, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; 0 on a clean stop, 2 when it cannot start."""
    a = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvicorn

        from .app import SETTINGS_ENV, create_app
    except ImportError as e:
        print(f"error: matryoshka serve needs the server extra ({e}): from a clone of the repository, "
              "pip install -e \".[server]\"", file=sys.stderr)
        return 2
    settings = dict(index_path=os.path.abspath(a.index), token=a.token or os.environ.get(TOKEN_ENV) or None,
                    max_batch=a.max_batch, max_docs=a.max_docs, max_k=a.max_k, max_body_bytes=a.max_body_bytes,
                    reranker=a.reranker, model=a.model, device=a.device, threads=a.threads,
                    reload_interval=a.reload_interval, sample_queries=a.sample_queries)
    logging.basicConfig(level=a.log_level.upper(), format="%(levelname)s:     %(message)s")
    run = dict(host=a.host, port=a.port, log_level=a.log_level, access_log=not a.no_access_log)
    if a.workers == 1:
        uvicorn.run(create_app(**settings), **run)  # opened here: a bad index is an error before listening
        return 0
    _check_index(a.index)
    # each worker process builds its own app: uvicorn wants an import string and a factory for that
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    uvicorn.run(FACTORY, factory=True, workers=a.workers, **run)
    return 0


def _check_index(path: str) -> None:
    """Refuse a folder that holds no readable index before starting workers that would each fail on it."""
    from matryoshka.storage.manifest import read_manifest
    from matryoshka.storage.pinned import PinnedFolder

    from .catalog import is_index
    if not os.path.isdir(path):
        raise InputError(f"no index at {path}: the folder does not exist")
    if is_index(path):
        with PinnedFolder(path) as folder:
            read_manifest(folder)


if __name__ == "__main__":
    from matryoshka.core.errors import MatryoshkaError
    try:
        sys.exit(main())
    except MatryoshkaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
