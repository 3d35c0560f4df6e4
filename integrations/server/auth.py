"""The optional bearer token: with one set, every endpoint but /health wants `Authorization: Bearer TOKEN`."""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError


def bearer(token: str) -> Callable[..., Awaitable[None]]:
    """A dependency that refuses (401) requests without the token; it also puts the scheme in /openapi.json."""
    scheme = HTTPBearer(auto_error=False, description="the server's --token (or MATRYOSHKA_TOKEN)")
    expected = token.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        # compare_digest: the time taken says nothing about how much of a guess was right
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
            why = "no bearer token was sent" if credentials is None else "the bearer token is wrong"
            raise ApiError(401, "Unauthorized", f"{why}: send the header 'Authorization: Bearer <token>' with "
                                                "the server's token", headers={"WWW-Authenticate": "Bearer"})
    return check
