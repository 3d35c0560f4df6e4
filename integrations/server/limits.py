"""What one request may ask of the server: body bytes (checked before the body is parsed), queries per search,
documents per change, and hits per query."""
from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, error_response


@dataclass(frozen=True)
class Limits:
    max_batch: int = 1024  # queries per search or explain
    max_docs: int = 10_000  # documents per add or upsert, ids per delete or get, records per get
    max_k: int = 1000  # hits per query

    def check_queries(self, n: int, k: int) -> None:
        if n > self.max_batch:
            raise ApiError(413, "TooManyQueries", f"{n} queries in one request; this server takes at most "
                                                  f"{self.max_batch} (--max-batch): split the batch")
        if k > self.max_k:
            raise ApiError(422, "InvalidRequest", f"k: {k} hits per query asked; this server returns at most "
                                                  f"{self.max_k} (--max-k)")

    def check_docs(self, n: int, what: str = "documents") -> None:
        if n > self.max_docs:
            raise ApiError(413, "TooManyDocuments", f"{n} {what} in one request; this server takes at most "
                                                    f"{self.max_docs} (--max-docs): send them in several requests")


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` is a 413, refused on its Content-Length before a byte is read, or
    once that many bytes have arrived when the length is not given (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _refusal(self, size: str) -> str:
        return (f"the request body is {size} bytes; this server takes at most {self.max_bytes:,} (--max-body-bytes): "
                "send fewer queries or documents per request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = error_response(413, "BodyTooLarge", self._refusal(f"{int(length):,}"),
                                      headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, "BodyTooLarge", self._refusal(f"over {self.max_bytes:,}"))
            return message

        await self.app(scope, limited, send)
