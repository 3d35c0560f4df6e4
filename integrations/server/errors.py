"""Every error the server answers, as one JSON shape: {"error": kind, "detail": what is wrong and the fix,
"classes": the engine's exception classes}.

Engine errors keep their message (it names the problem and the fix): bad input is a 400, a change refused
because another process is changing the index a 409, an index that cannot be read a 503. Request bodies that do
not match their schema are a 422 listing each field. `classes` names the engine's exception class and its bases,
most specific first (a 413 or 422 is an `InputError`, an unknown field an `UnknownOption`), so that a client
(`retrieval.remote`) raises what the engine raises in process; it is empty for errors of HTTP alone (401, 404).
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from matryoshka.core.errors import (BuildRefused, IndexFormatError, InputError, MatryoshkaError,
                                    RerankerUnavailable, ShardsUnavailable, UnknownOption)

log = logging.getLogger("matryoshka.server")

# most specific first
STATUS = ((InputError, 400), (BuildRefused, 409), (IndexFormatError, 503), (RerankerUnavailable, 503),
          (ShardsUnavailable, 503), (MatryoshkaError, 500))
REFUSED_INPUT = {413: InputError, 422: InputError}  # the server's own refusals, as the engine would class them


def classes(kind: type[Exception] | None) -> list[str]:
    """The engine's exception class `kind` and its bases up to MatryoshkaError, most specific first."""
    if kind is None:
        return []
    return [c.__name__ for c in kind.__mro__ if issubclass(c, MatryoshkaError)]


class ApiError(HTTPException):
    """An error answered as {"error": kind, "detail": detail}. An HTTPException, so that FastAPI lets it through
    when it is raised while the body is read (the body limit), instead of making it a 400."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None,
                 engine: type[MatryoshkaError] | None = None):
        super().__init__(status, detail, headers)
        self.kind, self.engine = kind, engine


def error_response(status: int, kind: str, detail: str, headers: dict[str, str] | None = None,
                   engine: type[MatryoshkaError] | None = None, **extra) -> JSONResponse:
    """The error body; `engine`: the engine's exception class a client raises for it (None: an HTTP error)."""
    body = {"error": kind, "detail": detail, "classes": classes(engine or REFUSED_INPUT.get(status)), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error the app raises in the one JSON shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status_code, e.kind, e.detail, e.headers, e.engine)

    @app.exception_handler(HTTPException)  # 404, 405 and FastAPI's own
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error_response(e.status_code, _phrase(e.status_code), str(e.detail), e.headers)

    @app.exception_handler(MatryoshkaError)
    async def engine_error(request: Request, e: MatryoshkaError) -> JSONResponse:
        status = next(code for kind, code in STATUS if isinstance(e, kind))
        if status >= 500:
            log.error("%s %s: %s: %s", request.method, request.url.path, type(e).__name__, e)
        return error_response(status, type(e).__name__, str(e), engine=type(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in e.errors()]
        said = [_say(err) for err in errors]
        more = f" (and {len(said) - 3} more)" if len(said) > 3 else ""
        unknown = any(err["type"] == "extra_forbidden" for err in errors)
        return error_response(422, "InvalidRequest", "; ".join(said[:3]) + more,
                              engine=UnknownOption if unknown else InputError, errors=errors)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "InternalError", f"{type(e).__name__}: {e}")


def _say(err: dict) -> str:
    """One validation error in words: the field (as a path in the body), then what is wrong with it."""
    loc = [str(p) for p in err["loc"]]
    if loc[:1] == ["body"]:
        loc = loc[1:]
    field = ".".join(loc)
    if err["type"] == "extra_forbidden":
        return f"unknown field {field!r}; see /openapi.json for the fields this endpoint takes"
    if err["type"] == "json_invalid":
        return "the body is not valid JSON"
    if err["type"] == "missing" and not field:
        return "the request needs a JSON body"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{field}: {msg}" if field else msg


def _phrase(status: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return "Error"
