"""A lock that many readers hold at once and one writer alone: searches share an index handle, and a reload
swaps the generation it searches only between them."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class SharedLock:
    """Many holders of `shared()` at once, or one holder of `exclusive()`. A waiting writer holds off new
    readers, so a stream of overlapping searches cannot starve a reload. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writers = 0  # waiting or writing
        self._writing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writers)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers += 1
            self._cond.wait_for(lambda: not self._readers and not self._writing)
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._writers -= 1
                self._cond.notify_all()
