"""The optional bearer token: with one set, every endpoint wants `Authorization: Bearer TOKEN`, but /health, which
without it says only whether the server is up."""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError


def _scheme() -> HTTPBearer:
    return HTTPBearer(auto_error=False, description="the server's --token (or MATRYOSHKA_TOKEN)")


def _matches(credentials: HTTPAuthorizationCredentials | None, expected: bytes) -> bool:
    # compare_digest: the time taken says nothing about how much of a guess was right
    return credentials is not None and hmac.compare_digest(credentials.credentials.encode(), expected)


def bearer(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that refuses (401) requests without the token; it also puts the scheme in /openapi.json."""
    expected = token.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(_scheme())) -> None:
        if not _matches(credentials, expected):
            why = "no bearer token was sent" if credentials is None else "the bearer token is wrong"
            raise ApiError(401, "Unauthorized", f"{why}: send the header 'Authorization: Bearer <token>' with "
                                                "the server's token", headers={"WWW-Authenticate": "Bearer"})
    return check


def knows_token(token: str | None) -> Callable[..., Awaitable[bool]]:
    """A dependency: whether the request carries the token (always, when the server has none); refuses nothing."""
    expected = None if token is None else token.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(_scheme())) -> bool:
        return expected is None or _matches(credentials, expected)
    return check
