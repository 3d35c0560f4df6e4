"""Whether any of a set of files may have changed since they were last checked, without a system call per file
(Linux inotify).

A gather from memory-mapped files must not read past the end of a file that shrank (that is SIGBUS). Checking
each file's size costs one `fstat` per file a gather touches: over hundreds of shards, most of a single query.
One inotify instance per process watches every such file; a count of its events tells a store whether anything
watched was written, truncated, moved or deleted since the store last checked its files. Where inotify is not
available (another OS, its limits reached), `FileWatch.make` returns None and the caller checks every time.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading

_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, 0o2000000
_EVENTS = 0x2 | 0x4 | 0x400 | 0x800  # modified (written, truncated), attributes, deleted, moved
_lock = threading.Lock()
_state = {"fd": None, "events": 0}  # the process's inotify descriptor (-1: none possible) and its event count


def _inotify() -> int:
    if _state["fd"] is None:
        fd = -1
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            _state["add"] = libc.inotify_add_watch
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        _state["fd"] = fd
    return _state["fd"]


def _events() -> int:
    """Events seen so far on every watched file (reads what is pending)."""
    with _lock:
        while True:
            try:
                if not os.read(_state["fd"], 65536):
                    break
                _state["events"] += 1
            except BlockingIOError:
                break
        return _state["events"]


class FileWatch:
    """Files watched for change. `changed()`: something watched changed since `mark()` (any watched file in the
    process: a change elsewhere costs one check of these files, never a missed one here)."""

    def __init__(self):
        self.seen = _events()

    @classmethod
    def make(cls, paths: list[str]) -> "FileWatch | None":
        """A watch over `paths` from now on, or None where one cannot be made."""
        with _lock:
            fd = _inotify()
            if fd < 0 or not all(p is not None and _state["add"](fd, os.fsencode(str(p)), _EVENTS) >= 0
                                 for p in paths):
                return None
        return cls()

    def changed(self) -> bool:
        return _events() != self.seen

    def mark(self, seen: int) -> None:
        """The files were checked whole with `seen` events counted before the check began."""
        self.seen = seen

    @staticmethod
    def now() -> int:
        return _events()
